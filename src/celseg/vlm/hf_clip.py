"""Hugging Face CLIP (``transformers.CLIPModel``) behind the VLM interface, with MaskCLIP dense
features.

Dense features (MaskCLIP, Zhou et al. 2022): in the last vision block the query-key attention is
skipped; every patch token's value ``v_proj(ln1(x))`` goes through ``out_proj`` (then, as in
MaskCLIP's code, the block's residual and MLP when ``dense_residual``), the final layer norm and
the visual projection. Position embeddings are interpolated for other resolutions.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from celseg.errors import ModelLoadError
from celseg.vlm.base import VisionLanguageModel

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _features(out) -> torch.Tensor:
    """transformers 5.x returns an output object from get_*_features; 4.x a tensor."""
    if isinstance(out, torch.Tensor):
        return out
    for attr in ("pooler_output", "image_embeds", "text_embeds"):
        value = getattr(out, attr, None)
        if isinstance(value, torch.Tensor):
            return value
    return out[0]


class HFCLIP(VisionLanguageModel):
    """A ``transformers.CLIPModel`` plus its tokenizer.

    Args:
        model: the CLIPModel (eval mode, frozen).
        tokenizer: callable tokenizer for the text tower.
        name: stable id (the folder or hub id) used in cache keys.
        mean, std: image normalisation of the checkpoint.
        dense_residual: keep the last block's residual and MLP on the value path (MaskCLIP code).
    """

    def __init__(self, model: nn.Module, tokenizer, name: str,
                 mean: tuple[float, ...] = CLIP_MEAN, std: tuple[float, ...] = CLIP_STD,
                 dense_residual: bool = True) -> None:
        super().__init__()
        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.tokenizer = tokenizer
        self.name = name
        self.embed_dim = int(model.config.projection_dim)
        self.dense_residual = dense_residual
        self.image_size = int(model.config.vision_config.image_size)
        self.patch_size = int(model.config.vision_config.patch_size)
        self.max_length = int(model.config.text_config.max_position_embeddings)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> HFCLIP:
        return super().train(False)  # frozen

    @torch.no_grad()
    def encode_sentences(self, sentences: list[str]) -> torch.Tensor:
        tok = self.tokenizer(sentences, padding=True, truncation=True, max_length=self.max_length,
                             return_tensors="pt")
        tok = {k: v.to(self.device) for k, v in tok.items() if k in ("input_ids", "attention_mask")}
        return F.normalize(_features(self.model.get_text_features(**tok)).float(), dim=-1)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """(B,3,H,W) in [0,1] -> CLIP-normalised, on the model's device."""
        return (images.to(self.device, torch.float32) - self.mean) / self.std

    @torch.no_grad()
    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """images (B,3,H,W) in [0,1] -> (B, D): resized to the pretraining size, CLS token."""
        x = F.interpolate(images.float(), size=(self.image_size, self.image_size),
                          mode="bicubic", align_corners=False).clamp(0, 1)
        out = self.model.get_image_features(pixel_values=self.normalize(x))
        return F.normalize(_features(out).float(), dim=-1)

    @torch.no_grad()
    def dense_features(self, images: torch.Tensor) -> torch.Tensor:
        """images (B,3,H,W) in [0,1] -> (B, D, H//p, W//p) normalised (H, W cropped to p)."""
        p = self.patch_size
        h, w = images.shape[-2] // p, images.shape[-1] // p
        if h == 0 or w == 0:
            raise ValueError(f"image {tuple(images.shape[-2:])} smaller than one {p}px patch")
        x = self.normalize(images[..., : h * p, : w * p])
        _, dense = maskclip_pass(self.model.vision_model, self.model.visual_projection, x, p,
                                 self.dense_residual)
        return dense


