"""File and folder digests (eim.digests): memoised in the process, large files across processes."""

import os

import pytest

import eim.digests as D


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EIM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(D, "PERSIST_BYTES", 1000)
    monkeypatch.setattr(D, "_DIGESTS", {})
    return tmp_path / "cache" / "digests.json"


def _fresh_process(monkeypatch):
    monkeypatch.setattr(D, "_DIGESTS", {})


def test_a_large_file_is_not_read_again_by_a_later_process(tmp_path, cache, monkeypatch):
    big = tmp_path / "model.safetensors"
    big.write_bytes(b"a" * 4000)
    first = D.file_digest(big)
    assert cache.exists() and first in cache.read_text()
    st = big.stat()
    big.write_bytes(b"b" * 4000)  # same size; put the mtime back: the cache cannot tell
    os.utime(big, ns=(st.st_atime_ns, st.st_mtime_ns))
    _fresh_process(monkeypatch)
    assert D.file_digest(big) == first  # from digests.json: the file was not read
    os.utime(big, ns=(st.st_atime_ns, st.st_mtime_ns + 1))  # rewritten in place: a new mtime
    _fresh_process(monkeypatch)
    assert D.file_digest(big) != first


def test_small_files_and_a_turned_off_or_broken_cache(tmp_path, cache, monkeypatch):
    small = tmp_path / "config.json"
    small.write_text("{}")
    D.file_digest(small)
    assert not cache.exists()  # below PERSIST_BYTES: hashed again in each process
    big = tmp_path / "w.bin"
    big.write_bytes(b"x" * 2000)
    cache.parent.mkdir(parents=True)
    cache.write_text("not json")
    assert D.file_digest(big) == D.file_digest(big)  # an unreadable cache is ignored, then rewritten
    assert "not json" not in cache.read_text() and str(big.resolve()) in cache.read_text()
    monkeypatch.setenv("EIM_CACHE_DIR", "")
    _fresh_process(monkeypatch)
    assert D.cache_file() is None and len(D.file_digest(big)) == 64


def test_folder_digest_follows_the_weights(tmp_path, cache):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    (tmp_path / "m" / "model.safetensors").write_bytes(b"w" * 10)
    a = D.folder_digest(tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").write_bytes(b"v" * 11)
    assert D.folder_digest(tmp_path / "m") != a
    assert D.folder_digest("gpt2") == "id:gpt2"
