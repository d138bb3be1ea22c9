"""FPN pixel decoder: per-pixel mask embeddings at stride 4 and multi-scale decoder memory."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from celseg.models.backbone import LEVELS
from celseg.models.mask_features import MaskFeatures

CONVS = ("full", "separable", "light", "pointwise", "lean")
MEMORY_ORDER = ("res5", "res4", "res3")  # the decoder's default memory, coarse to fine


def group_norm(dim: int) -> nn.GroupNorm:
    """GroupNorm with up to 32 groups of at least 2 channels (so 1x1 maps stay defined)."""
    groups = max(g for g in range(1, 33) if dim % g == 0 and (dim // g >= 2 or g == 1))
    return nn.GroupNorm(groups, dim)


def conv_norm_relu(cin: int, cout: int, kernel: int, separable: bool = False,
                   pointwise: bool = True) -> nn.Sequential:
    """conv -> GroupNorm -> ReLU. ``separable``: the conv is depthwise k x k, then (with
    ``pointwise``) 1 x 1: about k*k times fewer multiply-adds; at stride 4 a full 3 x 3 at 128
    channels costs as much as the whole EfficientNet-Lite0 forward."""
    if separable and kernel > 1:
        conv: list[nn.Module] = [
            nn.Conv2d(cin, cin, kernel, padding=kernel // 2, groups=cin, bias=False)]
        if pointwise:
            conv.append(nn.Conv2d(cin, cout, 1, bias=False))
        else:
            cout = cin
    else:
        conv = [nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False)]
    return nn.Sequential(*conv, group_norm(cout), nn.ReLU(inplace=True))


class FPNPixelDecoder(nn.Module):
    """Top-down feature pyramid over res2..res5.

    Args:
        in_channels: channels of res2..res5 (``backbone.channels``).
        conv_dim: channels of every pyramid level (the transformer decoder's hidden size).
        mask_dim: channels of the per-pixel mask embedding.
        memory_levels: the levels the decoder reads, in its order: names out of res5, res4,
            res3, or a count n for the first n of them (1-3); the others get no output
            convolution (it would receive no gradient).
        conv: the 3 x 3 output convolutions. ``"full"``: dense everywhere. ``"separable"``:
            depthwise-separable everywhere; at stride 4 the pointwise half is ``mask_proj``
            itself (depthwise -> norm -> ReLU -> mask_proj). ``"light"``: dense on the decoder's
            memory levels, depthwise-separable (depthwise -> pointwise -> norm -> ReLU) at stride
            4, where a dense 3 x 3 costs as much as the whole EfficientNet-Lite0 forward.
            ``"pointwise"``: dense on the memory levels, none at stride 4 (the top-down map is
            upsampled bilinearly there, so the mask features need no smoothing, and they are
            returned factored: no stride-4 projection is computed, see
            :mod:`celseg.models.mask_features`); the default. ``"lean"``: as ``pointwise`` at
            stride 4, depthwise-separable on the memory levels (2-5 % faster inference, 2.7
            hIoU lower for the oracle's segmenter alone over 3 seeds, docs/RESULTS.md). Over 3
            seeds at the same number of iterations the cheaper ones cost the segmenter alone
            about 4 hIoU, the ensemble 0-1; ``pointwise`` at 455 iterations, the training
            time of 400 dense ones, matches ``full`` (docs/RESULTS.md).

    ``forward(features)`` returns ``(mask_features, memory)``: :class:`MaskFeatures` of
    (B, mask_dim, H/4, W/4), and ``memory``, one (B, conv_dim, H/s, W/s) map per name of
    ``memory_levels`` in its order (s = 32, 16, 8 for res5, res4, res3; by default
    ``[res5, res4, res3]``, coarse to fine), for the decoder's cross-attention.
    """

    def __init__(
        self,
        in_channels: dict[str, int],
        conv_dim: int = 128,
        mask_dim: int = 128,
        memory_levels: int | Sequence[str] = 3,
        conv: str = "full",
    ) -> None:
        super().__init__()
        if isinstance(memory_levels, int):
            if not 1 <= memory_levels <= 3:
                raise ValueError(f"memory_levels must be 1, 2 or 3, got {memory_levels}")
            memory_levels = MEMORY_ORDER[:memory_levels]
        names = list(memory_levels)
        if not names or len(set(names)) < len(names) or not set(names) <= set(MEMORY_ORDER):
            raise ValueError(f"memory_levels must be distinct names out of "
                             f"{', '.join(MEMORY_ORDER)}, got {names}")
        if conv not in CONVS:
            raise ValueError(f"conv must be one of {', '.join(CONVS)}, got {conv!r}")
        self.memory_names = names
        self.lateral = nn.ModuleDict(
            {k: conv_norm_relu(in_channels[k], conv_dim, 1) for k in LEVELS}
        )
        self.output = nn.ModuleDict()
        factored = conv in ("pointwise", "lean")
        if not factored:  # built first: the initial weights stay those of before
            self.output["res2"] = conv_norm_relu(conv_dim, conv_dim, 3, conv != "full",
                                                 pointwise=conv == "light")
        for k in self.memory_names:
            self.output[k] = conv_norm_relu(conv_dim, conv_dim, 3, conv in ("separable", "lean"))
        self.bilinear_res2 = factored
        self.mask_proj = nn.Conv2d(conv_dim, mask_dim, 1)
        self.conv_dim = conv_dim
        self.mask_dim = mask_dim

    def forward(
        self, features: dict[str, torch.Tensor]
    ) -> tuple[MaskFeatures, list[torch.Tensor]]:
        outs: dict[str, torch.Tensor] = {}
        top: torch.Tensor | None = None
        for k in reversed(LEVELS):  # res5 -> res2
            x = self.lateral[k](features[k])
            if k == "res2" and self.bilinear_res2:  # mask_proj(x + up(top)), kept factored
                memory = [outs[name] for name in self.memory_names]
                return MaskFeatures(x, coarse=top, proj=self.mask_proj), memory
            if top is not None:
                x = x + F.interpolate(top, size=x.shape[-2:], mode="nearest")
            top = x
            outs[k] = self.output[k](x) if k in self.output else x
        return MaskFeatures(self.mask_proj(outs["res2"])), [outs[k] for k in self.memory_names]
