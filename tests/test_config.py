"""Config loading: YAML with one base, --set overrides, errors that name the key and value."""

import dataclasses
import os
from pathlib import Path

import pytest

from celseg.config import (
    RENAMED_VALUES,
    Config,
    ConfigError,
    ModelConfig,
    RenamedValueWarning,
    apply_override,
    load_config,
    save_config,
)


def test_defaults_are_frozen():
    cfg = Config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.train.lr = 1.0  # type: ignore[misc]


def test_yaml_with_base_and_overrides(tmp_path):
    (tmp_path / "base.yaml").write_text(
        "train:\n  lr: 0.001\n  iterations: 10\nmodel:\n  mode: background_free\n"
    )
    (tmp_path / "run.yaml").write_text("base: base.yaml\ntrain:\n  iterations: 20\n")
    cfg = load_config(tmp_path / "run.yaml", ["model.mode=background_embedding",
                                                "loss.ranking_weight=1"])
    assert cfg.train.lr == 0.001  # from the base
    assert cfg.train.iterations == 20  # the file overrides its base
    assert cfg.model.mode == "background_embedding"  # --set overrides the file
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

    with pytest.warns(DeprecationWarning, match="'ce'.*'background_free'"):
        model, cfg = load_segmenter(run)  # its config.yaml says model.mode: ce
    assert not model.has_background and cfg.loss.ranking_weight == 1.0
    assert cfg.model.mode == "background_free"


OLD_MODES = sorted(RENAMED_VALUES[("model", "mode")].items())


@pytest.mark.parametrize("old, new", OLD_MODES)
def test_old_mode_spellings_load_with_a_warning(tmp_path, old, new) -> None:
    """model.mode was 'ce' / 'baseline'; both still load, read as the new names."""
    assert issubclass(RenamedValueWarning, DeprecationWarning)
    with pytest.warns(RenamedValueWarning, match=f"'model.mode'.*'{old}'.*'{new}'"):
        assert load_config(None, [f"model.mode={old}"]).model.mode == new  # --set
    (tmp_path / "old.yaml").write_text(f"model:\n  mode: {old}\n")
    with pytest.warns(RenamedValueWarning, match=f"'{old}'.*'{new}'"):
        assert load_config(tmp_path / "old.yaml").model.mode == new  # a YAML file
    (tmp_path / "run.yaml").write_text("base: old.yaml\n")
    with pytest.warns(RenamedValueWarning, match=f"'{old}'.*'{new}'"):
        cfg = load_config(tmp_path / "run.yaml", ["train.iterations=3"])  # a base, + overrides
    assert cfg.model.mode == new and cfg.train.iterations == 3
    with pytest.warns(RenamedValueWarning, match=f"'{old}'.*'{new}'"):
        assert ModelConfig(mode=old).mode == new  # the dataclass itself
    assert load_config(None, [f"model.mode={new}"]) == load_config(None, ["model.mode=" + new])
    with pytest.warns(RenamedValueWarning):
        assert load_config(None, [f"model.mode={old}"]) == load_config(None, [f"model.mode={new}"])


def test_new_mode_spellings_do_not_warn(recwarn) -> None:
    assert Config().model.mode == "background_free"
    load_config(None, ["model.mode=background_embedding"])
    assert not [w for w in recwarn if issubclass(w.category, DeprecationWarning)]


@pytest.mark.parametrize("old, new", OLD_MODES)
def test_old_style_run_folder_loads(tmp_path, old, new) -> None:
    """A run folder whose config.yaml says model.mode: ce|baseline (written before the rename)
    rebuilds the same architecture, so its weights load strictly."""
    import dataclasses

    import torch

    from celseg.engine.checkpoint import load_segmenter, save_checkpoint
    from celseg.models.build import build_segmenter

    tiny = ModelConfig(mode=new, pretrained=False, hidden_dim=32, mask_dim=16, num_queries=5,
                       dec_layers=2, nheads=2, dim_feedforward=32)
    torch.manual_seed(0)
    model = build_segmenter(tiny, 12)
    save_checkpoint(tmp_path, model, {"step": 0}, {"embed_dim": "12"})
    cfg = dataclasses.replace(Config(), model=tiny)
    save_config(cfg, tmp_path / "config.yaml")
    text = (tmp_path / "config.yaml").read_text()
    assert f"mode: {new}\n" in text
    (tmp_path / "config.yaml").write_text(text.replace(f"mode: {new}\n", f"mode: {old}\n"))
    with pytest.warns(RenamedValueWarning, match=f"'{old}'.*'{new}'"):
        loaded, loaded_cfg = load_segmenter(tmp_path)
    assert loaded_cfg.model.mode == new and loaded.has_background == (new != "background_free")
    mine = model.state_dict()
    assert all(torch.equal(mine[k], v) for k, v in loaded.state_dict().items())
