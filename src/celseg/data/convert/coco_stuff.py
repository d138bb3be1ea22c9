"""COCO-Stuff 164k -> project layout (171 classes, contiguous ids 0..170).

Supported input (``--src`` is the folder holding these, e.g. ``cocostuff/`` or ``coco/``)::

    images/{train2017,val2017}/ID.jpg          # or {train2017,val2017}/ID.jpg (COCO zips)
    annotations/{train2017,val2017}/ID.png     # stuffthingmaps_trainval2017.zip, extracted;
                                               # also stuffthingmaps_trainval2017/{...}/ID.png

The stuffthingmaps PNGs hold raw ids 0..181 (COCO category id - 1) and 255 = unlabelled. The 171
ids in use map to 0..170 in the order of ``splits/coco_stuff.json`` (``raw_ids``); the 11 unused
raw ids (the 11 ids COCO never assigned) are treated as unlabelled, any value above 181 other than
255 is an error naming the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from celseg.data.convert.common import (
    Pair,
    apply_split,
    convert_pairs,
    find_dir,
    load_split_json,
    lut_map,
    read_index_png,
    shipped_classes,
    summarize,
    write_classes,
)
from celseg.errors import DataError

SPLITS = {"train": "train2017", "val": "val2017"}


def coco_stuff_lut() -> np.ndarray:
    """(256,) raw stuffthingmaps id -> contiguous id (255 ignore, -1 = must not occur)."""
    raw_ids = load_split_json("coco_stuff.json")["raw_ids"]
    lut = np.full(256, -1, dtype=np.int64)
    lut[:182] = 255
    lut[255] = 255
    lut[np.asarray(raw_ids)] = np.arange(len(raw_ids))
    return lut


def convert(src: Path, out: Path, *, variant: str | None = None, split_file: Path | None = None,
            progress: bool = True) -> dict:
    """Convert COCO-Stuff 164k at ``src`` into ``out``; returns the summary counts."""
    if variant not in (None, "", "171", "164k"):
        raise DataError(f"coco-stuff: unknown variant {variant!r}; supported: '171' (164k)")
    src, out = Path(src), Path(out)
    lut = coco_stuff_lut()

    def read_label(path: Path) -> np.ndarray:
        return lut_map(read_index_png(path), lut, path).astype(np.uint8)

    info = apply_split(shipped_classes("coco_stuff.json"), split_file)
    out.mkdir(parents=True, exist_ok=True)
    write_classes(out, info)

    per_split = {}
    for split, coco_split in SPLITS.items():
        ann_dir = find_dir(src, [f"annotations/{coco_split}",
                                 f"stuffthingmaps_trainval2017/{coco_split}",
                                 f"stuffthingmaps/{coco_split}"],
                           f"COCO-Stuff {coco_split} stuffthingmaps")
        img_dir = find_dir(src, [f"images/{coco_split}", coco_split],
                           f"COCO {coco_split} images")
        labels = sorted(ann_dir.glob("*.png"))
        if not labels:
            raise DataError(f"no label PNGs in {ann_dir}")
        pairs = [Pair(p.stem, img_dir / f"{p.stem}.jpg", p, read_label) for p in labels]
        per_split[split] = convert_pairs(pairs, out, split, False, progress,
                                         f"coco-stuff {split}")
    return summarize("coco-stuff", out, info, per_split)
