"""Atomic checkpoints: model weights as safetensors, training state in a side file.

Layout of a run folder::

    OUT/config.yaml                       # resolved config (read back by load_segmenter)
    OUT/checkpoints/last.safetensors      # model weights; metadata holds embed_dim and step
    OUT/checkpoints/last.state.pt         # optimiser, scheduler, scaler, step, RNG states

Both files are written completely under temporary names before either is moved into place
with ``os.replace``, so an interrupted write, a full disk or a permission error never leaves a
truncated checkpoint or harms the previous one. The side file holds only tensors and plain
containers and is read with ``torch.load(weights_only=True)``; a damaged file of either kind is a
``ModelLoadError`` naming it, and a weights file and side state of different steps are refused.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from celseg.config import Config, load_config
from celseg.data.classes import load_classes
from celseg.engine.export import WEIGHTS as EXPORT_WEIGHTS_NAME
from celseg.engine.export import localize
from celseg.engine.vocab import label_sources
from celseg.errors import CelsegError, ModelLoadError, OutputError
from celseg.io.atomic import atomic_paths
from celseg.models.build import build_segmenter

WEIGHTS_NAME = "last.safetensors"
STATE_NAME = "last.state.pt"


def checkpoint_paths(out_dir: str | Path) -> tuple[Path, Path]:
    """(weights, state) paths of the last checkpoint of a run folder."""
    ckpt_dir = Path(out_dir) / "checkpoints"
    return ckpt_dir / WEIGHTS_NAME, ckpt_dir / STATE_NAME


def has_checkpoint(out_dir: str | Path) -> bool:
    weights, state = checkpoint_paths(out_dir)
    return weights.is_file() and state.is_file()


def _cpu_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    # clone: safetensors refuses tensors that share storage (e.g. tied weights)
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}


def save_checkpoint(out_dir: str | Path, model: nn.Module, state: dict[str, Any],
                    metadata: dict[str, str]) -> Path:
    """Write weights and side state of a run; returns the weights path.

    ``state`` must contain only tensors, numbers, strings and containers of them (the
    optimiser / scheduler ``state_dict()``s qualify).
    """

    weights_path, state_path = checkpoint_paths(out_dir)
    tensors = _cpu_tensors(model)
    # both files are complete before either is renamed: a full disk or a permission error
    # while writing leaves the previous checkpoint whole (OutputError names the file)
    try:
        with atomic_paths(state_path, weights_path) as (state_tmp, weights_tmp):
            torch.save(state, state_tmp)
            save_file(tensors, str(weights_tmp), metadata=metadata)
    except (OutputError, OSError, RuntimeError, SafetensorError) as exc:  # torch wraps ENOSPC
        raise OutputError(
            f"checkpoint of step {metadata.get('step', '?')} not saved in {state_path.parent}: "
            f"{exc}; the previous checkpoint there is intact, so --resume continues from it once "
            "there is room (or permission) to write") from None
    return weights_path


def load_state(out_dir: str | Path) -> dict[str, Any]:
    """The side state of the last checkpoint (``weights_only=True``)."""
    _, state_path = checkpoint_paths(out_dir)
    if not state_path.is_file():
        raise ModelLoadError(f"no training state at {state_path}")
    try:
        state = torch.load(state_path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a damaged file
        raise ModelLoadError(f"cannot read training state {state_path}: it is damaged or not a "
                             f"celseg state file ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, dict) or not isinstance(state.get("step"), int):
        raise ModelLoadError(f"training state {state_path} has no integer 'step'; not a celseg "
                             "state file")
    weights, _ = checkpoint_paths(out_dir)
    saved_step = read_metadata(weights).get("step") if weights.is_file() else None
    if saved_step is not None and saved_step != str(state["step"]):
        raise ModelLoadError(f"{weights} (step {saved_step}) and {state_path} (step "
                             f"{state['step']}) are from different checkpoints; the run cannot "
                             "be resumed exactly")
    return state


def load_weights(model: nn.Module, path: str | Path) -> dict[str, str]:
    """Load safetensors weights into ``model`` with a key and shape check; returns metadata."""
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"checkpoint weights not found: {path}")
    tensors = _read_safetensors(path)
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
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception as exc:  # noqa: BLE001 - SafetensorError, OSError, ...
        raise _damaged(path, exc) from None


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except Exception as exc:  # noqa: BLE001 - SafetensorError, OSError, ...
        raise _damaged(path, exc) from None


def _damaged(path: str | Path, exc: Exception) -> ModelLoadError:
    return ModelLoadError(f"cannot read checkpoint weights {path}: the file is damaged, truncated "
                          f"or not a safetensors file ({type(exc).__name__}: {exc})")


def resolve_checkpoint(ckpt: str | Path) -> tuple[Path, Path]:
    """(weights file, config.yaml) from a weights file, a checkpoints folder, a run folder or
    a folder written by ``celseg export`` (``model.safetensors``)."""
    ckpt = Path(ckpt)
    if ckpt.is_dir():
        for candidate in (ckpt / "checkpoints" / WEIGHTS_NAME, ckpt / WEIGHTS_NAME,
                          ckpt / EXPORT_WEIGHTS_NAME):
            if candidate.is_file():
                ckpt = candidate
                break
        else:
            raise ModelLoadError(f"no {WEIGHTS_NAME} in {ckpt} or {ckpt / 'checkpoints'}, and no "
                                 f"{EXPORT_WEIGHTS_NAME} (an exported model)")
    if not ckpt.is_file():
        raise ModelLoadError(f"checkpoint not found: {ckpt}")
    for candidate in (ckpt.parent / "config.yaml", ckpt.parent.parent / "config.yaml"):
        if candidate.is_file():
            return ckpt, candidate
    raise ModelLoadError(f"no config.yaml beside {ckpt} (looked in {ckpt.parent} and its parent)")


# model keys added after checkpoints were written, with the value those checkpoints were built with
LEGACY_MODEL_DEFAULTS = {"pixel_decoder_conv": "full"}


def _with_legacy_defaults(cfg: Config, config_path: Path) -> Config:
    """A run's config with the pre-key architecture for model keys its config.yaml lacks."""
    import yaml

    with open(config_path, encoding="utf-8") as f:
        stored = (yaml.safe_load(f) or {}).get("model") or {}
    missing = {k: v for k, v in LEGACY_MODEL_DEFAULTS.items() if k not in stored}
    if not missing:
        return cfg
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, **missing))


