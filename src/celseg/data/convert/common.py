"""Shared machinery of the dataset converters.

A converter turns an official release into the project layout (see ``docs/CONTRACTS.md``)::

    OUT/classes.json
    OUT/images/{train,val}/NAME.jpg|png      # the original image bytes, copied
    OUT/annotations/{train,val}/NAME.png     # contiguous class ids, ignore = classes.json's

Labels are 8-bit 'L' PNGs with 255 = ignore when the dataset has at most 255 classes, and 16-bit
PNGs with 65535 = ignore otherwise (Context-459, ADE20K-847).

Each converter lists ``Pair`` s (one image + one raw label + a function that turns the raw label
into contiguous ids) and hands them to ``convert_pairs``, which is resumable: a pair whose outputs
already exist, open, and have the source image's size is skipped. Every write goes to a temporary
file that is renamed into place, so an interrupted run never leaves a half-written file behind.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from celseg.data.classes import ClassInfo, load_classes, parse_classes, read_json_file
from celseg.errors import DataError

SPLITS_DIR = Path(__file__).resolve().parent.parent / "splits"
IGNORE_8BIT = 255
IGNORE_16BIT = 65535


@dataclass(frozen=True)
class Pair:
    """One sample to convert: ``read_label(label_path)`` returns (H, W) contiguous ids."""

    name: str
    image: Path
    label: Path
    read_label: Callable[[Path], np.ndarray]


# ----------------------------------------------------------------------------- class lists
def load_split_json(filename: str) -> dict:
    """The raw JSON of a shipped class list (``celseg/data/splits/FILENAME``)."""
    return read_json_file(SPLITS_DIR / filename, "shipped class list")


def shipped_classes(filename: str) -> ClassInfo:
    return parse_classes(load_split_json(filename), str(SPLITS_DIR / filename))


def read_split_file(path: Path) -> list[str]:
    """Unseen class names from a user split file: a JSON list, or ``{"unseen": [...]}``."""
    raw = read_json_file(path, "split file")
    if isinstance(raw, dict):
        raw = raw.get("unseen")
    if not isinstance(raw, list) or not all(isinstance(n, str) for n in raw):
        raise DataError(f"split file {path}: expected a JSON list of unseen class names "
                        '(or {"unseen": [...]})')
    return raw


def apply_split(info: ClassInfo, split_file: Path | None) -> ClassInfo:
    """``info`` with the unseen classes of ``split_file`` (unknown names are a DataError)."""
    if split_file is None:
        return info
    return info.with_split(read_split_file(split_file))


def write_classes(out: Path, info: ClassInfo) -> None:
    """Write ``OUT/classes.json`` and check that it reads back."""
    info.save(out / "classes.json")
    load_classes(out)


# ----------------------------------------------------------------------------- locating files
def find_dir(src: Path, candidates: Iterable[str], what: str) -> Path:
    """The first of ``src/candidate`` that is a folder; a DataError listing all tried otherwise."""
    tried = []
    for cand in candidates:
        path = src / cand if cand else src
        tried.append(str(path))
        if path.is_dir():
            return path
    raise DataError(f"{what} not found; looked for: {', '.join(tried)}")


def find_root(src: Path, candidates: Iterable[str], marker: str, what: str) -> Path:
    """The first ``src/candidate`` holding ``marker`` (a file or folder); DataError otherwise."""
    tried = []
    for cand in candidates:
        path = src / cand if cand else src
        tried.append(str(path / marker))
        if (path / marker).exists():
            return path
    raise DataError(f"{what} not found under {src}; looked for: {', '.join(tried)}")


def find_file(roots: Iterable[Path], names: Iterable[str]) -> Path | None:
    names = list(names)
    for root in roots:
        for name in names:
            if (root / name).is_file():
                return root / name
    return None


def read_id_list(path: Path) -> list[str]:
    """Image ids from an ImageSets-style list (one id per line, extra columns ignored)."""
    if not path.is_file():
        raise DataError(f"image list not found: {path}")
    ids = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
    if not ids:
        raise DataError(f"image list {path} is empty")
    return ids


# ----------------------------------------------------------------------------- reading
def open_image(path: Path) -> Image.Image:
    """Open and fully decode an image; missing, corrupt or oversized files raise a DataError
    naming them (``celseg.io.images``)."""
    from celseg.io.images import open_image as guarded_open

    return guarded_open(path)


def image_size(path: Path) -> tuple[int, int]:
    """(W, H) from the file header only; DataError when missing, unreadable or oversized."""
    from celseg.io.images import image_size as guarded_size

    return guarded_size(path)


def read_index_png(path: Path) -> np.ndarray:
    """(H, W) integer array of a single-channel label image (palette indices for 'P' PNGs).

    Palette PNGs (VOC ``SegmentationClass``) are read as their indices, never as colours.
    Colour ('RGB') label images are refused: their ids would depend on the colour map.
    """
    im = open_image(path)
    if im.mode in ("RGB", "RGBA", "LA", "CMYK", "YCbCr"):
        raise DataError(f"label image {path} has colour mode {im.mode!r}; expected palette or "
                        "grayscale class ids")
    return np.asarray(im)


def lut_map(raw: np.ndarray, lut: np.ndarray, path: Path) -> np.ndarray:
    """Map raw ids through ``lut`` (-1 = invalid raw id -> DataError naming file and value)."""
    raw = raw.astype(np.int64)
    bad = (raw < 0) | (raw >= len(lut))
    if bad.any():
        raise DataError(f"label {path}: unexpected value {int(raw[bad][0])} "
                        f"(valid raw ids are 0..{len(lut) - 1})")
    out = lut[raw]
    if (out < 0).any():
        raise DataError(f"label {path}: unexpected value {int(raw[out < 0][0])}")
    return out


# ----------------------------------------------------------------------------- writing
def _tmp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def write_label_png(label: np.ndarray, path: Path, sixteen_bit: bool) -> None:
    """Atomically write (H, W) ids as an 8-bit 'L' or a 16-bit grayscale PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    dtype = np.uint16 if sixteen_bit else np.uint8
    info = np.iinfo(dtype)
    if label.size and (label.min() < 0 or label.max() > info.max):
        raise DataError(f"label for {path} has ids outside {dtype.__name__}")
    tmp = _tmp_path(path)
    Image.fromarray(np.ascontiguousarray(label.astype(dtype))).save(tmp, format="PNG")
    tmp.replace(path)


