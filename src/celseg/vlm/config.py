"""Settings of the offline default VLM (LiT: EfficientNet-Lite0 image tower, frozen MiniLM)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields


@dataclass(frozen=True)
class VLMConfig:
    steps: int = 150  # optimiser steps (overridden by --epochs when given)
    batch_size: int = 64
    image_size: int = 128  # training crops are resized to this square size
    min_scale: float = 0.5  # random-resized-crop area range
    lr_backbone: float = 1e-4  # image tower (low: keep ImageNet features)
    lr_proj: float = 3e-3  # projection and temperature
    weight_decay: float = 1e-4
    warmup_steps: int = 20
    train_from_block: int = 8  # blocks before this index (and the stem) stay frozen
    freeze_bn: bool = True  # BatchNorm statistics and affine parameters stay ImageNet's
    init_temperature: float = 0.07
    dense_scale: float = 2.0  # dense_features upsamples the input by this factor first
    checkpoint_every: int = 50
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict) -> VLMConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})
