"""Config loading: YAML with one base, --set overrides, errors that name the key and value."""

import dataclasses
import os
from pathlib import Path

import pytest

from celseg.config import Config, ConfigError, apply_override, load_config, save_config


def test_defaults_are_frozen():
    cfg = Config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.train.lr = 1.0  # type: ignore[misc]


def test_yaml_with_base_and_overrides(tmp_path):
    (tmp_path / "base.yaml").write_text(
        "train:\n  lr: 0.001\n  iterations: 10\nmodel:\n  mode: ce\n"
    )
    (tmp_path / "run.yaml").write_text("base: base.yaml\ntrain:\n  iterations: 20\n")
    cfg = load_config(tmp_path / "run.yaml", ["model.mode=baseline", "loss.ranking_weight=1"])
    assert cfg.train.lr == 0.001  # from the base
    assert cfg.train.iterations == 20  # the file overrides its base
    assert cfg.model.mode == "baseline"  # --set overrides the file
    assert cfg.loss.ranking_weight == 1.0 and isinstance(cfg.loss.ranking_weight, float)


def test_unknown_key_and_section_are_named(tmp_path):
    with pytest.raises(ConfigError, match="train.lrr"):
        apply_override(Config(), "train.lrr=1")
    with pytest.raises(ConfigError, match="trian"):
        apply_override(Config(), "trian.lr=1")
    (tmp_path / "bad.yaml").write_text("model:\n  hiden_dim: 3\n")
    with pytest.raises(ConfigError, match="model.hiden_dim"):
        load_config(tmp_path / "bad.yaml")


def test_wrong_type_is_named():
    with pytest.raises(ConfigError, match=r"train.iterations.*'many'"):
        apply_override(Config(), "train.iterations=many")
    with pytest.raises(ConfigError, match="train.iterations"):
        apply_override(Config(), "train.iterations=1.5")
    with pytest.raises(ConfigError, match="data.flip"):
        apply_override(Config(), "data.flip=3")
    with pytest.raises(ConfigError, match="section.key=value"):
        apply_override(Config(), "iterations=3")


def test_string_field_keeps_numeric_text():
    cfg = apply_override(Config(), "data.root=123")
    assert cfg.data.root == "123"


def test_base_may_not_chain(tmp_path):
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("train: {}\n")
    (tmp_path / "c.yaml").write_text("base: a.yaml\n")
    with pytest.raises(ConfigError, match="base"):
        load_config(tmp_path / "c.yaml")


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml"):
        load_config(tmp_path / "nope.yaml")


def test_save_round_trip(tmp_path):
    cfg = apply_override(Config(), "train.iterations=7")
    save_config(cfg, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == cfg


def test_removed_keys_of_saved_configs_still_load(tmp_path) -> None:
    """A run's config.yaml written by an earlier version holds train.self_train_rounds."""
    (tmp_path / "config.yaml").write_text("train:\n  self_train_rounds: 0\n  iterations: 7\n")
    assert load_config(tmp_path / "config.yaml").train.iterations == 7
    assert not hasattr(load_config(None).train, "self_train_rounds")


def test_saved_ablation_checkpoint_still_loads() -> None:
    """A checkpoint written before the refactor (its config holds train.self_train_rounds);
    ``CELSEG_OLD_RUN`` names another such run folder."""
    default = Path(__file__).resolve().parents[1] / "runs" / "ablation" / "ranking" / "seed0"
    run = Path(os.environ.get("CELSEG_OLD_RUN", default))
    if not (run / "checkpoints" / "last.safetensors").is_file():
        pytest.skip("no saved ablation run here")
    from celseg.engine.checkpoint import load_segmenter

    model, cfg = load_segmenter(run)
    assert not model.has_background and cfg.loss.ranking_weight == 1.0
