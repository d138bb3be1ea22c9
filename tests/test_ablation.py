"""Ablation pieces: variant names, the runner over splits and seeds, the aggregation and claims
against hand-computed numbers, the report written whole, and the unseen-pixel diagnostic."""

import ast
import json
import math
import statistics
import warnings
from pathlib import Path

import pytest
import torch

from celseg.ablation.diagnose import unseen_destinations
from celseg.ablation.runner import PseudoSettings, RunRecord, configure, run_ablation
from celseg.ablation.splits import unseen_sets
from celseg.ablation.stats import aggregate, claim_across_splits, claims_across_splits
from celseg.ablation.variants import VARIANTS, select
from celseg.config import RENAMED_VARIANTS, RenamedValueWarning, load_config
from celseg.data.classes import ClassInfo, load_classes
from celseg.errors import CelsegError

BY_KEY = {v.key: v for v in VARIANTS}


def test_select_adds_pseudo_for_self_training_and_rejects_unknown():
    keys = [v.key for v in select(["selftrain"])]
    assert keys == ["pseudo", "selftrain"]
    assert [v.key for v in select(None)] == [v.key for v in VARIANTS]
    with pytest.raises(CelsegError, match="nope"):
        select(["nope"])


def test_old_variant_names_are_read_through_the_alias_table_only():
    with pytest.warns(RenamedValueWarning, match="'bgfree'.*'background_free'"):
        assert [v.key for v in select(["bgfree", "ranking"])] == ["background_free", "ranking"]
    from celseg.ablation.open_vocab import SOURCE_VARIANTS

    keys = {v.key for v in (*VARIANTS, *SOURCE_VARIANTS)}
    assert set(RENAMED_VARIANTS.values()) <= keys
    assert not set(RENAMED_VARIANTS) & keys


def test_background_free_variants_never_use_background():
    for v in VARIANTS:
        if v.key != "baseline":
            assert "model.mode=background_free" in v.overrides
    assert "model.mode=background_embedding" in VARIANTS[0].overrides


def test_the_library_never_triggers_its_own_renamed_value_warning(synthetic_root, tmp_path):
    from celseg.ablation.open_vocab import SOURCE_VARIANTS, oracle_variant

    base = load_config(None, [f"data.root={synthetic_root}"])
    with warnings.catch_warnings():
        warnings.simplefilter("error", RenamedValueWarning)
        for v in (*VARIANTS, *SOURCE_VARIANTS, oracle_variant(synthetic_root)):
            configure(base, v, 0, tmp_path / v.key)
        select([v.key for v in VARIANTS])


def test_library_code_never_calls_the_cli_nor_runs_as_a_script():
    """Commands parse and write; the library (everything else) neither imports celseg.cli nor
    has a ``__main__`` entry point."""
    import celseg

    src = Path(celseg.__file__).parent
    offenders = []
    for path in src.rglob("*.py"):
        rel = path.relative_to(src)
        if rel.parts[0] == "commands" or str(rel) in ("cli.py", "__main__.py"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "celseg.cli" \
                    or isinstance(node, ast.Import) and any(a.name == "celseg.cli"
                                                            for a in node.names):
                offenders.append(f"{rel}: imports celseg.cli")
            if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test):
                offenders.append(f"{rel}: __main__ entry point")
    assert not offenders


def _record(key: str, split: str, seed: int, unseen: float) -> RunRecord:
    """A finished run under the ensemble with hIoU = 2 x unseen mIoU."""
    protocols = {"ensemble": {"miou_seen": 50.0, "miou_unseen": unseen, "hiou": 2 * unseen}}
    return RunRecord(BY_KEY[key], seed, Path("."), {"protocol": "ensemble",
                                                     **protocols["ensemble"],
                                                     "protocols": protocols}, split=split)


HAND = {  # (variant, split): unseen mIoU of seeds 0 and 1
    ("background_free", "split0"): (10.0, 14.0), ("background_free", "split1"): (20.0, 22.0),
    ("baseline", "split0"): (11.0, 15.0), ("baseline", "split1"): (16.0, 18.0),
}


def hand_records() -> list[RunRecord]:
    return [_record(key, split, seed, values[seed])
            for (key, split), values in HAND.items() for seed in (0, 1)]


