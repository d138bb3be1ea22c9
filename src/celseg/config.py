"""Run configuration: frozen dataclasses, flat YAML files and ``--set section.key=value``.

A config file is a mapping of sections (``data``, ``model``, ``loss``, ``train``, ``eval``) to
flat mappings of keys. It may name at most one ``base`` file (relative to itself) whose values it
overrides; the base may not have a base of its own. Unknown sections or keys and values of the
wrong type are errors that name the offending key and value.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from celseg.errors import CelsegError


class ConfigError(CelsegError, ValueError):
    """A config file, key or value is invalid; the message names it."""


@dataclass(frozen=True)
class DataConfig:
    root: str = "data/synthetic"  # dataset folder in the project layout
    train_split: str = "train"
    val_split: str = "val"
    # zero-shot view of the training labels: "inductive" hides unseen classes (set to 255),
    # "transductive" also hides them but lets unseen names into the training vocabulary,
    # "oracle" keeps every label (upper bound)
    setting: str = "inductive"
    label_dir: str = ""  # training label PNGs used in place of annotations/ (pseudo labels)
    crop_size: int = 128
    min_scale: float = 0.75
    max_scale: float = 1.5
    flip: bool = True
    color_jitter: float = 0.2
    skip_bad: bool = False  # skip (and count) unreadable samples instead of failing
    max_train: int = 0  # 0 = all training images
    max_val: int = 0  # 0 = all validation images
    base_size: int = 0  # short side that random scaling multiplies; 0 = the image's own size
    eval_size: int = 0  # short side images are resized to for evaluation; 0 = keep original


@dataclass(frozen=True)
class ModelConfig:
    # "ce": background-free (class enhancement); "baseline": learnable no-object embedding
    mode: str = "ce"
    backbone: str = "efficientnet-lite0"  # or a Hugging Face AutoBackbone name or folder
    pretrained: bool = True
    freeze_backbone_bn: bool = True
    vlm: str = "default"  # vision-language model giving the text embeddings: name or path
    hidden_dim: int = 128
    mask_dim: int = 128
    num_queries: int = 16
    dec_layers: int = 3
    nheads: int = 4
    dim_feedforward: int = 512
    masked_attention: bool = True
    logit_scale_init: float = 100.0
    learn_logit_scale: bool = True


@dataclass(frozen=True)
class LossConfig:
    class_weight: float = 2.0  # cross-entropy of matched queries
    mask_weight: float = 5.0  # sigmoid BCE on masks
    dice_weight: float = 5.0
    no_object_weight: float = 0.1  # baseline only: weight of the no-object class
    cost_class: float = 2.0
    cost_mask: float = 5.0
    cost_dice: float = 5.0
    num_points: int = 0  # 0: full-resolution mask terms; >0: point sampling
    aux_loss: bool = True
    pixel_weight: float = 0.0  # background-free pixel-level focal term on the aggregated map
    pixel_gamma: float = 2.0
    ranking_weight: float = 0.0  # ranking class enhancement loss
    ranking_kind: str = "listwise"  # "listwise" (KL) or "pairwise" (margin)
    ranking_tau: float = 0.05  # temperature of the text-similarity target distribution
    ranking_margin: float = 0.1
    ranking_include_unseen: bool = False  # rank over unseen names too (transductive)


@dataclass(frozen=True)
class TrainConfig:
    out_dir: str = "runs/default"
    iterations: int = 600
    batch_size: int = 8
    lr: float = 4e-4
    backbone_lr_mult: float = 0.1
    weight_decay: float = 0.05
    warmup_iters: int = 30
    poly_power: float = 0.9
    grad_clip: float = 1.0
    amp: bool = True  # mixed precision, used on CUDA only
    seed: int = 0
    device: str = "auto"  # "auto", "cpu", "cuda", "cuda:1", ...
    num_workers: int = 0
    log_every: int = 20
    eval_every: int = 0  # 0: evaluate only at the end
    ckpt_every: int = 200
    self_train_rounds: int = 0  # not read by `train`: self-training is `pseudo-label --from-ckpt`


@dataclass(frozen=True)
class EvalConfig:
    batch_size: int = 8
    seen_calibration: float = 0.0  # subtracted from seen-class probabilities at inference
    vocabulary: str = "all"  # "all" class names of the dataset, or "seen"
    sliding_window: bool = False
    window_size: int = 512
    window_stride: int = 341
    # zsseg two-stage inference (celseg.models.two_stage): each proposal's masked crop is
    # classified by a VLM image encoder, p = p_seg^(1-w) * p_clip^w, w per seen / unseen class
    two_stage: bool = False
    two_stage_vlm: str = ""  # image encoder name / folder; "" = the model's model.vlm
    clip_weight_seen: float = 0.2
    clip_weight_unseen: float = 0.8
    two_stage_crop_size: int = 224


@dataclass(frozen=True)
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


SECTIONS = {f.name: f.type for f in dataclasses.fields(Config)}


def _section_type(name: str) -> type:
    return {"data": DataConfig, "model": ModelConfig, "loss": LossConfig, "train": TrainConfig,
            "eval": EvalConfig}[name]


def _coerce(key: str, value: Any, annotation: Any) -> Any:
    """Check ``value`` against a field annotation, allowing int -> float; raise naming ``key``."""
    if isinstance(annotation, str):
        names = {"str": str, "int": int, "float": float, "bool": bool}
        annotation = names.get(annotation, annotation)
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(annotation):
            try:
                return _coerce(key, value, option)
            except ConfigError:
                continue
        raise ConfigError(f"config key '{key}': value {value!r} does not match {annotation}")
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation in (str, int, float, bool):
        if isinstance(value, annotation) and not (annotation is int and isinstance(value, bool)):
            return value
        raise ConfigError(
            f"config key '{key}': expected {annotation.__name__}, got {type(value).__name__} "
            f"{value!r}"
        )
    return value


def _apply(cfg: Config, section: str, key: str, value: Any) -> Config:
    if section not in SECTIONS:
        raise ConfigError(
            f"unknown config section '{section}' (key '{section}.{key}'); "
            f"known sections: {', '.join(SECTIONS)}"
        )
    sec = getattr(cfg, section)
    fields = {f.name: f for f in dataclasses.fields(sec)}
    if key not in fields:
        raise ConfigError(
            f"unknown config key '{section}.{key}'; known keys in '{section}': "
            f"{', '.join(sorted(fields))}"
        )
    hints = typing.get_type_hints(type(sec))
    value = _coerce(f"{section}.{key}", value, hints[key])
    return dataclasses.replace(cfg, **{section: dataclasses.replace(sec, **{key: value})})


def from_dict(raw: dict[str, Any], cfg: Config | None = None, source: str = "<dict>") -> Config:
    """Overlay a ``{section: {key: value}}`` mapping on ``cfg`` (defaults when None)."""
    cfg = cfg or Config()
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of sections, got {type(raw).__name__}")
    for section, values in raw.items():
        if section == "base":
            continue
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: section '{section}' must be a mapping, got {values!r}")
        for key, value in values.items():
            cfg = _apply(cfg, section, key, value)
    return cfg


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path}: expected a mapping, got {type(raw).__name__}")
    return raw


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a YAML config (with at most one ``base``) and apply ``section.key=value`` overrides."""
    cfg = Config()
    if path is not None:
        path = Path(path)
        raw = _read_yaml(path)
        if "base" in raw:
            base_path = (path.parent / str(raw["base"])).resolve()
            base_raw = _read_yaml(base_path)
            if "base" in base_raw:
                raise ConfigError(f"{base_path}: a base config may not name a base of its own")
            cfg = from_dict(base_raw, cfg, str(base_path))
        cfg = from_dict(raw, cfg, str(path))
    for item in overrides or []:
        cfg = apply_override(cfg, item)
    return cfg


def apply_override(cfg: Config, item: str) -> Config:
    """Apply one ``section.key=value`` override; the value is parsed as YAML (``1e-4``, ``true``).
    """
    if "=" not in item or "." not in item.split("=", 1)[0]:
        raise ConfigError(f"override {item!r} must look like section.key=value")
    dotted, text = item.split("=", 1)
    section, key = dotted.split(".", 1)
    value = yaml.safe_load(text) if text.strip() else ""
    if isinstance(value, str) is False and text.strip() and _is_string_field(section, key):
        value = text  # e.g. --set data.root=123 keeps the string
    return _apply(cfg, section, key, value)


def _is_string_field(section: str, key: str) -> bool:
    if section not in SECTIONS:
        return False
    hints = typing.get_type_hints(_section_type(section))
    return hints.get(key) is str


def to_dict(cfg: Config) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config as YAML (next to a run's outputs)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    tmp.replace(path)
