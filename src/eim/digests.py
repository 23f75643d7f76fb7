"""Content digests of data and model files, for fingerprints and run identity (docs/design.md §8).

:func:`file_digest` is the sha256 of a file, memoised by (resolved path, size, mtime) — in memory
for the process and, for files of at least :data:`PERSIST_BYTES`, on disk in
``$EIM_CACHE_DIR/digests.json`` (default ``~/.cache/eim``), so that a run that starts again on
the same LLaMA-7B checkpoint does not read its 14 GB once more to learn what it already knew.
Like ``make`` and git's index, it trusts an unchanged size and mtime; a file rewritten in place
gets a new mtime and is hashed again. The disk cache is rewritten atomically (a crash never
leaves half a file), an unreadable one is ignored, and ``EIM_CACHE_DIR=`` (empty) turns it off.

:func:`folder_digest` is the digest of a model folder's weight, config and tokenizer files (or
the id itself for a hub id), what ``run.json`` and the banks record for the base models.
"""

import hashlib
import json
import os
from pathlib import Path

from eim.io import atomic_write

PERSIST_BYTES = 64 << 20  # smaller files are hashed again in each process (cheap; keeps the cache small)
_DIGESTS = {}


def cache_file():
    """``digests.json`` in ``$EIM_CACHE_DIR`` (default ``~/.cache/eim``); None when turned off."""
    root = os.environ.get("EIM_CACHE_DIR", str(Path.home() / ".cache" / "eim"))
    return Path(root) / "digests.json" if root else None


def _load(path):
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _remember(path, key, digest):
    known = _load(path)  # read again: another process may have added digests since
    known[key] = digest
    try:
        atomic_write(path, lambda f: f.write(json.dumps(known, indent=0, sort_keys=True).encode()))
    except OSError:  # a read-only home: the digest is still right, only not remembered
        pass


def file_digest(path):
    """sha256 of a file (memoised by path, size and mtime; large files across processes too)."""
    p = Path(path)
    st = p.stat()
    key = f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    if key in _DIGESTS:
        return _DIGESTS[key]
    disk = cache_file() if st.st_size >= PERSIST_BYTES else None
    digest = _load(disk).get(key) if disk else None
    if digest is None:
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
        digest = h.hexdigest()
        if disk:
            _remember(disk, key, digest)
    _DIGESTS[key] = digest
    return digest


def folder_digest(name_or_path, patterns=("*.safetensors", "*.bin", "*.gguf", "config.json",
                                          "tokenizer.json", "vocab.json", "merges.txt", "tokenizer.model")):
    """Digest of the weight, config and tokenizer files of a model folder (or the id itself)."""
    p = Path(name_or_path)
    if not p.is_dir():
        return f"id:{name_or_path}"
    files = sorted({f for pat in patterns for f in p.glob(pat)})
    return hashlib.sha256("".join(f"{f.name}:{file_digest(f)}" for f in files).encode()).hexdigest()