def test_aggregate_pools_splits_and_seeds_and_keeps_each_split():
    row = aggregate(hand_records())["background_free"]
    pooled = row["protocols"]["ensemble"]["miou_unseen"]
    assert pooled["mean"] == pytest.approx(16.5)  # (10 + 14 + 20 + 22) / 4
    assert pooled["std"] == pytest.approx(math.sqrt(91 / 3))  # squares 42.25+6.25+12.25+30.25
    assert pooled["n"] == 4
    split0 = row["splits"]["split0"]["protocols"]["ensemble"]["miou_unseen"]
    assert (split0["mean"], split0["n"]) == (12.0, 2)
    assert split0["std"] == pytest.approx(math.sqrt(8))  # sample std of 10, 14
    assert row["splits"]["split1"]["miou_unseen"]["mean"] == pytest.approx(21.0)
    assert row["unseen_as_background"]["n"] == 0


def test_claims_across_splits_against_hand_numbers():
    table = aggregate(hand_records())
    claim = claim_across_splits(table, "background_free", "baseline", "ensemble")
    # split0: 12 - 13 = -1; split1: 21 - 17 = +4
    assert claim["per_split"] == {"split0": pytest.approx(-1.0), "split1": pytest.approx(4.0)}
    assert (claim["held"], claim["k"]) == (1, 2)
    assert claim["mean"] == pytest.approx(1.5)
    assert claim["std"] == pytest.approx(statistics.stdev([-1.0, 4.0]))
    hiou = claim_across_splits(table, "background_free", "baseline", "ensemble", "hiou")
    assert hiou["mean"] == pytest.approx(3.0) and hiou["held"] == 1
    assert claim_across_splits(table, "background_free", "baseline", "segmenter") is None
    assert claim_across_splits(table, "ranking", "background_free", "ensemble") is None
    rows = claims_across_splits(table)
    assert rows[0]["claim"].startswith("Claim 1") and rows[1]["protocol"] == "ensemble"
    assert rows[1]["miou_unseen"]["mean"] == pytest.approx(1.5)


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
    (["--splits", "0"], "--splits"),
    (["--splits", "9"], "got 9"),
    (["--pseudo-threshold", "1.5"], "1.5"),
    (["--self-train-threshold", "-0.1"], "-0.1"),
])
def test_ablate_rejects_bad_values_before_any_work(tmp_path, capsys, synthetic_root, argv,
                                                   named):
    from celseg.cli import main

    results = tmp_path / "RESULTS.md"
    results.write_text("earlier results")
    assert main(["ablate", *argv, "--out", str(tmp_path / "runs"), "--results", str(results),
                 "--quiet", "--set", f"data.root={synthetic_root}"]) == 2
    assert named in capsys.readouterr().err
    assert results.read_text() == "earlier results"  # nothing overwritten
    assert not (tmp_path / "runs").exists()


def test_ablate_missing_dataset_is_named(tmp_path, capsys):
    from celseg.cli import main

    assert main(["ablate", "--out", str(tmp_path / "runs"), "--quiet",
                 "--set", f"data.root={tmp_path / 'nowhere'}"]) == 2
    assert "nowhere" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_a_split_view_marks_its_classes_unseen_on_the_same_images(synthetic_root, tmp_path):
    from celseg.ablation.split_data import split_root
    from celseg.data.dataset import SegmentationDataset

    sets = unseen_sets(load_classes(synthetic_root), 2)
    assert split_root(synthetic_root, sets[0], tmp_path) == synthetic_root
    view = split_root(synthetic_root, sets[1], tmp_path)
    assert view == tmp_path / "split1" and split_root(synthetic_root, sets[1], tmp_path) == view
    other = tmp_path / "other"
    other.mkdir()
    (other / "images").mkdir()
    (other / "classes.json").write_text((synthetic_root / "classes.json").read_text())
    with pytest.raises(CelsegError, match="another dataset"):
        split_root(other, sets[1], tmp_path)  # the runs of the view keep their images
    info = load_classes(view)
    assert tuple(info.names[i] for i in info.unseen_ids) == sets[1].unseen
    assert (view / "images").samefile(synthetic_root / "images")
    full = SegmentationDataset(synthetic_root, "train", view="full")
    zero_shot = SegmentationDataset(view, "train", view="zero_shot")
    unseen = torch.tensor(info.unseen_ids)
    for i in range(3):
        truth, label = full[i][1], zero_shot[i][1]
        expected = truth.masked_fill(torch.isin(truth, unseen), 255)
        assert torch.equal(label, expected)


