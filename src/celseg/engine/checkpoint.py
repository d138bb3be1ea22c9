"""Atomic checkpoints: model weights as safetensors, training state in a side file.

Layout of a run folder::

    OUT/config.yaml                       # resolved config (read back by load_segmenter)
    OUT/checkpoints/last.safetensors      # model weights; metadata holds embed_dim and step
    OUT/checkpoints/last.state.pt         # optimiser, scheduler, scaler, step, RNG states

Both files are written to a temporary name and moved into place with ``os.replace``, so an
interrupted write never leaves a truncated checkpoint. The side file holds only tensors and
plain containers and is read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from celseg.config import Config, load_config
from celseg.errors import ModelLoadError

WEIGHTS_NAME = "last.safetensors"
STATE_NAME = "last.state.pt"


def checkpoint_paths(out_dir: str | Path) -> tuple[Path, Path]:
    """(weights, state) paths of the last checkpoint of a run folder."""
    ckpt_dir = Path(out_dir) / "checkpoints"
    return ckpt_dir / WEIGHTS_NAME, ckpt_dir / STATE_NAME


def has_checkpoint(out_dir: str | Path) -> bool:
    weights, state = checkpoint_paths(out_dir)
    return weights.is_file() and state.is_file()


def save_weights(model: nn.Module, path: str | Path, metadata: dict[str, str]) -> None:
    """Write ``model.state_dict()`` as safetensors, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # clone: safetensors refuses tensors that share storage (e.g. tied weights)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    os.replace(tmp, path)


def save_checkpoint(out_dir: str | Path, model: nn.Module, state: dict[str, Any],
                    metadata: dict[str, str]) -> Path:
    """Write weights and side state of a run; returns the weights path.

    ``state`` must contain only tensors, numbers, strings and containers of them (the
    optimiser / scheduler ``state_dict()``s qualify).
    """
    weights_path, state_path = checkpoint_paths(out_dir)
    # the state goes first: a weights file always has a matching (or newer) state beside it
    state_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = state_path.with_name(state_path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, state_path)
    save_weights(model, weights_path, metadata)
    return weights_path


def load_state(out_dir: str | Path) -> dict[str, Any]:
    """The side state of the last checkpoint (``weights_only=True``)."""
    _, state_path = checkpoint_paths(out_dir)
    if not state_path.is_file():
        raise ModelLoadError(f"no training state at {state_path}")
    return torch.load(state_path, map_location="cpu", weights_only=True)


def load_weights(model: nn.Module, path: str | Path) -> dict[str, str]:
    """Load safetensors weights into ``model`` with a key and shape check; returns metadata."""
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"checkpoint weights not found: {path}")
    tensors = load_file(str(path))
    own = model.state_dict()
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    bad_shape = [f"{k}: checkpoint {tuple(tensors[k].shape)} vs model {tuple(own[k].shape)}"
                 for k in own if k in tensors and tensors[k].shape != own[k].shape]
    if missing or unexpected or bad_shape:
        raise ModelLoadError(
            f"{path} does not match the model built from its config: "
            f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}, "
            f"shape mismatches {bad_shape[:5]}"
        )
    model.load_state_dict(tensors, strict=True)
    return read_metadata(path)


def read_metadata(path: str | Path) -> dict[str, str]:
    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def resolve_checkpoint(ckpt: str | Path) -> tuple[Path, Path]:
    """(weights file, config.yaml) from a weights file, a checkpoints folder or a run folder."""
    ckpt = Path(ckpt)
    if ckpt.is_dir():
        for candidate in (ckpt / "checkpoints" / WEIGHTS_NAME, ckpt / WEIGHTS_NAME):
            if candidate.is_file():
                ckpt = candidate
                break
        else:
            raise ModelLoadError(f"no {WEIGHTS_NAME} in {ckpt} or {ckpt / 'checkpoints'}")
    if not ckpt.is_file():
        raise ModelLoadError(f"checkpoint not found: {ckpt}")
    for candidate in (ckpt.parent / "config.yaml", ckpt.parent.parent / "config.yaml"):
        if candidate.is_file():
            return ckpt, candidate
    raise ModelLoadError(f"no config.yaml beside {ckpt} (looked in {ckpt.parent} and its parent)")


def load_segmenter(ckpt_path: str | Path, device: str | torch.device = "cpu"
                   ) -> tuple[nn.Module, Config]:
    """Rebuild a trained segmenter from its checkpoint and the ``config.yaml`` of its run.

    Returns ``(model in eval mode on device, Config)``. The backbone is built without its
    ImageNet weights (they are in the checkpoint anyway).
    """
    from celseg.models.build import build_segmenter

    weights, config_path = resolve_checkpoint(ckpt_path)
    cfg = load_config(config_path)
    meta = read_metadata(weights)
    if "embed_dim" not in meta:
        raise ModelLoadError(f"{weights} has no 'embed_dim' metadata; not a celseg checkpoint?")
    model_cfg = dataclasses.replace(cfg.model, pretrained=False)
    model = build_segmenter(model_cfg, int(meta["embed_dim"]))
    load_weights(model, weights)
    return model.to(device).eval(), cfg
