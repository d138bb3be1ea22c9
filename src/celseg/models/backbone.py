"""Backbones with one multi-scale feature method.

Every backbone is an ``nn.Module`` with

- ``forward_features(images (B,3,H,W) ImageNet-normalised) -> {"res2": (B,C2,H/4,W/4),
  "res3": (B,C3,H/8,W/8), "res4": (B,C4,H/16,W/16), "res5": (B,C5,H/32,W/32)}``
- ``channels: dict[str, int]`` and ``strides: dict[str, int]`` keyed by the same names.

A backbone is named in ``model.backbone`` either by a key of :data:`BACKBONES` (the registry:
name -> builder ``(pretrained, freeze_bn) -> backbone``, filled here and nowhere else; the model
tests run over every entry) or as any Hugging Face ``AutoBackbone`` hub id or folder with four
stages at strides 4/8/16/32 (ResNet, ConvNeXt, Swin...). The builders at the bottom are the only
functions that read files.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from celseg.errors import ModelLoadError

LEVELS = ("res2", "res3", "res4", "res5")
STRIDES = {"res2": 4, "res3": 8, "res4": 16, "res5": 32}


def freeze_batchnorm(module: nn.Module) -> list[nn.Module]:
    """Stop BatchNorm layers from learning: affine parameters frozen; returns the layers.

    The running statistics are kept fixed by the owner, which puts the layers in eval mode
    whenever it is put in train mode (see ``_FrozenBNMixin.train``).
    """
    layers = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for layer in layers:
        layer.eval()
        for p in layer.parameters():
            p.requires_grad_(False)
    return layers


class _FrozenBNMixin(nn.Module):
    """Keeps the BatchNorm layers listed in ``self._frozen_bn`` in eval mode."""

    _frozen_bn: list[nn.Module]

    def train(self, mode: bool = True) -> _FrozenBNMixin:
        super().train(mode)
        for layer in self._frozen_bn:
            layer.eval()
        return self


class EfficientNetLiteBackbone(_FrozenBNMixin):
    """EfficientNet-Lite0 features: res2..res5 with 24/40/112/320 channels at strides 4..32.

    Args:
        body: a ``celseg.models.efficientnet_lite.EfficientNetLite0`` (weights already loaded);
            its ImageNet classification head is removed.
        freeze_bn: freeze BatchNorm affine parameters and running statistics.
    """

    def __init__(self, body: nn.Module, freeze_bn: bool = True) -> None:
        super().__init__()
        for head in ("_conv_head", "_bn1", "_dropout", "_fc"):
            if hasattr(body, head):  # the ImageNet head is unused here and would get no gradient
                delattr(body, head)
        self.body = body
        self.channels = {"res2": 24, "res3": 40, "res4": 112, "res5": 320}
        self.strides = dict(STRIDES)
        self._frozen_bn = freeze_batchnorm(body) if freeze_bn else []

    def forward_features(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        feats = self.body.forward_features(images)
        return {k: feats[k] for k in LEVELS}


class HFBackbone(_FrozenBNMixin):
    """A Hugging Face ``AutoBackbone`` whose four ``out_features`` become res2..res5.

    Args:
        model: a transformers backbone (``model(pixel_values).feature_maps`` is a tuple of four
            maps at strides 4/8/16/32).
        freeze_bn: freeze BatchNorm layers (ResNet); no effect on LayerNorm models.
    """

    def __init__(self, model: nn.Module, freeze_bn: bool = True) -> None:
        super().__init__()
        channels = list(model.channels)
        if len(channels) != 4:
            raise ModelLoadError(
                f"Hugging Face backbone {type(model).__name__} gives {len(channels)} feature maps; "
                "celseg needs 4 (strides 4/8/16/32)"
            )
        self.model = model
        self.channels = dict(zip(LEVELS, channels, strict=True))
        self.strides = dict(STRIDES)
        self._frozen_bn = freeze_batchnorm(model) if freeze_bn else []

    def forward_features(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        maps = self.model(pixel_values=images).feature_maps
        return dict(zip(LEVELS, maps, strict=True))


def check_strides(backbone: nn.Module, size: int = 64) -> None:
    """Raise ``ModelLoadError`` unless the backbone's maps have strides 4/8/16/32 at ``size``."""
    was_training = backbone.training
    backbone.eval()
    with torch.no_grad():
        feats = backbone.forward_features(torch.zeros(1, 3, size, size))
    backbone.train(was_training)
    got = {k: size // v.shape[-1] for k, v in feats.items()}
    if got != STRIDES:
        raise ModelLoadError(f"backbone feature strides {got} differ from the required {STRIDES}")


def efficientnet_backbone(pretrained: bool = True, freeze_bn: bool = True) -> nn.Module:
    """EfficientNet-Lite0 with its ImageNet weights (``pretrained``) as a backbone."""
    from celseg.models.efficientnet_lite import efficientnet_lite0

    return EfficientNetLiteBackbone(efficientnet_lite0(pretrained), freeze_bn=freeze_bn)


def hf_backbone(name_or_path: str, pretrained: bool = True, freeze_bn: bool = True) -> nn.Module:
    """A Hugging Face ``AutoBackbone`` by hub id or folder, using its last four stages.

    ``pretrained=False`` reads only the config and initialises the weights randomly.
    """
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_BACKBONE_MAPPING

    try:
        config = AutoConfig.from_pretrained(name_or_path)
    except (OSError, ValueError) as exc:
        kind = "folder" if Path(name_or_path).exists() else "name"
        raise ModelLoadError(
            f"cannot load backbone {kind} '{name_or_path}': not one of {', '.join(BACKBONES)} "
            f"and not a Hugging Face backbone ({exc})"
        ) from exc
    stages = list(getattr(config, "stage_names", []))
    if type(config) not in MODEL_FOR_BACKBONE_MAPPING or len(stages) < 4:
        raise ModelLoadError(
            f"'{name_or_path}' ({config.model_type}) is not a Hugging Face backbone with four "
            "feature stages"
        )
    config.out_features = stages[-4:]
    # The concrete class, not AutoBackbone: transformers 5's AutoBackbone.from_pretrained asks
    # the hub whether the name exists, which fails offline even for a local folder.
    model_cls = MODEL_FOR_BACKBONE_MAPPING[type(config)]
    try:
        if pretrained:
            model = model_cls.from_pretrained(name_or_path, config=config)
        else:
            model = model_cls(config)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot load backbone weights from '{name_or_path}': {exc}") from exc
    backbone = HFBackbone(model, freeze_bn=freeze_bn)
    check_strides(backbone)
    return backbone


# name -> builder(pretrained, freeze_bn); every builder also works offline with pretrained=False
BACKBONES: dict[str, Callable[[bool, bool], nn.Module]] = {
    "efficientnet-lite0": efficientnet_backbone,
}


def build_backbone(name: str, pretrained: bool = True, freeze_bn: bool = True) -> nn.Module:
    """A registered backbone (:data:`BACKBONES`; case and ``_`` / ``-`` do not matter), else a
    Hugging Face backbone name / folder."""
    builder = BACKBONES.get(name.lower().replace("_", "-"))
    if builder is not None:
        return builder(pretrained, freeze_bn)
    return hf_backbone(name, pretrained, freeze_bn)
