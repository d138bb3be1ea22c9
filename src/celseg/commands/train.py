"""``celseg train -c CONFIG [--set k=v ...] [--resume | --overwrite]``.

Single process, or several under ``torchrun`` (``torchrun --nproc_per_node N -m celseg train
...``): the process group is read from the environment.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", required=True,
                        help="YAML config file (e.g. configs/synthetic_ce.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="SECTION.KEY=VALUE", nargs="+",
                        help="override config values, e.g. --set train.iterations=100 "
                             "model.mode=baseline (repeatable)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--resume", action="store_true",
                       help="continue the run in train.out_dir from its last checkpoint")
    group.add_argument("--overwrite", action="store_true",
                       help="replace an existing run in train.out_dir instead of refusing")
    parser.add_argument("--no-progress", action="store_true",
                        help="hide the progress bar (logs are still written)")


def flatten_overrides(groups: list) -> list[str]:
    """``--set a=1 b=2 --set c=3`` arrives as nested lists; flatten them in order."""
    flat: list[str] = []
    for item in groups:
        flat.extend(item if isinstance(item, list) else [item])
    return flat


def run(args: argparse.Namespace) -> int:
    from celseg.config import load_config
    from celseg.engine.trainer import train

    cfg = load_config(args.config, flatten_overrides(args.overrides))
    train(cfg, resume=args.resume, progress=not args.no_progress, overwrite=args.overwrite)
    return 0
