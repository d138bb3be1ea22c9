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


def test_resume_without_checkpoint_is_an_error(tmp_path, capsys) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"train:\n  out_dir: {tmp_path / 'run'}\n")
    assert main(["train", "-c", str(cfg), "--resume"]) == 2
    assert "no checkpoint" in capsys.readouterr().err


def test_shipped_configs_load() -> None:
    from pathlib import Path

    from celseg.config import load_config

    root = Path(__file__).resolve().parents[1] / "configs"
    base = load_config(root / "synthetic.yaml")
    assert base.data.crop_size == 128 and base.train.batch_size == 8
    assert load_config(root / "synthetic_baseline.yaml").model.mode == "baseline"
    assert load_config(root / "synthetic_ce.yaml").model.mode == "ce"


def test_demo_rejects_unknown_variant(tmp_path, capsys) -> None:
    assert main(["demo", "--out", str(tmp_path), "--variants", "nope"]) == 2
    assert "nope" in capsys.readouterr().err
