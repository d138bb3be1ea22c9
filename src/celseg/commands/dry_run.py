"""``celseg dry-run -c CONFIG [--steps N] [--batch B] [--random-init] [--out DIR]``: a config end
to end at its real shapes on a small dataset in its own format, with parameter count, seconds
per step, peak memory and the projected time of its full schedule
(:func:`celseg.paper.dry_run.dry_run`). Writes ``OUT/report.json`` and prints it.

Library imports sit inside the functions so that ``celseg --help`` and the CLI start fast.
"""

from __future__ import annotations

import argparse

from celseg.commands.options import add_set_argument, flatten_overrides


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", required=True,
                        help="config to run, e.g. configs/paper/voc_ranking_inductive.yaml")
    parser.add_argument("--steps", type=int, default=2,
                        help="optimiser steps (default 2; at least 2: the first warms up)")
    parser.add_argument("--batch", type=int, default=0,
                        help="training batch (default: the config's train.batch_size)")
    parser.add_argument("--eval-images", type=int, default=2,
                        help="validation images to evaluate, the real photo first (default 2)")
    parser.add_argument("--random-init", action="store_true",
                        help="build the config's hub models (ResNet-101, CLIP ViT-B/16) from "
                             "their real configurations with random weights, for machines "
                             "without the weights; without it they must load")
    parser.add_argument("--dataset", default=None, choices=("voc", "coco-stuff"),
                        help="dataset format to write (default: from data.root's folder name)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto")
    parser.add_argument("--out", default="runs/dry_run",
                        help="output folder (default runs/dry_run); a re-run replaces the "
                             "dry run's own subfolders in it")
    add_set_argument(parser, "override config values, e.g. --set eval.two_stage=true")
    parser.add_argument("--overwrite", action="store_true",
                        help="write into an --out folder holding files celseg did not write")


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from celseg.io.atomic import write_json
    from celseg.io.outputs import OutputGuard
    from celseg.paper.dry_run import DryRunRequest, dry_run

    out = Path(args.out)
    OutputGuard("dry-run", overwrite=args.overwrite).read_config(args.config).claim(
        folders=[out])
    request = DryRunRequest(config=args.config, out=out,
                            overrides=tuple(flatten_overrides(args.overrides)),
                            steps=args.steps, batch=args.batch, eval_images=args.eval_images,
                            random_init=args.random_init, dataset=args.dataset or "",
                            device=args.device)
    report = dry_run(request)
    write_json(out / "report.json", report)
    print(json.dumps(report, indent=1))
    print(f"wrote {out / 'report.json'}")
    return 0
