"""``celseg demo --out DIR``: the whole main job on the embedded benchmark
(:func:`celseg.ablation.demo.run_demo`; each finished step is skipped on a re-run).

Library imports sit inside ``run`` so that ``celseg --help`` and the CLI start fast.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from celseg.commands.options import add_set_argument, flatten_overrides

VARIANT_NAMES = ("baseline", "background_free", "ranking")  # celseg.ablation.demo.VARIANTS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    parser.add_argument("--variants", default="baseline,ranking",
                        help=f"comma-separated variants to train, from: {', '.join(VARIANT_NAMES)}")
    add_set_argument(parser, "config overrides applied to every variant (e.g. "
                             "train.iterations=100 for a quick look)")
    parser.add_argument("--seed", type=int, default=0, help="benchmark generation seed")
    parser.add_argument("--train-images", type=int, default=1200,
                        help="training images of the generated benchmark")
    parser.add_argument("--val-images", type=int, default=300,
                        help="validation images of the generated benchmark")
    parser.add_argument("--captions", type=int, default=3000,
                        help="image-caption pairs for pretraining the vision-language model")
    parser.add_argument("--size", type=int, default=128, help="image size of the benchmark (px)")
    parser.add_argument("--vlm-steps", type=int, default=None,
                        help="pretraining steps of the vision-language model (default: its own)")
    parser.add_argument("--jobs", type=int, default=2,
                        help="variants trained at once, each in its own process (default 2)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def run(args: argparse.Namespace) -> int:
    from celseg.ablation.demo import demo_variants, run_demo
    from celseg.errors import CelsegError

    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    demo_variants(names)  # unknown names fail before anything is written
    sizes = dict(n_train=args.train_images, n_val=args.val_images, n_captions=args.captions,
                 size=args.size)
    for flag, value in (("--train-images", args.train_images), ("--val-images", args.val_images),
                        ("--captions", args.captions), ("--size", args.size),
                        ("--jobs", args.jobs)):
        if value < 1:
            raise CelsegError(f"{flag} must be at least 1, got {value}")
    run_demo(Path(args.out), names, flatten_overrides(args.overrides), args.seed, sizes,
             args.vlm_steps, progress=not args.no_progress, jobs=args.jobs)
    return 0
