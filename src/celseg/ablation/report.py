"""The ablation's report as one markdown text: the unseen sets, the pooled and per-split tables,
the claims across splits, per-class IoU, where unseen pixels go and the pseudo-label quality.

Nothing here writes a file: ``celseg ablate`` writes the text whole to the path it is given.
"""

from __future__ import annotations

import math
from pathlib import Path

from celseg.ablation.runner import RunRecord
from celseg.ablation.splits import MAX_SPLITS, UnseenSplit, never_unseen, splits_for_coverage
from celseg.ablation.stats import METRICS, protocol_cell, transfer_targets
from celseg.data.classes import ClassInfo
from celseg.pseudo.report import format_table as pseudo_table

PROTOCOL_TEXT = (
    "Seen / unseen mIoU and hIoU (%) on the validation split, evaluated with **all** class "
    "names as the vocabulary. Two protocols, both computed from the same forward passes of the "
    "same checkpoints: **segmenter alone** (the segmenter's own classifier) and **ensemble** "
    "(its geometric ensemble with the default VLM's mask-pooled image features, FC-CLIP style: "
    "p = p_in^(1-w) p_out^w, w = eval.ensemble_alpha for classes with ground-truth labels in "
    "the run's training data, eval.ensemble_beta for the others; the semantic scores then "
    "multiplied per pixel by the VLM's own class probabilities to the power "
    "eval.ensemble_pixel_weight). 'unseen px -> background' "
    "is the share of unseen-class ground-truth pixels whose argmax over classes + no-object is "
    "the no-object column (baseline only).")


def _ms(c: dict) -> str:
    return "n/a" if c["n"] == 0 or math.isnan(c["mean"]) else f"{c['mean']:.1f} ± {c['std']:.1f}"


def _signed(c: dict | None) -> str:
    return "not run" if c is None else f"{c['mean']:+.1f} ± {c['std']:.1f}"


def pooled_table(table: dict[str, dict], protocol: str) -> str:
    """Seen / unseen / hIoU of every variant under ``protocol``: mean ± sample std over all its
    (split, seed) runs."""
    lines = ["| variant | seen mIoU | unseen mIoU | hIoU | unseen px -> background | splits "
             "| runs |", "|---|---:|---:|---:|---:|---:|---:|"]
    for row in table.values():
        seen, unseen, hiou = (protocol_cell(row, protocol, m) for m in METRICS)
        if seen["n"] == 0:
            continue
        bg = row["unseen_as_background"]
        bg_text = (_ms(bg) if bg["n"] else "no background class") \
            if protocol == "segmenter" else ""
        lines.append(f"| {row['title']} | {_ms(seen)} | {_ms(unseen)} | {_ms(hiou)} | "
                     f"{bg_text} | {len(row['splits'])} | {seen['n']} |")
    return "\n".join(lines)


def split_table(table: dict[str, dict], protocol: str) -> str:
    """Each split's own row per variant under ``protocol``: mean ± sample std over its seeds."""
    lines = ["| variant | split | seen mIoU | unseen mIoU | hIoU | seeds |",
             "|---|---|---:|---:|---:|---:|"]
    for row in table.values():
        for split, cells in row["splits"].items():
            seen, unseen, hiou = (protocol_cell(cells, protocol, m) for m in METRICS)
            if seen["n"]:
                lines.append(f"| {row['title']} | {split} | {_ms(seen)} | {_ms(unseen)} | "
                             f"{_ms(hiou)} | {seen['n']} |")
    return "\n".join(lines)


def side_by_side(table: dict[str, dict]) -> str:
    """The two protocols next to each other (pooled means), plus the VLM branch alone."""
    lines = ["| variant | segmenter alone: seen / unseen / hIoU | ensemble: seen / unseen / hIoU "
             "| VLM branch alone: hIoU |", "|---|---:|---:|---:|"]

    def triple(row: dict, protocol: str) -> str:
        cells = [protocol_cell(row, protocol, m) for m in METRICS]
        return "n/a" if cells[0]["n"] == 0 else " / ".join(f"{c['mean']:.1f}" for c in cells)

    for row in table.values():
        vlm = protocol_cell(row, "vlm", "hiou")
        lines.append(f"| {row['title']} | {triple(row, 'segmenter')} | "
                     f"{triple(row, 'ensemble')} | {_ms(vlm)} |")
    return "\n".join(lines)


