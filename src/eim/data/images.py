"""Image files: a cheap header check for validation, and the RGB loader the collator uses.

Datasets never decode pixels (docs/design.md §5: a Sample holds the image *path*); they only check, at
construction, that every image exists and that PIL recognises its header, so a bad file fails
before training starts rather than hours into an epoch.
"""

import os

from PIL import Image, UnidentifiedImageError

from eim.errors import DataError


def check_image(path):
    """Return None when `path` is an image PIL can identify, else the reason it is bad.

    Reads the header only (``Image.open`` without ``load``): a few hundred bytes per file, so
    validating COCO's 123k images stays in seconds, not minutes.
    """
    if not os.path.isfile(path):
        return f"missing image {path}"
    try:
        with Image.open(path) as im:
            im.size  # noqa: B018 - the header is parsed by open(); touch it to be explicit
    except (UnidentifiedImageError, OSError, ValueError) as e:
        return f"unreadable image {path} ({type(e).__name__}: {e})"
    return None


class ImageChecker:
    """`check_image` with a per-path cache: LLaVA and ScienceQA reuse images across records."""

    def __init__(self, enabled=True):
        self.enabled = enabled
        self._seen = {}

    def __call__(self, path):
        if not self.enabled:
            return None
        if path not in self._seen:
            self._seen[path] = check_image(path)
        return self._seen[path]


def load_image(path):
    """Open `path` fully and return it as an RGB ``PIL.Image`` (what the CLIP processor takes).

    Raises :class:`DataError` naming the file when it cannot be decoded: a header that passed
    validation can still hide a truncated body.
    """
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except (OSError, ValueError) as e:
        raise DataError(
            f"cannot decode image ({type(e).__name__}: {e})",
            file=path,
            remedy="replace the file, or remove its records and rebuild the feature banks",
        ) from e
