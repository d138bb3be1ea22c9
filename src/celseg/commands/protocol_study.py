"""``celseg protocol-study --ckpt RUN [RUN ...]``: the ensemble's free settings compared on dev
data (:func:`celseg.ablation.protocol_study.study_all`), printed and written as JSON.

Library imports sit inside ``run`` so that ``celseg --help`` and the CLI start fast.
"""

from __future__ import annotations

import argparse

from celseg.commands.options import add_set_argument, flatten_overrides


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ckpt", nargs="+", required=True, help="run folders or checkpoints")
    parser.add_argument("--data", default="",
                        help="dev dataset root (default: each run's own data.root, e.g. the "
                             "view of its dev split from celseg ablate --dev)")
    parser.add_argument("--split", default="val", help="split of the dataset to evaluate")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--settings", default="all", choices=("all", "cheap", "scale", "weights",
                                                          "pixel"),
                        help="which settings to compare (cheap: no 2x input; scale: the "
                             "default protocol at each input scale of the VLM's pass; "
                             "weights: the ensemble's alpha and beta; pixel: the weight of "
                             "the VLM's per-pixel probabilities)")
    add_set_argument(parser, "eval settings every compared setting starts from (default: each "
                             "run's own), e.g. --set eval.ensemble_alpha=0.2",
                     metavar="eval.KEY=VALUE")
    parser.add_argument("--max-images", type=int, default=0,
                        help="use only the first N images of the split (0: all)")
    parser.add_argument("--out", default="", help="write every summary as JSON here")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an --out file that celseg did not write")


def run(args: argparse.Namespace) -> int:
    from celseg.ablation.protocol_study import slim, study_all, table
    from celseg.engine.evaluate_checkpoint import check_overrides
    from celseg.io.atomic import write_json
    from celseg.io.outputs import OutputGuard

    overrides = check_overrides(flatten_overrides(args.overrides), "protocol-study")
    guard = OutputGuard("protocol-study", overwrite=args.overwrite)
    for ckpt in args.ckpt:
        guard.read_checkpoint(ckpt)
    if args.data:
        guard.read_dataset(args.data)
    guard.claim(files=[args.out] if args.out else [], record_files=False)
    results = study_all(args.ckpt, args.data, args.split, args.settings, args.device,
                        args.max_images, progress=not args.no_progress, overrides=overrides)
    print(table(results))
    if args.out:
        guard.record(write_json(args.out, slim(results)))
    return 0
