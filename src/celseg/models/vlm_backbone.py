"""The vision-language model's own image tower as a frozen segmenter backbone (FC-CLIP).

One pass of the frozen tower gives both the maps res2..res5 that the pixel decoder reads and the
VLM's dense image features that the out-of-vocabulary branch pools, so inference needs no second
VLM forward. Besides the uniform ``forward_features`` (see ``celseg.models.backbone``), a shared
backbone has

- ``forward_shared(images (B,3,H,W) ImageNet-normalised) -> (features, dense)``, ``dense``
  (B, D, h, w) float32 and L2-normalised along D, computed without gradient;
- ``shares_vlm_tower = True`` and ``new_modules``: sub-modules trained from scratch, which the
  optimiser gives the head's learning rate (``celseg.engine.schedule.param_groups``).

The tower never trains: its parameters have ``requires_grad=False``, it stays in eval mode under
``train()`` (BatchNorm statistics fixed) and it runs under ``torch.no_grad``. ``input_scale``
upsamples the input before the tower for a finer dense map; every map, the masks included, is
then that much finer (strides below are relative to the upsampled input).

Two kinds:

- the LiT default VLM: its EfficientNet-Lite0 trunk gives res2..res5 directly, and its head and
  projection on res5 give the dense map (``LiTModel.dense_features`` without a second pass);
- Hugging Face CLIP ViTs: one scale only, so four hidden states go through a trainable ViTDet
  simple feature pyramid to strides 4/8/16/32; the MaskCLIP dense map comes from the same pass.

``vlm_backbone`` at the bottom is the only function that reads files.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from celseg.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from celseg.errors import ModelLoadError
from celseg.models.backbone import LEVELS, STRIDES
from celseg.models.pixel_decoder import group_norm
from celseg.vlm.hf_clip import HFCLIP, maskclip_pass
from celseg.vlm.lit import LiTImageTower, LiTModel

VLM_BACKBONE = "vlm"  # the ModelConfig.backbone value that selects a shared tower


def _upsample(images: torch.Tensor, scale: float) -> torch.Tensor:
    # Bilinear weights sum to one, so resizing commutes with the per-channel normalisation:
    # this equals normalising a resized [0, 1] image, as the VLM's own dense path does.
    if scale == 1.0:
        return images
    return F.interpolate(images, scale_factor=scale, mode="bilinear", align_corners=False)


class _SharedTower(nn.Module):
    """Holds a frozen ``self.tower``; subclasses implement ``forward_shared``."""

    shares_vlm_tower = True
    new_modules: tuple[str, ...] = ()
    tower: nn.Module

    def _set_tower(self, tower: nn.Module) -> None:
        for p in tower.parameters():
            p.requires_grad_(False)
        self.tower = tower.eval()

    def train(self, mode: bool = True) -> _SharedTower:
        super().train(mode)
        self.tower.eval()
        return self

    def forward_shared(self, images: torch.Tensor) -> tuple[dict[str, torch.Tensor],
                                                            torch.Tensor]:
        raise NotImplementedError

    def forward_features(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.forward_shared(images)[0]


class LiTSharedBackbone(_SharedTower):
    """The LiT tower's EfficientNet-Lite0 trunk: res2..res5 with 24/40/112/320 channels.

    Args:
        tower: a loaded ``LiTImageTower`` (its ImageNet classifier is removed: nothing uses it).
        input_scale: upsampling of the input before the trunk.
    """

    def __init__(self, tower: LiTImageTower, input_scale: float = 1.0,
                 original_strides: bool = False) -> None:
        super().__init__()
        for name in ("_dropout", "_fc"):
            if hasattr(tower.backbone, name):
                delattr(tower.backbone, name)
        self._set_tower(tower)
        self.input_scale = input_scale
        self.original_strides = original_strides and input_scale == 2.0
        if self.original_strides:
            # the trunk ran on a 2x input: its res3..res5 sit at strides 4/8/16 of the original
            # image and res5 pooled 2x at 32, so the head (and the masks) cost what they cost
            # at scale 1 while the dense map is the 2x one
            self.channels = {"res2": 40, "res3": 112, "res4": 320, "res5": 320}
        else:
            self.channels = {"res2": 24, "res3": 40, "res4": 112, "res5": 320}
        self.strides = dict(STRIDES)
        self.embed_dim = tower.proj.out_features

    def forward_shared(self, images: torch.Tensor) -> tuple[dict[str, torch.Tensor],
                                                            torch.Tensor]:
        """-> (res2..res5 at strides 4..32 of the upsampled input, or of the original image
        with ``original_strides``; dense (B,D,sH/32,sW/32))."""
        with torch.no_grad():
            feats = self.tower.backbone.forward_features(_upsample(images, self.input_scale))
            dense = self.tower.dense_from_res5(feats["res5"]).float()
        if self.original_strides:
            pooled = F.avg_pool2d(feats["res5"], 2, ceil_mode=True)
            return {"res2": feats["res3"], "res3": feats["res4"], "res4": feats["res5"],
                    "res5": pooled}, dense
        return {k: feats[k] for k in LEVELS}, dense


def pyramid_layers(num_layers: int) -> tuple[int, ...]:
    """Hidden states (layer counts) that feed res2..res5: evenly spaced up to the last block's
    input, which the MaskCLIP path reads anyway (the last block itself never runs in full)."""
    return tuple(round((k + 1) * (num_layers - 1) / 4) for k in range(4))


class SimpleFeaturePyramid(nn.Module):
    """ViTDet's simple feature pyramid: one stride-p token grid per level -> strides 4..32.

    Per level: LayerNorm over tokens, 2x transposed convolutions (with GroupNorm and GELU between)
    or max pooling by the level's stride ratio to p, then 1x1 and 3x3 convolutions with GroupNorm.
    A patch size that is not a power of two ends with a bilinear resize to the exact size.

    Args:
        in_dim: ViT width.
        out_dim: channels of every level.
        patch_size: p, the stride of the token grid.
    """

    def __init__(self, in_dim: int, out_dim: int, patch_size: int) -> None:
        super().__init__()
        self.norms = nn.ModuleList(nn.LayerNorm(in_dim) for _ in LEVELS)
        self.levels = nn.ModuleList(self._level(in_dim, out_dim, patch_size / STRIDES[k])
                                    for k in LEVELS)

    @staticmethod
    def _level(dim: int, out_dim: int, ratio: float) -> nn.Sequential:
        steps = round(math.log2(ratio))
        ops: list[nn.Module] = []
        for i in range(steps):
            if i:
                ops += [group_norm(dim), nn.GELU()]
            ops.append(nn.ConvTranspose2d(dim, max(dim // 2, 8), 2, stride=2))
            dim = max(dim // 2, 8)
        if steps < 0:
            ops.append(nn.MaxPool2d(2 ** -steps))
        ops += [nn.Conv2d(dim, out_dim, 1, bias=False), group_norm(out_dim),
                nn.Conv2d(out_dim, out_dim, 3, padding=1, bias=False), group_norm(out_dim)]
        return nn.Sequential(*ops)

    def forward(self, tokens: list[torch.Tensor], grid: tuple[int, int],
                size: tuple[int, int]) -> dict[str, torch.Tensor]:
        """tokens: four (B, h*w, in_dim) patch tokens (no CLS); grid (h, w); size (H, W) of the
        tower's input -> {level: (B, out_dim, ceil(H/stride), ceil(W/stride))}."""
        out = {}
        for k, t, norm, level in zip(LEVELS, tokens, self.norms, self.levels, strict=True):
            x = level(norm(t).transpose(1, 2).reshape(t.shape[0], -1, *grid))
            target = (math.ceil(size[0] / STRIDES[k]), math.ceil(size[1] / STRIDES[k]))
            if tuple(x.shape[-2:]) != target:
                x = F.interpolate(x, size=target, mode="bilinear", align_corners=False)
            out[k] = x
        return out


