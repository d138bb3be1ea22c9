"""Run configuration: frozen dataclasses, flat YAML files and ``--set section.key=value``.

A config file is a mapping of sections (``data``, ``model``, ``loss``, ``train``, ``eval``) to
flat mappings of keys. It may name at most one ``base`` file (relative to itself) whose values it
overrides; the base may not have a base of its own. Unknown sections or keys and values of the
wrong type are errors that name the offending key and value.
"""

from __future__ import annotations

import dataclasses
import re
import sys
import types
import typing
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from celseg.config_rules import (
    above,
    at_least,
    between,
    device_name,
    existing_dir,
    multiple_of,
    name_list,
    names_at_most,
    not_above,
    not_below,
    not_empty,
    one_of,
    path_problems,
    problems,
    spec,
    vlm_name,
)
from celseg.errors import CelsegError


class ConfigError(CelsegError, ValueError):
    """A config file, key or value is invalid; the message names it."""


class RenamedValueWarning(DeprecationWarning):
    """A config value was given in a spelling that has been renamed (see RENAMED_VALUES)."""


class RemovedKeyWarning(DeprecationWarning):
    """A config key that nothing reads any more was given (see REMOVED_KEYS); it is skipped."""


# values renamed since earlier versions, {(section, key): {old spelling: new spelling}}: the
# one alias table. An old spelling still loads wherever a section is built (a YAML file, --set,
# a run's saved config.yaml, ModelConfig(...) itself: the section's __post_init__ calls
# _rename_old_values) and is replaced by the new one with a RenamedValueWarning naming both.
RENAMED_VALUES: dict[tuple[str, str], dict[str, str]] = {
    ("model", "mode"): {"ce": "background_free", "baseline": "background_embedding"},
}
# the alias table's second part: old names of the ablation's variants, which are also the run
# folders of `celseg ablate`, `celseg open-vocab` and `celseg demo` (not config values); an old
# name given to --variants is read as the new one with a RenamedValueWarning, and a finished run
# in a folder of an old name is read where the new one is missing
RENAMED_VARIANTS: dict[str, str] = {
    "bgfree": "background_free", "ce": "background_free", "ce_ranking": "ranking",
    "bgfree_all": "background_free_all",
}


def _rename_old_values(section: Any, name: str) -> None:
    """Replace old spellings in the frozen section ``section`` (named ``name``) in place."""
    for (sec, key), renames in RENAMED_VALUES.items():
        value = getattr(section, key) if sec == name else None
        if isinstance(value, str) and value in renames:
            new = renames[value]
            warnings.warn(f"config key '{name}.{key}': value {value!r} is deprecated, use "
                          f"{new!r} (read as {new!r})", RenamedValueWarning,
                          stacklevel=_outside_stacklevel())
            object.__setattr__(section, key, new)


def _outside_stacklevel() -> int:
    """Stacklevel (for the caller's ``warnings.warn``) of the first frame outside this module
    and the dataclass machinery: the code that loaded or built the config."""
    inside = {__file__, dataclasses.__file__, "<string>"}  # "<string>": generated __init__
    frame, level = sys._getframe(2), 2
    while frame is not None and frame.f_code.co_filename in inside:
        frame, level = frame.f_back, level + 1
    return level


@dataclass(frozen=True)
class DataConfig:
    # dataset folder in the project layout
    root: str = spec("data/synthetic", not_empty(), existing_dir("classes.json"))
    train_split: str = spec("train", not_empty())
    val_split: str = spec("val", not_empty())
    # zero-shot view of the training labels: "inductive" hides unseen classes (set to 255),
    # "transductive" also hides them but lets unseen names into the training vocabulary,
    # "oracle" keeps every label (upper bound)
    setting: str = spec("inductive", one_of("inductive", "transductive", "oracle"))
    # training label PNGs used in place of annotations/ (pseudo labels)
    label_dir: str = spec("", existing_dir(allow_empty=True))
    crop_size: int = spec(128, at_least(1))
    min_scale: float = spec(0.75, above(0))
    max_scale: float = spec(1.5, above(0), not_below("min_scale"))
    flip: bool = True
    color_jitter: float = spec(0.2, between(0, 1))
    skip_bad: bool = False  # skip (and count) unreadable samples instead of failing
    max_train: int = spec(0, at_least(0))  # 0 = all training images
    max_val: int = spec(0, at_least(0))  # 0 = all validation images
    # short side that random scaling multiplies; 0 = the image's own size
    base_size: int = spec(0, at_least(0))
    # short side images are resized to for evaluation; 0 = keep original
    eval_size: int = spec(0, at_least(0))


