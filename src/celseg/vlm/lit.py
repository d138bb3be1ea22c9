"""The offline default VLM: EfficientNet-Lite0 + linear projection, locked to frozen MiniLM (LiT).

Image embedding: ImageNet-normalise, EfficientNet-Lite0 up to its 1280-channel head features
(B, 1280, h, w), average-pool, project to 384, L2-normalise. Dense features apply the same
projection at every location (a 1x1 convolution) before pooling - the CNN analogue of MaskCLIP -
so pooling the un-normalised dense map and normalising gives ``encode_image`` exactly.
The text side is MiniLM unchanged (no projection), so text embeddings equal ``load_vlm("minilm")``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from celseg.errors import ModelLoadError
from celseg.models.efficientnet_lite import HEAD_CHANNELS, EfficientNetLite0, efficientnet_lite0
from celseg.vlm.base import VisionLanguageModel
from celseg.vlm.minilm import MINILM_DIM, LazyTextEncoder, MiniLMTextEncoder, lazy_minilm

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CONFIG_FILE = "celseg_vlm.json"
WEIGHTS_FILE = "model.safetensors"


class LiTImageTower(nn.Module):
    """EfficientNet-Lite0 trunk + projection. Input (B,3,H,W) in [0,1]."""

    def __init__(self, backbone: EfficientNetLite0, embed_dim: int = MINILM_DIM,
                 init_temperature: float = 0.07) -> None:
        super().__init__()
        self.backbone = backbone
        self.proj = nn.Linear(HEAD_CHANNELS, embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(float(-torch.log(
            torch.tensor(init_temperature)))))
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1),
                             persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1),
                             persistent=False)

    def head_features(self, images: torch.Tensor) -> torch.Tensor:
        """(B,3,H,W) in [0,1] -> (B,1280,H/32,W/32)."""
        x = (images - self.mean) / self.std
        return self.backbone.forward_head(self.backbone.forward_features(x)["res5"])

    def trunk_prefix(self, images: torch.Tensor, stop: int) -> torch.Tensor:
        """(B,3,H,W) in [0,1] -> output of block ``stop - 1`` (the frozen part in pretraining)."""
        bb = self.backbone
        x = F.relu6(bb._bn0(bb._conv_stem((images - self.mean) / self.std)))
        for block in bb._blocks[:stop]:
            x = block(x)
        return x

    def trunk_suffix(self, x: torch.Tensor, start: int) -> torch.Tensor:
        """Output of block ``start - 1`` -> (B,1280,h,w) head features."""
        for block in self.backbone._blocks[start:]:
            x = block(x)
        return self.backbone.forward_head(x)

    def project_map(self, feats: torch.Tensor) -> torch.Tensor:
        """(B,1280,h,w) -> (B,D,h,w): the projection as a 1x1 convolution (not normalised)."""
        return torch.einsum("bchw,dc->bdhw", feats, self.proj.weight) + self.proj.bias.view(
            1, -1, 1, 1)

    def dense_from_res5(self, res5: torch.Tensor) -> torch.Tensor:
        """Trunk output (B,320,h,w) -> (B,D,h,w) dense features, L2-normalised along D."""
        return F.normalize(self.project_map(self.backbone.forward_head(res5)), dim=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B,3,H,W) in [0,1] -> (B,D) normalised: pool, then project (== project, then pool)."""
        pooled = self.head_features(images).mean(dim=(2, 3))
        return F.normalize(self.proj(pooled), dim=-1)


class LiTModel(VisionLanguageModel):
    """Vision-language model with a trained image tower and the frozen MiniLM text tower."""

    embed_dim = MINILM_DIM

    def __init__(self, image: LiTImageTower, text: MiniLMTextEncoder | LazyTextEncoder,
                 name: str = "lit", dense_scale: float = 2.0) -> None:
        super().__init__()
        self.image = image
        self.text = text
        self.name = name
        self.dense_scale = dense_scale

    def encode_sentences(self, sentences: list[str]) -> torch.Tensor:
        return self.text(sentences)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """images (B,3,H,W) in [0,1] -> (B,384) normalised."""
        return self.image(images.to(self.device, torch.float32))

    def dense_features(self, images: torch.Tensor) -> torch.Tensor:
        """images (B,3,H,W) in [0,1] -> (B,384,ceil(s*H/32),ceil(s*W/32)) normalised along D,
        s = dense_scale (the input is upsampled first for a finer map)."""
        x = images.to(self.device, torch.float32)
        if self.dense_scale != 1.0:
            x = F.interpolate(x, scale_factor=self.dense_scale, mode="bilinear",
                              align_corners=False)
        res5 = self.image.backbone.forward_features((x - self.image.mean) / self.image.std)["res5"]
        return self.image.dense_from_res5(res5)


def build_lit(pretrained_backbone: bool = True, init_temperature: float = 0.07) -> LiTImageTower:
    """A fresh image tower (ImageNet backbone when ``pretrained_backbone``)."""
    return LiTImageTower(efficientnet_lite0(pretrained=pretrained_backbone),
                         init_temperature=init_temperature)


def save_lit(tower: LiTImageTower, out: str | Path, extra: dict | None = None) -> Path:
    """Write ``model.safetensors`` (image tower) and ``celseg_vlm.json`` atomically."""
    from safetensors.torch import save_file

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in tower.state_dict().items()}
    tmp = out / (WEIGHTS_FILE + ".tmp")
    save_file(state, str(tmp))
    tmp.replace(out / WEIGHTS_FILE)
    meta = {"type": "lit", "text": "minilm", "embed_dim": MINILM_DIM,
            "image_tower": "efficientnet-lite0", **(extra or {})}
    tmp = out / (CONFIG_FILE + ".tmp")
    tmp.write_text(json.dumps(meta, indent=1))
    tmp.replace(out / CONFIG_FILE)
    return out


def load_lit(folder: str | Path, device: str = "cpu") -> LiTModel:
    """Load a pretrain-vlm output folder; every tensor's key and shape is checked."""
    from safetensors.torch import load_file

    folder = Path(folder)
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise ModelLoadError(f"{folder} has {CONFIG_FILE} but no weights file {WEIGHTS_FILE}")
    try:
        meta = json.loads((folder / CONFIG_FILE).read_text())
        state = load_file(str(weights))
    except Exception as exc:
        raise ModelLoadError(f"cannot read the model in {folder}: {exc}") from exc
    if not isinstance(meta, dict) or meta.get("type") != "lit":
        got = meta.get("type") if isinstance(meta, dict) else meta
        raise ModelLoadError(f"{folder / CONFIG_FILE}: unknown model type {got!r}")
    tower = build_lit(pretrained_backbone=False)
    own = tower.state_dict()
    for key in own:
        if key not in state:
            raise ModelLoadError(f"key {key!r} missing from {weights}")
        if tuple(state[key].shape) != tuple(own[key].shape):
            raise ModelLoadError(f"shape mismatch for {key!r} in {weights}: "
                                 f"{tuple(state[key].shape)} vs {tuple(own[key].shape)}")
    extra = sorted(set(state) - set(own))
    if extra:
        raise ModelLoadError(f"unexpected key {extra[0]!r} in {weights}")
    tower.load_state_dict(state)
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()[:16]
    model = LiTModel(tower, lazy_minilm(), name=f"lit-minilm:{digest}",
                     dense_scale=float(meta.get("dense_scale", 2.0)))
    return model.to(device).eval()
