"""Optimiser and learning-rate schedule: AdamW with a backbone multiplier, poly with warmup."""

from __future__ import annotations

import torch
from torch import nn

from celseg.config import TrainConfig


def poly_warmup_factor(step: int, total: int, warmup: int, power: float) -> float:
    """Multiplier of the base lr after ``step`` optimiser steps.

    Linear warmup from 1/warmup to 1 over the first ``warmup`` steps, then
    ``(1 - (step - warmup) / (total - warmup)) ** power``, reaching 0 at ``total``.
    """
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    span = max(1, total - warmup)
    progress = min(1.0, (step - warmup) / span)
    return (1.0 - progress) ** power


def param_groups(model: nn.Module, lr: float, weight_decay: float,
                 backbone_lr_mult: float) -> list[dict]:
    """Split trainable parameters into (backbone | rest) x (decay | no decay) groups.

    Biases, normalisation weights, embeddings (learned queries) and scalars such as the logit
    scale get no weight decay, as Mask2Former does. Backbone parameters are those whose name
    starts with ``backbone.``, except those of the modules the backbone lists in ``new_modules``
    (trained from scratch, e.g. a ViT's feature pyramid). Frozen parameters are left out.
    """
    no_decay_ids: set[int] = set()
    for module in model.modules():
        if isinstance(module, (nn.Embedding, nn.LayerNorm, nn.GroupNorm,
                               nn.modules.batchnorm._BatchNorm)):
            no_decay_ids.update(id(p) for p in module.parameters(recurse=False))
    fresh = tuple(f"backbone.{m}." for m in getattr(getattr(model, "backbone", None),
                                                     "new_modules", ()))
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        is_backbone = name.startswith("backbone.") and not name.startswith(fresh)
        decay = p.ndim > 1 and id(p) not in no_decay_ids
        groups.setdefault((is_backbone, decay), []).append(p)
    out = []
    for (is_backbone, decay), params in sorted(groups.items()):
        out.append({
            "params": params,
            "lr": lr * (backbone_lr_mult if is_backbone else 1.0),
            "weight_decay": weight_decay if decay else 0.0,
            "name": f"{'backbone' if is_backbone else 'head'}{'' if decay else '_nodecay'}",
        })
    return out


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW, fused (one kernel over every parameter: 3x faster on CPU than the per-tensor loop)
    on the devices that have the fused kernel."""
    groups = param_groups(model, cfg.lr, cfg.weight_decay, cfg.backbone_lr_mult)
    devices = {p.device.type for g in groups for p in g["params"]}
    fused = bool(devices) and devices <= {"cpu", "cuda"}
    return torch.optim.AdamW(groups, lr=cfg.lr, fused=fused or None)


def build_scheduler(optimizer: torch.optim.Optimizer,
                    cfg: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    total, warmup, power = cfg.iterations, min(cfg.warmup_iters, cfg.iterations), cfg.poly_power
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: poly_warmup_factor(step, total, warmup, power)
    )