@dataclass(frozen=True)
class ModelConfig:
    # "background_free": no background class (the paper's method); "background_embedding": a
    # learnable no-object embedding (the peers' baseline). Old spellings: RENAMED_VALUES
    mode: str = spec("background_free", one_of("background_free", "background_embedding"))
    # "efficientnet-lite0", a Hugging Face AutoBackbone name or folder, or "vlm": the frozen
    # image tower of model.vlm, shared with the out-of-vocabulary branch (FC-CLIP)
    backbone: str = spec("efficientnet-lite0", not_empty())
    pretrained: bool = True
    freeze_backbone_bn: bool = True
    # vision-language model giving the text embeddings: name or path
    vlm: str = spec("default", not_empty(), vlm_name())
    # backbone "vlm": input upsampling before the shared tower
    vlm_input_scale: float = spec(1.0, above(0))
    # LiT tower at vlm_input_scale 2: the decoder reads its stages at strides 4..32 of the
    # ORIGINAL image (res3, res4, res5, res5 pooled), so masks and head cost stay those of scale 1
    vlm_original_strides: bool = True
    hidden_dim: int = spec(128, at_least(1), multiple_of("nheads"), multiple_of(4))
    mask_dim: int = spec(128, at_least(1))
    num_queries: int = spec(16, at_least(1))
    dec_layers: int = spec(3, at_least(1))
    # the memory levels the decoder layers read, round robin, comma-separated (e.g. "res4");
    # "": the first min(3, dec_layers) of res5, res4, res3 (Mask2Former's coarse-to-fine order);
    # at most dec_layers names (a level that no layer reads would get no gradient)
    dec_levels: str = spec("", name_list("res5", "res4", "res3"), names_at_most("dec_layers"))
    nheads: int = spec(4, at_least(1))
    dim_feedforward: int = spec(512, at_least(1))
    masked_attention: bool = True
    # the pixel decoder's 3 x 3 output convolutions (models/pixel_decoder.py; measured in
    # docs/BENCHMARKS.md and docs/RESULTS.md): "full" (dense), "separable" (depthwise +
    # pointwise everywhere), "light" (depthwise + pointwise at stride 4 only) or "pointwise"
    # (none at stride 4; the default: it trains faster, and with the time spent on more
    # iterations it matches "full"), or "lean" (none at stride 4, depthwise + pointwise on the
    # memory levels)
    pixel_decoder_conv: str = spec("pointwise", one_of("full", "separable", "light", "pointwise",
                                                       "lean"))
    logit_scale_init: float = spec(100.0, above(0))
    learn_logit_scale: bool = True

    def __post_init__(self) -> None:
        _rename_old_values(self, "model")


@dataclass(frozen=True)
class LossConfig:
    class_weight: float = spec(2.0, at_least(0))  # cross-entropy of matched queries
    mask_weight: float = spec(5.0, at_least(0))  # sigmoid BCE on masks
    dice_weight: float = spec(5.0, at_least(0))
    no_object_weight: float = spec(0.1, at_least(0))  # background_embedding only: no-object weight
    cost_class: float = spec(2.0, at_least(0))
    cost_mask: float = spec(5.0, at_least(0))
    cost_dice: float = spec(5.0, at_least(0))
    # points per mask (Mask2Former's 112 x 112), capped at the predicted mask's pixels; 0: every
    # pixel of the target
    num_points: int = spec(12544, at_least(0))
    oversample_ratio: float = spec(3.0, at_least(1))  # importance sampling of the loss's points
    importance_sample_ratio: float = spec(0.75, between(0, 1))
    aux_loss: bool = True
    # background-free pixel-level focal term on the aggregated map
    pixel_weight: float = spec(0.0, at_least(0))
    pixel_gamma: float = spec(2.0, at_least(0))
    ranking_weight: float = spec(0.0, at_least(0))  # ranking class enhancement loss
    # "listwise" (KL) or "pairwise" (margin)
    ranking_kind: str = spec("listwise", one_of("listwise", "pairwise"))
    # temperature of the text-similarity target distribution
    ranking_tau: float = spec(0.05, above(0))
    ranking_margin: float = spec(0.1, at_least(0))
    ranking_include_unseen: bool = False  # rank over unseen names too (transductive)
    # where the ranking's target order comes from: "text" (cos of the true class's text
    # embedding with the others), "image" (cos of the VLM's mask-pooled embedding of the
    # proposal with them) or "both" (the mean of the two losses); see losses/ranking.py
    ranking_target: str = spec("text", one_of("text", "image", "both"))
    # ViLD / OpenSeg distillation of every proposal's class embedding towards the VLM's
    # mask-pooled image embedding of its mask (losses/distill.py); with a separate backbone
    # the trainer runs the VLM's image tower on every batch
    distill_weight: float = spec(0.0, at_least(0))
    distill_kind: str = spec("cosine", one_of("cosine", "l1"))


