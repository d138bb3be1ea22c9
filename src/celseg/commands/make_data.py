"""``celseg make-data``: the synthetic benchmark, a real dataset, or your own folder of images."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from celseg.commands.make_data_folder import add_folder_arguments, run_folder
from celseg.errors import DataError

REAL = ("voc", "coco-stuff", "context", "ade20k")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="'synthetic' to generate the embedded benchmark, 'folder' for "
                        f"your own images and labels, or a real dataset: {', '.join(REAL)}")
    parser.add_argument("--out", required=True, type=Path,
                        help="output folder (the dataset layout of docs/CONTRACTS.md)")
    parser.add_argument("--seed", type=int, default=0, help="synthetic: random seed (default 0)")
    parser.add_argument("--train", type=int, default=1200,
                        help="synthetic: number of training images (default 1200)")
    parser.add_argument("--val", type=int, default=300,
                        help="synthetic: number of validation images (default 300)")
    parser.add_argument("--size", type=int, default=128,
                        help="synthetic: image side in pixels (default 128)")
    parser.add_argument("--captions", type=int, default=3000, help="synthetic: captioned "
                        "images for VLM pretraining, 10%% of them val (default 3000)")
    parser.add_argument("--workers", type=int, default=1, help="synthetic: worker processes "
                        "(default 1; the output is the same)")
    parser.add_argument("--src", type=Path, default=None, help="real datasets: raw download")
    parser.add_argument("--variant", default=None,
                        help="variant of the benchmark: synthetic 'ov' is the second world of "
                        "names (open-vocabulary transfer); real datasets e.g. ade20k-150 / 847, "
                        "context-59 / 459; default: the first synthetic world, the converter's")
    parser.add_argument("--split-file", type=Path, default=None,
                        help="real datasets: JSON file naming the unseen classes (default: "
                             "the published split)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--overwrite", action="store_true",
                        help="write into a non-empty --out folder that celseg did not make")
    add_folder_arguments(parser)


def _run_synthetic(args: argparse.Namespace) -> int:
    from celseg.data.synthetic import describe, generate

    print(describe(generate(args.out, seed=args.seed, n_train=args.train, n_val=args.val,
                            size=args.size, n_captions=args.captions, workers=args.workers,
                            progress=not args.quiet, variant=args.variant or "")))
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
    if args.name == "folder":
        return run_folder(args)
    from celseg.data.convert import convert_dataset

    report = convert_dataset(args.name, args.src, args.out, args.variant, args.split_file,
                             progress=not args.quiet, claim=lambda: claim_output(args))
    print(json.dumps(report, indent=1, default=str))
    return 0
