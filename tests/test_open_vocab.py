"""Open-vocabulary transfer: the shared / new name split of mIoU, the VLM pretrained on both
worlds' captions, and one evaluation path for the embedded and the real cross-dataset tables."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from celseg.ablation import open_vocab
from celseg.ablation.packaged import config_path
from celseg.cli import main
from celseg.data.classes import load_classes
from celseg.evaluation.name_split import name_split_miou

REPO = Path(__file__).resolve().parents[1]


def test_name_split_hand_computed():
    per_class = {"a": {"iou": 50.0, "present": True}, "b": {"iou": None, "present": False},
                 "c": {"iou": 20.0, "present": True}, "d": {"iou": 40.0, "present": True},
                 "e": {"iou": float("nan"), "present": False}}
    got = name_split_miou(per_class, ["a", "b", "z"])
    assert got["all"] == pytest.approx((50 + 20 + 40) / 3)
    assert got["shared"] == pytest.approx(50.0)  # b is absent from the ground truth
    assert got["new"] == pytest.approx(30.0)  # e is absent too
    assert (got["n_shared"], got["n_new"]) == (2, 3)
    assert math.isnan(name_split_miou(per_class, [])["shared"])


def test_open_vocab_rejects_bad_seeds_before_any_work(tmp_path, capsys):
    results = tmp_path / "OV.md"
    results.write_text("earlier report")
    assert main(["open-vocab", "--seeds", "0", "--out", str(tmp_path / "runs"), "--results",
                 str(results), "--quiet"]) == 2
    assert "--seeds" in capsys.readouterr().err
    assert results.read_text() == "earlier report" and not (tmp_path / "runs").exists()


def test_target_line_against_hand_numbers():
    def row(new):
        return {"scores": {"ensemble": {"new": {"mean": new}}}}

    line = open_vocab.target_line({"background_free_all": row(40.0), "oracle_ov": row(60.0)})
    assert "0.67 x oracle" in line and "not met" in line and "8.0 mIoU short" in line
    assert "**met**" in open_vocab.target_line({"background_free_all": row(50.0),
                                                "oracle_ov": row(60.0)})


@pytest.fixture(scope="module")
def both_worlds_vlm(tmp_path_factory, synthetic_root, ov_root):
    """A LiT VLM pretrained (2 steps) on the caption splits of both generated datasets."""
    out = tmp_path_factory.mktemp("vlm") / "vlm"
    assert main(["pretrain-vlm", "--data", str(synthetic_root), str(ov_root), "--out", str(out),
                 "--steps", "2", "--batch-size", "8", "--threads", "1", "--no-progress"]) == 0
    return out


def test_vlm_pretrains_on_both_caption_splits(both_worlds_vlm, synthetic_root, ov_root):
    from celseg.vlm.pretrain import read_captions

    def n_train(root):
        lines = (root / "captions" / "captions.jsonl").read_text().splitlines()
        return sum(json.loads(x)["split"] == "train" for x in lines)

    summary = json.loads((both_worlds_vlm / "pretrain_summary.json").read_text())
    assert summary["images"] == n_train(synthetic_root) + n_train(ov_root)
    meta = json.loads((both_worlds_vlm / "celseg_vlm.json").read_text())
    assert meta["data"] == [str(synthetic_root), str(ov_root)]
    entries = read_captions([synthetic_root, ov_root])
    assert any("hexagon" in e["caption"] or "ring" in e["caption"] for e in entries)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, synthetic_root, both_worlds_vlm):
    from bad_input_tools import tiny_training

    out = tmp_path_factory.mktemp("run") / "run"
    sets = [*tiny_training(1, ckpt_every=1), f"model.vlm={both_worlds_vlm}",
            "data.setting=oracle", f"data.root={synthetic_root}", f"train.out_dir={out}"]
    assert main(["train", "-c", str(config_path("synthetic_background_free.yaml")),
                 "--no-progress", "--set", *sets]) == 0
    return out


@pytest.fixture(scope="module")
def voc_root(tmp_path_factory):
    """The VOC converter's test fixture (official layout) converted to celseg's layout."""
    from test_convert_voc import make_voc

    from celseg.data.convert import CONVERTERS

    raw = tmp_path_factory.mktemp("vocraw")
    make_voc(raw)
    out = tmp_path_factory.mktemp("voc") / "voc"
    CONVERTERS["voc"](raw, out, progress=False)
    return out


@pytest.fixture
def evaluate_calls(monkeypatch):
    """Every call of celseg.engine.evaluator.evaluate: (class names, eval config), wherever a
    module imported the name from."""
    import celseg.engine.evaluate_checkpoint as evaluate_checkpoint
    import celseg.engine.evaluator as evaluator

    calls, real = [], evaluator.evaluate

    def spy(model, dataset, text_emb, class_info, eval_cfg, device, **kw):
        calls.append((class_info.names, eval_cfg))
        return real(model, dataset, text_emb, class_info, eval_cfg, device, **kw)

    for module in (evaluator, evaluate_checkpoint):
        monkeypatch.setattr(module, "evaluate", spy)
    return calls


def test_real_data_ov_eval_is_the_embedded_cross_dataset_path(tiny_run, voc_root, ov_root,
                                                              synthetic_root, tmp_path,
                                                              evaluate_calls):
    """``celseg evaluate -c configs/paper/ov_eval_voc20.yaml`` on converted real-format data and
    the open-vocab table's evaluation are one code path: the same function, the same result."""
    paper_cfg = REPO / "configs" / "paper" / "ov_eval_voc20.yaml"
    assert main(["evaluate", "--ckpt", str(tiny_run), "-c", str(paper_cfg), "--data",
                 str(voc_root), "--out", str(tmp_path / "cli.json"), "--no-progress"]) == 0
    via_table = open_vocab.cross_evaluate(tiny_run, paper_cfg, voc_root, tmp_path / "ov.json")
    embedded = open_vocab.cross_evaluate(tiny_run, config_path(open_vocab.EVAL_CONFIG), ov_root,
                                         tmp_path / "emb.json")
    assert len(evaluate_calls) == 3
    (voc_names, voc_cfg), again, (ov_names, ov_cfg) = evaluate_calls
    assert again == (voc_names, voc_cfg) and voc_cfg.sliding_window  # the paper's eval keys
    assert not ov_cfg.sliding_window and "purple hexagon" in ov_names
    cli = json.loads((tmp_path / "cli.json").read_text())
    assert via_table["protocols"].keys() == cli["protocols"].keys() >= {"segmenter", "ensemble"}
    for p in cli["protocols"]:
        assert via_table["protocols"][p]["per_class"] == cli["protocols"][p]["per_class"]
    # VOC shares no name with the generated world: every class is new
    first = load_classes(synthetic_root).names
    scores = open_vocab.protocol_scores(via_table, first)["ensemble"]
    assert scores["n_shared"] == 0 and scores["n_new"] == 20
    ov_scores = open_vocab.protocol_scores(embedded, ["red circle", "grass", "sand"])
    assert ov_scores["segmenter"]["n_shared"] == 3


