"""The one interface every vision-language model implements.

Images given to a VLM are float RGB in [0, 1], shape (B, 3, H, W); each model normalises them
itself. Text and image embeddings live in one D-dimensional space and are L2-normalised.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from celseg.errors import ModelLoadError


class VisionLanguageModel(nn.Module):
    """Base class. Subclasses implement ``encode_sentences`` and, if they see, the image methods.

    Attributes:
        name: stable id of the weights (used in cache keys).
        embed_dim: D.
    """

    name: str = "vlm"
    embed_dim: int = 0
    text_batch_size: int = 64

    def encode_sentences(self, sentences: list[str]) -> torch.Tensor:
        """sentences -> (N, D) L2-normalised embeddings (one forward of the text tower)."""
        raise NotImplementedError

    @torch.no_grad()
    def encode_text(self, names: list[str], templates: list[str] | None = None) -> torch.Tensor:
        """Class names -> (C, D): each name is put in every template, embedded in batches,
        the embeddings are L2-normalised, averaged over templates and re-normalised."""
        from celseg.vlm.templates import DEFAULT_TEMPLATES

        templates = list(DEFAULT_TEMPLATES if templates is None else templates) or ["{}"]
        sentences = [t.format(n) for n in names for t in templates]  # name-major order
        chunks = [
            self.encode_sentences(sentences[i : i + self.text_batch_size])
            for i in range(0, len(sentences), self.text_batch_size)
        ]
        emb = torch.cat(chunks) if chunks else torch.zeros(0, self.embed_dim)
        emb = F.normalize(emb.float(), dim=-1).view(len(names), len(templates), -1)
        return F.normalize(emb.mean(dim=1), dim=-1)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W) in [0, 1] -> (B, D) L2-normalised."""
        raise ModelLoadError(f"vision-language model {self.name!r} is text-only: it has no "
                             "image tower (use a CLIP folder or a pretrain-vlm output)")

    def dense_features(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W) in [0, 1] -> (B, D, h, w), L2-normalised along D."""
        raise ModelLoadError(f"vision-language model {self.name!r} is text-only: it has no "
                             "image tower (use a CLIP folder or a pretrain-vlm output)")

    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        return torch.device("cpu")
