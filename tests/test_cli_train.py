"""Command-line surface of train / evaluate / predict / demo: help text and clear errors."""

from __future__ import annotations

import argparse

import pytest

from celseg.cli import build_parser, main

MINE = ("train", "evaluate", "predict", "demo")


@pytest.mark.parametrize("command", MINE)
def test_every_flag_has_help(command: str) -> None:
    parser = build_parser(only=command)
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for action in sub.choices[command]._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        assert action.help, f"{command} {action.option_strings or action.dest} has no help"


@pytest.mark.parametrize("command", MINE)
def test_help_exits_cleanly(command: str, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    assert "usage" in capsys.readouterr().out


def test_train_bad_override_is_named(tmp_path, capsys) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("train:\n  iterations: 2\n")
    assert main(["train", "-c", str(cfg), "--set", "train.nope=1"]) == 2
    assert "train.nope" in capsys.readouterr().err


def test_resume_without_checkpoint_is_an_error(tmp_path, capsys, synthetic_root) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data:\n  root: {synthetic_root}\ntrain:\n  out_dir: {tmp_path / 'run'}\n")
    assert main(["train", "-c", str(cfg), "--resume"]) == 2
    assert "no checkpoint" in capsys.readouterr().err


def test_shipped_configs_load() -> None:
    from pathlib import Path

    from celseg.config import load_config

    root = Path(__file__).resolve().parents[1] / "configs"
    base = load_config(root / "synthetic.yaml")
    assert base.data.crop_size == 128 and base.train.batch_size == 8
    assert load_config(root / "synthetic_baseline.yaml").model.mode == "background_embedding"
    assert load_config(root / "synthetic_background_free.yaml").model.mode == "background_free"
    ranking = load_config(root / "synthetic_ranking.yaml")
    assert ranking.model.mode == "background_free" and ranking.loss.ranking_weight > 0


def test_demo_finds_its_configs_inside_the_installed_package(tmp_path, monkeypatch) -> None:
    """Configs ship as package data: found from any working directory (as from a wheel)."""
    from pathlib import Path

    import celseg
    from celseg.ablation.demo import config_path
    from celseg.config import load_config

    monkeypatch.chdir(tmp_path)  # no configs/ here
    path = config_path("synthetic.yaml")
    assert path.parent == Path(celseg.__file__).resolve().parent / "configs"
    assert load_config(path).data.crop_size == 128


def test_demo_rejects_unknown_variant(tmp_path, capsys) -> None:
    assert main(["demo", "--out", str(tmp_path), "--variants", "nope"]) == 2
    assert "nope" in capsys.readouterr().err


def test_demo_end_to_end_small(tmp_path, capsys) -> None:
    """The whole main job on a tiny benchmark; a second run reuses every finished step."""
    import json

    out = tmp_path / "demo"
    argv = ["demo", "--out", str(out), "--train-images", "8", "--val-images", "4",
            "--captions", "48", "--size", "64", "--vlm-steps", "2", "--no-progress",
            "--set", "train.iterations=2", "train.batch_size=2", "model.pretrained=false",
            "data.crop_size=64", "train.warmup_iters=1", "train.ckpt_every=0"]
    assert main(argv) == 0
    first = capsys.readouterr().out
    assert "| baseline |" in first and "| ranking |" in first
    for variant in ("baseline", "ranking"):
        metrics = json.loads((out / "runs" / variant / "metrics.json").read_text())
        assert 0.0 <= metrics["miou_seen"] <= 100.0
    assert (out / "overlays" / "val_panel.png").is_file()
    assert "unseen_as_background" in json.loads(
        (out / "runs" / "baseline" / "metrics.json").read_text())
    stamp = (out / "runs" / "baseline" / "metrics.json").stat().st_mtime_ns
    assert main(argv) == 0
    second = capsys.readouterr().out
    assert second.count("cached") >= 4  # data, vlm, both runs (and the overlays)
    assert (out / "runs" / "baseline" / "metrics.json").stat().st_mtime_ns == stamp


@pytest.mark.parametrize("flag", ["--train-images", "--val-images", "--captions", "--size"])
def test_demo_rejects_non_positive_sizes(tmp_path, capsys, flag) -> None:
    assert main(["demo", "--out", str(tmp_path / "d"), flag, "0", "--no-progress"]) == 2
    assert flag in capsys.readouterr().err
    assert not (tmp_path / "d").exists()
