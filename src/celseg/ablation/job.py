"""The ``ablate`` job: train every (variant, seed), then write the report, charts, figure and
diagnosis."""

from __future__ import annotations

from pathlib import Path

from celseg.ablation.diagnose import diagnose, diagnosis_table
from celseg.ablation.report import figure, results_table, write_results
from celseg.ablation.runner import aggregate, run_ablation
from celseg.ablation.variants import select
from celseg.config import load_config
from celseg.data.captions import read_lines
from celseg.data.classes import load_classes
from celseg.errors import CelsegError
from celseg.io.atomic import write_json
from celseg.io.outputs import OutputGuard
from celseg.viz.charts import ablation_chart, try_chart

FIGURE = "ablation_examples.png"  # written beside the results file
PROTOCOL_TITLES = {"segmenter": "segmenter alone", "ensemble": "ensemble with the VLM"}


def claim_outputs(config: str, data_root: str, vlm: str, notes: str, results: Path,
                  out: str, figure_too: bool, overwrite: bool) -> tuple[str, OutputGuard]:
    """Check every output before any model is loaded; returns the text of ``notes`` and the
    ``OutputGuard`` that records the results file and the figure once written."""
    text = "\n".join(read_lines(Path(notes))) if notes else ""
    guard = OutputGuard("ablate", overwrite=overwrite).read_config(config)
    guard.read_dataset(data_root).read_path(vlm).read_files(notes)
    guard.claim(files=[results, *([results.parent / FIGURE] if figure_too else [])],
                folders=[out], record_files=False)
    return text, guard


def protocol_charts(table: dict, folder: Path) -> list[Path]:
    """One bar chart per protocol (seen / unseen / hIoU of every variant, seed std as error
    bars): ``ablation_chart_PROTOCOL.png`` in ``folder``."""
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


def ablate(config: str, overrides: list[str], seeds: int, variant_keys: list[str], out: str,
           vlm: str, pseudo_threshold: float, self_train_threshold: float,
           self_train_share: float, results: Path, command: str, notes: str = "",
           report_only: bool = False, with_figure: bool = True, with_diagnosis: bool = True,
           progress: bool = True, overwrite: bool = False, jobs: int = 1) -> dict:
    """Train (unless ``report_only``) and report the ablation; returns the aggregated table."""
    if seeds < 1:
        raise CelsegError(f"--seeds must be at least 1, got {seeds}")
    for flag, value in (("--pseudo-threshold", pseudo_threshold),
                        ("--self-train-threshold", self_train_threshold),
                        ("--self-train-share", self_train_share)):
        if not 0.0 <= value <= 1.0:
            raise CelsegError(f"{flag} must lie in [0, 1], got {value}")
    base = load_config(config, overrides)
    load_classes(base.data.root)  # a missing dataset fails here, before any model is loaded
    notes_text, guard = claim_outputs(config, base.data.root, vlm, notes, results, out,
                                      with_figure, overwrite)
    out_root = Path(out)
    records, pseudo_report = run_ablation(
        base, select(variant_keys), list(range(seeds)), out_root, vlm, pseudo_threshold,
        self_train_threshold, progress=progress, self_train_share=self_train_share,
        report_only=report_only, jobs=jobs)
    table = aggregate(records)
    write_json(out_root / "ablation.json", table)
    charts = protocol_charts(table, results.parent)
    fig = figure(records, base.data.root, results.parent / FIGURE) if with_figure else None
    diagnosis = ""
    if with_diagnosis:
        diag = diagnose(records, base.data.root)
        write_json(out_root / "diagnosis.json", diag)
        diagnosis = diagnosis_table(diag)
        print(diagnosis)
    write_results(results, table, records, command, pseudo_report, fig, notes_text, diagnosis,
                  charts)
    guard.record(results, *([fig] if fig else []), *charts)
    print(results_table(table))
    print(f"wrote {results}")
    return table
