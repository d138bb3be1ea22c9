"""Charts of runs: the numbers each chart takes from its records, and the pictures it draws."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("matplotlib")

from celseg.viz import charts  # noqa: E402


def _hex_rgb(color: str) -> np.ndarray:
    return np.array([int(color[i:i + 2], 16) for i in (1, 3, 5)])


def _pixels_of(png, color: str) -> int:
    """Pixels exactly in ``color`` (bars are drawn without antialiasing inside)."""
    rgb = np.asarray(Image.open(png).convert("RGB")).astype(int)
    return int((np.abs(rgb - _hex_rgb(color)).sum(axis=2) <= 3).sum())


def _write_log(path, records) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


LOG = [
    {"event": "start", "step": 0, "config": {}, "vocabulary": ["a"]},
    {"step": 1, "epoch": 0, "lr": 1e-4, "loss": 3.0, "loss_ce": 2.0, "loss_dice": 1.0,
     "img_s": 5.0},
    {"step": 3, "epoch": 0, "lr": 2e-4, "loss": 2.0, "loss_ce": 1.5, "loss_dice": 0.5,
     "img_s": 5.0},
    {"step": 2, "epoch": 0, "lr": 1.5e-4, "loss": 2.5, "loss_ce": 1.8, "loss_dice": None,
     "img_s": 5.0},
    {"step": 3, "eval": {"miou_seen": 40.0, "miou_unseen": None, "hiou": None}},
]


def test_curve_series_by_hand() -> None:
    series = charts.curve_series(LOG)
    assert series["loss"]["loss"] == [(1, 3.0), (2, 2.5), (3, 2.0)]  # sorted by step
    assert series["loss"]["loss_dice"] == [(1, 1.0), (3, 0.5)]  # the null value is dropped
    assert series["lr"]["lr"] == [(1, 1e-4), (2, 1.5e-4), (3, 2e-4)]
    assert series["eval"] == {"miou_seen": [(3, 40.0)]}
    assert "img_s" not in series["loss"] and "epoch" not in series["loss"]


def test_training_curves_png(tmp_path) -> None:
    _write_log(tmp_path / "log.jsonl", LOG)
    out = charts.training_curves(tmp_path / "log.jsonl", tmp_path / "curves.png")
    with_eval = Image.open(out)
    _write_log(tmp_path / "log.jsonl", LOG[:-1])
    without = Image.open(charts.training_curves(tmp_path / "log.jsonl", tmp_path / "c2.png"))
    assert with_eval.format == "PNG" and with_eval.height > without.height  # a third panel
    assert _pixels_of(out, charts.SEEN_COLOR) > 0  # the seen mIoU marker is drawn


def test_empty_log_fails_and_try_chart_only_warns(tmp_path, caplog) -> None:
    _write_log(tmp_path / "log.jsonl", LOG[:1])
    with pytest.raises(ValueError, match="no loss records"):
        charts.training_curves(tmp_path / "log.jsonl", tmp_path / "curves.png")
    got = charts.try_chart(charts.training_curves, tmp_path / "log.jsonl",
                           tmp_path / "curves.png")
    assert got is None and not (tmp_path / "curves.png").exists()
    assert "curves.png" in caplog.text


def _summary(unseen_iou: float) -> dict:
    per_class = {f"s{i}": {"iou": 10.0 * (i + 1), "acc": 0.0, "split": "seen", "present": True}
                 for i in range(4)}
    per_class["u0"] = {"iou": unseen_iou, "acc": 0.0, "split": "unseen", "present": True}
    per_class["u1"] = {"iou": None, "acc": None, "split": "unseen", "present": False}
    return {"miou_seen": 25.0, "miou_unseen": unseen_iou, "hiou": 1.0, "per_class": per_class}


def test_per_class_bars_by_hand() -> None:
    bars = charts.per_class_bars(_summary(30.0))
    assert [b[0] for b in bars] == ["s0", "s1", "s2", "s3", "u0", "u1"]
    assert bars[4] == ("u0", 30.0, "unseen") and math.isnan(bars[5][1])
    with pytest.raises(ValueError):
        charts.per_class_bars({"miou_seen": 1.0})


def test_per_class_chart_colours_seen_and_unseen_apart(tmp_path) -> None:
    tall = charts.per_class_chart(_summary(80.0), tmp_path / "a.png")
    short = charts.per_class_chart(_summary(20.0), tmp_path / "b.png")
    # seen bars are identical in both; the unseen bar's area follows its IoU (4x, less the
    # legend swatch that both share)
    assert _pixels_of(tall, charts.SEEN_COLOR) == pytest.approx(
        _pixels_of(short, charts.SEEN_COLOR), rel=0.02)
    assert _pixels_of(tall, charts.UNSEEN_COLOR) > 2.5 * _pixels_of(short, charts.UNSEEN_COLOR)


def _table(spread: float) -> dict:
    def cell(mean: float) -> dict:
        return {"mean": mean, "std": spread, "n": 3}

    return {
        "baseline": {"title": "baseline (background embedding)", "runs": [],
                     "miou_seen": cell(40.0), "miou_unseen": cell(5.0), "hiou": cell(9.0)},
        "pseudo": {"title": "+ pseudo labels", "runs": [],
                   "miou_seen": cell(55.0), "miou_unseen": cell(50.0), "hiou": cell(52.0)},
    }


def test_ablation_bars_by_hand() -> None:
    rows = charts.ablation_bars(_table(1.5))
    assert [r[0] for r in rows] == ["baseline (background embedding)", "+ pseudo labels"]
    assert rows[1][1] == {"miou_seen": (55.0, 1.5), "miou_unseen": (50.0, 1.5),
                          "hiou": (52.0, 1.5)}


def test_ablation_chart_draws_three_metrics(tmp_path) -> None:
    out = charts.ablation_chart(_table(2.0), tmp_path / "ablation.png")
    for color in (charts.SEEN_COLOR, charts.UNSEEN_COLOR, charts.HIOU_COLOR):
        assert _pixels_of(out, color) > 100
    # the unseen bars (5 + 50) cover less area than the seen bars (40 + 55)
    assert _pixels_of(out, charts.UNSEEN_COLOR) < _pixels_of(out, charts.SEEN_COLOR)


def test_training_and_evaluation_write_their_charts(synthetic_root, tmp_path, monkeypatch,
                                                    caplog) -> None:
    """The hooks: train() writes curves.png beside log.jsonl, evaluate --out writes
    NAME_per_class.png beside NAME.json, and a failing plot only warns."""
    from serve_run import train_tiny_run

    from celseg.cli import main

    monkeypatch.setenv("CELSEG_CACHE", str(tmp_path / "cache"))
    run = train_tiny_run(synthetic_root, tmp_path / "run", iterations=2)
    assert Image.open(run / "curves.png").format == "PNG"
    assert main(["evaluate", "--ckpt", str(run), "--out", str(tmp_path / "ev.json"),
                 "--no-progress", "--max-images", "2", "--device", "cpu"]) == 0
    assert Image.open(tmp_path / "ev_per_class.png").format == "PNG"

    def broken(*_args):
        raise RuntimeError("no plotting today")

    monkeypatch.setattr(charts, "training_curves", broken)
    train_tiny_run(synthetic_root, tmp_path / "run2", iterations=2)
    assert (tmp_path / "run2" / "metrics.json").is_file()  # the run itself finished
    assert not (tmp_path / "run2" / "curves.png").exists()
    assert "no plotting today" in caplog.text