def test_runner_applies_each_split_and_resumes_finished_runs(synthetic_root, tmp_path,
                                                             monkeypatch):
    """Runs go to OUT/VARIANT/SPLIT/seedS on their split's data; pseudo labels are made per
    split for its own unseen classes; a second call trains nothing."""
    import celseg.ablation.runner as runner

    trained, labelled = [], []

    def fake_train(cfg, resume, progress):
        info = load_classes(cfg.data.root)
        trained.append((Path(cfg.train.out_dir), cfg.data.label_dir,
                        tuple(info.names[i] for i in info.unseen_ids)))
        summary = {"protocol": "segmenter", "miou_seen": 1.0, "miou_unseen": 2.0, "hiou": 3.0}
        Path(cfg.train.out_dir).mkdir(parents=True)
        (Path(cfg.train.out_dir) / "metrics.json").write_text(json.dumps(summary))
        return summary

    def fake_pseudo(vlm, data_root, out_dir, threshold, progress=True):
        info = load_classes(data_root)
        labelled.append((Path(out_dir), tuple(info.names[i] for i in info.unseen_ids)))
        Path(out_dir).mkdir(parents=True)
        (Path(out_dir) / "report.json").write_text("{}")
        return {}

    monkeypatch.setattr(runner, "train", fake_train)
    monkeypatch.setattr(runner, "pseudo_label", fake_pseudo)
    monkeypatch.setattr(runner, "load_vlm", lambda name: None)
    base = load_config(None, [f"data.root={synthetic_root}"])
    sets = unseen_sets(load_classes(synthetic_root), 2)
    variants = select(["background_free", "pseudo"])
    for _ in range(2):
        records, _ = run_ablation(base, variants, [0, 1], tmp_path, PseudoSettings("x"), sets,
                                  progress=False)
        assert len(records) == 8 and len(trained) == 8 and len(labelled) == 2
    assert labelled == [(tmp_path / "pseudo_labels" / s.name, s.unseen) for s in sets]
    expected = {(tmp_path / key / s.name / f"seed{seed}",
                 str(tmp_path / "pseudo_labels" / s.name) if key == "pseudo" else "", s.unseen)
                for s in sets for key in ("background_free", "pseudo") for seed in (0, 1)}
    assert set(trained) == expected
    assert {(r.split, r.data_root) for r in records} == {
        ("split0", str(synthetic_root)), ("split1", str(tmp_path / "data_splits" / "split1"))}


def _finished(folder: Path, unseen: float) -> None:
    folder.mkdir(parents=True)
    protocols = {"segmenter": {"miou_seen": 40.0, "miou_unseen": unseen / 10, "hiou": 1.0},
                 "ensemble": {"miou_seen": 50.0, "miou_unseen": unseen, "hiou": 2 * unseen}}
    (folder / "metrics.json").write_text(json.dumps(
        {"protocol": "ensemble", **protocols["ensemble"], "protocols": protocols}))


def test_report_only_reads_the_layout_before_splits(synthetic_root, tmp_path):
    """Split 0's finished runs in OUT/VARIANT/seedS (or an old variant name) are still read."""
    for seed, unseen in ((0, 50.0), (1, 54.0)):  # seed 2 never finished
        _finished(tmp_path / "ranking" / f"seed{seed}", unseen)
    _finished(tmp_path / "bgfree" / "seed0", 40.0)
    base = load_config(None, [f"data.root={synthetic_root}"])
    records, _ = run_ablation(base, select(["background_free", "ranking"]), [0, 1, 2], tmp_path,
                              PseudoSettings(), progress=False, report_only=True)
    assert sorted((r.variant.key, r.seed) for r in records) == [
        ("background_free", 0), ("ranking", 0), ("ranking", 1)]
    row = aggregate(records)["ranking"]
    assert row["protocols"]["ensemble"]["miou_unseen"]["mean"] == pytest.approx(52.0)
    assert row["protocols"]["segmenter"]["miou_unseen"]["mean"] == pytest.approx(5.2)
    assert row["miou_unseen"]["mean"] == pytest.approx(52.0)  # the runs' own protocol