def test_open_vocab_command_writes_its_report_whole(synthetic_root, ov_root, both_worlds_vlm,
                                                    tmp_path):
    from bad_input_tools import tiny_training

    results = tmp_path / "OV.md"
    results.write_text("# An older report\n")
    out = tmp_path / "runs"
    assert main(["open-vocab", "--seeds", "1", "--data", str(synthetic_root), "--ov-data",
                 str(ov_root), "--vlm", str(both_worlds_vlm), "--out", str(out), "--results",
                 str(results), "--quiet", "--overwrite",
                 "--set", *tiny_training(1, ckpt_every=0)]) == 0
    text = results.read_text()
    assert text.startswith("# Open-vocabulary transfer") and "older report" not in text
    saved = json.loads((out / "open_vocab.json").read_text())
    assert set(saved["table"]) == {"baseline_all", "background_free_all", "oracle_ov"}
    assert (out / "open_vocab.md").read_text() == text
    for row in saved["table"].values():
        assert f"| {row['title']} |" in text
    assert "0.8 x" in text


def test_protocol_study_command_reads_each_run_on_its_own_data(tiny_run, tmp_path):
    out = tmp_path / "study.json"
    assert main(["protocol-study", "--ckpt", str(tiny_run), "--settings", "cheap",
                 "--max-images", "1", "--no-progress", "--out", str(out)]) == 0
    from celseg.ablation.protocol_study import PRESETS

    study = json.loads(out.read_text())[str(tiny_run)]
    assert list(study) == list(PRESETS["cheap"])
    assert study["segmenter alone"]["protocol"] == "segmenter"
    assert study["soft, renorm, x1"]["protocol"] == "ensemble"