def load_segmenter(ckpt_path: str | Path, device: str | torch.device = "cpu"
                   ) -> tuple[nn.Module, Config]:
    """Rebuild a trained segmenter from its checkpoint and the ``config.yaml`` of its run.

    Returns ``(model in eval mode on device, Config)``. The backbone is built without its
    ImageNet weights (they are in the checkpoint anyway). A shared VLM tower
    (``model.backbone=vlm``) is rebuilt from ``model.vlm`` and then gets the checkpoint's
    weights, so that folder must still hold a model of the same architecture, not the same
    weights.
    """

    weights, config_path = resolve_checkpoint(ckpt_path)
    cfg = _with_legacy_defaults(load_config(config_path), config_path)
    cfg = localize(cfg, config_path.parent)  # an exported model's VLM folders, wherever it is
    meta = read_metadata(weights)
    if "embed_dim" not in meta:
        raise ModelLoadError(f"{weights} has no 'embed_dim' metadata; not a celseg checkpoint?")
    model_cfg = dataclasses.replace(cfg.model, pretrained=False)
    model = build_segmenter(model_cfg, int(meta["embed_dim"]))
    try:
        load_weights(model, weights)
    except ModelLoadError as exc:
        if not getattr(model, "vlm_tower_is_shared", False):
            raise
        raise ModelLoadError(
            f"{exc}; the frozen VLM tower (model.backbone=vlm) is rebuilt from model.vlm="
            f"{cfg.model.vlm!r} before the checkpoint's weights replace it, so that model must "
            "have the architecture the run was trained with") from exc
    return model.to(device).eval(), cfg


def label_names(ckpt_path: str | Path, cfg: Config) -> tuple[list[str], list[str]]:
    """(class names with ground-truth labels, names with only pseudo labels) in the run's
    training data: from the checkpoint's metadata, else worked out from its dataset (older
    checkpoints), else ([], []) when neither is available (every name then counts as unseen)."""

    weights, _ = resolve_checkpoint(ckpt_path)
    meta = read_metadata(weights)
    if "labelled_names" in meta:
        return json.loads(meta["labelled_names"]), json.loads(meta.get("pseudo_names", "[]"))

    try:
        info = load_classes(cfg.data.root)
        gt, pseudo = label_sources(info, cfg.data.setting, cfg.data.label_dir)
    except (CelsegError, OSError):
        return [], []
    return [info.names[i] for i in gt], [info.names[i] for i in pseudo]