@dataclass(frozen=True)
class TrainConfig:
    out_dir: str = spec("runs/default", not_empty())
    iterations: int = spec(600, at_least(1))
    batch_size: int = spec(8, at_least(1))
    lr: float = spec(4e-4, above(0))
    backbone_lr_mult: float = spec(0.1, at_least(0))
    weight_decay: float = spec(0.05, at_least(0))
    warmup_iters: int = spec(30, at_least(0))
    poly_power: float = spec(0.9, at_least(0))
    grad_clip: float = spec(1.0, at_least(0))
    amp: bool = True  # mixed precision, used on CUDA only
    seed: int = spec(0, at_least(0))
    device: str = spec("auto", device_name())  # "auto", "cpu", "cuda", "cuda:1", ...
    num_workers: int = spec(0, at_least(0))
    log_every: int = spec(20, at_least(1))
    eval_every: int = spec(0, at_least(0))  # 0: evaluate only at the end
    ckpt_every: int = spec(200, at_least(0))


@dataclass(frozen=True)
class EvalConfig:
    batch_size: int = spec(8, at_least(1))
    # subtracted from seen-class probabilities at inference
    seen_calibration: float = spec(0.0, between(0, 1))
    # further subtracted under the segmenter-alone protocol only (zsseg, ZegFormer, ZegCLIP's
    # gamma), chosen on dev splits (docs/RESULTS.md)
    segmenter_calibration: float = spec(0.0, between(0, 1))
    # "all" class names of the dataset, or "seen"
    vocabulary: str = spec("all", one_of("all", "seen"))
    sliding_window: bool = False
    window_size: int = spec(512, at_least(1))
    window_stride: int = spec(341, at_least(1), not_above("window_size"))
    # zsseg two-stage inference (celseg.models.two_stage): each proposal's masked crop is
    # classified by a VLM image encoder, p = p_seg^(1-w) * p_clip^w, w per seen / unseen class
    two_stage: bool = False
    # image encoder name / folder; "" = the model's model.vlm
    two_stage_vlm: str = spec("", vlm_name(allow_empty=True))
    clip_weight_seen: float = spec(0.2, between(0, 1))
    clip_weight_unseen: float = spec(0.8, between(0, 1))
    two_stage_crop_size: int = spec(224, at_least(1))
    # FC-CLIP out-of-vocabulary ensemble (celseg.models.inference): each proposal's mask pools
    # the VLM's dense image features, p_out = softmax(oov_logit_scale * cos(pooled, text)), and
    # p = p_in^(1-w) * p_out^w with w = ensemble_alpha for classes that had ground-truth labels
    # in the run's training data and ensemble_beta for the others. Used whenever the VLM has an
    # image tower; alpha = beta = 1 is the VLM alone, ensemble=false the segmenter alone.
    ensemble: bool = True
    ensemble_alpha: float = spec(0.4, between(0, 1))
    ensemble_beta: float = spec(0.8, between(0, 1))
    # weight of classes trained only on pseudo labels: alpha|beta (alpha measured better on the
    # benchmark's dev split, docs/RESULTS.md)
    ensemble_pseudo: str = spec("alpha", one_of("alpha", "beta"))
    # "binary" (mask logit > 0, FC-CLIP) or "soft" (sigmoid-weighted); binary measured better on
    # the dev split (docs/RESULTS.md)
    pooling: str = spec("binary", one_of("soft", "binary"))
    oov_logit_scale: float = spec(100.0, above(0))
    # FC-CLIP renormalises the ensembled probabilities over classes per proposal
    ensemble_renorm: bool = True
    # the image is upsampled by this factor before the VLM's dense_features (a finer map to
    # pool from; 1 = as the VLM does it); not used with a shared backbone
    dense_input_scale: float = spec(1.0, above(0))
    # the ensemble's semantic scores times D(c, x)^lambda, D the VLM's own per-pixel class
    # probabilities from the same dense map (celseg.models.inference, step 2); 0 = off
    ensemble_pixel_weight: float = spec(0.0, between(0, 1))
    # image-path VLM for the ensemble; "" = the run's model.vlm
    vlm: str = spec("", vlm_name(allow_empty=True))
    # torch.compile the backbone for evaluate / predict / serve (Segmenter.compile_backbone):
    # faster on CPU after a few seconds of compiling; needs a C++ compiler
    compile_backbone: bool = False


