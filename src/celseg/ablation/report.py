"""The ablation's report: ``docs/RESULTS.md`` with the table, the claims checked, and a figure."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from celseg.ablation.runner import RunRecord


def _ms(cell: dict) -> str:
    if cell["n"] == 0 or math.isnan(cell["mean"]):
        return "n/a"
    return f"{cell['mean']:.1f} ± {cell['std']:.1f}"


def results_table(table: dict[str, dict]) -> str:
    lines = ["| variant | seen mIoU | unseen mIoU | hIoU | unseen px -> background | seeds |",
             "|---|---:|---:|---:|---:|---:|"]
    for row in table.values():
        bg = row["unseen_as_background"]
        bg_text = _ms(bg) if bg["n"] else "no background class"
        lines.append(f"| {row['title']} | {_ms(row['miou_seen'])} | {_ms(row['miou_unseen'])} | "
                     f"{_ms(row['hiou'])} | {bg_text} | {row['miou_seen']['n']} |")
    return "\n".join(lines)


def _claim(table: dict, better: str, worse: str, text: str) -> str:
    if better not in table or worse not in table:
        return f"- {text}: not run."
    a, b = table[better]["miou_unseen"], table[worse]["miou_unseen"]
    diff = a["mean"] - b["mean"]
    spread = max(a["std"], b["std"])
    if diff > spread:
        verdict = "**holds**"
    elif diff > 0:
        verdict = "**holds weakly** (gain smaller than the seed spread)"
    else:
        verdict = "**does not hold**"
    return (f"- {text}: {verdict} on this benchmark — unseen mIoU {a['mean']:.1f} vs "
            f"{b['mean']:.1f} (difference {diff:+.1f}, largest seed std {spread:.1f}).")


def claims(table: dict) -> str:
    return "\n".join([
        _claim(table, "bgfree", "baseline",
               "Claim 1, background-free beats the background-embedding baseline on unseen mIoU"),
        _claim(table, "ranking", "bgfree", "Claim 2, the ranking loss adds on unseen mIoU"),
        _claim(table, "ranking_all", "bgfree",
               "Ranking over all names (unseen names, no unseen labels) adds on unseen mIoU"),
        _claim(table, "pseudo", "ranking", "Claim 3, pseudo labels add on unseen mIoU"),
        _claim(table, "selftrain", "pseudo", "Self-training adds on unseen mIoU"),
    ])


def per_class_unseen(records: list[RunRecord]) -> str:
    """Mean unseen-class IoU per variant (columns) and class (rows)."""
    variants: dict[str, list[dict]] = {}
    for rec in records:
        variants.setdefault(rec.variant.key, []).append(rec.summary.get("per_class", {}))
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


def figure(records: list[RunRecord], data_root: str, out_png: Path, n_images: int = 4) -> Path:
    """Rows: validation images; columns: image, ground truth, each variant (first seed)."""
    import torch

    from celseg.data.classes import load_classes
    from celseg.data.dataset import SegmentationDataset
    from celseg.data.transforms import denormalize
    from celseg.engine.checkpoint import load_segmenter
    from celseg.engine.predictor import segment
    from celseg.engine.trainer import class_text_embeddings
    from celseg.viz.overlay import legend_image, overlay, panel

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
    for key, rec in first.items():
        model, cfg = load_segmenter(rec.out_dir / "checkpoints" / "last.safetensors")
        emb = class_text_embeddings(cfg.model.vlm, list(info.names))
        with torch.no_grad():
            for row, img in zip(columns, images, strict=True):
                row.append(overlay(img, segment(model, img, emb), info.palette))
        titles.append(key)
    present = sorted({int(v) for _, lab, _ in samples for v in lab.unique().tolist()} - {255})
    legend = legend_image(info.names, info.palette, present, marked=info.unseen_ids,
                          columns=max(1, len(present) // 6 + 1))
    sheet = panel(columns, titles)
    canvas = np.full((sheet.height + legend.shape[0] + 8, max(sheet.width, legend.shape[1]), 3),
                     255, dtype=np.uint8)
    canvas[: sheet.height, : sheet.width] = np.asarray(sheet)
    canvas[sheet.height + 8:, : legend.shape[1]] = legend
    from PIL import Image

    out_png.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(canvas).save(out_png)
    return out_png


def write_results(path: Path, table: dict, records: list[RunRecord], command: str,
                  pseudo_report: dict, figure_path: Path | None, notes: str = "",
                  diagnosis: str = "") -> None:
    parts = [
        "# Ablation on the embedded zero-shot benchmark",
        "",
        "Produced by:",
        "",
        f"```bash\n{command}\n```",
        "",
        "Seen / unseen mIoU and hIoU (%) on the validation split, evaluated with **all** class "
        "names as the vocabulary; mean ± sample std over seeds. 'unseen px -> background' is the "
        "share of unseen-class ground-truth pixels whose argmax over classes + no-object is the "
        "no-object column (baseline only).",
        "",
        results_table(table),
        "",
        "## Do the paper's claims hold here?",
        "",
        claims(table),
        "",
        "## Unseen classes, IoU per variant (mean over seeds)",
        "",
        per_class_unseen(records),
    ]
    if diagnosis:
        parts += ["", "## Where do unseen pixels go? (validation, mean over seeds)", "",
                  "Shares (%) of unseen-class ground-truth pixels by predicted class; the last "
                  "column re-scores the same checkpoints with the peers' fixed seen-class "
                  "calibration (0.1), which the main table does not use.", "", diagnosis]
    if pseudo_report:
        from celseg.pseudo.report import format_table as pseudo_table

        parts += ["", "## Pseudo-label quality (training split, against the hidden true labels)",
                  "", pseudo_table(pseudo_report)]
    if figure_path is not None:
        rel = Path(figure_path).relative_to(path.parent) if Path(figure_path).is_relative_to(
            path.parent) else figure_path
        parts += ["", "## Validation examples (first seed of each variant)", "",
                  f"![ablation examples]({rel})"]
    if notes:
        parts += ["", notes]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text("\n".join(parts) + "\n")
    tmp.replace(path)
