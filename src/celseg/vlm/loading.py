"""Process-wide VLM loading and the frozen class text embeddings every run uses."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from celseg.engine import distributed
from celseg.vlm.base import VisionLanguageModel
from celseg.vlm.cache import text_embeddings
from celseg.vlm.registry import load_vlm, resolve_name


def load_vlm_cached(name: str) -> Any:
    """``load_vlm`` memoised per process (keyed by name and weight-file time), on CPU."""

    path = Path(resolve_name(name)).expanduser()
    stamp = max((f.stat().st_mtime for f in path.glob("*")), default=0.0) if path.is_dir() else 0
    return _load_vlm(str(name), stamp)


@lru_cache(maxsize=2)
def _load_vlm(name: str, stamp: float) -> Any:
    return load_vlm(name)


def class_text_embeddings(vlm_name: str, names: list[str], device: torch.device | str = "cpu"
                          ) -> torch.Tensor:
    """(C, D) frozen, L2-normalised text embeddings of ``names`` (disk-cached by the VLM layer).

    Under torch.distributed rank 0 fills the cache first so ranks never race on it.
    """

    def compute() -> torch.Tensor:
        with torch.no_grad():
            return text_embeddings(load_vlm_cached(vlm_name), list(names)).detach().float().cpu()

    emb = None
    if not distributed.is_dist() or torch.distributed.get_rank() == 0:
        emb = compute()
    distributed.barrier()
    if emb is None:
        emb = compute()
    return emb.to(device)


def has_image_tower(vlm: Any) -> bool:
    """True when ``vlm`` implements ``dense_features`` (text-only models do not)."""
    method = getattr(type(vlm), "dense_features", None)
    return callable(method) and method is not VisionLanguageModel.dense_features