def claims_table(claims: list[dict]) -> str:
    """Per claim and protocol: on how many splits it holds, and the mean ± sample std over
    splits of the per-split difference, for unseen mIoU and hIoU."""
    lines = ["| claim | protocol | unseen mIoU: holds on | difference | hIoU: holds on | "
             "difference | unseen mIoU difference per split |", "|---|---|---:|---:|---:|---:|---|"]
    for c in claims:
        u, h = c["miou_unseen"], c["hiou"]
        held = [f"{x['held']} of {x['k']}" if x else "not run" for x in (u, h)]
        per_split = ", ".join(f"{s} {d:+.1f}" for s, d in u["per_split"].items()) if u else ""
        lines.append(f"| {c['claim']} | {c['protocol']} | {held[0]} | {_signed(u)} | "
                     f"{held[1]} | {_signed(h)} | {per_split} |")
    return "\n".join(lines)


def per_class_unseen(records: list[RunRecord], protocol: str = "segmenter") -> str:
    """Per class that is unseen in some run's split (rows) and variant (columns): the mean IoU
    over the runs where the class is unseen, and the splits where it is."""
    ious: dict[str, dict[str, list[float]]] = {}
    splits: dict[str, set[str]] = {}
    for rec in records:
        entry = rec.summary.get("protocols", {}).get(protocol)
        if entry is None and rec.summary.get("protocol", "segmenter") == protocol:
            entry = rec.summary
        for name, r in (entry or {}).get("per_class", {}).items():
            if r.get("split") == "unseen":
                splits.setdefault(name, set()).add(rec.split)
                iou = r.get("iou")  # NaN (absent class) is stored as null
                values = ious.setdefault(name, {}).setdefault(rec.variant.key, [])
                values += [] if iou is None or math.isnan(iou) else [iou]
    keys = list(dict.fromkeys(rec.variant.key for rec in records))
    if not ious:
        return ""
    lines = ["| class (unseen in) | " + " | ".join(keys) + " |",
             "|---|" + "---:|" * len(keys)]
    for name, by_key in ious.items():
        cells = [f"{sum(v) / len(v):.1f}" if (v := by_key.get(k)) else "n/a" for k in keys]
        lines.append(f"| {name} ({', '.join(sorted(splits[name]))}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _sets_table(title: str, splits: tuple[UnseenSplit, ...]) -> list[str]:
    return [f"| {title} | unseen classes |", "|---|---|",
            *(f"| {s.name} | {', '.join(s.unseen)} |" for s in splits)]


def unseen_sets_section(info: ClassInfo, splits: tuple[UnseenSplit, ...],
                        dev: tuple[UnseenSplit, ...], seed: int) -> list[str]:
    """The splits of the report, the classes none of them makes unseen, and the dev splits
    (``splits`` may be dev splits themselves: a report for choosing defaults)."""
    kinds = {k: sum(1 for i in info.unseen_ids if info.kinds[i] == k) for k in ("thing", "stuff")}
    need = splits_for_coverage(info)
    on_dev = splits[0].name.startswith("dev")
    lines = [
        "## Unseen sets", "",
        f"Drawn by `celseg.ablation.splits` from the dataset's {info.num_classes} classes with "
        f"split seed {seed}. split0 is the dataset's own split; every split has "
        f"{kinds['thing']} unseen things and {kinds['stuff']} unseen stuff classes, as split0; "
        "a class is unseen a second time only after every class of its kind has been unseen "
        f"once, so {need} splits make every class unseen at least once.", ""]
    if on_dev:
        lines += ["**The runs of this report are on dev splits**: for choosing defaults, not "
                  "for reporting results.", ""]
    else:
        lines += [*_sets_table("split", splits), ""]
        left = never_unseen(info, splits)
        if left:
            lines += [f"Never unseen in these {len(splits)} split(s) ({need} make every class "
                      f"unseen once): {', '.join(left)}.", ""]
    lines += [
        "**Dev splits**, for choosing defaults (`celseg ablate --dev`, on images generated "
        f"with another seed). Each shares at most {len(splits[0].unseen) // 2} of its unseen "
        f"classes with every evaluated split (split0 .. split{MAX_SPLITS - 1}): a default chosen "
        "on them is not chosen on a set it is evaluated on.", "", *_sets_table("dev split", dev),
        ""]
    return lines


def targets_table(targets: list[dict]) -> str:
    """The transfer targets (:func:`celseg.ablation.stats.transfer_targets`) as markdown."""
    if not targets:
        return "not run (each target needs its variant and its reference on the same splits)"
    lines = ["| target | variant | mean over splits | lowest split | needed | met | per split |",
             "|---|---|---:|---:|---|---|---|"]
    for t in targets:
        needed = f">= {t['mean_target']:g}x on average"
        if t["split_target"] is not None:
            needed += f", every split >= {t['split_target']:g}x"
        per = ", ".join(f"{s} {r:.2f}x" for s, r in t["per_split"].items())
        lines.append(f"| {t['title']} | {t['variant']} | {t['mean']:.2f}x | {t['min']:.2f}x | "
                     f"{needed} | {'yes' if t['met'] else 'no'} | {per} |")
    return "\n".join(lines)


def _per_class_section(records: list[RunRecord]) -> list[str]:
    tables = [(title, per_class_unseen(records, p)) for title, p in
              (("Segmenter alone:", "segmenter"), ("Ensemble:", "ensemble"))]
    if not any(text for _, text in tables):
        return []
    lines = ["## Unseen classes, IoU per variant (mean over the runs where the class is unseen)"]
    for title, text in tables:
        lines += ["", title, "", text or "not measured"]
    return lines


def markdown(table: dict, records: list[RunRecord], claims: list[dict], command: str,
             sets: list[str], pseudo_reports: dict[str, dict], extras: dict[str, str]) -> str:
    """The whole report. ``sets``: :func:`unseen_sets_section`'s lines; ``extras`` (each may
    be empty): ``charts`` and ``figure`` (markdown), ``diagnosis`` (a table), ``notes``."""
    parts = ["# Ablation on the embedded zero-shot benchmark", "", "Produced by:", "",
             f"```bash\n{command}\n```", "", PROTOCOL_TEXT + " Pooled figures are the mean ± "
             "sample std over every split x seed run; each split's rows are over its seeds.", "",
             *sets, "## Pooled over splits and seeds", "", "### Both protocols side by side "
             "(means)", "", side_by_side(table), "", "### Segmenter alone", "",
             pooled_table(table, "segmenter"), "", "### Ensemble (the default protocol of "
             "evaluate, predict and the demo)", "", pooled_table(table, "ensemble"), "",
             extras.get("charts", ""), "## Each split", "", "### Segmenter alone", "",
             split_table(table, "segmenter"), "", "### Ensemble", "",
             split_table(table, "ensemble"), "", "## Do the paper's claims hold across splits?",
             "", "A claim holds on a split when the mean over its seeds is higher for the first "
             "variant; the difference is the mean ± sample std over splits of the per-split "
             "differences.", "", claims_table(claims), "",
             "## Zero-shot transfer targets across splits", "", "Each ratio is of the means "
             "over a split's seeds; the mean is over splits.", "",
             targets_table(transfer_targets(table)), "", *_per_class_section(records)]
    if extras.get("diagnosis"):
        parts += ["", "## Where do unseen pixels go? (validation, mean over runs)", "",
                  "Shares (%) of unseen-class ground-truth pixels by predicted class, under "
                  "each protocol.", "", extras["diagnosis"]]
    for split, report in pseudo_reports.items():
        if report:
            parts += ["", f"## Pseudo-label quality, {split} (training split, against the "
                      "hidden true labels)", "", "```", pseudo_table(report), "```"]
    for key in ("figure", "notes"):
        parts += ["", extras[key]] if extras.get(key) else []
    return "\n".join(parts) + "\n"


def image_link(document: Path, image: Path, alt: str) -> str:
    """A markdown image of ``image``, relative to ``document``'s folder where it lies below."""
    image = Path(image)
    rel = image.relative_to(document.parent) if image.is_relative_to(document.parent) else image
    return f"![{alt}]({rel})"
