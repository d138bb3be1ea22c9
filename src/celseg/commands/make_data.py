"""``celseg make-data``: generate the synthetic benchmark or convert a real dataset."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from celseg.errors import DataError

REAL = ("voc", "coco-stuff", "context", "ade20k")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="'synthetic' to generate the embedded benchmark, or a real "
                        f"dataset to convert: {', '.join(REAL)}")
    parser.add_argument("--out", required=True, type=Path,
                        help="output folder (the dataset layout of docs/CONTRACTS.md)")
    parser.add_argument("--seed", type=int, default=0, help="synthetic: random seed (default 0)")
    parser.add_argument("--train", type=int, default=1200,
                        help="synthetic: number of training images (default 1200)")
    parser.add_argument("--val", type=int, default=300,
                        help="synthetic: number of validation images (default 300)")
    parser.add_argument("--size", type=int, default=128,
                        help="synthetic: image side in pixels (default 128)")
    parser.add_argument("--captions", type=int, default=3000,
                        help="synthetic: number of captioned images for VLM pretraining "
                        "(default 3000; 10%% of them form the caption val split)")
    parser.add_argument("--workers", type=int, default=1,
                        help="synthetic: worker processes (default 1; output does not depend "
                        "on it)")
    parser.add_argument("--src", type=Path, default=None,
                        help="real datasets: folder of the raw download")
    parser.add_argument("--variant", default=None,
                        help="variant of the benchmark: synthetic 'ov' is the second world of "
                        "names (open-vocabulary transfer); real datasets e.g. ade20k-150 / 847, "
                        "context-59 / 459; default: the first synthetic world, the converter's")
    parser.add_argument("--split-file", type=Path, default=None,
                        help="real datasets: JSON file naming the unseen classes "
                        "(default: the published split)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--overwrite", action="store_true",
                        help="write into a non-empty --out folder that celseg did not make")


def _run_synthetic(args: argparse.Namespace) -> int:
    from celseg.data.synthetic import generate

    stats = generate(args.out, seed=args.seed, n_train=args.train, n_val=args.val,
                     size=args.size, n_captions=args.captions, workers=args.workers,
                     progress=not args.quiet, variant=args.variant or "")
    total = stats["train"] + stats["val"] + stats["captions"]
    print(f"wrote {stats['out']}: {stats['num_classes']} classes "
          f"({len(stats['unseen'])} unseen: {', '.join(stats['unseen'])})")
    print(f"  train {stats['train']}, val {stats['val']}, captions {stats['captions']} images "
          f"at {stats['size']} px, seed {stats['seed']}")
    print(f"  {total} images in {stats['seconds']:.1f} s = {stats['images_per_s']:.0f} images/s")
    train = stats["images_per_class"]["train"]
    if stats["train"]:
        rare = min(train, key=train.get)
        print(f"  training images per class: min {train[rare]} ({rare}), "
              f"max {max(train.values())}")
    return 0


def claim_output(args: argparse.Namespace) -> None:
    """--out may not be (inside) --src, and may not hold files celseg did not write."""
    from celseg.io.outputs import OutputGuard

    guard = OutputGuard("make-data", overwrite=args.overwrite)
    guard.read_dirs(args.src).read_files(args.split_file).claim(folders=[args.out])


def run(args: argparse.Namespace) -> int:
    for flag, value, low in (("--train", args.train, 0), ("--val", args.val, 0),
                             ("--captions", args.captions, 0), ("--size", args.size, 32),
                             ("--workers", args.workers, 1)):
        if value < low:
            raise DataError(f"{flag} must be at least {low}, got {value}")
    if args.src is not None and not args.src.is_dir():
        raise DataError(f"--src {args.src} is not an existing folder")
    if args.name == "synthetic":
        claim_output(args)
        return _run_synthetic(args)
    try:
        from celseg.data.convert import CONVERTERS
    except ImportError as exc:
        raise DataError(f"dataset converters are not available ({exc}); only 'synthetic' can "
                        "be made") from None
    if args.name not in CONVERTERS:
        known = ", ".join(["synthetic", *sorted(CONVERTERS)])
        raise DataError(f"unknown dataset {args.name!r}; known: {known}")
    if args.src is None:
        raise DataError(f"make-data {args.name} needs --src, the folder of the raw download")
    claim_output(args)
    report = CONVERTERS[args.name](src=args.src, out=args.out, variant=args.variant,
                                   split_file=args.split_file, progress=not args.quiet)
    print(json.dumps(report, indent=1, default=str))
    return 0
