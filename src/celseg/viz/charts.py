"""Charts of runs (matplotlib, no pyplot state): training curves, per-class IoU, the ablation.

Each chart has two halves: a function that pulls the numbers out of the run's records (tested
against hand-written records) and one that draws them into a PNG. ``Figure`` objects are made
directly, so drawing never touches a global backend or a display.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

SEEN_COLOR = "#1f77b4"
UNSEEN_COLOR = "#ff7f0e"
HIOU_COLOR = "#2ca02c"
METRIC_COLORS = {"miou_seen": SEEN_COLOR, "miou_unseen": UNSEEN_COLOR, "hiou": HIOU_COLOR}
METRIC_LABELS = {"miou_seen": "seen mIoU", "miou_unseen": "unseen mIoU", "hiou": "hIoU"}

log = logging.getLogger(__name__)


def _number(value: Any) -> float:
    """A JSON cell as a float: ``None`` (how NaN is written) and non-numbers become NaN."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return math.nan
    return float(value)


def _figure(width: float, height: float, rows: int = 1) -> tuple[Any, list[Any]]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    axes = fig.subplots(rows, 1, squeeze=False, sharex=True)[:, 0]
    return fig, list(axes)


def _save(fig: Any, out_png: str | Path) -> Path:
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp.png")
    fig.savefig(tmp, format="png")
    tmp.replace(out)  # a reader never sees half a picture
    return out


# --- training curves -------------------------------------------------------------------------

def curve_series(records: Sequence[dict]) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """Series of a ``log.jsonl``: ``{"loss": {term: [(step, v)]}, "lr": {"lr": [...]},
    "eval": {metric: [...]}}``; non-finite values are dropped, steps are sorted."""
    series: dict[str, dict[str, list[tuple[int, float]]]] = {"loss": {}, "lr": {}, "eval": {}}
    for rec in records:
        step = rec.get("step")
        if not isinstance(step, int) or rec.get("event") == "start":
            continue
        points = [("loss", k, v) for k, v in rec.items() if k == "loss" or k.startswith("loss_")]
        points += [("lr", "lr", rec["lr"])] if "lr" in rec else []
        points += [("eval", k, (rec.get("eval") or {}).get(k)) for k in METRIC_LABELS
                   if k in (rec.get("eval") or {})]
        for group, key, value in points:
            v = _number(value)
            if math.isfinite(v):
                series[group].setdefault(key, []).append((step, v))
    for group in series.values():
        for key in group:
            group[key].sort()
    return series


def training_curves(log_path: str | Path, out_png: str | Path) -> Path:
    """``curves.png`` of a run: loss terms and learning rate against step, and the evaluation's
    seen / unseen mIoU and hIoU when the log holds evaluations."""
    from celseg.engine.logger import read_log

    series = curve_series(read_log(log_path))
    if not series["loss"]:
        raise ValueError(f"{log_path} holds no loss records to plot")
    rows = 3 if series["eval"] else 2
    fig, axes = _figure(9.0, 2.6 * rows, rows)
    ax = axes[0]
    aux_label = "decoder-layer aux terms"
    for key, points in sorted(series["loss"].items(), key=lambda kv: kv[0] != "loss"):
        steps, values = zip(*points, strict=True)
        if "_aux" in key:  # deep supervision repeats every term per layer: grey, one legend entry
            ax.plot(steps, values, color="0.7", linewidth=0.8, label=aux_label, zorder=1)
            aux_label = "_nolegend_"
        else:
            ax.plot(steps, values, label=key, linewidth=2.2 if key == "loss" else 1.2,
                    color="black" if key == "loss" else None, zorder=2)
    if all(v > 0 for pts in series["loss"].values() for _, v in pts):
        ax.set_yscale("log")
    ax.set_ylabel("loss")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title(f"training: {Path(log_path).parent.name or log_path}")
    if series["lr"]:
        steps, values = zip(*series["lr"]["lr"], strict=True)
        axes[1].plot(steps, values, color="tab:purple")
    axes[1].set_ylabel("learning rate")
    for key, points in series["eval"].items():
        steps, values = zip(*points, strict=True)
        axes[2].plot(steps, values, marker="o", label=METRIC_LABELS[key],
                     color=METRIC_COLORS[key])
    if series["eval"]:
        axes[2].set_ylabel("validation (%)")
        axes[2].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("step")
    return _save(fig, out_png)


# --- per-class IoU ---------------------------------------------------------------------------

def per_class_bars(summary: dict) -> list[tuple[str, float, str]]:
    """``(name, IoU %, split)`` per class of an evaluation summary, in the summary's order; an
    absent class (no ground-truth pixel) has IoU NaN."""
    per_class = summary.get("per_class") or {}
    if not per_class:
        raise ValueError("the summary has no per_class entries to plot")
    return [(name, _number(row.get("iou")), str(row.get("split", "seen")))
            for name, row in per_class.items()]


