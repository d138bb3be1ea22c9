"""``celseg ablate``: train and evaluate every variant over unseen sets x seeds and write the
report whole (:func:`celseg.ablation.job.ablate`; the sets: :mod:`celseg.ablation.splits`).

Library imports sit inside ``run`` so that ``celseg --help`` and the CLI start fast.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from celseg.commands.options import add_set_argument, flatten_overrides


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", default="",
                        help="base config of every variant (default: the packaged synthetic.yaml)")
    add_set_argument(parser, "override config keys of every variant (repeatable)")
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds (0, 1, ...)")
    parser.add_argument("--splits", type=int, default=1,
                        help="number of unseen sets (1..8): split 0 is the dataset's own, the "
                             "others drawn with the same number of unseen things and stuff")
    parser.add_argument("--dev", action="store_true",
                        help="run on the dev splits instead (for choosing defaults: each shares "
                             "at most half its unseen classes with any evaluated split)")
    parser.add_argument("--split-seed", type=int, default=0, help="seed of the drawn unseen sets")
    from celseg.ablation.variants import VARIANTS

    parser.add_argument("--variants", default="", help="comma-separated subset of: "
                        f"{','.join(v.key for v in VARIANTS)} (default: all)")
    parser.add_argument("--out", default="runs/ablation", help="folder for every run")
    parser.add_argument("--vlm", default="runs/demo/vlm",
                        help="vision-language model (name or folder) giving the pseudo labels")
    parser.add_argument("--pseudo-threshold", type=float, default=0.5,
                        help="confidence a VLM pseudo label needs")
    parser.add_argument("--self-train-threshold", type=float, default=0.7,
                        help="confidence a self-training label needs")
    parser.add_argument("--self-train-share", type=float, default=0.5,
                        help="class-balanced self-training: each unseen class also keeps the "
                             "most confident share of its own predicted pixels (0: off)")
    parser.add_argument("--report-only", action="store_true",
                        help="train nothing: report the runs that have finished")
    parser.add_argument("--re-evaluate", action="store_true",
                        help="train nothing: evaluate finished runs again as a run trained "
                             "now would be (keeps metrics.previous.json), then report")
    parser.add_argument("--results", default="docs/RESULTS.md", help="markdown report to write")
    parser.add_argument("--no-figure", action="store_true",
                        help="skip the figure of validation images across variants")
    parser.add_argument("--no-diagnosis", action="store_true",
                        help="skip the table of where unseen pixels go")
    parser.add_argument("--notes", default="",
                        help="markdown file whose text is appended to the report")
    parser.add_argument("--jobs", type=int, default=1,
                        help="runs trained at once, each in its own process with cores/jobs "
                             "threads")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--overwrite", action="store_true",
                        help="write into an --out folder or over --results / its figure although "
                             "celseg did not write them")


def run(args: argparse.Namespace) -> int:
    from celseg.ablation.job import ablate
    from celseg.ablation.runner import PseudoSettings

    command = "celseg " + shlex.join(["ablate", *sys.argv[2:]]) \
        if sys.argv[1:2] == ["ablate"] else f"celseg ablate --splits {args.splits} " \
                                            f"--seeds {args.seeds}"
    pseudo = PseudoSettings(args.vlm, args.pseudo_threshold, args.self_train_threshold,
                            args.self_train_share)
    ablate(args.config, flatten_overrides(args.overrides),
           [v.strip() for v in args.variants.split(",") if v.strip()], args.out, pseudo,
           Path(args.results), command, seeds=args.seeds, splits=args.splits, dev=args.dev,
           split_seed=args.split_seed, notes=args.notes, report_only=args.report_only,
           with_figure=not args.no_figure, with_diagnosis=not args.no_diagnosis,
           progress=not args.quiet, overwrite=args.overwrite, jobs=args.jobs,
           re_evaluate=args.re_evaluate)
    return 0