def copy_file(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_path(dst)
    shutil.copyfile(src, tmp)
    tmp.replace(dst)


def output_ok(path: Path, size: tuple[int, int]) -> bool:
    """True when ``path`` exists, passes PIL's integrity check and has ``size`` (W, H)."""
    if not path.is_file():
        return False
    try:
        with Image.open(path) as im:
            if im.size != size:
                return False
            im.verify()
        return True
    except Exception:  # noqa: BLE001 - any failure means "convert it again"
        return False


# ----------------------------------------------------------------------------- the loop
def progress_bar(items: list, desc: str, enabled: bool) -> Iterable:
    if not enabled:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit="img", dynamic_ncols=True)


def convert_pairs(pairs: list[Pair], out: Path, split: str, sixteen_bit: bool,
                  progress: bool = True, desc: str = "") -> dict[str, int]:
    """Convert ``pairs`` into ``OUT/images/SPLIT`` and ``OUT/annotations/SPLIT``.

    Returns counts ``{"images", "converted", "skipped", "labelled_pixels", "ignored_pixels"}``
    (pixel counts cover converted images only).
    """
    img_dir = out / "images" / split
    ann_dir = out / "annotations" / split
    ignore = IGNORE_16BIT if sixteen_bit else IGNORE_8BIT
    counts = {"images": len(pairs), "converted": 0, "skipped": 0, "labelled_pixels": 0,
              "ignored_pixels": 0}
    for pair in progress_bar(pairs, desc or f"{split}", progress):
        size = image_size(pair.image)
        img_out = img_dir / f"{pair.name}{pair.image.suffix.lower()}"
        ann_out = ann_dir / f"{pair.name}.png"
        if output_ok(img_out, size) and output_ok(ann_out, size):
            counts["skipped"] += 1
            continue
        open_image(pair.image)  # a corrupt image is an error now, not at training time
        if not pair.label.is_file():
            raise DataError(f"missing file: {pair.label} (label of {pair.image})")
        label = pair.read_label(pair.label)
        if label.ndim != 2 or (label.shape[1], label.shape[0]) != size:
            raise DataError(f"label {pair.label} has shape {tuple(label.shape)} but image "
                            f"{pair.image} is {size[1]}x{size[0]} (H x W)")
        write_label_png(label, ann_out, sixteen_bit)
        copy_file(pair.image, img_out)
        counts["converted"] += 1
        n_ignored = int((label == ignore).sum())
        counts["ignored_pixels"] += n_ignored
        counts["labelled_pixels"] += int(label.size) - n_ignored
    return counts


def summarize(dataset: str, out: Path, info: ClassInfo, per_split: dict[str, dict[str, int]],
              **extra: object) -> dict:
    """The summary a converter returns (and ``make-data`` prints)."""
    summary = {
        "dataset": dataset,
        "out": str(out),
        "num_classes": info.num_classes,
        "ignore_index": info.ignore_index,
        "unseen": [info.names[i] for i in info.unseen_ids],
        "splits": per_split,
        "converted": sum(c["converted"] for c in per_split.values()),
        "skipped": sum(c["skipped"] for c in per_split.values()),
    }
    summary.update(extra)
    return summary
