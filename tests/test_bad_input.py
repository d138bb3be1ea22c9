"""Bad input at every command entry point: corrupt, empty, truncated, oversized, wrong-type and
out-of-range values and files.

Each test asserts three things: the exit code, a message naming the bad value or file, and that
no file outside the command's own output changed (sha256 of every file before and after).
"""

from __future__ import annotations

import numpy as np
import pytest
from bad_input_tools import assert_refused, png_header, snapshot, tiny_checkpoint
from PIL import Image

from celseg.cli import main


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("CELSEG_CACHE", str(tmp_path_factory.getbasetemp() / "text_cache"))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, synthetic_root):
    return tiny_checkpoint(tmp_path_factory.mktemp("bad_input") / "run", synthetic_root)


def _rgb(path, h=20, w=24, seed=0):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)
    return path


def _config(tmp_path, synthetic_root, text=""):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data:\n  root: {synthetic_root}\ntrain:\n  out_dir: {tmp_path / 'run'}\n"
                   + text)
    return cfg


# ------------------------------------------------------------- bad values and broken files
def test_decompression_bomb_header_is_named(run_dir, tmp_path, capsys):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_header(50_000, 50_000))
    err = assert_refused(main, ["predict", "--ckpt", str(run_dir), "--classes", "cat,dog",
                                "--device", "cpu", "--out", str(tmp_path / "pred"), str(bomb)],
                         capsys, names=["bomb.png", "50000x50000"], watch=[tmp_path, run_dir],
                         output=[tmp_path / "pred"])
    assert "CELSEG_MAX_IMAGE_PIXELS" in err  # and how to raise the limit on purpose


def test_truncated_checkpoint_is_named(run_dir, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    weights = run / "checkpoints" / "last.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    assert_refused(main, ["evaluate", "--ckpt", str(run), "--device", "cpu", "--no-progress"],
                   capsys, names=[str(weights)], watch=[tmp_path])


def test_batch_size_zero_is_named(tmp_path, synthetic_root, capsys):
    cfg = _config(tmp_path, synthetic_root)
    assert_refused(main, ["train", "-c", str(cfg), "--set", "train.batch_size=0"], capsys,
                   names=["train.batch_size", "0"], watch=[tmp_path, synthetic_root])
    assert not (tmp_path / "run").exists()


def test_negative_iterations_are_refused(tmp_path, synthetic_root, capsys):
    cfg = _config(tmp_path, synthetic_root)
    assert_refused(main, ["train", "-c", str(cfg), "--set", "train.iterations=-5"], capsys,
                   names=["train.iterations", "-5"], watch=[tmp_path, synthetic_root])
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_predict_never_writes_over_its_input(run_dir, tmp_path, capsys, overwrite):
    img_dir = tmp_path / "img_dir"
    img_dir.mkdir()
    photo = _rgb(img_dir / "photo.png")
    assert_refused(main, ["predict", "--ckpt", str(run_dir), "--classes", "cat,dog", "--device",
                          "cpu", str(photo), "--out", str(img_dir), *overwrite], capsys,
                   names=[str(photo)], watch=[tmp_path, run_dir])


