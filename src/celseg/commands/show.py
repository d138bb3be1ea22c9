"""``celseg show``: a contact sheet of dataset samples (image | ground truth) with a legend.

Library imports sit inside the functions so that ``celseg --help`` and the CLI start fast.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from celseg.data.classes import load_classes
from celseg.data.dataset import SegmentationDataset, read_label
from celseg.errors import DataError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("root", type=Path, help="dataset folder (with classes.json)")
    parser.add_argument("--split", default="val", help="split to show (default val)")
    parser.add_argument("--n", type=int, default=8, help="number of samples (default 8)")
    parser.add_argument("--out", type=Path, default=None,
                        help="output PNG (default ROOT/contact_sheet_SPLIT.png)")
    parser.add_argument("--pred", type=Path, default=None,
                        help="optional folder of predicted label PNGs (same names) shown as a "
                        "third column")
    parser.add_argument("--scale", type=int, default=0,
                        help="integer upscaling of each image (default 0: automatic)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing --out file that celseg did not write")


def select(n_items: int, n: int) -> list[int]:
    """``n`` indices spread evenly over ``n_items`` (deterministic)."""
    n = max(1, min(n, n_items))
    return sorted({int(round(k)) for k in np.linspace(0, n_items - 1, n)})


def run(args: argparse.Namespace) -> int:
    from celseg.io.atomic import save_image
    from celseg.io.outputs import OutputGuard
    from celseg.viz.overlay import contact_sheet

    if args.n < 1 or args.scale < 0:
        raise DataError(f"--n must be at least 1 and --scale at least 0, got {args.n} and "
                        f"{args.scale}")
    out = args.out or args.root / f"contact_sheet_{args.split}.png"
    guard = OutputGuard("show", overwrite=args.overwrite).read_dataset(args.root)
    guard.read_dirs(args.pred).claim(files=[out], record_files=False)
    info = load_classes(args.root)
    ds = SegmentationDataset(args.root, args.split, class_info=info)
    images, labels, preds, names = [], [], [], []
    for i in select(len(ds), args.n):
        image, label = ds.load(i)
        images.append(image)
        labels.append(label.astype(np.uint8))
        name = ds.samples[i][0].stem
        names.append(name)
        if args.pred is not None:
            pred_path = args.pred / f"{name}.png"
            if not pred_path.is_file():
                raise DataError(f"prediction not found: {pred_path}")
            preds.append(read_label(pred_path))
    sheet = contact_sheet(images, labels, info, preds=preds if args.pred else None,
                          names=names, scale=args.scale)
    save_image(sheet, out)
    guard.record(out)
    print(f"wrote {out} ({len(images)} samples of {args.root}/{args.split}, "
          f"{sheet.width}x{sheet.height} px)")
    return 0
