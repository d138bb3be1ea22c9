"""PASCAL Context (59 or 459 classes) -> project layout.

Two input formats are supported (``--src`` may be ``VOCdevkit``, ``VOCdevkit/VOC2010`` or the
parent of ``VOCdevkit``):

1. The official release (train + val)::

       VOC2010/JPEGImages/ID.jpg                  # VOCtrainval_03-May-2010.tar
       VOC2010/trainval/ID.mat                    # trainval.tar.gz: 'LabelMap', ids of labels.txt
       VOC2010/labels.txt                         # "1: accordion" ... "459: ..." (required)
       VOC2010/pascalcontext_{train,val}.txt      # image lists; else ImageSets/Main/{train,val}.txt

2. The detectron2 (ov-seg / SAN) prepared validation set::

       VOC2010/annotations_detectron2/pc59_val/ID.png    # 0..58 in 59_labels.txt order, 255 ignore
       VOC2010/annotations_detectron2/pc459_val/ID.tif   # uint16 0..458 (labels.txt id - 1)
       VOC2010/59_labels.txt, VOC2010/labels.txt          # required to name the ids

Context-59 uses the shipped ``splits/context59.json`` (49 seen / 10 unseen; each name is looked up
in ``labels.txt``), everything else -> 255. Context-459 takes its names from the user's
``labels.txt`` (no list is shipped) and writes 16-bit labels with 65535 = ignore; all 459 classes
are "seen" unless a split file says otherwise (it is an open-vocabulary evaluation set).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from celseg.data.classes import ClassInfo, default_color
from celseg.data.convert.common import (
    IGNORE_16BIT,
    Pair,
    apply_split,
    convert_pairs,
    find_file,
    find_root,
    lut_map,
    read_id_list,
    read_index_png,
    shipped_classes,
    summarize,
    write_classes,
)
from celseg.errors import DataError


def read_labels_txt(path: Path) -> dict[int, str]:
    """``{id: name}`` of a Context ``labels.txt`` ("ID: name" per line)."""
    names: dict[int, str] = {}
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        if ":" not in line:
            raise DataError(f"{path}:{lineno}: expected 'ID: name', got {line!r}")
        idx, name = line.split(":", 1)
        try:
            names[int(idx.strip())] = name.strip()
        except ValueError:
            raise DataError(f"{path}:{lineno}: expected an integer id, got {idx!r}") from None
    if not names:
        raise DataError(f"{path} lists no classes")
    return names


def read_59_labels(path: Path) -> list[str]:
    """Names in id order from ``59_labels.txt`` (lines "k: name" or "name")."""
    return [line.split(":")[-1].strip() for line in path.read_text().splitlines()
            if line.split(":")[-1].strip()]


def read_mat_labelmap(path: Path) -> np.ndarray:
    import scipy.io

    if not path.is_file():
        raise DataError(f"missing file: {path}")
    try:
        mat = scipy.io.loadmat(str(path))
    except Exception as exc:  # noqa: BLE001 - scipy raises many types for a bad file
        raise DataError(f"corrupt or unreadable .mat file {path}: {exc}") from exc
    if "LabelMap" not in mat:
        raise DataError(f"{path} has no 'LabelMap' variable (keys: "
                        f"{', '.join(k for k in mat if not k.startswith('__'))})")
    return np.asarray(mat["LabelMap"])


def _lut_459_to_59(labels: dict[int, str], info59: ClassInfo, labels_path: Path) -> np.ndarray:
    by_name = {n: i for i, n in labels.items()}
    missing = [n for n in info59.names if n not in by_name]
    if missing:
        raise DataError(f"{labels_path} lacks Context-59 class names {missing}")
    lut = np.full(max(labels) + 1, 255, dtype=np.int64)
    for k, name in enumerate(info59.names):
        lut[by_name[name]] = k
    return lut


def _info_459(labels: dict[int, str], labels_path: Path) -> ClassInfo:
    ids = sorted(labels)
    if ids != list(range(1, len(ids) + 1)):
        raise DataError(f"{labels_path}: ids must run 1..N without gaps")
    names = tuple(labels[i] for i in ids)
    if len(set(names)) != len(names):
        raise DataError(f"{labels_path}: duplicate class names")
    n = len(names)
    colors = tuple(default_color(i) for i in range(n))
    return ClassInfo(names, ("seen",) * n, ("thing",) * n, colors, IGNORE_16BIT,
                     f"pascal-context-{n}")


def convert(src: Path, out: Path, *, variant: str | None = None, split_file: Path | None = None,
            progress: bool = True) -> dict:
    """Convert PASCAL Context at ``src`` (variant "59", default, or "459") into ``out``."""
    # accept "150" as well as "ade20k-150" / "context-459"
    variant = (variant or "").rsplit("-", 1)[-1] or "59"
    if variant not in ("59", "459"):
        raise DataError(f"context: unknown variant {variant!r}; supported: '59', '459'")
    src, out = Path(src), Path(out)
    root = find_root(src, ["", "VOC2010", "VOCdevkit/VOC2010"], "JPEGImages", "VOC 2010 folder")
    images = root / "JPEGImages"
    search = [root, root / "trainval", root.parent, src]
    labels_path = find_file(search, ["labels.txt"])
    if labels_path is None:
        raise DataError(f"PASCAL Context labels.txt not found in {', '.join(map(str, search))}; "
                        "it comes with the official release (trainval.tar.gz / labels.txt)")
    labels = read_labels_txt(labels_path)

    mat_dir = root / "trainval"
    d2_dir = root / "annotations_detectron2" / f"pc{variant}_val"
    if variant == "59":
        info = shipped_classes("context59.json")
        lut = _lut_459_to_59(labels, info, labels_path)
    else:
        info = _info_459(labels, labels_path)
        lut = np.full(max(labels) + 1, IGNORE_16BIT, dtype=np.int64)
        lut[1:] = np.arange(max(labels))
    info = apply_split(info, split_file)
    sixteen = variant == "459"

    if mat_dir.is_dir() and any(mat_dir.glob("*.mat")):
        fmt = "official .mat"

        def read_label(path: Path) -> np.ndarray:
            return lut_map(read_mat_labelmap(path), lut, path)

        split_ids = {}
        for split in ("train", "val"):
            lst = find_file([root, root.parent, src], [f"pascalcontext_{split}.txt"])
            split_ids[split] = read_id_list(lst or root / "ImageSets" / "Main" / f"{split}.txt")
        split_pairs = {s: [Pair(i, images / f"{i}.jpg", mat_dir / f"{i}.mat", read_label)
                           for i in ids] for s, ids in split_ids.items()}
    elif d2_dir.is_dir():
        fmt = "detectron2 prepared (val only)"
        if variant == "59":
            p59 = find_file(search, ["59_labels.txt"])
            if p59 is None:
                raise DataError(f"59_labels.txt not found in {', '.join(map(str, search))}; it "
                                f"names the ids of {d2_dir}")
            order = read_59_labels(p59)
            if len(order) != 59:
                raise DataError(f"{p59} lists {len(order)} names; expected 59")
            d2_lut = np.full(256, -1, dtype=np.int64)
            d2_lut[255] = 255
            d2_lut[:59] = [info.index(n) for n in order]
        else:
            d2_lut = np.full(IGNORE_16BIT + 1, -1, dtype=np.int64)
            d2_lut[: len(labels)] = np.arange(len(labels))
            d2_lut[IGNORE_16BIT] = IGNORE_16BIT

        def read_label(path: Path) -> np.ndarray:
            return lut_map(read_index_png(path), d2_lut, path)

        ext = "png" if variant == "59" else "tif"
        files = sorted(d2_dir.glob(f"*.{ext}"))
        if not files:
            raise DataError(f"no .{ext} labels in {d2_dir}")
        split_pairs = {"val": [Pair(p.stem, images / f"{p.stem}.jpg", p, read_label)
                               for p in files]}
    else:
        raise DataError(f"no PASCAL Context labels found: neither {mat_dir}/*.mat nor {d2_dir}")

    if sixteen:
        info = dataclasses.replace(info, ignore_index=IGNORE_16BIT)
    out.mkdir(parents=True, exist_ok=True)
    write_classes(out, info)
    per_split = {s: convert_pairs(p, out, s, sixteen, progress, f"context-{variant} {s}")
                 for s, p in split_pairs.items()}
    return summarize(f"context-{variant}", out, info, per_split, format=fmt,
                     labels_file=str(labels_path))
