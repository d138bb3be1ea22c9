"""``celseg ablate``: train and evaluate every variant over seeds and write docs/RESULTS.md."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

from celseg.commands.options import add_set_argument, flatten_overrides

FIGURE = "ablation_examples.png"  # written beside --results


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", default="configs/synthetic.yaml",
                        help="base config every variant starts from")
    add_set_argument(parser, "override config keys of every variant (repeatable)")
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds (0, 1, ...)")
    parser.add_argument("--variants", default="",
                        help="comma-separated subset of: baseline,bgfree,ranking,ranking_all,"
                             "pseudo,selftrain,oracle,ranking_shared (default: all)")
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
                        help="train nothing: write the report from the runs that have finished "
                             "(variants may then have different numbers of seeds)")
    parser.add_argument("--results", default="docs/RESULTS.md",
                        help="markdown report to write")
    parser.add_argument("--no-figure", action="store_true",
                        help="skip the figure of validation images across variants")
    parser.add_argument("--no-diagnosis", action="store_true",
                        help="skip re-evaluating checkpoints for where unseen pixels go")
    parser.add_argument("--notes", default="",
                        help="markdown file whose text is appended to the report")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--overwrite", action="store_true",
                        help="write into an --out folder or over --results / its figure although "
                             "celseg did not write them")


def claim_outputs(args: argparse.Namespace, data_root: str) -> tuple[str, Any]:
    """Check every output before any model is loaded; returns the text of --notes and the
    ``OutputGuard`` that records --results and the figure once written."""
    from celseg.data.captions import read_lines
    from celseg.io.outputs import OutputGuard

    notes = "\n".join(read_lines(Path(args.notes))) if args.notes else ""
    guard = OutputGuard("ablate", overwrite=args.overwrite).read_config(args.config)
    guard.read_dataset(data_root).read_path(args.vlm).read_files(args.notes)
    results = Path(args.results)
    guard.claim(files=[results, *([] if args.no_figure else [results.parent / FIGURE])],
                folders=[args.out], record_files=False)
    return notes, guard


PROTOCOL_TITLES = {"segmenter": "segmenter alone", "ensemble": "ensemble with the VLM"}


def protocol_charts(table: dict, folder: Path) -> list[Path]:
    """One bar chart per protocol (seen / unseen / hIoU of every variant, seed std as error
    bars): ``ablation_chart_PROTOCOL.png`` in ``folder``."""
    from celseg.viz.charts import ablation_chart, try_chart

    charts = []
    for protocol in ("segmenter", "ensemble"):
        view = {k: {**row, **row["protocols"][protocol]} for k, row in table.items()
                if protocol in row.get("protocols", {})}
        if view:
            chart = try_chart(ablation_chart, view, folder / f"ablation_chart_{protocol}.png",
                              f"ablation, {PROTOCOL_TITLES[protocol]}: seen / unseen / hIoU")
            if chart is not None:
                charts.append(chart)
    return charts


def run(args: argparse.Namespace) -> int:
    from celseg.ablation.report import figure, write_results
    from celseg.ablation.runner import aggregate, run_ablation
    from celseg.ablation.variants import select
    from celseg.config import load_config
    from celseg.data.classes import load_classes
    from celseg.errors import CelsegError
    from celseg.io.atomic import write_json

    if args.seeds < 1:
        raise CelsegError(f"--seeds must be at least 1, got {args.seeds}")
    for flag, value in (("--pseudo-threshold", args.pseudo_threshold),
                        ("--self-train-threshold", args.self_train_threshold),
                        ("--self-train-share", args.self_train_share)):
        if not 0.0 <= value <= 1.0:
            raise CelsegError(f"{flag} must lie in [0, 1], got {value}")
    base = load_config(args.config, flatten_overrides(args.overrides))
    load_classes(base.data.root)  # a missing dataset fails here, before any model is loaded
    notes, guard = claim_outputs(args, base.data.root)
    variants = select([v.strip() for v in args.variants.split(",") if v.strip()])
    out_root = Path(args.out)
    records, pseudo_report = run_ablation(
        base, variants, list(range(args.seeds)), out_root, args.vlm, args.pseudo_threshold,
        args.self_train_threshold, progress=not args.quiet,
        self_train_share=args.self_train_share, report_only=args.report_only)
    table = aggregate(records)
    write_json(out_root / "ablation.json", table)
    fig = None
    results = Path(args.results)
    charts = protocol_charts(table, results.parent)
    if not args.no_figure:
        fig = figure(records, base.data.root, results.parent / FIGURE)
    command = "celseg " + " ".join(shlex.quote(a) for a in ["ablate", *sys.argv[2:]]) \
        if sys.argv[1:2] == ["ablate"] else f"celseg ablate -c {args.config} --seeds {args.seeds}"
    diagnosis = ""
    if not args.no_diagnosis:
        from celseg.ablation.diagnose import diagnose, diagnosis_table

        diag = diagnose(records, base.data.root)
        write_json(out_root / "diagnosis.json", diag)
        diagnosis = diagnosis_table(diag)
        print(diagnosis)
    write_results(results, table, records, command, pseudo_report, fig, notes, diagnosis,
                  charts)
    guard.record(results, *([fig] if fig else []), *charts)
    from celseg.ablation.report import results_table

    print(results_table(table))
    print(f"wrote {results}")
    return 0
