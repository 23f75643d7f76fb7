"""Image checks (eim.data.images): the cheap header check, the full decode, and the loader."""

import pytest
from format_files import image, truncate

from eim.data.images import ImageChecker, check_image, decode_error, load_image
from eim.errors import DataError


@pytest.mark.parametrize("fmt, name", [("JPEG", "a.jpg"), ("PNG", "a.png")])
def test_truncated_image_passes_the_header_check_but_not_the_decode(tmp_path, fmt, name):
    path = truncate(image(tmp_path / name, fmt))
    assert check_image(path) is None  # the header is intact: the cheap check cannot tell
    why = decode_error(path)
    assert why and why.startswith(f"cannot decode image {path} (OSError: ")
    with pytest.raises(DataError) as e:
        load_image(path)
    assert str(e.value).startswith(f"{path}: cannot decode image (OSError: ")
    assert "`eim data check --data PATH` lists every such record, and --skip-bad skips them" in str(e.value)


def test_checker_decodes_only_in_decode_mode_and_names_the_owners(tmp_path):
    good = image(tmp_path / "good.png", "PNG")
    bad = truncate(image(tmp_path / "bad.png", "PNG"))
    for mode, found in (("header", set()), (True, set()), ("decode", {bad})):
        check = ImageChecker(mode, quiet=True)
        assert check(good, "r1", "f") is None and check(bad, "r2", "f") is None and check(bad, "r3", "f") is None
        assert set(check.decode_all()) == found
        assert check.owners[bad] == [("r2", "f"), ("r3", "f")]
    assert ImageChecker(False)(str(tmp_path / "missing.png")) is None
    with pytest.raises(DataError, match="unknown image check 'deep'"):
        ImageChecker("deep")

