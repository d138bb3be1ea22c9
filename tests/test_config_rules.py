"""Every config key declares its rule next to its field; the checks run when a config is loaded
and name the key and the value."""

from __future__ import annotations

import dataclasses
import typing

import pytest

from celseg.config import (
    SECTIONS,
    Config,
    ConfigError,
    apply_override,
    apply_overrides,
    check_paths,
    from_dict,
    load_config,
    validate,
)
from celseg.config_rules import describe


def _section_types() -> dict[str, type]:
    return {name: type(getattr(Config(), name)) for name in SECTIONS}


@pytest.mark.parametrize("section", sorted(SECTIONS))
def test_every_non_bool_key_has_a_rule(section):
    """A key added without a rule fails here: declare it with ``spec(default, rule...)``."""
    cls = _section_types()[section]
    hints = typing.get_type_hints(cls)
    rules = describe(cls)
    missing = [k for k, v in rules.items() if not v and hints[k] is not bool]
    assert not missing, f"{section} keys without a rule: {missing}"


def test_defaults_and_shipped_configs_are_valid():
    from pathlib import Path

    validate(Config())
    root = Path(__file__).resolve().parents[1] / "configs"
    for path in sorted(root.rglob("*.yaml")):
        load_config(path)  # raises on any value outside its rule


# (key, a value on the boundary that passes, a value just outside that fails)
BOUNDARIES = [
    ("train.iterations", 1, 0), ("train.batch_size", 1, 0), ("train.lr", 1e-9, 0.0),
    ("train.warmup_iters", 0, -1), ("train.log_every", 1, 0), ("train.seed", 0, -1),
    ("data.crop_size", 1, 0), ("data.color_jitter", 1.0, 1.01), ("data.max_train", 0, -1),
    ("model.num_queries", 1, 0), ("model.logit_scale_init", 1e-3, 0.0),
    ("loss.no_object_weight", 0.0, -0.1), ("loss.ranking_tau", 1e-4, 0.0),
    ("eval.seen_calibration", 1.0, 1.5), ("eval.clip_weight_unseen", 0.0, -0.01),
    ("eval.ensemble_alpha", 1.0, 1.01), ("eval.ensemble_beta", 0.0, -0.5),
    ("eval.oov_logit_scale", 0.5, 0.0), ("eval.two_stage_crop_size", 1, 0),
]


@pytest.mark.parametrize("key, ok, bad", BOUNDARIES)
def test_ranges_at_their_boundaries(key, ok, bad):
    assert getattr(getattr(apply_override(Config(), f"{key}={ok}"), key.split(".")[0]),
                   key.split(".")[1]) == ok
    with pytest.raises(ConfigError, match=rf"'{key}'.*{bad}"):
        apply_override(Config(), f"{key}={bad}")


@pytest.mark.parametrize("key, good, bad", [
    ("data.setting", "oracle", "semi"), ("model.mode", "background_embedding", "bg"),
    ("loss.ranking_kind", "pairwise", "pointwise"), ("eval.vocabulary", "seen", "unseen"),
    ("eval.pooling", "binary", "hard"), ("eval.ensemble_pseudo", "alpha", "gamma"),
    ("train.device", "cuda:1", "gpu"),
])
def test_choices(key, good, bad):
    apply_override(Config(), f"{key}={good}")
    with pytest.raises(ConfigError, match=rf"'{key}'.*'{bad}'.*one of|'{key}'.*'{bad}'"):
        apply_override(Config(), f"{key}={bad}")


def test_exponent_without_a_dot_is_a_float(tmp_path):
    assert apply_override(Config(), "train.lr=1e-4").train.lr == 1e-4  # YAML 1.1 says str
    (tmp_path / "c.yaml").write_text("train:\n  lr: 3e-4\n")
    assert load_config(tmp_path / "c.yaml").train.lr == 3e-4
    with pytest.raises(ConfigError, match=r"train.lr.*'fast'"):
        apply_override(Config(), "train.lr=fast")


def test_relations_are_checked_once_after_every_override():
    # stride 341 > window 256 in between: fine, since only the result is checked
    cfg = apply_overrides(Config(), ["eval.window_size=256", "eval.window_stride=128"])
    assert (cfg.eval.window_size, cfg.eval.window_stride) == (256, 128)
    with pytest.raises(ConfigError, match=r"eval.window_stride.*window_size"):
        apply_overrides(Config(), ["eval.window_size=256"])
    with pytest.raises(ConfigError, match=r"data.max_scale.*min_scale"):
        load_config(None, ["data.min_scale=2.0"])
    assert load_config(None, ["data.min_scale=2.0", "data.max_scale=3.0"]).data.max_scale == 3.0
    with pytest.raises(ConfigError, match=r"model.hidden_dim.*nheads"):
        load_config(None, ["model.hidden_dim=30", "model.nheads=4"])


def test_a_file_and_its_base_are_checked_together(tmp_path):
    (tmp_path / "base.yaml").write_text("data:\n  min_scale: 2.0\n")
    (tmp_path / "run.yaml").write_text("base: base.yaml\ndata:\n  max_scale: 4.0\n")
    assert load_config(tmp_path / "run.yaml").data.min_scale == 2.0
    (tmp_path / "bad.yaml").write_text("base: base.yaml\n")
    with pytest.raises(ConfigError, match=r"data.max_scale.*1.5"):
        load_config(tmp_path / "bad.yaml")
    with pytest.raises(ConfigError, match=r"train.batch_size.*-1"):
        from_dict({"train": {"batch_size": -1}})


def test_paths_are_checked_apart_from_values(tmp_path):
    cfg = load_config(None, [f"data.root={tmp_path / 'missing'}"])  # loading a saved run: fine
    with pytest.raises(ConfigError, match=r"data.root.*missing.*not an existing folder"):
        check_paths(cfg)
    (tmp_path / "d").mkdir()
    with pytest.raises(ConfigError, match=r"data.root.*classes.json"):
        check_paths(load_config(None, [f"data.root={tmp_path / 'd'}"]))
    (tmp_path / "d" / "classes.json").write_text("{}")
    ok = load_config(None, [f"data.root={tmp_path / 'd'}",
                            "model.vlm=openai/clip-vit-base-patch16"])
    check_paths(ok)  # a hub id cannot be checked offline: accepted
    for vlm in ("./gone", "runs/demo/gone", "~/nowhere"):
        with pytest.raises(ConfigError, match="model.vlm"):
            check_paths(dataclasses.replace(ok, model=dataclasses.replace(ok.model, vlm=vlm)))
    with pytest.raises(ConfigError, match="data.label_dir"):
        check_paths(apply_override(ok, f"data.label_dir={tmp_path / 'no_labels'}"))


def test_vlm_settings_reject_unknown_keys_and_bad_values():
    from celseg.vlm.config import VLMConfig

    assert VLMConfig.from_dict(VLMConfig().to_dict()) == VLMConfig()
    with pytest.raises(ConfigError, match="stepz"):
        VLMConfig.from_dict({"stepz": 3})
    with pytest.raises(ConfigError, match=r"batch_size.*0"):
        VLMConfig(batch_size=0)
    with pytest.raises(ConfigError, match=r"train_from_block.*17"):
        VLMConfig(train_from_block=17)
    with pytest.raises(ConfigError, match=r"steps.*'many'"):
        VLMConfig.from_dict({"steps": "many"})
