"""Training-free segmentation: every pixel labelled from a vision-language model alone.

No segmenter and no labelled data. The class names are embedded by the VLM's text tower
(prompt ensemble, cached on disk), the image by dense features ``f (B, D, h, w)``, and each
location takes a softmax over the cosines with temperature T (``celseg.pseudo.dense``)::

    p_c(x) = softmax_c(<f(x), t_c> / T)

upsampled bilinearly to the image size; the label is the most probable class.

Dense features per kind of model:

* **CLIP (ViT)**: ClearCLIP's last block (Lan et al., "ClearCLIP: Decomposing CLIP
  Representations for Dense Vision-Language Inference", ECCV 2024). MaskCLIP (Zhou et al.,
  ECCV 2022) replaced the last block's query-key attention with the value path; ClearCLIP
  attends queries to queries and drops the block's residual connection and feed-forward
  network, which carry the global, noisy part of the representation. Per head, with
  ``X = layer_norm1(H)`` the input of the last block::

      A = softmax(X Wq (X Wq)^T / sqrt(d_head));   O = out_proj(A X Wv)
      f = normalize(visual_projection(post_layernorm(O)))   for every patch token

  The image is resized so that its shorter side is the model's pretraining size (both sides
  rounded to whole patches); the position embeddings are interpolated.
* **The default VLM (LiT)**: its dense map, the image projection applied at every location of
  the EfficientNet-Lite0 features (``LiTModel.dense_features``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from celseg.errors import ModelLoadError
from celseg.pseudo.dense import DEFAULT_TEMPERATURE, dense_probs_from_features
from celseg.vlm.base import VisionLanguageModel
from celseg.vlm.cache import text_embeddings
from celseg.vlm.hf_clip import HFCLIP, hidden_before_last_block, project_patch_tokens


def clearclip_attention(attn: nn.Module, x: Tensor) -> Tensor:
    """Query-query attention of a ``CLIPAttention``, then its output projection.

    x: (B, N, width), the layer-normed input of the block. Returns (B, N, width).
    """
    b, n, width = x.shape
    heads = attn.num_heads
    d = width // heads
    q = attn.q_proj(x).view(b, n, heads, d).transpose(1, 2)  # (B, heads, N, d)
    v = attn.v_proj(x).view(b, n, heads, d).transpose(1, 2)
    weights = torch.softmax(q @ q.transpose(-1, -2) * d**-0.5, dim=-1)  # (B, heads, N, N)
    return attn.out_proj((weights @ v).transpose(1, 2).reshape(b, n, width))


def clip_input_size(size: tuple[int, int], short_side: int, patch: int) -> tuple[int, int]:
    """(H, W) scaled so that the shorter side is ``short_side``, each rounded to whole patches
    (at least one)."""
    scale = short_side / min(size)
    return tuple(max(patch, round(s * scale / patch) * patch) for s in size)  # type: ignore


@torch.no_grad()
def clearclip_features(clip: HFCLIP, images: Tensor, short_side: int | None = None) -> Tensor:
    """images (B,3,H,W) in [0,1] -> (B, D, h, w) ClearCLIP features, L2-normalised along D;
    ``short_side`` defaults to the model's pretraining size."""
    p = clip.patch_size
    size = clip_input_size(tuple(images.shape[-2:]), short_side or clip.image_size, p)
    x = F.interpolate(images.float(), size=size, mode="bicubic", align_corners=False)
    x = clip.normalize(x.clamp(0, 1))
    vision = clip.model.vision_model
    _, hidden = hidden_before_last_block(vision, x)
    last = vision.encoder.layers[-1]
    tokens = clearclip_attention(last.self_attn, last.layer_norm1(hidden))
    return project_patch_tokens(vision, clip.model.visual_projection, tokens,
                                (size[0] // p, size[1] // p))


def training_free_features(vlm: VisionLanguageModel, images: Tensor) -> Tensor:
    """images (B,3,H,W) in [0,1] -> (B, D, h, w) normalised: ClearCLIP for CLIP, else the
    model's own ``dense_features`` (the LiT dense map)."""
    if isinstance(vlm, HFCLIP):
        return clearclip_features(vlm, images)
    return vlm.dense_features(images)


class TrainingFreeSegmenter:
    """Segment with a VLM alone; the interface of ``celseg.engine.predictor.Predictor``
    (``probs``, ``segment``, ``protocol``, ``device``).

    Args:
        vlm: a loaded model with an image tower (CLIP or a ``pretrain-vlm`` folder).
        temperature: T of the softmax over cosines (0.01: CLIP's logit scale of 100).
        cache_dir: the text-embedding cache (default: ``CELSEG_CACHE`` or ~/.cache/celseg).
    """

    protocol = "training-free"

    def __init__(self, vlm: VisionLanguageModel, temperature: float = DEFAULT_TEMPERATURE,
                 cache_dir: str | Path | None = None) -> None:
        from celseg.vlm.loading import has_image_tower

        if not has_image_tower(vlm):
            raise ModelLoadError(f"vision-language model {getattr(vlm, 'name', vlm)!r} is "
                                 "text-only: training-free segmentation needs an image tower "
                                 "(a pretrain-vlm folder or a CLIP model)")
        self.vlm = vlm.eval()
        self.temperature = temperature
        self.cache_dir = cache_dir

    @property
    def device(self) -> torch.device:
        return self.vlm.device

    def text_embeddings(self, class_names: list[str]) -> Tensor:
        """(C, D) normalised, read from the disk cache when there."""
        return text_embeddings(self.vlm, list(class_names), cache_dir=self.cache_dir)

    @torch.no_grad()
    def probs_from_text(self, images01: Tensor, text_emb: Tensor) -> Tensor:
        """images (B,3,H,W) in [0,1], text_emb (C,D) -> (B,C,H,W) probabilities."""
        feats = training_free_features(self.vlm, images01.to(self.device))
        return dense_probs_from_features(feats, text_emb.to(feats.device),
                                         out_size=tuple(images01.shape[-2:]),
                                         temperature=self.temperature)

    def probs_batch(self, images01: Tensor, class_names: list[str]) -> Tensor:
        """(B,C,H,W) class probabilities for (B,3,H,W) RGB images in [0, 1]."""
        return self.probs_from_text(images01, self.text_embeddings(class_names))

    def probs(self, image: np.ndarray, class_names: list[str]) -> Tensor:
        """(C,H,W) class probabilities for an (H,W,3) uint8 image."""
        x01 = torch.tensor(image).permute(2, 0, 1).float().div(255.0)[None]
        return self.probs_batch(x01, class_names)[0]

    def segment(self, image: np.ndarray, class_names: list[str]) -> np.ndarray:
        """(H,W) uint8 positions in ``class_names`` for an (H,W,3) uint8 image."""
        return self.labels(self.probs(image, class_names), class_names)

    def labels(self, probs: Tensor, class_names: list[str]) -> np.ndarray:
        """(C,H,W) probabilities of :meth:`probs` -> (H,W) uint8 positions: the argmax."""
        return probs.argmax(0).to(torch.uint8).cpu().numpy()
