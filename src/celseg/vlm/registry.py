"""``load_vlm(name_or_path)``: resolve a model name, a pretrain-vlm folder or a CLIP folder/hub id.

Explicit dispatch, no registration by import side effect.
"""

from __future__ import annotations

import os
from pathlib import Path

from celseg.errors import ModelLoadError
from celseg.vlm.base import VisionLanguageModel

LIT_CONFIG = "celseg_vlm.json"
LIT_WEIGHTS = "model.safetensors"


def resolve_name(name_or_path: str) -> str:
    """"default" -> env CELSEG_VLM if set, else "minilm"."""
    if name_or_path == "default":
        return os.environ.get("CELSEG_VLM") or "minilm"
    return name_or_path


def load_vlm(name_or_path: str, device: str = "cpu") -> VisionLanguageModel:
    """A VisionLanguageModel in eval mode on ``device``.

    Accepts "minilm" (text only), "default", a folder written by ``pretrain-vlm``
    (celseg_vlm.json + model.safetensors), a folder with a Hugging Face CLIP config.json, or a
    hub id of the form "owner/name" (needs network or a filled HF cache).
    """
    name = resolve_name(str(name_or_path))
    if name == "minilm":
        from celseg.vlm.minilm import MiniLMText, lazy_minilm

        return MiniLMText(lazy_minilm()).to(device).eval()
    folder = Path(name).expanduser()
    if folder.is_dir():
        if (folder / LIT_CONFIG).is_file():
            from celseg.vlm.lit import load_lit

            return load_lit(folder, device=device).eval()
        if (folder / "config.json").is_file():
            has_weights = any((folder / f).is_file() for f in (
                "model.safetensors", "pytorch_model.bin", "model.safetensors.index.json"))
            if not has_weights:
                raise ModelLoadError(f"CLIP folder {folder} has config.json but no weights "
                                     "(model.safetensors or pytorch_model.bin)")
            from celseg.vlm.hf_clip import load_hf_clip

            return load_hf_clip(str(folder), device=device)
        raise ModelLoadError(f"folder {folder} holds no vision-language model: expected "
                             f"{LIT_CONFIG} + {LIT_WEIGHTS} (pretrain-vlm) or a CLIP config.json")
    if folder.exists():
        raise ModelLoadError(f"{name!r} is a file, not a model folder")
    parts = name.split("/")
    if len(parts) == 2 and all(parts) and not name.startswith((".", "/", "~")):
        from celseg.vlm.hf_clip import load_hf_clip

        return load_hf_clip(name, device=device)
    raise ModelLoadError(f"unknown vision-language model {name!r}: use 'minilm', 'default', a "
                         "pretrain-vlm output folder, a CLIP folder or a hub id 'owner/name'")