# ----------------------------------------------------------------------------------- train
@pytest.mark.parametrize("override, named", [
    ("data.min_scale=2.0", ["data.max_scale", "min_scale"]),
    ("eval.window_stride=0", ["eval.window_stride", "0"]),
    ("eval.window_stride=600", ["eval.window_stride", "600"]),
    ("eval.vocabulary=sene", ["eval.vocabulary", "sene"]),
    ("data.setting=semi", ["data.setting", "semi"]),
    ("data.crop_size=0", ["data.crop_size", "0"]),
    ("data.color_jitter=1.5", ["data.color_jitter", "1.5"]),
    ("model.nheads=3", ["model.hidden_dim", "nheads"]),
    ("model.mode=bg", ["model.mode", "bg"]),
    ("loss.ranking_kind=pointwise", ["loss.ranking_kind", "pointwise"]),
    ("loss.ranking_tau=0", ["loss.ranking_tau", "0"]),
    ("loss.mask_weight=-1", ["loss.mask_weight", "-1"]),
    ("train.lr=0", ["train.lr", "0"]),
    ("train.log_every=0", ["train.log_every", "0"]),
    ("train.device=gpu", ["train.device", "gpu"]),
    ("train.lr=[", ["train.lr", "["]),
    ("eval.ensemble_alpha=1.5", ["eval.ensemble_alpha", "1.5"]),
    ("eval.ensemble_beta=-0.1", ["eval.ensemble_beta", "-0.1"]),
    ("eval.pooling=hard", ["eval.pooling", "hard"]),
    ("eval.ensemble_pseudo=gamma", ["eval.ensemble_pseudo", "gamma"]),
    ("eval.oov_logit_scale=0", ["eval.oov_logit_scale", "0"]),
    ("eval.clip_weight_seen=2", ["eval.clip_weight_seen", "2"]),
    ("data.label_dir=nowhere/labels", ["data.label_dir", "nowhere/labels"]),
    ("model.vlm=./no_such_vlm", ["model.vlm", "no_such_vlm"]),
    ("data.root=no/such/dataset", ["data.root", "no/such/dataset"]),
])
def test_train_refuses_bad_values_before_touching_anything(tmp_path, synthetic_root, capsys,
                                                           override, named):
    cfg = _config(tmp_path, synthetic_root)
    assert_refused(main, ["train", "-c", str(cfg), "--set", override], capsys, names=named,
                   watch=[tmp_path, synthetic_root])
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("content, named", [
    (b"\xff\xfe\x00garbage\x00", ["c.yaml", "YAML"]),
    (b"train: [1, 2\n", ["c.yaml", "YAML"]),
    (b"- a\n- b\n", ["c.yaml", "mapping"]),
    (b"train:\n  iterations: many\n", ["train.iterations", "many"]),
    (b"train:\n  batch_size: 2.5\n", ["train.batch_size", "2.5"]),
])
def test_train_refuses_bad_config_files(tmp_path, synthetic_root, capsys, content, named):
    cfg = tmp_path / "c.yaml"
    cfg.write_bytes(content)
    assert_refused(main, ["train", "-c", str(cfg)], capsys, names=named,
                   watch=[tmp_path, synthetic_root])


def test_train_refuses_a_dataset_with_a_damaged_class_file(tmp_path, capsys):
    root = tmp_path / "data"
    root.mkdir()
    (root / "classes.json").write_bytes(b"\x89PNG not json")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data:\n  root: {root}\ntrain:\n  out_dir: {tmp_path / 'run'}\n")
    assert_refused(main, ["train", "-c", str(cfg)], capsys,
                   names=[str(root / "classes.json"), "JSON"], watch=[tmp_path],
                   output=[tmp_path / "run"])