def test_pixel_preset_matches_evaluate_from_the_given_base_settings(tiny_run, tmp_path,
                                                                    capsys):
    """The 'pixel' settings start from ``--set`` eval keys (here alpha 0.3, not the run's) and
    each scores what ``celseg evaluate`` scores with the same keys."""
    from celseg.ablation.protocol_study import PIXEL_WEIGHTS, PRESETS
    from celseg.engine.evaluate_checkpoint import evaluate_checkpoint

    out = tmp_path / "pixel.json"
    assert main(["protocol-study", "--ckpt", str(tiny_run), "--settings", "pixel",
                 "--set", "eval.ensemble_alpha=0.3", "--max-images", "2", "--no-progress",
                 "--out", str(out)]) == 0
    study = json.loads(out.read_text())[str(tiny_run)]
    assert list(study) == list(PRESETS["pixel"])
    for weight in (PIXEL_WEIGHTS[0], PIXEL_WEIGHTS[-1]):
        summary = evaluate_checkpoint(tiny_run, overrides=[
            "eval.ensemble_alpha=0.3", f"eval.ensemble_pixel_weight={weight}",
            "eval.pooling=binary", "eval.ensemble_renorm=true", "eval.seen_calibration=0"],
            max_images=2, progress=False, device="cpu")
        assert summary["ensemble"]["alpha"] == 0.3
        assert summary["ensemble"]["pixel_weight"] == weight
        assert study[f"pixel weight {weight:g}"]["miou_all"] == pytest.approx(
            summary["protocols"]["ensemble"]["miou_all"], abs=1e-6)
    # only eval / data keys: a model key is named in the error, nothing is evaluated
    assert main(["protocol-study", "--ckpt", str(tiny_run), "--settings", "pixel",
                 "--set", "model.hidden_dim=8", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "protocol-study --set" in err and "model.hidden_dim=8" in err


def test_scale_preset_matches_evaluate_at_each_input_scale(tiny_run, tmp_path):
    """Every 'scale' setting of the study scores what ``celseg evaluate`` scores with the same
    keys: the study's shared forward pass changes nothing."""
    from celseg.ablation.protocol_study import PRESETS, SCALES, study_all
    from celseg.engine.evaluate_checkpoint import evaluate_checkpoint

    study = study_all([str(tiny_run)], preset="scale", max_images=2, progress=False)
    study = study[str(tiny_run)]
    assert list(study) == list(PRESETS["scale"])
    for scale in (SCALES[0], SCALES[-1]):
        summary = evaluate_checkpoint(tiny_run, overrides=[
            f"eval.dense_input_scale={scale}", "eval.pooling=binary",
            "eval.ensemble_renorm=true", "eval.seen_calibration=0"],
            max_images=2, progress=False, device="cpu")
        for title, protocol in ((f"binary, renorm, x{scale:g}", "ensemble"),
                                (f"VLM alone, x{scale:g}", "vlm")):
            assert study[title]["protocol"] == protocol
            assert study[title]["miou_all"] == pytest.approx(
                summary["protocols"][protocol]["miou_all"], abs=1e-6)


def test_ablate_re_evaluate_rewrites_finished_runs_and_keeps_the_previous(
        tiny_run, synthetic_root, tmp_path, monkeypatch):
    """``celseg ablate --re-evaluate`` trains nothing, evaluates each finished run again with
    the evaluation keys a run trained now would have (here the ``--set`` beta: what ``celseg
    evaluate`` gives with it) and keeps the old summary beside it."""
    import shutil

    from celseg.engine.evaluate_checkpoint import evaluate_checkpoint

    out = tmp_path / "runs"
    run = out / "oracle" / "split0" / "seed0"
    shutil.copytree(tiny_run, run)
    stale = {"step": 1, "protocol": "ensemble", "miou_seen": 1.0, "miou_unseen": 1.0,
             "hiou": 1.0, "protocols": {}}
    (run / "metrics.json").write_text(json.dumps(stale))
    assert main(["ablate", "--re-evaluate", "--variants", "oracle", "--seeds", "1",
                 "--no-figure", "--no-diagnosis", "--quiet", "--out", str(out),
                 "--results", str(tmp_path / "r.md"), "--overwrite",
                 "--set", f"data.root={synthetic_root}", "eval.ensemble_beta=0.9"]) == 0
    assert json.loads((run / "metrics.previous.json").read_text()) == stale
    fresh = json.loads((run / "metrics.json").read_text())
    want = evaluate_checkpoint(run, overrides=["eval.ensemble_beta=0.9"], progress=False)
    # the tiny run evaluated in batches of 2; a run trained now, in batches of 16
    assert fresh["re_evaluated"] == ["eval.batch_size=16", "eval.ensemble_beta=0.9"]
    assert fresh["step"] == 1 and fresh["hiou"] == pytest.approx(want["hiou"])
    assert fresh["protocols"]["vlm"]["hiou"] == pytest.approx(want["protocols"]["vlm"]["hiou"])
    assert f"{fresh['hiou']:.1f}" in (tmp_path / "r.md").read_text()
    import celseg.engine.evaluate_checkpoint as module

    def no_second_evaluation(*args, **kwargs):
        raise AssertionError("evaluated a run that was already evaluated with these keys")

    monkeypatch.setattr(module, "evaluate_checkpoint", no_second_evaluation)
    assert main(["ablate", "--re-evaluate", "--variants", "oracle", "--seeds", "1",
                 "--no-figure", "--no-diagnosis", "--quiet", "--out", str(out),
                 "--results", str(tmp_path / "r.md"), "--overwrite",
                 "--set", f"data.root={synthetic_root}", "eval.ensemble_beta=0.9"]) == 0
    assert json.loads((run / "metrics.json").read_text()) == fresh  # resumed: nothing redone
    assert not list(out.glob("oracle/split0/seed0/checkpoints/*.tmp"))


def test_study_computes_the_vlm_dense_map_once_per_batch_and_scale(tiny_run, monkeypatch):
    """Settings at the same input scale share one VLM pass per batch (the wrapper survives the
    path's ``.to(device)``): three settings cost the VLM passes of one."""
    from celseg.ablation import protocol_study
    from celseg.vlm.lit import LiTModel

    passes = []
    real = LiTModel.dense_features

    def counting(self, images):
        passes.append(tuple(images.shape))
        return real(self, images)

    monkeypatch.setattr(LiTModel, "dense_features", counting)

    def count(titles):
        passes.clear()
        protocol_study.study(tiny_run, synthetic_data_root(tiny_run), progress=False,
                             settings={t: protocol_study.SETTINGS[t] for t in titles},
                             max_images=3)
        return len(passes)

    one = count(["alpha 0.4, beta 0.8"])
    assert one >= 1
    assert count(["alpha 0.3, beta 0.8", "alpha 0.4, beta 0.8", "VLM alone, x1"]) == one


def synthetic_data_root(run) -> str:
    from celseg.config import load_config
    from celseg.engine.checkpoint import resolve_checkpoint

    return load_config(resolve_checkpoint(run)[1]).data.root
