"""``celseg ablate``: train and evaluate every variant over seeds and write docs/RESULTS.md."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from celseg.commands.options import add_set_argument, flatten_overrides


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", default="configs/synthetic.yaml",
                        help="base config every variant starts from")
    add_set_argument(parser, "override config keys of every variant (repeatable)")
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds (0, 1, ...)")
    parser.add_argument("--variants", default="",
                        help="comma-separated subset of: baseline,bgfree,ranking,ranking_all,"
                             "pseudo,selftrain,oracle (default: all)")
    parser.add_argument("--out", default="runs/ablation", help="folder for every run")
    parser.add_argument("--vlm", default="runs/demo/vlm",
                        help="vision-language model (name or folder) giving the pseudo labels")
    parser.add_argument("--pseudo-threshold", type=float, default=0.5,
                        help="confidence a VLM pseudo label needs")
    parser.add_argument("--self-train-threshold", type=float, default=0.7,
                        help="confidence a self-training label needs")
    parser.add_argument("--results", default="docs/RESULTS.md",
                        help="markdown report to write")
    parser.add_argument("--no-figure", action="store_true",
                        help="skip the figure of validation images across variants")
    parser.add_argument("--no-diagnosis", action="store_true",
                        help="skip re-evaluating checkpoints for where unseen pixels go")
    parser.add_argument("--notes", default="",
                        help="markdown file whose text is appended to the report")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from celseg.ablation.report import figure, write_results
    from celseg.ablation.runner import aggregate, run_ablation
    from celseg.ablation.variants import select
    from celseg.config import load_config
    from celseg.data.classes import load_classes
    from celseg.errors import CelsegError

    if args.seeds < 1:
        raise CelsegError(f"--seeds must be at least 1, got {args.seeds}")
    for flag, value in (("--pseudo-threshold", args.pseudo_threshold),
                        ("--self-train-threshold", args.self_train_threshold)):
        if not 0.0 <= value <= 1.0:
            raise CelsegError(f"{flag} must lie in [0, 1], got {value}")
    base = load_config(args.config, flatten_overrides(args.overrides))
    load_classes(base.data.root)  # a missing dataset fails here, before any model is loaded
    variants = select([v.strip() for v in args.variants.split(",") if v.strip()])
    out_root = Path(args.out)
    records, pseudo_report = run_ablation(
        base, variants, list(range(args.seeds)), out_root, args.vlm, args.pseudo_threshold,
        args.self_train_threshold, progress=not args.quiet)
    table = aggregate(records)
    (out_root / "ablation.json").write_text(json.dumps(table, indent=1))
    fig = None
    results = Path(args.results)
    if not args.no_figure:
        fig = figure(records, base.data.root, results.parent / "ablation_examples.png")
    command = "celseg " + " ".join(shlex.quote(a) for a in ["ablate", *sys.argv[2:]]) \
        if sys.argv[1:2] == ["ablate"] else f"celseg ablate -c {args.config} --seeds {args.seeds}"
    diagnosis = ""
    if not args.no_diagnosis:
        from celseg.ablation.diagnose import diagnose, diagnosis_table

        diag = diagnose(records, base.data.root)
        (out_root / "diagnosis.json").write_text(json.dumps(diag, indent=1))
        diagnosis = diagnosis_table(diag)
        print(diagnosis)
    notes = Path(args.notes).read_text() if args.notes else ""
    write_results(results, table, records, command, pseudo_report, fig, notes, diagnosis)
    from celseg.ablation.report import results_table

    print(results_table(table))
    print(f"wrote {results}")
    return 0
