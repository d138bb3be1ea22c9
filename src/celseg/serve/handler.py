"""One request of the page: check the upload and the class names, segment, describe the result.

Every check raises :class:`PageError`, whose message is written for the person at the page
(what was wrong, the limit, and the ``celseg serve`` flag that sets it). Inference goes through
:class:`celseg.engine.predictor.Predictor`, the module ``celseg predict`` uses.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageOps

from celseg.errors import CelsegError

if TYPE_CHECKING:
    from celseg.engine.predictor import Predictor


class PageError(CelsegError):
    """Bad input from the page; the message is shown there as it is."""


@dataclass(frozen=True)
class Limits:
    """What one request may send. ``max_pixels`` bounds the work and memory of one inference
    (the probabilities are classes x pixels floats)."""

    max_bytes: int = 10_000_000
    max_pixels: int = 1024 * 1024
    max_classes: int = 200
    max_text: int = 8000

    def __post_init__(self) -> None:
        for name in ("max_bytes", "max_pixels", "max_classes", "max_text"):
            if getattr(self, name) < 1:
                raise CelsegError(f"--{name.replace('_', '-')} must be positive, got "
                                  f"{getattr(self, name)}")
        if self.max_classes > 255:
            raise CelsegError(f"--max-classes {self.max_classes}: label PNGs hold at most 255")


@dataclass(frozen=True)
class Result:
    """picture: image | overlay | legend (the picture ``celseg predict`` writes); label: (H,W)
    uint8 positions in ``names``; shares: percent of the pixels per name, in ``names`` order."""

    picture: Image.Image
    label: np.ndarray
    names: list[str]
    shares: list[float]


def format_bytes(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB"


def read_upload(path: str | Path | None, limits: Limits) -> np.ndarray:
    """(H,W,3) uint8 of an uploaded file, after the byte and pixel limits (the pixel count is
    read from the header, before anything is decoded)."""
    if path is None or not Path(path).is_file():
        raise PageError("Upload an image first (PNG, JPEG, ...), or pick one of the examples.")
    n_bytes = os.path.getsize(path)
    if n_bytes > limits.max_bytes:
        raise PageError(f"The file is {format_bytes(n_bytes)}; this page takes images up to "
                        f"{format_bytes(limits.max_bytes)} (celseg serve --max-bytes).")
    name = Path(path).name
    try:
        with Image.open(path) as img:
            width, height = img.size
            if width * height > limits.max_pixels:
                raise PageError(
                    f"The image is {width} x {height} = {width * height:,} pixels; this page "
                    f"takes up to {limits.max_pixels:,} (celseg serve --max-pixels).")
            # phone photos: the label map follows the orientation a browser shows
            return np.asarray(ImageOps.exif_transpose(img).convert("RGB"))
    except PageError:
        raise
    except Image.DecompressionBombError as exc:
        raise PageError(f"{name} is far too large an image: {exc}") from exc
    except (OSError, ValueError, SyntaxError) as exc:  # UnidentifiedImageError is an OSError
        raise PageError(f"{name} is not an image this page can read (PNG, JPEG, BMP, GIF, "
                        f"WebP, TIFF): {type(exc).__name__}.") from exc


def read_class_names(text: str | None, limits: Limits) -> list[str]:
    """The comma-separated names of the text box, within the length and count limits."""
    from celseg.engine.predictor import parse_class_names

    text = text or ""
    if len(text) > limits.max_text:
        raise PageError(f"The class list is {len(text):,} characters long; this page takes up "
                        f"to {limits.max_text:,} (celseg serve --max-text).")
    if not text.strip():
        raise PageError("Enter at least one class name, comma-separated: e.g. cat, dog, road.")
    try:
        names = parse_class_names(text)
    except CelsegError as exc:
        raise PageError(f"{exc} (this page takes up to {limits.max_classes} names).") from exc
    if len(names) > limits.max_classes:
        raise PageError(f"{len(names)} class names; this page takes up to {limits.max_classes} "
                        "(celseg serve --max-classes).")
    return names


def pixel_shares(label: np.ndarray, num_classes: int) -> list[float]:
    """Percent of the pixels of ``label`` at each position ``0 .. num_classes - 1``."""
    counts = np.bincount(label.reshape(-1), minlength=num_classes)[:num_classes]
    return [100.0 * float(c) / max(label.size, 1) for c in counts]


def overlay_picture(image: np.ndarray, label: np.ndarray, names: list[str],
                    alpha: float = 0.5, min_side: int = 0) -> Image.Image:
    """image | overlay | legend of the classes that appear, as ``celseg predict`` draws it;
    small images are enlarged (nearest neighbour) to at least ``min_side`` pixels."""
    from celseg.api.segmentation import Segmentation

    return Segmentation(image, label, tuple(names)).overlay(alpha, min_side)


def segment_upload(predictor: Predictor, path: str | Path | None, text: str | None,
                   limits: Limits, alpha: float = 0.5, min_side: int = 256) -> Result:
    """Check one request and segment it with ``predictor``; the names are checked first, as
    they are the cheaper check. ``min_side``: the picture's smallest image side (display only:
    the label map keeps the upload's size)."""
    names = read_class_names(text, limits)
    image = read_upload(path, limits)
    label = predictor.segment(image, names)
    return Result(overlay_picture(image, label, names, alpha, min_side), label, names,
                  pixel_shares(label, len(names)))