class CLIPSharedBackbone(_SharedTower):
    """A frozen CLIP ViT with a trainable simple feature pyramid: res2..res5 of ``out_dim``.

    Args:
        vision: ``CLIPModel.vision_model``; projection: ``CLIPModel.visual_projection``.
        mean, std: the checkpoint's image normalisation (the segmenter's input is converted from
            ImageNet statistics to these).
        patch_size: the ViT's patch size p; H and W are cropped to multiples of it, as
            ``HFCLIP.dense_features`` does.
        out_dim: channels of every pyramid level.
        input_scale: upsampling of the input before the tower.
        dense_residual: the MaskCLIP variant (see ``celseg.vlm.hf_clip``).
    """

    new_modules = ("pyramid",)

    def __init__(self, vision: nn.Module, projection: nn.Module, mean: tuple[float, ...],
                 std: tuple[float, ...], patch_size: int, out_dim: int,
                 input_scale: float = 1.0, dense_residual: bool = True) -> None:
        super().__init__()
        self._set_tower(nn.ModuleDict({"vision": vision, "projection": projection}))
        self.patch_size = patch_size
        self.input_scale = input_scale
        self.dense_residual = dense_residual
        self.keep = pyramid_layers(len(vision.encoder.layers))
        self.pyramid = SimpleFeaturePyramid(int(vision.config.hidden_size), out_dim, patch_size)
        self.channels = {k: out_dim for k in LEVELS}
        self.strides = dict(STRIDES)
        self.embed_dim = int(projection.out_features)
        # x_clip = (x01 - mean) / std with x01 = x_imagenet * s + m: one affine map per channel
        m, s = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
        mean_t, std_t = torch.tensor(mean), torch.tensor(std)
        self.register_buffer("in_scale", (s / std_t).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("in_shift", ((m - mean_t) / std_t).view(1, 3, 1, 1),
                             persistent=False)

    def forward_shared(self, images: torch.Tensor) -> tuple[dict[str, torch.Tensor],
                                                            torch.Tensor]:
        """-> (res2..res5 at strides 4..32 of the upsampled input, dense (B,D,H/p,W/p))."""
        x = _upsample(images, self.input_scale)
        p = self.patch_size
        h, w = x.shape[-2] // p, x.shape[-1] // p
        if h == 0 or w == 0:
            raise ValueError(f"image {tuple(x.shape[-2:])} smaller than one {p}px patch")
        size = (x.shape[-2], x.shape[-1])
        x = x[..., : h * p, : w * p] * self.in_scale + self.in_shift
        with torch.no_grad():
            hidden, dense = maskclip_pass(self.tower["vision"], self.tower["projection"], x, p,
                                          self.dense_residual, self.keep)
        feats = self.pyramid([t[:, 1:] for t in hidden], (h, w), size)  # CLS dropped
        return feats, dense


def vlm_backbone(vlm_name: str, embed_dim: int, pyramid_dim: int,
                 input_scale: float = 1.0, original_strides: bool = True) -> _SharedTower:
    """The frozen image tower of ``load_vlm(vlm_name)`` as a backbone (text tower dropped).

    ``embed_dim`` must be the VLM's (the text embeddings come from the same model);
    ``pyramid_dim`` is the channel count of a ViT's pyramid levels; ``original_strides``: with
    a LiT tower at ``input_scale`` 2, give the decoder maps at strides 4..32 of the original
    image (see ``LiTSharedBackbone``).
    """
    from celseg.vlm.registry import load_vlm

    try:
        vlm = load_vlm(vlm_name)
    except ModelLoadError as exc:
        raise ModelLoadError(f"model.backbone={VLM_BACKBONE} builds its frozen tower from "
                             f"model.vlm={vlm_name!r}: {exc}") from exc
    if isinstance(vlm, LiTModel):
        backbone: _SharedTower = LiTSharedBackbone(vlm.image, input_scale, original_strides)
    elif isinstance(vlm, HFCLIP):
        backbone = CLIPSharedBackbone(
            vlm.model.vision_model, vlm.model.visual_projection,
            tuple(vlm.mean.flatten().tolist()), tuple(vlm.std.flatten().tolist()),
            vlm.patch_size, pyramid_dim, input_scale, vlm.dense_residual)
    else:
        raise ModelLoadError(f"model.backbone={VLM_BACKBONE} needs a VLM with an image tower; "
                             f"model.vlm={vlm_name!r} ({vlm.name}) has none (use a pretrain-vlm "
                             "folder or a CLIP folder)")
    if backbone.embed_dim != embed_dim:
        raise ModelLoadError(f"model.vlm={vlm_name!r} embeds into {backbone.embed_dim} "
                             f"dimensions, the text embeddings have {embed_dim}")
    return backbone
