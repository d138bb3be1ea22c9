"""benchmarks/bench_speed.py end to end at a tiny size: every row printed as a ratio and
written with its keys."""

import json
import re
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_speed  # noqa: E402

ROW_KEYS = {"bench", "model", "size", "batch", "reference", "reference_ms", "ms", "ratio",
            "target", "images_per_s"}


def test_tiny_run_prints_ratios_and_writes_rows(tmp_path, capsys):
    out = tmp_path / "speed.json"
    bench_speed.main(["--steps", "1", "--warmup", "0", "--train", "64x2", "--infer", "64x1",
                      "--out", str(out), "--device", "cpu"])
    lines = [line for line in capsys.readouterr().out.splitlines() if " vs " in line]
    assert len(lines) == 3  # two training variants, one inference setting
    assert all(re.search(r" = \d+\.\d\dx \(", line) for line in lines), lines
    rows = json.loads(out.read_text())["rows"]
    assert [r["bench"] for r in rows] == ["train", "train", "inference"]
    for r in rows:
        assert set(r) == ROW_KEYS
        assert r["ratio"] == pytest.approx(r["ms"] / r["reference_ms"], rel=1e-3)
        per_s = 1000 * r["batch"] / r["ms"]
        assert r["images_per_s"] == pytest.approx(per_s, rel=1e-2, abs=1e-3)
        assert r["target"] is None  # targets belong to the default settings, not 64 px
    assert (rows[0]["size"], rows[0]["batch"], rows[2]["size"], rows[2]["batch"]) == (64, 2, 64, 1)


def test_training_step_updates_the_model_and_the_reference_does_not():
    parts = bench_speed.Trainable(["model.dec_layers=1"], torch.device("cpu"))
    images, labels = bench_speed.rendered_batch(0, 2, 64)
    images = bench_speed.normalize(images)
    before = {k: v.clone() for k, v in parts.model.state_dict().items()}
    parts.backbone_step(images)
    assert all(torch.equal(before[k], v) for k, v in parts.model.state_dict().items())
    assert all(p.grad is None for p in parts.model.parameters())
    parts.step(images, labels)
    changed = [k for k, v in parts.model.state_dict().items() if not torch.equal(before[k], v)]
    assert any(k.startswith("backbone.") for k in changed)
    assert any(not k.startswith("backbone.") for k in changed)


def test_bad_settings_are_refused(capsys):
    for argv in (["--steps", "0"], ["--infer", "64"]):
        with pytest.raises(SystemExit):
            bench_speed.main(argv)
    assert "SIZExBATCH" in capsys.readouterr().err


def test_a_trained_run_is_timed_with_its_own_vocabulary(tmp_path, synthetic_root, make_tiny_run):
    run = make_tiny_run(tmp_path, f"data.root={synthetic_root}")
    [r] = bench_speed.inference_rows(torch.device("cpu"), (1, 0), [(64, 2)], str(run), [])
    assert (r["model"], r["size"], r["batch"], r["target"]) == ("trained weights", 64, 2, None)
    _, text_emb, weights = bench_speed.inference_model(torch.device("cpu"), str(run), [])
    assert weights == "trained" and text_emb.shape == (24, 384)  # the benchmark's 24 names
