"""``celseg train -c CONFIG [--set k=v ...] [--resume | --overwrite]``.

Single process, or several under ``torchrun`` (``torchrun --nproc_per_node N -m celseg train
...``): the process group is read from the environment.

Library imports sit inside the functions so that ``celseg --help`` and the CLI start fast.
"""

from __future__ import annotations

import argparse

from celseg.commands.options import add_set_argument, flatten_overrides


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", required=True,
                        help="YAML config file (e.g. configs/synthetic_ce.yaml)")
    add_set_argument(parser, "override config values, e.g. --set train.iterations=100 "
                             "model.mode=background_embedding (repeatable)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--resume", action="store_true",
                       help="continue the run in train.out_dir from its last checkpoint")
    group.add_argument("--overwrite", action="store_true",
                       help="replace an existing run in train.out_dir instead of refusing")
    parser.add_argument("--no-progress", action="store_true",
                        help="hide the progress bar (logs are still written)")


def run(args: argparse.Namespace) -> int:
    from celseg.config import load_config
    from celseg.engine.trainer import train

    cfg = load_config(args.config, flatten_overrides(args.overrides))
    train(cfg, resume=args.resume, progress=not args.no_progress, overwrite=args.overwrite)
    return 0
