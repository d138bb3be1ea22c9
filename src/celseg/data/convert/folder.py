"""Your own data in the project layout (``celseg make-data folder``).

Input: a folder of images, a folder of label maps with the same file stems, and a class list:

* labels are PNGs whose pixel values are class ids (positions in the class list, 0-based) and
  ``ignore`` (default 255) for unlabelled pixels; palette PNGs are read by their indices;
* colour (RGB) labels need a colour per class: a JSON class file in the ``classes.json`` form
  with a ``"color"`` per class; a colour outside that palette is an error;
* the class file is a text file with one name per line (``#`` comments and blank lines
  skipped), a JSON list of names, or the ``classes.json`` form.

Every pair is checked before anything is written: a missing partner, two images with one stem,
a size mismatch, a value that is neither a class id nor the ignore value, colour labels without
a palette. Each problem names its file. The images are split into train and val by a seeded
shuffle of their names; the output is the layout of ``common.py``, a ``config.yaml`` that trains
on it, and a report with the pixel count of every class.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

import numpy as np

from celseg.data.classes import ClassInfo, default_color, parse_classes, read_json_file
from celseg.data.convert.common import (
    IGNORE_8BIT,
    copy_file,
    image_size,
    progress_bar,
    summarize,
    write_classes,
    write_label_png,
)
from celseg.errors import DataError
from celseg.io.atomic import write_text
from celseg.io.images import open_image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
MAX_PROBLEMS = 20  # listed in one error; the count of the rest follows


def read_class_file(path: Path) -> tuple[list[str], list[str], list[tuple[int, int, int]] | None]:
    """(names, kinds, colours or None when the file gives none) from a class file."""
    if path.suffix.lower() == ".json":
        raw = read_json_file(path, "class file")
        if isinstance(raw, list):
            raw = {"classes": [{"name": n} for n in raw]}
        info = parse_classes(raw, str(path))
        given = all(isinstance(e, dict) and "color" in e for e in raw["classes"])
        names, kinds, colors = list(info.names), list(info.kinds), list(info.colors)
    else:
        if not path.is_file():
            raise DataError(f"class file not found: {path}")
        lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
        names = [ln for ln in lines if ln and not ln.startswith("#")]
        kinds, colors, given = ["thing"] * len(names), [], False
    if not names:
        raise DataError(f"class file {path} names no classes")
    if len(names) > IGNORE_8BIT:
        raise DataError(f"class file {path} names {len(names)} classes; at most {IGNORE_8BIT}")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup or any(not isinstance(n, str) or not n for n in names):
        raise DataError(f"class file {path}: duplicate or empty class names {dup}")
    return names, kinds, (colors if given else None)


def find_pairs(images: Path, labels: Path) -> tuple[list[tuple[str, Path, Path]], list[str]]:
    """([(stem, image, label)] sorted by stem, problems): every image needs ``STEM.png`` in
    ``labels`` and every label PNG an image."""
    for folder, what in ((images, "--images"), (labels, "--labels")):
        if not folder.is_dir():
            raise DataError(f"{what} {folder} is not an existing folder")
    by_stem: dict[str, list[Path]] = {}
    for p in sorted(images.iterdir()):
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES:
            by_stem.setdefault(p.stem, []).append(p)
    label_files = {p.stem: p for p in sorted(labels.iterdir())
                   if p.is_file() and p.suffix.lower() == ".png"}
    problems = [f"images {', '.join(map(str, ps))} share the name {s!r}; rename one"
                for s, ps in by_stem.items() if len(ps) > 1]
    problems += [f"image {ps[0]} has no label {labels / (s + '.png')}"
                 for s, ps in by_stem.items() if s not in label_files]
    problems += [f"label {p} has no image in {images}"
                 for s, p in label_files.items() if s not in by_stem]
    pairs = [(s, ps[0], label_files[s]) for s, ps in sorted(by_stem.items())
             if s in label_files and len(ps) == 1]
    if not by_stem and not problems:
        problems.append(f"--images {images} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return pairs, problems


def label_reader(num_classes: int, ignore: int,
                 palette: list[tuple[int, int, int]] | None) -> Callable[[Path], np.ndarray]:
    """``read(path) -> (H, W) uint8`` class ids with 255 = unlabelled; a value that is neither a
    class id nor ``ignore``, or a colour outside ``palette``, is a DataError naming the file."""
    codes = None
    if palette is not None:
        codes = {r << 16 | g << 8 | b: i for i, (r, g, b) in enumerate(palette)}

    def read(path: Path) -> np.ndarray:
        im = open_image(path, "label")
        if im.mode in ("RGB", "RGBA"):
            return _from_colours(np.asarray(im.convert("RGB")), codes, path)
        if im.mode not in ("L", "P", "I", "I;16", "I;16B", "1"):
            raise DataError(f"label {path} has mode {im.mode!r}; expected class ids (grey or "
                            "palette PNG) or RGB colours")
        raw = np.asarray(im).astype(np.int64)
        bad = ((raw < 0) | (raw >= num_classes)) & (raw != ignore)
        if bad.any():
            r, c = np.argwhere(bad)[0]
            raise DataError(f"label {path}: value {int(raw[r, c])} at row {r}, column {c} is "
                            f"neither a class id (0..{num_classes - 1}) nor the ignore value "
                            f"{ignore}")
        return np.where(raw == ignore, IGNORE_8BIT, raw).astype(np.uint8)

    return read


def _from_colours(rgb: np.ndarray, codes: dict[int, int] | None, path: Path) -> np.ndarray:
    if codes is None:
        raise DataError(f"label {path} is an RGB colour image, but the class file gives no "
                        "colours: use a JSON class file with a \"color\" per class, or save the "
                        "labels as class ids")
    flat = rgb.astype(np.int64)
    key = flat[..., 0] << 16 | flat[..., 1] << 8 | flat[..., 2]
    values, inverse = np.unique(key, return_inverse=True)
    unknown = [int(v) for v in values if int(v) not in codes]
    if unknown:
        v = unknown[0]
        raise DataError(f"label {path}: colour {(v >> 16, v >> 8 & 255, v & 255)} is not in "
                        "the class file's palette")
    return np.asarray([codes[int(v)] for v in values], np.uint8)[inverse.reshape(key.shape)]


def split_names(stems: list[str], val_share: float, seed: int = 0) -> set[str]:
    """The stems kept for validation: ``round(val_share * n)`` of them (at least one when
    ``val_share > 0``, never all), picked by a seeded shuffle."""
    if not 0 <= val_share < 1:
        raise DataError(f"--val-share must be in [0, 1), got {val_share}")
    n_val = min(len(stems) - 1, max(1, round(val_share * len(stems)))) if val_share else 0
    order = sorted(stems)
    random.Random(seed).shuffle(order)
    return set(order[:n_val])


def check_pairs(pairs: list[tuple[str, Path, Path]], read: Callable[[Path], np.ndarray],
                problems: list[str], num_classes: int) -> dict[str, np.ndarray]:
    """Read every pair once: size agreement and values; returns the pixel count of every class
    (and of ignore, last) per stem. Raises one DataError listing the problems found."""
    counts = {}
    for stem, image, label in pairs:
        try:
            w, h = image_size(image)
            ids = read(label)
        except DataError as exc:
            problems.append(str(exc))
            continue
        if ids.shape != (h, w):
            problems.append(f"label {label} is {ids.shape[1]}x{ids.shape[0]} but image {image} "
                            f"is {w}x{h} (W x H)")
            continue
        full = np.bincount(ids.reshape(-1), minlength=256)
        counts[stem] = np.append(full[:num_classes], full[IGNORE_8BIT])
    if problems:
        more = len(problems) - MAX_PROBLEMS
        raise DataError("; ".join(problems[:MAX_PROBLEMS])
                        + (f"; and {more} more problem(s)" if more > 0 else ""))
    return counts


def convert_folder(images: Path, labels: Path, classes: Path, out: Path,
                   unseen: list[str] = (), val_share: float = 0.2, ignore: int = IGNORE_8BIT,
                   progress: bool = True, claim: Callable[[], None] | None = None) -> dict:
    """Check every pair, then write ``out`` (layout, classes.json, config.yaml); returns the
    summary with per-class pixel counts. ``claim`` (the output guard) runs before writing."""
    names, kinds, colors = read_class_file(classes)
    if not 0 <= ignore <= 65535 or ignore < len(names):
        raise DataError(f"--ignore {ignore} must be a label value that is no class id "
                        f"({len(names)}..65535)")
    info = ClassInfo(tuple(names), ("seen",) * len(names), tuple(kinds),
                     tuple(colors or [default_color(i) for i in range(len(names))]),
                     IGNORE_8BIT, out.name).with_split(list(unseen))
    pairs, problems = find_pairs(images, labels)
    read = label_reader(len(names), ignore, colors)
    counts = check_pairs(pairs, read, problems, len(names))
    val = split_names([s for s, _, _ in pairs], val_share)
    planned = {split: [(s, i, lab) for s, i, lab in pairs if (s in val) == (split == "val")]
               for split in ("train", "val")}
    refuse_stale_files(out, planned)
    if claim is not None:
        claim()
    for split, chosen in planned.items():
        for stem, image, label in progress_bar(chosen, split, progress):
            write_label_png(read(label), out / "annotations" / split / f"{stem}.png", False)
            copy_file(image, out / "images" / split / f"{stem}{image.suffix.lower()}")
    write_classes(out, info)
    sides = sorted(min(image_size(i)) for _, i, _ in pairs)
    write_text(out / "config.yaml", training_config(out, sides[len(sides) // 2]))
    pixels = {}
    for split, chosen in planned.items():
        total = sum((counts[s] for s, _, _ in chosen), np.zeros(len(names) + 1, np.int64))
        pixels[split] = {**{n: int(c) for n, c in zip(names, total[:-1], strict=True)},
                         "(ignore)": int(total[-1])}
    per_split = {k: {"images": len(v), "converted": len(v), "skipped": 0}
                 for k, v in planned.items()}
    return summarize("folder", out, info, per_split, pixels=pixels)


def refuse_stale_files(out: Path, planned: dict[str, list[tuple[str, Path, Path]]]) -> None:
    """An earlier conversion into ``out`` may not leave images the new one would not write (a
    different split would put an image in train and val at once)."""
    expected = {out / "images" / split / f"{s}{i.suffix.lower()}" for split, ps in planned.items()
                for s, i, _ in ps}
    expected |= {out / "annotations" / split / f"{s}.png" for split, ps in planned.items()
                 for s, _, _ in ps}
    for sub in ("images", "annotations"):
        for path in sorted((out / sub).glob("*/*")) if (out / sub).is_dir() else []:
            if path not in expected:
                raise DataError(f"{out} holds {path} from an earlier conversion that this one "
                                "would not write; choose a new --out, or remove that folder")


def training_config(out: Path, median_side: int) -> str:
    """A config that trains on the dataset at ``out`` (crops at most 512 px, whole 32 px)."""
    crop = max(32, min(512, median_side // 32 * 32))
    root = out.resolve()
    return (f"# Trains on {root} (written by celseg make-data folder).\n"
            f"#   celseg train -c {root / 'config.yaml'}\n"
            f"#   celseg evaluate --ckpt runs/{out.name}\n"
            f"data:\n  root: {json.dumps(str(root))}\n  crop_size: {crop}\n"
            f"train:\n  out_dir: {json.dumps(f'runs/{out.name}')}\n")


def format_pixel_counts(report: dict, info_unseen: list[str]) -> str:
    """A table of the per-class pixel counts of a :func:`convert_folder` report."""
    train, val = report["pixels"]["train"], report["pixels"]["val"]
    width = max(len(n) for n in train)
    lines = [f"{'class':<{width}}  {'split':<6}  {'train px':>10}  {'val px':>10}"]
    for name in train:
        split = "" if name == "(ignore)" else ("unseen" if name in info_unseen else "seen")
        flag = "  <- no pixels" if split and train[name] + val[name] == 0 else ""
        lines.append(f"{name:<{width}}  {split:<6}  {train[name]:>10,}  {val[name]:>10,}{flag}")
    return "\n".join(lines)