def maskclip_pass(vision: nn.Module, projection: nn.Module, x: torch.Tensor, patch_size: int,
                  dense_residual: bool = True, keep: tuple[int, ...] = ()
                  ) -> tuple[list[torch.Tensor], torch.Tensor]:
    """One pass of a CLIP vision tower giving MaskCLIP dense features and, from the same pass,
    the hidden states after the encoder layers listed in ``keep``.

    Args:
        vision: a ``CLIPVisionTransformer`` (``CLIPModel.vision_model``).
        projection: the visual projection (``CLIPModel.visual_projection``).
        x: (B,3,H,W) CLIP-normalised, H and W multiples of ``patch_size``.
        keep: layer counts in 0..L-1; 0 is the embeddings after ``pre_layrnorm``, L-1 the input
            of the last block (the value path replaces that block, so L itself is not computed).

    Returns:
        ``([(B, 1+h*w, width) per entry of keep], dense (B, D, h, w) L2-normalised)``.
    """
    kept, hidden = hidden_before_last_block(vision, x, keep)
    last = vision.encoder.layers[-1]
    attn = last.self_attn
    # Value path only: no query-key attention, every token attends to itself.
    v = attn.out_proj(attn.v_proj(last.layer_norm1(hidden)))
    if dense_residual:
        v = v + hidden
        v = v + last.mlp(last.layer_norm2(v))
    grid = (x.shape[-2] // patch_size, x.shape[-1] // patch_size)
    return kept, project_patch_tokens(vision, projection, v, grid)


def hidden_before_last_block(vision: nn.Module, x: torch.Tensor, keep: tuple[int, ...] = ()
                             ) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Embeddings and every encoder layer but the last.

    x: (B,3,H,W) CLIP-normalised. Returns ``([hidden after each layer count in keep], the input
    of the last block (B, 1+h*w, width))``; layer count 0 is the embeddings after
    ``pre_layrnorm``.
    """
    hidden = vision.embeddings(x, interpolate_pos_encoding=True)  # (B, 1+h*w, width)
    hidden = vision.pre_layrnorm(hidden)
    layers = vision.encoder.layers
    kept = {0: hidden} if 0 in keep else {}
    for i, layer in enumerate(layers[:-1], start=1):
        out = layer(hidden, None)
        hidden = out[0] if isinstance(out, tuple) else out
        if i in keep:
            kept[i] = hidden
    missing = sorted(set(keep) - set(kept))
    if missing:
        raise ValueError(f"hidden states {missing} not in 0..{len(layers) - 1}")
    return [kept[i] for i in keep], hidden


def project_patch_tokens(vision: nn.Module, projection: nn.Module, tokens: torch.Tensor,
                         grid: tuple[int, int]) -> torch.Tensor:
    """Last-block output (B, 1+h*w, width) -> (B, D, h, w): the CLS token dropped, the final
    layer norm and the visual projection applied to every patch token, L2-normalised."""
    h, w = grid
    feats = projection(vision.post_layernorm(tokens[:, 1:]))  # (B, h*w, D)
    feats = F.normalize(feats.float(), dim=-1)
    return feats.transpose(1, 2).reshape(feats.shape[0], -1, h, w)


def _read_norm(folder: Path) -> tuple[tuple[float, ...], tuple[float, ...]]:
    cfg = folder / "preprocessor_config.json"
    if cfg.is_file():
        try:
            raw = json.loads(cfg.read_text())
            return tuple(raw.get("image_mean", CLIP_MEAN)), tuple(raw.get("image_std", CLIP_STD))
        except (OSError, ValueError):
            pass
    return CLIP_MEAN, CLIP_STD


def load_hf_clip(name_or_path: str, device: str = "cpu", dense_residual: bool = True) -> HFCLIP:
    """Load a CLIPModel and its tokenizer from a local folder or (online) a hub id."""
    from transformers import AutoTokenizer, CLIPModel

    folder = Path(name_or_path)
    try:
        model = CLIPModel.from_pretrained(name_or_path)
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    except Exception as exc:
        raise ModelLoadError(f"cannot load CLIP model {name_or_path!r}: {exc}") from exc
    mean, std = _read_norm(folder) if folder.is_dir() else (CLIP_MEAN, CLIP_STD)
    name = f"hf-clip:{folder.resolve() if folder.is_dir() else name_or_path}"
    return HFCLIP(model, tokenizer, name, mean, std, dense_residual).to(device)