def test_ablate_report_over_splits_is_written_whole(synthetic_root, tmp_path, capsys):
    from celseg.cli import main

    out = tmp_path / "runs"
    for (key, split), values in HAND.items():
        for seed in (0, 1):
            _finished(out / key / split / f"seed{seed}", values[seed])
    results = tmp_path / "docs" / "RESULTS.md"
    results.parent.mkdir()
    results.write_text("# Old report\n\n<!-- a section another command once kept -->\n")
    assert main(["ablate", "--report-only", "--splits", "2", "--seeds", "2", "--variants",
                 "baseline,background_free", "--no-figure", "--no-diagnosis", "--quiet",
                 "--out", str(out), "--results", str(results), "--overwrite",
                 "--set", f"data.root={synthetic_root}"]) == 0
    text = results.read_text()
    assert text.startswith("# Ablation") and "Old report" not in text and "kept" not in text
    sets = unseen_sets(load_classes(synthetic_root), 2)
    assert f"| split1 | {', '.join(sets[1].unseen)} |" in text
    assert "| dev0 |" in text and "Never unseen in these 2 split(s)" in text
    assert "| background-free | split1 | 50.0 ± 0.0 | 21.0 ± 1.4 | 42.0 ± 2.8 | 2 |" in text
    assert "| Claim 1: background-free beats the background-embedding baseline | ensemble | " \
           "1 of 2 | +1.5 ± 3.5 | 1 of 2 | +3.0 ± 7.1 | split0 -1.0, split1 +4.0 |" in text
    saved = json.loads((out / "ablation.json").read_text())
    assert saved["splits"]["split1"] == list(sets[1].unseen)


def test_a_finished_demo_run_under_an_old_name_is_read(tmp_path):
    from celseg.ablation.runner import run_dir

    assert run_dir(tmp_path, "ranking", "split0", 0, flat=True) == tmp_path / "ranking"
    _finished(tmp_path / "ce_ranking", 50.0)  # `celseg demo` wrote it before the rename
    assert run_dir(tmp_path, "ranking", "split0", 0, flat=True) == tmp_path / "ce_ranking"
    assert run_dir(tmp_path, "ranking", "split1", 0) == tmp_path / "ranking" / "split1" / "seed0"
    _finished(tmp_path / "ranking", 51.0)
    assert run_dir(tmp_path, "ranking", "split0", 0, flat=True) == tmp_path / "ranking"


def _target_record(key: str, split: str, seed: int, hiou: float, seg_unseen: float,
                   vlm_unseen: float) -> RunRecord:
    protocols = {"ensemble": {"miou_seen": 50.0, "miou_unseen": 40.0, "hiou": hiou},
                 "segmenter": {"miou_seen": 50.0, "miou_unseen": seg_unseen, "hiou": 1.0},
                 "vlm": {"miou_seen": 50.0, "miou_unseen": vlm_unseen, "hiou": 1.0}}
    return RunRecord(BY_KEY[key], seed, Path("."), {"protocol": "ensemble",
                                                     **protocols["ensemble"],
                                                     "protocols": protocols}, split=split)


def test_transfer_targets_against_hand_numbers():
    from celseg.ablation.report import targets_table
    from celseg.ablation.stats import transfer_targets

    records = [  # split0: ranking hIoU 54, 58 (mean 56) vs oracle 60, 60; split1: 45 vs 60
        _target_record("ranking", "split0", 0, 54.0, 10.0, 40.0),
        _target_record("ranking", "split0", 1, 58.0, 14.0, 40.0),
        _target_record("ranking", "split1", 0, 45.0, 36.0, 40.0),
        _target_record("oracle", "split0", 0, 60.0, 50.0, 50.0),
        _target_record("oracle", "split0", 1, 60.0, 50.0, 50.0),
        _target_record("oracle", "split1", 0, 60.0, 50.0, 50.0),
    ]
    targets = transfer_targets(aggregate(records))
    assert [t["variant"] for t in targets] == ["ranking", "ranking"]  # the oracle is no target
    oracle_ratio, segmenter_ratio = targets
    assert oracle_ratio["per_split"] == {"split0": pytest.approx(56 / 60),
                                         "split1": pytest.approx(0.75)}
    assert oracle_ratio["mean"] == pytest.approx((56 / 60 + 0.75) / 2)
    assert oracle_ratio["min"] == pytest.approx(0.75) and not oracle_ratio["met"]
    # segmenter alone unseen / the VLM branch's: split0 12 / 40, split1 36 / 40
    assert segmenter_ratio["per_split"] == {"split0": pytest.approx(0.3),
                                            "split1": pytest.approx(0.9)}
    assert segmenter_ratio["mean"] == pytest.approx(0.6) and not segmenter_ratio["met"]
    text = targets_table(targets)
    assert "| ranking | 0.84x | 0.75x |" in text and "split1 0.90x" in text
    assert "not run" in targets_table([])
