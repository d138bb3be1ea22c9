"""The ablation's report: ``docs/RESULTS.md`` with the table, the claims checked, and a figure."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from celseg.ablation.open_vocab import kept_section
from celseg.ablation.runner import RunRecord
from celseg.data.classes import load_classes
from celseg.data.dataset import SegmentationDataset
from celseg.data.transforms import denormalize
from celseg.engine.predictor import Predictor
from celseg.io.atomic import save_image
from celseg.pseudo.report import format_table as pseudo_table
from celseg.viz.overlay import legend_image, overlay, panel


def _ms(cell: dict) -> str:
    if cell["n"] == 0 or math.isnan(cell["mean"]):
        return "n/a"
    return f"{cell['mean']:.1f} ± {cell['std']:.1f}"


def _protocol_cell(row: dict, protocol: str, metric: str) -> dict:
    return row.get("protocols", {}).get(protocol, {}).get(metric, {"n": 0, "mean": math.nan})


def results_table(table: dict[str, dict], protocol: str = "segmenter") -> str:
    """Seen / unseen / hIoU of every variant under one protocol."""
    lines = ["| variant | seen mIoU | unseen mIoU | hIoU | unseen px -> background | seeds |",
             "|---|---:|---:|---:|---:|---:|"]
    for row in table.values():
        cells = [_protocol_cell(row, protocol, m) for m in ("miou_seen", "miou_unseen", "hiou")]
        if cells[0]["n"] == 0:
            continue
        bg = row["unseen_as_background"]
        bg_text = (_ms(bg) if bg["n"] else "no background class") if protocol == "segmenter" \
            else ""
        lines.append(f"| {row['title']} | {_ms(cells[0])} | {_ms(cells[1])} | {_ms(cells[2])} | "
                     f"{bg_text} | {cells[0]['n']} |")
    return "\n".join(lines)


def side_by_side(table: dict[str, dict]) -> str:
    """The two protocols next to each other (mean over seeds), plus the VLM branch alone."""
    lines = ["| variant | segmenter alone: seen / unseen / hIoU | ensemble: seen / unseen / hIoU "
             "| VLM branch alone: hIoU |", "|---|---:|---:|---:|"]

    def triple(row: dict, protocol: str) -> str:
        cells = [_protocol_cell(row, protocol, m) for m in ("miou_seen", "miou_unseen", "hiou")]
        if cells[0]["n"] == 0:
            return "n/a"
        return " / ".join(f"{c['mean']:.1f}" for c in cells)

    for row in table.values():
        vlm = _protocol_cell(row, "vlm", "hiou")
        lines.append(f"| {row['title']} | {triple(row, 'segmenter')} | "
                     f"{triple(row, 'ensemble')} | "
                     f"{_ms(vlm) if vlm['n'] else 'n/a'} |")
    return "\n".join(lines)


def _claim(table: dict, better: str, worse: str, text: str, protocol: str,
           metric: str = "miou_unseen") -> str:
    if better not in table or worse not in table:
        return f"- {text} [{protocol}]: not run."
    a = _protocol_cell(table[better], protocol, metric)
    b = _protocol_cell(table[worse], protocol, metric)
    if a["n"] == 0 or b["n"] == 0:
        return f"- {text} [{protocol}]: not measured under this protocol."
    diff = a["mean"] - b["mean"]
    spread = max(a["std"], b["std"])
    if diff > spread:
        verdict = "**holds**"
    elif diff > 0:
        verdict = "**holds weakly** (gain smaller than the seed spread)"
    else:
        verdict = "**does not hold**"
    label = {"miou_unseen": "unseen mIoU", "hiou": "hIoU"}[metric]
    return (f"- {text} [{protocol}]: {verdict}: {label} {a['mean']:.1f} vs {b['mean']:.1f} "
            f"(difference {diff:+.1f}, largest seed std {spread:.1f}).")


CLAIMS = (
    ("bgfree", "baseline",
     "Claim 1, background-free beats the background-embedding baseline on unseen mIoU"),
    ("ranking", "bgfree", "Claim 2, the ranking loss adds on unseen mIoU"),
    ("ranking_all", "bgfree",
     "Ranking over all names (unseen names, no unseen labels) adds on unseen mIoU"),
    ("pseudo", "ranking", "Claim 3, pseudo labels add on unseen mIoU"),
    ("selftrain", "pseudo", "Self-training adds on unseen mIoU"),
)


def claims(table: dict, protocols: tuple[str, ...] = ("segmenter", "ensemble")) -> str:
    return "\n".join(_claim(table, better, worse, text, protocol)
                     for better, worse, text in CLAIMS for protocol in protocols)


def per_class_unseen(records: list[RunRecord], protocol: str = "segmenter") -> str:
    """Mean unseen-class IoU per variant (columns) and class (rows) under ``protocol``."""
    variants: dict[str, list[dict]] = {}
    for rec in records:
        entry = rec.summary.get("protocols", {}).get(protocol)
        if entry is None and rec.summary.get("protocol", "segmenter") == protocol:
            entry = rec.summary
        if entry is not None:
            variants.setdefault(rec.variant.key, []).append(entry.get("per_class", {}))
    if not variants:
        return ""
    first = next(iter(variants.values()))[0]
    unseen = [n for n, r in first.items() if r["split"] == "unseen"]
    head = "| unseen class | " + " | ".join(variants) + " |"
    lines = [head, "|---|" + "---:|" * len(variants)]
    for name in unseen:
        cells = []
        for runs in variants.values():
            # NaN (absent class) is stored as null in metrics.json
            vals = [r[name]["iou"] for r in runs if name in r and r[name]["iou"] is not None
                    and not math.isnan(r[name]["iou"])]
            cells.append(f"{sum(vals) / len(vals):.1f}" if vals else "n/a")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def figure(records: list[RunRecord], data_root: str, out_png: Path, n_images: int = 4,
           ensembles: tuple[bool, ...] = (True,)) -> Path:
    """Rows: validation images; columns: image, ground truth, each variant (first seed) under
    each protocol asked for (``ensembles``: False = the segmenter alone, True = the default)."""

    info = load_classes(data_root)
    dataset = SegmentationDataset(data_root, "val", view="full")
    step = max(1, len(dataset) // n_images)
    samples = [dataset[i * step] for i in range(min(n_images, len(dataset)))]
    images = [(denormalize(img).clamp(0, 1).permute(1, 2, 0).numpy() * 255).astype(np.uint8)
              for img, _, _ in samples]
    columns = [[img, overlay(img, lab.numpy(), info.palette)]
               for img, (_, lab, _) in zip(images, samples, strict=True)]
    titles = ["image", "ground truth"]
    first: dict[str, RunRecord] = {}
    for rec in records:
        first.setdefault(rec.variant.key, rec)
    for (key, rec), ensemble in itertools.product(first.items(), ensembles):
        predictor = Predictor.from_checkpoint(rec.out_dir / "checkpoints" / "last.safetensors",
                                              ensemble=ensemble)
        with torch.no_grad():
            for row, img in zip(columns, images, strict=True):
                label = predictor.segment(img, list(info.names))
                row.append(overlay(img, label, info.palette))
        titles.append(f"{key} ({predictor.protocol})")
    present = sorted({int(v) for _, lab, _ in samples for v in lab.unique().tolist()} - {255})
    legend = legend_image(info.names, info.palette, present, marked=info.unseen_ids,
                          columns=max(1, len(present) // 6 + 1))
    sheet = panel(columns, titles)
    canvas = np.full((sheet.height + legend.shape[0] + 8, max(sheet.width, legend.shape[1]), 3),
                     255, dtype=np.uint8)
    canvas[: sheet.height, : sheet.width] = np.asarray(sheet)
    canvas[sheet.height + 8:, : legend.shape[1]] = legend

    return save_image(Image.fromarray(canvas), out_png)


def _rel(path: Path, target: Path) -> Path:
    target = Path(target)
    return target.relative_to(path.parent) if target.is_relative_to(path.parent) else target


def _chart_lines(path: Path, charts: list[Path]) -> list[str]:
    lines = []
    for chart in charts:
        protocol = Path(chart).stem.removeprefix("ablation_chart_")
        lines += [f"![{protocol}: seen / unseen / hIoU per variant]({_rel(path, chart)})", ""]
    return lines


def write_results(path: Path, table: dict, records: list[RunRecord], command: str,
                  pseudo_report: dict, figure_path: Path | None, notes: str = "",
                  diagnosis: str = "", charts: list[Path] | None = None) -> None:
    parts = [
        "# Ablation on the embedded zero-shot benchmark",
        "",
        "Produced by:",
        "",
        f"```bash\n{command}\n```",
        "",
        "Seen / unseen mIoU and hIoU (%) on the validation split, evaluated with **all** class "
        "names as the vocabulary; mean ± sample std over seeds. Two protocols, both computed "
        "from the same forward passes of the same checkpoints: **segmenter alone** (the "
        "segmenter's own classifier) and **ensemble** (its geometric ensemble with the default "
        "VLM's mask-pooled image features, FC-CLIP style: p = p_in^(1-w) p_out^w, w = "
        "eval.ensemble_alpha for classes with ground-truth labels in the run's training data, "
        "eval.ensemble_beta for the others). 'unseen px -> background' is the share of "
        "unseen-class ground-truth pixels whose argmax over classes + no-object is the "
        "no-object column (baseline only).",
        "",
        "### Both protocols side by side (means)",
        "",
        side_by_side(table),
        "",
        "### Segmenter alone",
        "",
        results_table(table, "segmenter"),
        "",
        "### Ensemble (the default protocol of evaluate, predict and the demo)",
        "",
        results_table(table, "ensemble"),
        "",
        *_chart_lines(path, charts or []),
        "## Do the paper's claims hold here?",
        "",
        claims(table),
        "",
        "## Unseen classes, IoU per variant (mean over seeds)",
        "",
        "Segmenter alone:",
        "",
        per_class_unseen(records, "segmenter"),
        "",
        "Ensemble:",
        "",
        per_class_unseen(records, "ensemble"),
    ]
    if diagnosis:
        parts += ["", "## Where do unseen pixels go? (validation, mean over seeds)", "",
                  "Shares (%) of unseen-class ground-truth pixels by predicted class, under "
                  "each protocol.", "", diagnosis]
    if pseudo_report:

        parts += ["", "## Pseudo-label quality (training split, against the hidden true labels)",
                  "", pseudo_table(pseudo_report)]
    if figure_path is not None:
        rel = Path(figure_path).relative_to(path.parent) if Path(figure_path).is_relative_to(
            path.parent) else figure_path
        parts += ["", "## Validation examples (first seed of each variant)", "",
                  f"![ablation examples]({rel})"]
    if notes:
        parts += ["", notes]
    kept = kept_section(path)  # the open-vocab study's section, written by its own command
    if kept:
        parts += ["", kept]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text("\n".join(parts) + "\n")
    tmp.replace(path)
