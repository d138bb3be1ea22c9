"""ADE20K -> project layout: SceneParsing-150 ("150", default) or ADE20K-Full-847 ("847").

ADE20K-150 (``ADEChallengeData2016.zip``, ``--src`` is that folder or its parent)::

    ADEChallengeData2016/images/{training,validation}/ADE_*.jpg
    ADEChallengeData2016/annotations/{training,validation}/ADE_*.png   # 0 other, 1..150

Raw 0 ("other") -> 255, k -> k - 1; names from the shipped ``splits/ade150.json``.

ADE20K-Full-847 (``ADE20K_2021_17_01``), two formats:

1. the official full release: ``images/ADE/{training,validation}/**/NAME.jpg`` with
   ``NAME_seg.png`` beside it, an RGB image whose class index is ``R // 10 * 256 + G``;
2. the Mask2Former-prepared release: ``images_detectron2/{training,validation}/NAME.jpg`` and
   ``annotations_detectron2/{training,validation}/NAME.tif`` (or ``.png``), 16-bit train ids
   0..846 with 65535 = ignore.

The 847-class selection is Mask2Former's ``ADE20K_SEM_SEG_FULL_CATEGORIES`` (it is not part of
the official release, and this package does not ship it): put Mask2Former's
``mask2former/data/datasets/register_ade20k_full.py``, or a JSON list of ``{"name", "id"}`` in
train-id order named ``ade20k_full_categories.json``, into ``--src``. Labels are written as 16-bit
PNGs with 65535 = ignore. All classes are "seen" unless a split file says otherwise.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np

from celseg.data.classes import ClassInfo, default_color
from celseg.data.convert.common import (
    IGNORE_16BIT,
    Pair,
    apply_split,
    convert_pairs,
    find_dir,
    find_file,
    find_root,
    lut_map,
    open_image,
    read_index_png,
    shipped_classes,
    summarize,
    write_classes,
)
from celseg.errors import DataError

SPLITS = {"train": "training", "val": "validation"}
CATEGORY_FILES = ("ade20k_full_categories.json", "register_ade20k_full.py")

ADE150_LUT = np.full(256, -1, dtype=np.int64)
ADE150_LUT[0] = 255
ADE150_LUT[1:151] = np.arange(150)


def read_ade150_label(path: Path) -> np.ndarray:
    return lut_map(read_index_png(path), ADE150_LUT, path).astype(np.uint8)


def decode_full_seg(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 ``*_seg.png`` -> (H, W) int64 class index ``R // 10 * 256 + G``."""
    r = rgb[..., 0].astype(np.int64)
    g = rgb[..., 1].astype(np.int64)
    return r // 10 * 256 + g


def read_categories(path: Path) -> list[dict]:
    """Mask2Former's 847 categories (``name``, raw ``id``) in train-id order."""
    if path.suffix == ".json":
        try:
            cats = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise DataError(f"{path} is not valid JSON: {exc}") from exc
    else:  # read the literal list from the Python file without importing it
        cats = None
        for node in ast.parse(path.read_text()).body:
            if (isinstance(node, ast.Assign) and any(
                    isinstance(t, ast.Name) and t.id == "ADE20K_SEM_SEG_FULL_CATEGORIES"
                    for t in node.targets)):
                cats = ast.literal_eval(node.value)
        if cats is None:
            raise DataError(f"{path} defines no ADE20K_SEM_SEG_FULL_CATEGORIES list")
    if not isinstance(cats, list) or not all(isinstance(c, dict) and "name" in c and "id" in c
                                             for c in cats):
        raise DataError(f"{path}: expected a list of {{'name', 'id'}} entries")
    if all("trainId" in c for c in cats):
        cats = sorted(cats, key=lambda c: c["trainId"])
        if [c["trainId"] for c in cats] != list(range(len(cats))):
            raise DataError(f"{path}: trainId values must run 0..N-1")
    return cats


def _convert_150(src: Path, out: Path, split_file: Path | None, progress: bool) -> dict:
    root = find_root(src, ["", "ADEChallengeData2016", "ade/ADEChallengeData2016"], "annotations",
                     "ADEChallengeData2016 folder")
    info = apply_split(shipped_classes("ade150.json"), split_file)
    out.mkdir(parents=True, exist_ok=True)
    write_classes(out, info)
    per_split = {}
    for split, ade_split in SPLITS.items():
        img_dir = find_dir(root, [f"images/{ade_split}"], f"ADE20K {ade_split} images")
        ann_dir = find_dir(root, [f"annotations/{ade_split}"], f"ADE20K {ade_split} annotations")
        imgs = sorted(img_dir.glob("*.jpg"))
        if not imgs:
            raise DataError(f"no .jpg images in {img_dir}")
        pairs = [Pair(p.stem, p, ann_dir / f"{p.stem}.png", read_ade150_label) for p in imgs]
        per_split[split] = convert_pairs(pairs, out, split, False, progress, f"ade150 {split}")
    return summarize("ade20k-150", out, info, per_split, format="ADEChallengeData2016")