@dataclass(frozen=True)
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


SECTIONS = {f.name: f.type for f in dataclasses.fields(Config)}
# keys that configs written by earlier versions hold and nothing reads any more: skipped with a
# RemovedKeyWarning wherever a key is set (a YAML file, --set, a run's saved config.yaml), so
# that every saved run (and its checkpoint) still loads
REMOVED_KEYS = {("train", "self_train_rounds"), ("eval", "trace_head")}


def _section_type(name: str) -> type:
    return {"data": DataConfig, "model": ModelConfig, "loss": LossConfig, "train": TrainConfig,
            "eval": EvalConfig}[name]


_FLOAT_TEXT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


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
    if annotation is float and isinstance(value, str) and _FLOAT_TEXT.match(value.strip()):
        return float(value)  # YAML 1.1 reads 1e-4 (no dot) as a string
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
    if (section, key) in REMOVED_KEYS:
        warnings.warn(f"config key '{section}.{key}' is no longer read; its value {value!r} is "
                      "ignored", RemovedKeyWarning, stacklevel=_outside_stacklevel())
        return cfg
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


def validate(cfg: Config) -> Config:
    """Check every value against the rules declared next to its field; raise naming the key."""
    for section in SECTIONS:
        for key, value, problem in problems(getattr(cfg, section)):
            raise ConfigError(f"config key '{section}.{key}': value {value!r} {problem}")
    return cfg


def check_paths(cfg: Config, sections: tuple[str, ...] = tuple(SECTIONS)) -> Config:
    """Check the keys naming files or folders that must exist (before a run touches anything).

    Kept apart from :func:`validate`: a run's saved config is read back on machines where its
    data folder is absent.
    """
    for section in sections:
        for key, value, problem in path_problems(getattr(cfg, section)):
            raise ConfigError(f"config key '{section}.{key}': value {value!r} {problem}")
    return cfg


def from_dict(raw: dict[str, Any], cfg: Config | None = None, source: str = "<dict>",
              check: bool = True) -> Config:
    """Overlay a ``{section: {key: value}}`` mapping on ``cfg`` (defaults when None).

    ``check`` validates the result (:func:`validate`); pass False when more layers follow.
    """
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
    return validate(cfg) if check else cfg


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
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
            cfg = from_dict(base_raw, cfg, str(base_path), check=False)
        cfg = from_dict(raw, cfg, str(path), check=False)
    return apply_overrides(cfg, overrides or [])


def apply_overrides(cfg: Config, items: list[str]) -> Config:
    """Apply ``section.key=value`` overrides in order, then validate the result once (so
    ``eval.window_size=256 eval.window_stride=128`` passes through no invalid pair)."""
    for item in items:
        cfg = apply_override(cfg, item, check=False)
    return validate(cfg)


def apply_override(cfg: Config, item: str, check: bool = True) -> Config:
    """Apply one ``section.key=value`` override; the value is parsed as YAML (``1e-4``, ``true``).

    ``check`` validates the result (:func:`validate`).
    """
    if "=" not in item or "." not in item.split("=", 1)[0]:
        raise ConfigError(f"override {item!r} must look like section.key=value")
    dotted, text = item.split("=", 1)
    section, key = dotted.split(".", 1)
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        value = text  # not YAML: a string (a wrong type for numeric keys is named below)
    if isinstance(value, str) is False and text.strip() and _is_string_field(section, key):
        value = text  # e.g. --set data.root=123 keeps the string
    cfg = _apply(cfg, section, key, value)
    return validate(cfg) if check else cfg


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
