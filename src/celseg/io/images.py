"""Open image files through one guard: every PIL failure becomes a DataError naming the file.

The decompression-bomb guard: a file whose header declares more than ``max_image_pixels()``
pixels is refused before any pixel is decoded. The limit is PIL's default (89.5 megapixels);
``CELSEG_MAX_IMAGE_PIXELS`` raises it on purpose (``0`` = no limit).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from PIL import Image

from celseg.errors import DataError

LIMIT_ENV = "CELSEG_MAX_IMAGE_PIXELS"
DEFAULT_MAX_PIXELS = 89_478_485  # PIL's Image.MAX_IMAGE_PIXELS


def max_image_pixels() -> int:
    """The pixel limit in force (0 = none), from ``CELSEG_MAX_IMAGE_PIXELS``."""
    raw = os.environ.get(LIMIT_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(float(raw))
    except ValueError:
        raise DataError(f"{LIMIT_ENV}={raw!r} is not a number of pixels") from None
    if value < 0:
        raise DataError(f"{LIMIT_ENV}={raw!r} must be 0 (no limit) or positive")
    return value


def open_image(path: str | Path, what: str = "image") -> Image.Image:
    """The decoded image at ``path`` (any mode); DataError names the file and what is wrong."""
    return _open(Path(path), what, decode=True)


def image_size(path: str | Path, what: str = "image") -> tuple[int, int]:
    """(W, H) from the file header only, under the same guard as :func:`open_image`."""
    im = _open(Path(path), what, decode=False)
    im.close()
    return im.size


def _open(path: Path, what: str, decode: bool) -> Image.Image:
    limit = max_image_pixels()
    saved = Image.MAX_IMAGE_PIXELS
    try:
        # PIL's own guard is switched off while the header is read: the check below reports
        # the declared size and how to raise the limit
        Image.MAX_IMAGE_PIXELS = None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)
        width, height = im.size
        if limit and width * height > limit:
            im.close()
            raise DataError(
                f"{what} {path} declares {width}x{height} = {width * height:,} pixels, above the "
                f"limit of {limit:,} (a guard against decompression bombs); if the file is "
                f"genuine, raise the limit with {LIMIT_ENV}=N (0 = no limit)")
        if decode:
            im.load()
        return im
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"{what} file not found: {path}") from None
    except IsADirectoryError:
        raise DataError(f"{what} {path} is a folder, not a file") from None
    except PermissionError as exc:
        raise DataError(f"cannot read {what} {path}: {exc.strerror}") from None
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError, Image.DecompressionBombError,
            TypeError) as exc:
        # UnidentifiedImageError and truncated files are OSErrors; damaged chunks raise the rest
        raise DataError(f"cannot read {what} {path}: {exc or type(exc).__name__}") from None
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def open_rgb(path: str | Path, what: str = "image") -> Image.Image:
    """:func:`open_image` converted to RGB."""
    im = open_image(path, what)
    try:
        return im.convert("RGB")
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot convert {what} {path} to RGB: {exc}") from None