# --------------------------------------------------------------------------------- predict
@pytest.mark.parametrize("content, named", [
    (b"", ["cannot read image"]),
    (b"this is text, not a picture", ["cannot read image"]),
    (None, ["cannot read image"]),  # a PNG cut in half
])
def test_predict_refuses_broken_images(run_dir, tmp_path, capsys, content, named):
    path = tmp_path / "broken.png"
    if content is None:
        full = _rgb(tmp_path / "full.png", 64, 64).read_bytes()
        path.write_bytes(full[: len(full) // 2])
    else:
        path.write_bytes(content)
    assert_refused(main, ["predict", "--ckpt", str(run_dir), "--classes", "cat", "--device", "cpu",
                          "--out", str(tmp_path / "pred"), str(path)], capsys,
                   names=[*named, "broken.png"], watch=[tmp_path, run_dir],
                   output=[tmp_path / "pred"])


def test_predict_refuses_a_foreign_file_in_out_unless_overwrite(run_dir, tmp_path, capsys):
    image = _rgb(tmp_path / "photo.jpg")
    out = tmp_path / "pred"
    out.mkdir()
    (out / "photo.png").write_bytes(b"my own file")
    argv = ["predict", "--ckpt", str(run_dir), "--classes", "cat,dog", "--device", "cpu",
            str(image), "--out", str(out)]
    assert_refused(main, argv, capsys, names=[str(out / "photo.png"), "--overwrite"],
                   watch=[tmp_path, run_dir])
    assert main([*argv, "--overwrite"]) == 0
    assert Image.open(out / "photo.png").mode == "L"
    assert main(argv) == 0  # celseg wrote it now: a second run may replace it


@pytest.mark.parametrize("flag, value", [("--max-size", "-3")])
def test_predict_refuses_out_of_range_flags(run_dir, tmp_path, capsys, flag, value):
    image = _rgb(tmp_path / "a.png")
    assert_refused(main, ["predict", "--ckpt", str(run_dir), "--classes", "cat", flag, value,
                          "--out", str(tmp_path / "pred"), str(image)], capsys,
                   names=[flag, value], watch=[tmp_path, run_dir])


@pytest.mark.parametrize("inputs, extra, named", [
    (["{tmp}/none_*.png"], [], ["'{tmp}/none_*.png'", "matches no image"]),
    (["{tmp}/empty_dir"], [], ["{tmp}/empty_dir", "holds no images"]),
    (["{tmp}/a.png", "{tmp}/gone.png"], [], ["{tmp}/gone.png", "not found"]),
    (["{tmp}/a.png"], ["--ckpt", "nobody/no-such-model"], ["'nobody/no-such-model'",
                                                          "HF_HUB_OFFLINE=1"]),
    (["{tmp}/a.png"], ["--ckpt", "no/such/run"], ["no/such/run", "not found"]),
])
def test_predict_refuses_inputs_and_models_it_cannot_find(run_dir, tmp_path, capsys, inputs,
                                                          extra, named, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # as tests run
    _rgb(tmp_path / "a.png")
    (tmp_path / "empty_dir").mkdir()
    (tmp_path / "empty_dir" / "notes.txt").write_text("no images here")
    ckpt = extra or ["--ckpt", str(run_dir)]
    assert_refused(main, ["predict", *ckpt, "--classes", "cat", "--out", str(tmp_path / "pred"),
                          *[i.format(tmp=tmp_path) for i in inputs]], capsys,
                   names=[n.format(tmp=tmp_path) for n in named], watch=[tmp_path, run_dir])


def test_predict_refuses_an_output_inside_an_input_folder(run_dir, tmp_path, capsys):
    (tmp_path / "photos").mkdir()
    _rgb(tmp_path / "photos" / "a.png")
    assert_refused(main, ["predict", "--ckpt", str(run_dir), "--classes", "cat", "--out",
                          str(tmp_path / "photos" / "seg"), str(tmp_path / "photos")], capsys,
                   names=["inside the input folder", str(tmp_path / "photos")],
                   watch=[tmp_path, run_dir])


# -------------------------------------------------------------------------------- evaluate
def test_evaluate_refuses_a_damaged_run_config(run_dir, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    (run / "config.yaml").write_bytes(b"\x00\xff binary")
    assert_refused(main, ["evaluate", "--ckpt", str(run), "--device", "cpu"], capsys,
                   names=[str(run / "config.yaml")], watch=[tmp_path])


@pytest.mark.parametrize("override, named", [
    ("eval.window_stride=0", ["eval.window_stride", "0"]),
    ("eval.vocabulary=every", ["eval.vocabulary", "every"]),
    ("eval.ensemble_alpha=7", ["eval.ensemble_alpha", "7"]),
])
def test_evaluate_refuses_bad_overrides(run_dir, tmp_path, capsys, synthetic_root, override,
                                        named):
    assert_refused(main, ["evaluate", "--ckpt", str(run_dir), "--device", "cpu", "--set",
                          override], capsys, names=named, watch=[tmp_path, run_dir,
                                                                 synthetic_root])


def test_evaluate_out_may_not_replace_inputs(run_dir, tmp_path, capsys, synthetic_root):
    for out in (run_dir / "config.yaml", synthetic_root / "images" / "val" / "x.json",
                synthetic_root / "classes.json"):
        assert_refused(main, ["evaluate", "--ckpt", str(run_dir), "--device", "cpu", "--out",
                              str(out), "--overwrite"], capsys, names=[str(out)],
                       watch=[run_dir, synthetic_root])
    foreign = tmp_path / "summary.json"
    foreign.write_text("{}")
    assert_refused(main, ["evaluate", "--ckpt", str(run_dir), "--device", "cpu", "--out",
                          str(foreign)], capsys, names=[str(foreign), "--overwrite"],
                   watch=[tmp_path, run_dir, synthetic_root])


# ------------------------------------------------------------------------------------ show
def test_show_out_may_not_go_into_the_dataset_images(synthetic_root, capsys):
    out = synthetic_root / "images" / "val" / "sheet.png"
    assert_refused(main, ["show", str(synthetic_root), "--out", str(out), "--overwrite"], capsys,
                   names=[str(out)], watch=[synthetic_root])


def test_show_refuses_a_foreign_file_and_bad_counts(synthetic_root, tmp_path, capsys):
    foreign = _rgb(tmp_path / "holiday.png")
    assert_refused(main, ["show", str(synthetic_root), "--out", str(foreign)], capsys,
                   names=[str(foreign)], watch=[tmp_path, synthetic_root])
    assert_refused(main, ["show", str(synthetic_root), "--n", "0", "--out",
                          str(tmp_path / "s.png")], capsys, names=["--n", "0"],
                   watch=[tmp_path, synthetic_root])
    assert main(["show", str(synthetic_root), "--n", "2", "--out", str(tmp_path / "s.png")]) == 0


@pytest.mark.parametrize("classes, named", [
    ('{"classes": 3}', ["'classes' must be a list"]),
    ('{"classes": ["a"]}', ["entry 0"]),
    ('{"classes": [{"name": "a", "color": [1, 2]}]}', ["color"]),
    ('{"ignore_index": "x", "classes": [{"name": "a"}]}', ["ignore_index", "'x'"]),
])
def test_show_refuses_wrong_types_in_classes_json(tmp_path, capsys, classes, named):
    root = tmp_path / "data"
    (root / "images" / "val").mkdir(parents=True)
    (root / "annotations" / "val").mkdir(parents=True)
    (root / "classes.json").write_text(classes)
    assert_refused(main, ["show", str(root), "--out", str(tmp_path / "s.png")], capsys,
                   names=[*named, "classes.json"], watch=[tmp_path])


def test_show_refuses_an_rgb_label(tmp_path, capsys, synthetic_root):
    import shutil

    root = tmp_path / "data"
    shutil.copytree(synthetic_root, root)
    label = sorted((root / "annotations" / "val").iterdir())[0]
    _rgb(label, 64, 64)
    assert_refused(main, ["show", str(root), "--n", "6", "--out", str(tmp_path / "s.png")],
                   capsys, names=[str(label), "mode"], watch=[tmp_path],
                   output=[tmp_path / "s.png"])


# ---------------------------------------------------------------------------- pseudo-label
@pytest.mark.parametrize("flag, value", [("--threshold", "1.5"), ("--temperature", "0"),
                                         ("--smoothing-k", "0"), ("--max-items", "-1")])
def test_pseudo_label_refuses_out_of_range_values(synthetic_root, tmp_path, capsys, flag, value):
    assert_refused(main, ["pseudo-label", "--vlm", "minilm", "--data", str(synthetic_root),
                          "--out", str(tmp_path / "pseudo"), flag, value], capsys,
                   names=[flag, value], watch=[tmp_path, synthetic_root])


def test_pseudo_label_refuses_foreign_files_and_dataset_folders(synthetic_root, tmp_path,
                                                                capsys):
    out = tmp_path / "pseudo"
    out.mkdir()
    (out / "report.json").write_text('{"mine": true}')
    assert_refused(main, ["pseudo-label", "--vlm", "minilm", "--data", str(synthetic_root),
                          "--out", str(out)], capsys, names=[str(out / "report.json")],
                   watch=[tmp_path, synthetic_root])
    inside = synthetic_root / "annotations" / "train"
    assert_refused(main, ["pseudo-label", "--vlm", "minilm", "--data", str(synthetic_root),
                          "--out", str(inside), "--overwrite"], capsys, names=[str(inside)],
                   watch=[tmp_path, synthetic_root])


def test_pseudo_label_refuses_a_damaged_vlm_folder(synthetic_root, tmp_path, capsys):
    vlm = tmp_path / "vlm"
    vlm.mkdir()
    (vlm / "celseg_vlm.json").write_text("[1, 2, 3]")
    (vlm / "model.safetensors").write_bytes(b"\x00" * 16)
    assert_refused(main, ["pseudo-label", "--vlm", str(vlm), "--data", str(synthetic_root),
                          "--out", str(tmp_path / "pseudo")], capsys, names=[str(vlm)],
                   watch=[tmp_path, synthetic_root], output=[tmp_path / "pseudo"])


# ------------------------------------------------------------------------------- make-data
def test_make_data_refuses_a_foreign_folder_and_small_sizes(tmp_path, capsys):
    out = tmp_path / "photos"
    out.mkdir()
    (out / "wedding.jpg").write_bytes(b"precious")
    assert_refused(main, ["make-data", "synthetic", "--out", str(out), "--train", "2", "--val",
                          "1", "--captions", "0", "--quiet"], capsys,
                   names=[str(out), "wedding.jpg", "--overwrite"], watch=[tmp_path])
    assert_refused(main, ["make-data", "synthetic", "--out", str(tmp_path / "new"), "--size",
                          "8"], capsys, names=["--size", "8"], watch=[tmp_path])
    assert not (tmp_path / "new").exists()


def test_make_data_out_may_not_be_inside_src(tmp_path, capsys):
    src = tmp_path / "raw"
    src.mkdir()
    (src / "keep.txt").write_text("raw download")
    assert_refused(main, ["make-data", "voc", "--src", str(src), "--out", str(src / "conv"),
                          "--overwrite"], capsys, names=[str(src / "conv"), "input folder"],
                   watch=[tmp_path])


# ----------------------------------------------------------------------- pretrain / eval-vlm
@pytest.mark.parametrize("captions, named", [
    (b"\xff\xd8\xff\xe0 binary", ["captions.jsonl", "UTF-8"]),
    (b'{"image": "a.png", "caption": "x"\n', ["captions.jsonl:1"]),
    (b'["not", "an", "object"]\n', ["captions.jsonl:1"]),
])
def test_pretrain_vlm_refuses_damaged_caption_files(tmp_path, capsys, captions, named):
    data = tmp_path / "data"
    (data / "captions").mkdir(parents=True)
    (data / "captions" / "captions.jsonl").write_bytes(captions)
    assert_refused(main, ["pretrain-vlm", "--data", str(data), "--out", str(tmp_path / "vlm"),
                          "--no-progress"], capsys, names=named, watch=[data])


def test_pretrain_vlm_refuses_out_of_range_settings(synthetic_root, tmp_path, capsys):
    assert_refused(main, ["pretrain-vlm", "--data", str(synthetic_root), "--out",
                          str(tmp_path / "vlm"), "--batch-size", "0"], capsys,
                   names=["batch_size", "0"], watch=[tmp_path, synthetic_root])


def test_eval_vlm_refuses_a_missing_dataset(tmp_path, capsys):
    assert_refused(main, ["eval-vlm", "--vlm", "minilm", "--data", str(tmp_path / "nope")],
                   capsys, names=[str(tmp_path / "nope")], watch=[tmp_path])


# ---------------------------------------------------------------------------------- ablate
def test_ablate_refuses_outputs_in_the_dataset_and_missing_notes(synthetic_root, tmp_path,
                                                                 capsys):
    base = ["ablate", "--set", f"data.root={synthetic_root}", "--seeds", "1", "--quiet"]
    inside = synthetic_root / "images" / "ablation"
    assert_refused(main, [*base, "--out", str(inside), "--results", str(tmp_path / "R.md")],
                   capsys, names=[str(inside)], watch=[tmp_path, synthetic_root])
    assert_refused(main, [*base, "--out", str(tmp_path / "abl"), "--notes",
                          str(tmp_path / "notes.md"), "--results", str(tmp_path / "R.md")],
                   capsys, names=[str(tmp_path / "notes.md")], watch=[tmp_path, synthetic_root])
    foreign = tmp_path / "RESULTS.md"
    foreign.write_text("# my notes\n")
    assert_refused(main, [*base, "--out", str(tmp_path / "abl"), "--results", str(foreign)],
                   capsys, names=[str(foreign), "--overwrite"], watch=[tmp_path, synthetic_root])


def test_snapshot_sees_every_change(tmp_path):
    """The checksum helper itself: a changed byte, a new file and a removed file all show."""
    (tmp_path / "a").write_bytes(b"1")
    first = snapshot(tmp_path)
    (tmp_path / "a").write_bytes(b"2")
    assert snapshot(tmp_path) != first
    (tmp_path / "a").write_bytes(b"1")
    (tmp_path / "b").write_bytes(b"")
    assert snapshot(tmp_path) != first
    (tmp_path / "b").unlink()
    assert snapshot(tmp_path) == first
