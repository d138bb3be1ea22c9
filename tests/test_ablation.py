"""Ablation pieces: variant selection, aggregation, and the unseen-pixel diagnostic."""

import math
from pathlib import Path

import pytest
import torch

from celseg.ablation.diagnose import unseen_destinations
from celseg.ablation.runner import RunRecord, aggregate
from celseg.ablation.variants import VARIANTS, select
from celseg.data.classes import ClassInfo
from celseg.errors import CelsegError


def test_select_adds_pseudo_for_self_training_and_rejects_unknown():
    keys = [v.key for v in select(["selftrain"])]
    assert keys == ["pseudo", "selftrain"]
    assert [v.key for v in select(None)] == [v.key for v in VARIANTS]
    with pytest.raises(CelsegError, match="nope"):
        select(["nope"])


def test_background_free_variants_never_use_background():
    for v in VARIANTS:
        if v.key != "baseline":
            assert "model.mode=background_free" in v.overrides
    assert "model.mode=background_embedding" in VARIANTS[0].overrides


def test_aggregate_mean_and_sample_std():
    v = VARIANTS[1]
    recs = [RunRecord(v, s, Path("."), {"miou_seen": x, "miou_unseen": y, "hiou": 0.0})
            for s, (x, y) in enumerate([(10.0, 1.0), (20.0, 3.0), (30.0, 5.0)])]
    row = aggregate(recs)[v.key]
    assert row["miou_seen"]["mean"] == pytest.approx(20.0)
    assert row["miou_seen"]["std"] == pytest.approx(10.0)  # sample std of 10, 20, 30
    assert row["miou_unseen"]["mean"] == pytest.approx(3.0)
    assert row["unseen_as_background"]["n"] == 0


def test_unseen_destinations_hand_counted():
    # classes: 0 "blue circle" (seen), 1 "red square" (seen), 2 "blue square" (unseen),
    # 3 "grass" (seen), 4 "dry grass" (unseen)
    info = ClassInfo(("blue circle", "red square", "blue square", "grass", "dry grass"),
                     ("seen", "seen", "unseen", "seen", "unseen"), ("thing",) * 5,
                     ((0, 0, 0),) * 5)
    m = torch.zeros(5, 5, dtype=torch.int64)
    m[2, 2] = 4  # correct
    m[2, 0] = 3  # seen, shares "blue"
    m[2, 4] = 1  # other unseen
    m[4, 3] = 2  # seen, shares "grass"
    m[4, 1] = 10  # seen, shares nothing
    m[0, 0] = 99  # seen ground truth is not counted
    d = unseen_destinations(m, info)
    total = 20
    assert d["correct"] == pytest.approx(100 * 4 / total)
    assert d["other_unseen"] == pytest.approx(100 * 1 / total)
    assert d["seen_sharing_word"] == pytest.approx(100 * 5 / total)
    assert d["seen_other"] == pytest.approx(100 * 10 / total)
    empty = unseen_destinations(torch.zeros(5, 5, dtype=torch.int64), info)
    assert math.isnan(empty["correct"])


@pytest.mark.parametrize("argv, named", [
    (["--seeds", "0"], "--seeds"),
    (["--seeds", "-1"], "-1"),
    (["--pseudo-threshold", "1.5"], "1.5"),
    (["--self-train-threshold", "-0.1"], "-0.1"),
])
def test_ablate_rejects_bad_values_before_any_work(tmp_path, capsys, argv, named):
    from celseg.cli import main

    results = tmp_path / "RESULTS.md"
    results.write_text("earlier results")
    assert main(["ablate", *argv, "--out", str(tmp_path / "runs"), "--results", str(results),
                 "--quiet"]) == 2
    assert named in capsys.readouterr().err
    assert results.read_text() == "earlier results"  # nothing overwritten
    assert not (tmp_path / "runs").exists()


def test_ablate_missing_dataset_is_named(tmp_path, capsys):
    from celseg.cli import main

    assert main(["ablate", "--out", str(tmp_path / "runs"), "--quiet",
                 "--set", f"data.root={tmp_path / 'nowhere'}"]) == 2
    assert "nowhere" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_report_only_collects_finished_runs_per_protocol(tmp_path):
    import json

    from celseg.ablation.runner import run_ablation
    from celseg.config import Config

    ranking = next(v for v in VARIANTS if v.key == "ranking")
    for seed, (seg, ens) in enumerate([(1.0, 50.0), (3.0, 54.0)]):  # seed 2 never finished
        run = tmp_path / "ranking" / f"seed{seed}"
        run.mkdir(parents=True)
        protocols = {"segmenter": {"miou_seen": 40.0, "miou_unseen": seg, "hiou": 2 * seg},
                     "ensemble": {"miou_seen": 60.0, "miou_unseen": ens, "hiou": ens}}
        (run / "metrics.json").write_text(json.dumps(
            {"protocol": "ensemble", **protocols["ensemble"], "protocols": protocols}))
    records, _ = run_ablation(Config(), (ranking,), [0, 1, 2], tmp_path, "", 0.5, 0.7,
                              progress=False, report_only=True)
    assert [r.seed for r in records] == [0, 1]
    row = aggregate(records)["ranking"]
    assert row["protocols"]["segmenter"]["miou_unseen"]["mean"] == pytest.approx(2.0)
    assert row["protocols"]["ensemble"]["miou_unseen"]["mean"] == pytest.approx(52.0)
    assert row["protocols"]["ensemble"]["miou_unseen"]["n"] == 2
    assert row["miou_unseen"]["mean"] == pytest.approx(52.0)  # the runs' own protocol
