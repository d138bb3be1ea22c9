"""Settings of the offline default VLM (LiT: EfficientNet-Lite0 image tower, frozen MiniLM).

Each key's rule sits next to its field (``celseg.config_rules``); a bad value, a wrong type or an
unknown key is a ``ConfigError`` that names it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from celseg.config import ConfigError
from celseg.config_rules import above, at_least, between, problems, spec

_TYPES = {"int": (int,), "float": (int, float), "bool": (bool,)}


@dataclass(frozen=True)
class VLMConfig:
    steps: int = spec(150, at_least(1))  # optimiser steps (overridden by --epochs when given)
    batch_size: int = spec(64, at_least(1))
    image_size: int = spec(128, at_least(1))  # training crops are resized to this square size
    min_scale: float = spec(0.5, above(0), between(0, 1))  # random-resized-crop area range
    lr_backbone: float = spec(1e-4, at_least(0))  # image tower (low: keep ImageNet features)
    lr_proj: float = spec(3e-3, above(0))  # projection and temperature
    weight_decay: float = spec(1e-4, at_least(0))
    warmup_steps: int = spec(20, at_least(0))
    # blocks before this index (and the stem) stay frozen
    train_from_block: int = spec(8, between(0, 16))
    freeze_bn: bool = True  # BatchNorm statistics and affine parameters stay ImageNet's
    init_temperature: float = spec(0.07, above(0))
    dense_scale: float = spec(2.0, above(0))  # dense_features upsamples the input by this first
    checkpoint_every: int = spec(50, at_least(1))
    seed: int = spec(0, at_least(0))

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            wanted = _TYPES[f.type]
            if not isinstance(value, wanted) or (isinstance(value, bool) and f.type != "bool"):
                raise ConfigError(f"VLM setting '{f.name}': expected {f.type}, got "
                                  f"{type(value).__name__} {value!r}")
        for key, value, problem in problems(self):
            raise ConfigError(f"VLM setting '{key}': value {value!r} {problem}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict) -> VLMConfig:
        """Settings from a mapping (e.g. the ``pretrain`` entry of ``celseg_vlm.json``)."""
        if not isinstance(raw, dict):
            raise ConfigError(f"VLM settings must be a mapping, got {type(raw).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ConfigError(f"unknown VLM setting(s) {unknown}; known: "
                              f"{', '.join(sorted(known))}")
        return cls(**raw)
