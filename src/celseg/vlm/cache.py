"""Disk cache of class text embeddings, keyed by (model name, templates, names)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from celseg.vlm.base import VisionLanguageModel
from celseg.vlm.templates import DEFAULT_TEMPLATES


def default_cache_dir() -> Path:
    return Path(os.environ.get("CELSEG_CACHE") or Path.home() / ".cache" / "celseg")


def cache_key(model_name: str, names: list[str], templates: list[str]) -> str:
    """A hex digest that changes when the model name, any template or any name changes."""
    payload = json.dumps({"model": model_name, "templates": templates, "names": names})
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:32]


def text_embeddings(
    vlm: VisionLanguageModel,
    names: list[str],
    templates: list[str] | None = None,
    cache_dir: str | Path | None = None,
) -> torch.Tensor:
    """(C, D) L2-normalised class embeddings of ``names``; read from / written to the cache."""
    templates = list(DEFAULT_TEMPLATES if templates is None else templates)
    names = list(names)
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = folder / "text" / f"{cache_key(vlm.name, names, templates)}.safetensors"
    if path.is_file():
        try:
            emb = load_file(str(path))["embeddings"]
            if emb.shape[0] == len(names):
                return emb
        except Exception:  # a corrupt cache entry is recomputed, never fatal
            pass
    emb = vlm.encode_text(names, templates).float().cpu().contiguous()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp")
        save_file({"embeddings": emb}, str(tmp), metadata={"model": vlm.name,
                                                            "names": json.dumps(names)})
        tmp.replace(path)  # atomic: concurrent readers never see half a file
    except OSError:
        pass  # a read-only cache folder only costs recomputation
    return emb
