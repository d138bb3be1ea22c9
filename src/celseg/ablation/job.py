"""The ``ablate`` job: train every (split, variant, seed), then the report, charts, figure and
diagnosis; the report is written whole to the path it is given."""

from __future__ import annotations

from pathlib import Path

from celseg.ablation.diagnose import diagnose, diagnosis_table
from celseg.ablation.figure import figure
from celseg.ablation.packaged import config_path
from celseg.ablation.report import image_link, markdown, pooled_table, unseen_sets_section
from celseg.ablation.runner import PseudoSettings, RunRecord, run_ablation
from celseg.ablation.splits import SPLIT_SEED, UnseenSplit, dev_sets, unseen_sets
from celseg.ablation.stats import aggregate, claims_across_splits
from celseg.ablation.variants import select
from celseg.config import load_config
from celseg.data.captions import read_lines
from celseg.data.classes import load_classes
from celseg.errors import CelsegError
from celseg.io.atomic import write_json, write_text
from celseg.io.outputs import OutputGuard
from celseg.viz.charts import ablation_chart, try_chart

FIGURE = "ablation_examples.png"  # written beside the results file
PROTOCOL_TITLES = {"segmenter": "segmenter alone", "ensemble": "ensemble with the VLM"}
DEV_NAMED = 3  # dev splits a report names


def claim_outputs(config: str | Path, data_root: str, vlm: str, notes: str, results: Path,
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
    """One bar chart per protocol (seen / unseen / hIoU of every variant, pooled over splits and
    seeds, their std as error bars): ``ablation_chart_PROTOCOL.png`` in ``folder``."""
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


def _pictures(records: list[RunRecord], results: Path, table: dict, with_figure: bool) -> dict:
    """The charts and the figure (of the first split's runs) as markdown, paths in ``written``."""
    charts = protocol_charts(table, results.parent)
    links = [image_link(results, c, c.stem.removeprefix("ablation_chart_")
                        + ": seen / unseen / hIoU per variant") for c in charts]
    extras = {"charts": "\n\n".join(links) + "\n", "written": charts}
    if with_figure and records:
        first = [r for r in records if r.split == records[0].split]
        fig = figure(first, first[0].data_root, results.parent / FIGURE)
        extras["figure"] = (f"## Validation examples ({first[0].split}, first seed of each "
                            f"variant)\n\n{image_link(results, fig, 'ablation examples')}")
        extras["written"] = [*charts, fig]
    return extras


def check_settings(seeds: int, pseudo: PseudoSettings) -> None:
    if seeds < 1:
        raise CelsegError(f"--seeds must be at least 1, got {seeds}")
    for flag, value in (("--pseudo-threshold", pseudo.threshold),
                        ("--self-train-threshold", pseudo.self_train_threshold),
                        ("--self-train-share", pseudo.self_train_share)):
        if not 0.0 <= value <= 1.0:
            raise CelsegError(f"{flag} must lie in [0, 1], got {value}")


def ablate(config: str, overrides: list[str], variant_keys: list[str], out: str,
           pseudo: PseudoSettings, results: Path, command: str, *, seeds: int = 3,
           splits: int = 1, dev: bool = False, split_seed: int = SPLIT_SEED, notes: str = "",
           report_only: bool = False, with_figure: bool = True, with_diagnosis: bool = True,
           progress: bool = True, overwrite: bool = False, jobs: int = 1,
           re_evaluate: bool = False) -> dict:
    """Train (unless ``report_only``) over ``splits`` unseen sets (dev sets with ``dev``) x
    ``seeds`` and write the report; returns the aggregated ``table`` and the ``claims``.
    ``re_evaluate``: train nothing, evaluate every finished run again with the current code
    and the evaluation keys a run trained now would have (config, variant, ``overrides``),
    then report."""
    check_settings(seeds, pseudo)
    config = config or str(config_path("synthetic.yaml"))
    base = load_config(config, overrides)
    info = load_classes(base.data.root)  # a missing dataset fails here, before any model
    chosen: tuple[UnseenSplit, ...] = (dev_sets if dev else unseen_sets)(info, splits, split_seed)
    notes_text, guard = claim_outputs(config, base.data.root, pseudo.vlm, notes, results, out,
                                      with_figure, overwrite)
    out_root = Path(out)
    records, pseudo_reports = run_ablation(
        base, select(variant_keys), list(range(seeds)), out_root, pseudo, chosen,
        progress=progress, report_only=report_only or re_evaluate, jobs=jobs, again=re_evaluate)
    table = aggregate(records)
    claims = claims_across_splits(table)
    write_json(out_root / "ablation.json", {"splits": {s.name: s.unseen for s in chosen},
                                            "split_seed": split_seed, "table": table,
                                            "claims": claims})
    extras = {**_pictures(records, results, table, with_figure), "notes": notes_text}
    if with_diagnosis:
        diag = diagnose(records, base.data.root)
        write_json(out_root / "diagnosis.json", diag)
        extras["diagnosis"] = diagnosis_table(diag)
    named_dev = chosen if dev else dev_sets(info, DEV_NAMED, split_seed)
    sets = unseen_sets_section(info, chosen, named_dev, split_seed)
    write_text(results, markdown(table, records, claims, command, sets, pseudo_reports, extras))
    guard.record(results, *extras["written"])
    print(pooled_table(table, "ensemble"))
    print(f"wrote {results}")
    return {"table": table, "claims": claims}