def _convert_847(src: Path, out: Path, split_file: Path | None, progress: bool) -> dict:
    candidates = ["", "ADE20K_2021_17_01", "ade/ADE20K_2021_17_01"]
    try:
        root = find_root(src, candidates, "images_detectron2", "prepared ADE20K-Full")
        prepared = True
    except DataError:
        root = find_root(src, candidates, "images/ADE", "ADE20K_2021_17_01 folder")
        prepared = False
    cat_path = find_file([src, root, root.parent], CATEGORY_FILES)
    if cat_path is None:
        raise DataError(
            "ADE20K-Full needs Mask2Former's 847-class list: put register_ade20k_full.py "
            "(mask2former/data/datasets/) or ade20k_full_categories.json into " + str(src))
    cats = read_categories(cat_path)
    n = len(cats)
    info = ClassInfo(tuple(str(c["name"]) for c in cats), ("seen",) * n, ("thing",) * n,
                     tuple(default_color(i) for i in range(n)), IGNORE_16BIT, f"ade20k-full-{n}")
    info = apply_split(info, split_file)
    out.mkdir(parents=True, exist_ok=True)
    write_classes(out, info)

    per_split = {}
    if prepared:
        lut = np.full(IGNORE_16BIT + 1, -1, dtype=np.int64)
        lut[:n] = np.arange(n)
        lut[IGNORE_16BIT] = IGNORE_16BIT

        def read_label(path: Path) -> np.ndarray:
            return lut_map(read_index_png(path), lut, path)

        for split, ade_split in SPLITS.items():
            img_dir = find_dir(root, [f"images_detectron2/{ade_split}"], f"{ade_split} images")
            ann_dir = find_dir(root, [f"annotations_detectron2/{ade_split}"],
                               f"{ade_split} annotations")
            pairs = []
            for p in sorted(img_dir.glob("*.jpg")):
                label = ann_dir / f"{p.stem}.tif"
                if not label.is_file() and (ann_dir / f"{p.stem}.png").is_file():
                    label = ann_dir / f"{p.stem}.png"
                pairs.append(Pair(p.stem, p, label, read_label))
            per_split[split] = convert_pairs(pairs, out, split, True, progress, f"ade847 {split}")
        fmt = "Mask2Former prepared"
    else:
        max_raw = max(int(c["id"]) for c in cats)
        raw_lut = np.full(max(max_raw, 255 // 10 * 256 + 255) + 1, IGNORE_16BIT, dtype=np.int64)
        raw_lut[[int(c["id"]) for c in cats]] = np.arange(n)

        def read_label(path: Path) -> np.ndarray:
            im = open_image(path)
            if im.mode != "RGB":
                raise DataError(f"ADE20K-Full label {path} has mode {im.mode!r}; expected RGB")
            return lut_map(decode_full_seg(np.asarray(im)), raw_lut, path)

        for split, ade_split in SPLITS.items():
            img_dir = find_dir(root, [f"images/ADE/{ade_split}"], f"ADE20K {ade_split} images")
            imgs = sorted(img_dir.rglob("*.jpg"), key=lambda p: p.name)
            pairs = [Pair(p.stem, p, p.with_name(f"{p.stem}_seg.png"), read_label) for p in imgs]
            per_split[split] = convert_pairs(pairs, out, split, True, progress, f"ade847 {split}")
        fmt = "official full release (RGB-encoded _seg.png)"
    return summarize(f"ade20k-full-{n}", out, info, per_split, format=fmt,
                     categories_file=str(cat_path))


def convert(src: Path, out: Path, *, variant: str | None = None, split_file: Path | None = None,
            progress: bool = True) -> dict:
    """Convert ADE20K at ``src`` (variant "150", default, or "847") into ``out``."""
    # accept "150" as well as "ade20k-150" / "context-459"
    variant = (variant or "").rsplit("-", 1)[-1] or "150"
    src, out = Path(src), Path(out)
    if variant == "150":
        return _convert_150(src, out, split_file, progress)
    if variant in ("847", "full"):
        return _convert_847(src, out, split_file, progress)
    raise DataError(f"ade20k: unknown variant {variant!r}; supported: '150', '847'")
