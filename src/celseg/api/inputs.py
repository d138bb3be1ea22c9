"""What a user hands to ``segment`` and ``celseg predict``: images in any form, and many of them.

* :func:`to_rgb` turns a path, a PIL image or an array into an (H, W, 3) uint8 array;
* :func:`expand_images` turns files, folders and glob patterns into a list of image files;
* :func:`output_names` gives each input a distinct output name, derived from its file name.
"""

from __future__ import annotations

import glob
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from celseg.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
GLOB_CHARS = "*?["


def to_rgb(image: str | Path | Image.Image | np.ndarray, max_size: int = 0) -> np.ndarray:
    """(H, W, 3) uint8 RGB from a path, a PIL image or an array, turned as its EXIF orientation
    says and shrunk so that its longer side is at most ``max_size`` when that is > 0.

    Arrays may be (H, W) grey or (H, W, 3|4) colour, uint8 or float in [0, 1] (alpha dropped).
    """
    from celseg.io.images import open_rgb

    if isinstance(image, (str, Path)):
        pil = ImageOps.exif_transpose(open_rgb(image))  # phone photos: as a viewer shows them
    elif isinstance(image, Image.Image):
        pil = ImageOps.exif_transpose(image).convert("RGB")
    elif isinstance(image, np.ndarray):
        pil = Image.fromarray(_array_to_uint8(image))
    else:
        raise DataError(f"cannot segment a {type(image).__name__}: give a file path, a PIL "
                        "image or an (H, W, 3) array")
    if max_size and max(pil.size) > max_size:
        scale = max_size / max(pil.size)
        pil = pil.resize((max(1, round(pil.width * scale)), max(1, round(pil.height * scale))),
                         Image.BILINEAR)
    return np.asarray(pil.convert("RGB"))


def _array_to_uint8(array: np.ndarray) -> np.ndarray:
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (3, 4) or 0 in array.shape:
        raise DataError(f"image array of shape {array.shape}: expected (H, W), (H, W, 3) or "
                        "(H, W, 4)")
    array = array[..., :3]
    if array.dtype == np.uint8:
        return np.ascontiguousarray(array)
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all() or array.min() < 0 or array.max() > 1:
            raise DataError(f"float image array with values in [{array.min()}, {array.max()}]: "
                            "expected values in [0, 1] (or give uint8)")
        return (array * 255 + 0.5).astype(np.uint8)
    raise DataError(f"image array of dtype {array.dtype}: expected uint8 or float in [0, 1]")


def expand_images(items: Sequence[str | Path]) -> tuple[list[Path], list[Path]]:
    """(image files, folders given) from files, folders (their images, not recursive) and glob
    patterns (``**`` recursive), in the order given, each file once.

    A missing file, a folder without images and a pattern that matches none are errors naming
    them.
    """
    files: list[Path] = []
    folders: list[Path] = []
    problems = []
    for item in map(str, items):
        path = Path(item).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if _is_image(p))
            folders.append(path)
            if not found:
                problems.append(f"folder {item} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        elif path.is_file():
            found = [path]
        elif any(c in item for c in GLOB_CHARS):
            found = sorted(Path(p) for p in glob.glob(item, recursive=True) if _is_image(Path(p)))
            if not found:
                problems.append(f"pattern {item!r} matches no image files")
        else:
            found = []
            problems.append(f"image file not found: {item}")
        files.extend(found)
    if problems:
        raise DataError("; ".join(problems))
    seen: set[Path] = set()
    unique = [p for p in files if not (p.resolve() in seen or seen.add(p.resolve()))]
    return unique, folders


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES


def output_names(paths: Sequence[str | Path]) -> list[str]:
    """One distinct name per input: its file stem, and for inputs that share a stem
    (``a/x.png``, ``b/x.jpg``) the stem numbered in the order given (``x-1``, ``x-2``)."""
    stems = [Path(p).stem for p in paths]
    taken = set(stems)
    counts = {s: stems.count(s) for s in stems}
    names, numbered = [], {}
    for stem in stems:
        if counts[stem] == 1:
            names.append(stem)
            continue
        k = numbered.get(stem, 0)
        while True:
            k += 1
            candidate = f"{stem}-{k}"
            if candidate not in taken:
                break
        numbered[stem] = k
        taken.add(candidate)
        names.append(candidate)
    return names
