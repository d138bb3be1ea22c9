"""PASCAL VOC 2012 -> project layout (20 classes; background and boundary ignored).

Supported input (``--src`` may be ``VOCdevkit``, ``VOCdevkit/VOC2012`` or their parent)::

    VOC2012/JPEGImages/ID.jpg
    VOC2012/SegmentationClass/ID.png           # palette PNGs: 0 background, 1..20, 255 boundary
    VOC2012/ImageSets/Segmentation/{train,val}.txt
    VOC2012/SegmentationClassAug/ID.png        # optional: SBD-augmented grayscale labels
    VOC2012/ImageSets/Segmentation/{train_aug,trainaug,aug}.txt   # optional list of aug ids

With ``SegmentationClassAug`` present, training uses it (the 10,582-image augmented set: the
listed aug ids, or every aug label whose id is not in ``val.txt``); validation always uses
``SegmentationClass`` with ``val.txt``. Raw 0 (background) -> 255, k -> k - 1, 255 -> 255.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from celseg.data.convert import common
from celseg.errors import DataError

# raw id -> contiguous id; -1 marks ids that must not occur
VOC_LUT = np.full(256, -1, dtype=np.int64)
VOC_LUT[0] = 255
VOC_LUT[1:21] = np.arange(20)
VOC_LUT[255] = 255


def read_voc_label(path: Path) -> np.ndarray:
    """(H, W) uint8 contiguous ids of a VOC palette or grayscale label PNG."""
    return common.lut_map(common.read_index_png(path), VOC_LUT, path).astype(np.uint8)


def _aug_train_ids(root: Path, aug_dir: Path, val_ids: set[str]) -> list[str]:
    lists = root / "ImageSets" / "Segmentation"
    for name in ("train_aug.txt", "trainaug.txt", "aug.txt"):
        if (lists / name).is_file():
            return [i for i in common.read_id_list(lists / name) if i not in val_ids]
    return sorted(p.stem for p in aug_dir.glob("*.png") if p.stem not in val_ids)


def convert(src: Path, out: Path, *, variant: str | None = None, split_file: Path | None = None,
            progress: bool = True) -> dict:
    """Convert VOC 2012 at ``src`` into ``out``; returns the summary counts."""
    if variant not in (None, "", "20"):
        raise DataError(f"voc: unknown variant {variant!r}; the only variant is '20'")
    src, out = Path(src), Path(out)
    root = common.find_root(src, ["", "VOC2012", "VOCdevkit/VOC2012"], "JPEGImages",
                            "VOC 2012 folder")
    images = root / "JPEGImages"
    seg = root / "SegmentationClass"
    lists = root / "ImageSets" / "Segmentation"
    aug = root / "SegmentationClassAug"

    val_ids = common.read_id_list(lists / "val.txt")
    if aug.is_dir():
        train_ids, train_labels, train_source = (
            _aug_train_ids(root, aug, set(val_ids)), aug, "SegmentationClassAug")
    else:
        train_ids, train_labels, train_source = (
            common.read_id_list(lists / "train.txt"), seg, "SegmentationClass")

    info = common.shipped_classes("voc.json")
    info = common.apply_split(info, split_file)
    out.mkdir(parents=True, exist_ok=True)
    common.write_classes(out, info)

    def pairs(ids: list[str], label_dir: Path) -> list[common.Pair]:
        return [common.Pair(i, images / f"{i}.jpg", label_dir / f"{i}.png", read_voc_label)
                for i in ids]

    per_split = {
        "train": common.convert_pairs(pairs(train_ids, train_labels), out, "train", False,
                                      progress, "voc train"),
        "val": common.convert_pairs(pairs(val_ids, seg), out, "val", False, progress, "voc val"),
    }
    return common.summarize("voc", out, info, per_split, train_labels=train_source)