def per_class_chart(summary: dict, out_png: str | Path, title: str = "") -> Path:
    """Bar chart of each class's IoU, seen and unseen classes in two colours, with the seen and
    unseen mIoU as dashed lines; absent classes are labelled "n/a"."""
    bars = per_class_bars(summary)
    fig, (ax,) = _figure(max(6.0, 0.32 * len(bars) + 1.5), 4.2)
    xs = range(len(bars))
    heights = [0.0 if math.isnan(v) else v for _, v, _ in bars]
    colors = [UNSEEN_COLOR if split == "unseen" else SEEN_COLOR for _, _, split in bars]
    ax.bar(xs, heights, color=colors, width=0.8)
    for x, (_, v, _) in zip(xs, bars, strict=True):
        if math.isnan(v):
            ax.text(x, 1, "n/a", ha="center", va="bottom", fontsize=7)
    for key in ("miou_seen", "miou_unseen"):
        v = _number(summary.get(key))
        if math.isfinite(v):
            ax.axhline(v, color=METRIC_COLORS[key], linestyle="--", linewidth=1,
                       label=f"{METRIC_LABELS[key]} {v:.1f}")
    from matplotlib.patches import Patch

    handles = [Patch(color=SEEN_COLOR, label="seen class"),
               Patch(color=UNSEEN_COLOR, label="unseen class"),
               *ax.get_legend_handles_labels()[0]]
    ax.legend(handles=handles, fontsize=7, loc="upper left", ncols=4)
    ax.set_xticks(list(xs), [name for name, _, _ in bars], rotation=60, ha="right", fontsize=7)
    ax.set_ylim(0, 118)  # room for the legend above the 100 % line
    ax.set_yticks(range(0, 101, 20))
    ax.set_ylabel("IoU (%)")
    hiou = _number(summary.get("hiou"))
    ax.set_title(title or ("per-class IoU" + (f" (hIoU {hiou:.1f})" if math.isfinite(hiou)
                                              else "")))
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, out_png)


# --- ablation --------------------------------------------------------------------------------

def ablation_bars(table: dict[str, dict]) -> list[tuple[str, dict[str, tuple[float, float]]]]:
    """``(title, {metric: (mean, std)})`` per variant of ``celseg.ablation.stats.aggregate``'s
    table, in the table's order."""
    if not table:
        raise ValueError("the ablation table is empty")
    rows = []
    for key, row in table.items():
        cells = {m: (_number((row.get(m) or {}).get("mean")), _number((row.get(m) or {})
                                                                      .get("std")))
                 for m in METRIC_LABELS}
        rows.append((str(row.get("title", key)), cells))
    return rows


def ablation_chart(table: dict[str, dict], out_png: str | Path,
                   title: str = "ablation: seen / unseen / hIoU per variant") -> Path:
    """Grouped bars of every variant's seen mIoU, unseen mIoU and hIoU (the mean over its runs:
    splits x seeds) with their standard deviation as error bars."""
    rows = ablation_bars(table)
    fig, (ax,) = _figure(max(7.0, 1.3 * len(rows) + 2), 4.5)
    width = 0.8 / len(METRIC_LABELS)
    for j, metric in enumerate(METRIC_LABELS):
        means = [cells[metric][0] for _, cells in rows]
        stds = [cells[metric][1] for _, cells in rows]
        xs = [i + (j - 1) * width for i in range(len(rows))]
        ax.bar(xs, [0.0 if math.isnan(m) else m for m in means], width,
               yerr=[0.0 if math.isnan(s) else s for s in stds], capsize=3,
               color=METRIC_COLORS[metric], label=METRIC_LABELS[metric],
               error_kw={"linewidth": 1})
    ax.set_xticks(range(len(rows)), [_wrap(title) for title, _ in rows], fontsize=7)
    ax.set_ylabel("% (mean ± std over runs)")
    ax.set_ylim(0, 112)
    ax.set_yticks(range(0, 101, 20))
    ax.legend(fontsize=8, loc="upper left", ncols=3)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, out_png)


def _wrap(text: str, width: int = 18) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width)) or text


# --- best-effort wrapper for the hooks in training and evaluation ----------------------------

def try_chart(draw: Callable[..., Path], *args: Any) -> Path | None:
    """``draw(*args)``, or a logged warning and ``None`` when it fails: a picture must never fail
    the run that asked for it (matplotlib missing, an empty log, a full disk)."""
    try:
        return draw(*args)
    except Exception as exc:  # noqa: BLE001 - any failure of a picture is only a warning
        log.warning("celseg: could not write %s: %s: %s", args[-1] if args else draw.__name__,
                    type(exc).__name__, exc)
        return None


def curves_beside_log(log_path: str | Path) -> Path | None:
    """``curves.png`` beside a run's ``log.jsonl``; a logged warning instead of any error."""
    return try_chart(training_curves, log_path, Path(log_path).with_name("curves.png"))


def per_class_beside(summary: dict, json_path: str | Path) -> Path | None:
    """``NAME_per_class.png`` beside an evaluation's ``NAME.json``; a warning instead of any
    error."""
    path = Path(json_path)
    return try_chart(per_class_chart, summary, path.with_name(f"{path.stem}_per_class.png"))
