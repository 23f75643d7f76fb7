"""Image files: a header check or a full decode for validation, and the RGB loader the collator uses.

Datasets never keep pixels (docs/design.md §5: a Sample holds the image *path*). At construction
they check every image, in one of two depths:

- ``header`` (the default of ``eim train`` / ``eim eval``): the file exists and PIL recognises its
  header. A few hundred bytes per file: COCO's 123k images in seconds. A file truncated after an
  intact header passes and stops training later, at :func:`load_image`, with an error naming it.
- ``decode`` (``eim data check``, and ``--skip-bad`` everywhere): every image is decoded exactly as
  :func:`load_image` decodes it, on a thread pool (PIL releases the GIL while decoding) with a
  progress bar. So a record that ``data check`` flags is exactly one ``--skip-bad`` skips, and an
  image that passes can be loaded. It costs a few milliseconds per COCO-sized JPEG and core
  (benchmarks/RESULTS.md), divided by the cores there are.
"""

import os
from concurrent.futures import ThreadPoolExecutor

from PIL import Image, UnidentifiedImageError

from eim.errors import DataError
from eim.progress_bar import progress_bar

CHECKS = ("header", "decode")
# what PIL raises on a bad file: OSError (UnidentifiedImageError, "image file is truncated"),
# ValueError, SyntaxError (some broken PNG chunks), DecompressionBombError (absurd sizes)
IMAGE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)
DECODE_REMEDY = ("replace the file or remove its records; `eim data check --data PATH` lists every "
                 "such record, and --skip-bad skips them")


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
    except (UnidentifiedImageError, *IMAGE_ERRORS) as e:
        return f"unreadable image {path} ({type(e).__name__}: {e})"
    return None


def decode_error(path):
    """Return None when :func:`load_image` can decode `path`, else the reason it cannot."""
    try:
        _decode(path)
    except IMAGE_ERRORS as e:
        return f"cannot decode image {path} ({type(e).__name__}: {e})"
    return None


def _decode(path):
    with Image.open(path) as im:
        return im.convert("RGB")


def _normalise(check):
    if check is True:
        return "header"
    if check in (False, None):
        return None
    if check not in CHECKS:
        raise DataError(f"unknown image check {check!r}", remedy=f"use one of {', '.join(CHECKS)} or False")
    return check


class ImageChecker:
    """Image validation for one dataset, with a per-path cache (LLaVA and ScienceQA reuse images).

    ``check``: ``"header"`` / True, ``"decode"``, or False (no check). A loader calls
    ``checker(path, record, file)`` per record; the header is checked at once (the returned
    reason rejects the record), and in ``decode`` mode the loader's :meth:`decode_all` then
    decodes every image whose header passed and says which records own the ones that failed.
    """

    def __init__(self, check="header", quiet=False):
        self.mode = _normalise(check)
        self.quiet = quiet
        self._seen = {}
        self.owners = {}  # path -> [(record id, index file)], in the order the loader met them

    @property
    def enabled(self):
        return self.mode is not None

    def __call__(self, path, record=None, file=None):
        if self.mode is None:
            return None
        if path not in self._seen:
            self._seen[path] = check_image(path)
        if self._seen[path] is None and record is not None:
            self.owners.setdefault(path, []).append((record, file))
        return self._seen[path]

    def decode_all(self, workers=None):
        """``{path: reason}`` for every header-valid image that cannot be decoded (decode mode;
        empty otherwise). Decodes on ``workers`` threads (default: the CPUs, at most 32)."""
        if self.mode != "decode" or not self.owners:
            return {}
        paths = list(self.owners)
        workers = workers or min(32, os.cpu_count() or 1)
        quiet = self.quiet or os.environ.get("RANK", "0") != "0"  # one bar per job, not per process
        bad = {}
        with ThreadPoolExecutor(workers) as pool, progress_bar(total=len(paths), desc="decode images", unit="img",
                                                               disable=quiet) as bar:
            for path, why in zip(paths, pool.map(decode_error, paths)):
                if why:
                    bad[path] = why
                bar.update(1)
        for path, why in bad.items():
            self._seen[path] = why
        return bad


def load_image(path):
    """Open `path` fully and return it as an RGB ``PIL.Image`` (what the CLIP processor takes).

    Raises :class:`DataError` naming the file when it cannot be decoded: a header that passed
    validation can still hide a truncated body.
    """
    try:
        return _decode(path)
    except IMAGE_ERRORS as e:
        raise DataError(f"cannot decode image ({type(e).__name__}: {e})", file=path,
                        remedy=DECODE_REMEDY) from e


def expand2square(image, fill):
    """``image`` padded to a square in colour ``fill`` (an RGB tuple), centred on its long side:
    LLaVA-1.5's ``expand2square`` (``image_aspect_ratio: pad``), which keeps the edges a centre crop
    would cut."""
    w, h = image.size
    if w == h:
        return image
    side = max(w, h)
    out = Image.new(image.mode, (side, side), fill)
    out.paste(image, ((side - w) // 2, (side - h) // 2))
    return out


def image_pixel_values(image_processor, images, aspect_ratio="crop"):
    """``[n, 3, H, W]`` pixels of loaded RGB images: ``crop`` gives them to the processor as they are
    (it resizes the short side and centre-crops); ``pad`` first pads each to a square in the
    processor's mean colour (:func:`expand2square`), as LLaVA-1.5 does. What the collator feeds and
    what the llava-hf export checks its processor against."""
    if aspect_ratio == "pad":
        fill = tuple(int(x * 255) for x in image_processor.image_mean)
        images = [expand2square(im, fill) for im in images]
    return image_processor(images=images, return_tensors="pt")["pixel_values"]
