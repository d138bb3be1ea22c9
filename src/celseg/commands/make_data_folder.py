"""``celseg make-data folder``: your own images and label maps in the dataset layout, with a
config that trains on them (``celseg.data.convert.folder``). Part of ``celseg make-data``."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_folder_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("folder (your own data)")
    group.add_argument("--images", type=Path, default=None, help="folder of images")
    group.add_argument("--labels", type=Path, default=None,
                       help="folder of label PNGs named like the images: class ids (0-based "
                            "positions in --classes) or colours from a JSON class file")
    group.add_argument("--classes", type=Path, default=None,
                       help="class file: one name per line, a JSON list, or classes.json form "
                            "(with a \"color\" per class for colour labels)")
    group.add_argument("--unseen", default="",
                       help="comma-separated classes held out of training (zero-shot)")
    group.add_argument("--val-share", type=float, default=0.2,
                       help="share of the images kept for validation (default 0.2)")
    group.add_argument("--ignore", type=int, default=255,
                       help="label value of unlabelled pixels (default 255)")


def run_folder(args: argparse.Namespace) -> int:
    from celseg.data.convert.folder import convert_folder, format_pixel_counts
    from celseg.errors import DataError
    from celseg.io.outputs import OutputGuard

    missing = [f for f, v in (("--images", args.images), ("--labels", args.labels),
                              ("--classes", args.classes)) if v is None]
    if missing:
        raise DataError(f"make-data folder needs {', '.join(missing)}")
    unseen = [n.strip() for n in args.unseen.split(",") if n.strip()]

    def claim() -> None:
        guard = OutputGuard("make-data", overwrite=args.overwrite)
        guard.read_dirs(args.images, args.labels).read_files(args.classes)
        guard.claim(folders=[args.out])

    report = convert_folder(args.images, args.labels, args.classes, args.out, unseen,
                            args.val_share, args.ignore, progress=not args.quiet, claim=claim)
    print(format_pixel_counts(report, report["unseen"]))
    print(f"\nwrote {report['splits']['train']['images']} train and "
          f"{report['splits']['val']['images']} val images to {args.out}; train with\n"
          f"  celseg train -c {args.out / 'config.yaml'}")
    return 0
