"""A training run's parts (data, text embeddings, model, criterion, optimiser) and its checkpoint.

:func:`build_run` makes every part from a config; :func:`save_run` and :func:`restore_run` write
and read the run's checkpoint (weights, optimiser, scheduler, scaler, step and every rank's RNG
states), so that on CPU a resumed run takes exactly the steps an uninterrupted one would.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DistributedSampler

from celseg.config import Config
from celseg.data.batching import label_ignore_index
from celseg.data.classes import ClassInfo, load_classes
from celseg.data.dataset import SegmentationDataset
from celseg.data.transforms import build_eval_transform, build_train_transform, to_unit_rgb
from celseg.engine import checkpoint as ckpt
from celseg.engine import distributed
from celseg.engine.distributed import DistInfo
from celseg.engine.protocol import resolve_vlm
from celseg.engine.schedule import build_optimizer, build_scheduler
from celseg.engine.seeding import get_rng_state, seed_everything, set_rng_state
from celseg.engine.vocab import Vocabulary, label_sources, training_vocabulary
from celseg.errors import CelsegError
from celseg.losses.criterion import build_criterion
from celseg.models.build import build_segmenter
from celseg.models.inference import vlm_dense_features
from celseg.vlm.loading import class_text_embeddings, has_image_tower


class ResumableSampler(DistributedSampler):
    """``DistributedSampler`` (seeded per epoch) that can start mid-epoch at sample ``start``."""

    def __init__(self, dataset: Any, num_replicas: int, rank: int, seed: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed,
                         drop_last=True)
        self.start = 0

    def set_start(self, start: int) -> None:
        self.start = start

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        return iter(indices[self.start:])

    def __len__(self) -> int:
        return self.num_samples - self.start


@dataclass
class TrainingRun:
    """Everything one training run works with; ``step`` is the number of optimiser steps done."""

    cfg: Config
    dist: DistInfo
    out: Path
    class_info: ClassInfo
    vocab: Vocabulary
    labelled_ids: tuple[int, ...]  # dataset ids with ground-truth labels in training
    pseudo_ids: tuple[int, ...]  # dataset ids trained only on pseudo labels
    lut: torch.Tensor  # (256,) dataset id -> vocabulary index, -1 outside; on the host (the
    # step finds segments on the host labels; a host lut reaches the device without a sync)
    ignore_index: int
    train_set: SegmentationDataset
    val_set: SegmentationDataset
    sampler: ResumableSampler
    batches_per_epoch: int
    all_emb: torch.Tensor  # (C, D) text embeddings of every class name, in id order
    train_emb: torch.Tensor  # (V, D) rows of the training vocabulary
    rank_emb: torch.Tensor | None  # (C, D) ranked set when it includes unseen names
    rank_index: torch.Tensor | None  # (V,) vocabulary index -> row of rank_emb
    model: nn.Module
    train_model: nn.Module  # model, DDP-wrapped under torch.distributed
    criterion: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    use_amp: bool
    step: int = 0
    # the VLM whose dense image features the loss reads (distillation, image-space ranking)
    # when the backbone does not share its tower; None otherwise
    teacher: Any = None

    @property
    def device(self) -> torch.device:
        return self.dist.device


def build_run(cfg: Config, dist: DistInfo) -> TrainingRun:
    """Data, frozen text embeddings, model, criterion and optimiser of ``cfg`` (same
    initialisation on every rank; then each rank's augmentation RNG is seeded apart)."""
    device, tc = dist.device, cfg.train
    class_info = load_classes(cfg.data.root)
    if class_info.num_classes > 255:
        raise CelsegError(
            f"{cfg.data.root} has {class_info.num_classes} classes: training supports at "
            "most 255 (8-bit labels, 255 = ignore); larger datasets (Context-459, "
            "ADE20K-847) are for `celseg evaluate`"
        )
    vocab = training_vocabulary(class_info, cfg.data.setting, cfg.data.label_dir)
    labelled_ids, pseudo_ids = label_sources(class_info, cfg.data.setting, cfg.data.label_dir)
    train_set, val_set = _datasets(cfg, class_info, vocab)
    sampler = ResumableSampler(train_set, dist.world_size, dist.rank, tc.seed)
    batches_per_epoch = len(sampler) // tc.batch_size
    if batches_per_epoch == 0:
        raise CelsegError(
            f"{len(train_set)} training images cannot fill one batch of {tc.batch_size} "
            f"per process ({dist.world_size} processes); lower train.batch_size"
        )
    all_emb = class_text_embeddings(cfg.model.vlm, list(class_info.names), device)  # (C, D)
    train_emb = all_emb[torch.tensor(vocab.class_ids, device=device)]  # (V, D)
    rank_emb = rank_index = None
    if cfg.loss.ranking_weight > 0 and cfg.loss.ranking_include_unseen:
        rank_emb = all_emb  # vocabulary index v -> row class_ids[v]
        rank_index = torch.tensor(vocab.class_ids, dtype=torch.long, device=device)

    seed_everything(tc.seed)  # the same initial weights on every rank
    model = build_segmenter(cfg.model, embed_dim=int(all_emb.shape[1])).to(device)
    criterion = build_criterion(cfg.loss, model.has_background).to(device)
    optimizer = build_optimizer(model, tc)
    scheduler = build_scheduler(optimizer, tc)
    use_amp = tc.amp and device.type == "cuda"
    # fp16 needs loss scaling; bf16 (and CPU float32) does not
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and not torch.cuda.is_bf16_supported())
    teacher = _teacher(cfg, model, criterion, device)
    seed_everything(tc.seed + 1000 * dist.rank)  # augmentations differ per rank
    train_model: nn.Module = model
    if dist.distributed:
        train_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=True,
        )
    return TrainingRun(cfg, dist, Path(tc.out_dir), class_info, vocab, labelled_ids, pseudo_ids,
                       vocab.lut(), label_ignore_index(class_info), train_set,
                       val_set, sampler, batches_per_epoch, all_emb, train_emb, rank_emb,
                       rank_index, model, train_model, criterion, optimizer, scheduler, scaler,
                       use_amp, teacher=teacher)


def _teacher(cfg: Config, model: nn.Module, criterion: nn.Module,
             device: torch.device) -> Any:
    """The VLM that gives the loss its dense image features per batch: needed when a term reads
    them (``criterion.needs_vlm_dense``) and the backbone is not the VLM's shared tower."""
    if not getattr(criterion, "needs_vlm_dense", False) or model.vlm_tower_is_shared:
        return None
    vlm = resolve_vlm(cfg.model.vlm, device)
    if not has_image_tower(vlm):
        raise CelsegError(f"loss.distill_weight / loss.ranking_target={cfg.loss.ranking_target} "
                          f"need a VLM with an image tower; model.vlm={cfg.model.vlm!r} has none")
    return vlm


@torch.no_grad()
def teacher_dense(teacher: Any, images: torch.Tensor, scale: float) -> torch.Tensor:
    """(B,D,h,w) the VLM's dense image features of the ImageNet-normalised ``images``, computed
    as the out-of-vocabulary branch computes them at inference (``OOVBranch.dense``)."""
    return vlm_dense_features(teacher, to_unit_rgb(images), scale).float().to(images.device)


def _datasets(cfg: Config, class_info: ClassInfo, vocab: Vocabulary
              ) -> tuple[SegmentationDataset, SegmentationDataset]:
    """The training split in the vocabulary's label view, and the full validation split."""
    train_set = SegmentationDataset(
        cfg.data.root, cfg.data.train_split, transform=build_train_transform(cfg.data),
        view=vocab.view, label_dir=cfg.data.label_dir or None, skip_bad=cfg.data.skip_bad,
        max_items=cfg.data.max_train, class_info=class_info,
    )
    val_set = SegmentationDataset(
        cfg.data.root, cfg.data.val_split, transform=build_eval_transform(cfg.data),
        view="full", skip_bad=cfg.data.skip_bad, max_items=cfg.data.max_val,
        class_info=class_info,
    )
    return train_set, val_set


def restore_run(run: TrainingRun) -> None:
    """Load the run folder's last checkpoint into ``run`` (weights, optimiser, scheduler, scaler,
    step and this rank's RNG states)."""
    state = ckpt.load_state(run.out)
    weights, _ = ckpt.checkpoint_paths(run.out)
    ckpt.load_weights(run.model, weights)
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    run.scaler.load_state_dict(state["scaler"])
    run.step = int(state["step"])
    rank = run.dist.rank
    rng = state["rng"][rank] if rank < len(state["rng"]) else None
    if rng is not None:
        set_rng_state(rng)


def save_run(run: TrainingRun) -> None:
    """Checkpoint the run at its current step (rank 0 writes; every rank's RNG is gathered)."""
    rng_states = _gather_rng(get_rng_state())
    if run.dist.is_main:
        names = run.class_info.names
        ckpt.save_checkpoint(
            run.out, run.model,
            {"step": run.step, "optimizer": run.optimizer.state_dict(),
             "scheduler": run.scheduler.state_dict(), "scaler": run.scaler.state_dict(),
             "rng": rng_states},
            {"format": "celseg-segmenter", "embed_dim": str(int(run.all_emb.shape[1])),
             "step": str(run.step), "mode": run.cfg.model.mode,
             "labelled_names": json.dumps([names[i] for i in run.labelled_ids]),
             "pseudo_names": json.dumps([names[i] for i in run.pseudo_ids])},
        )
    distributed.barrier()


def _gather_rng(state: dict[str, Any]) -> list[dict[str, Any]]:
    """RNG states of every rank (index = rank), so each rank resumes its own augmentations."""
    if not distributed.is_dist():
        return [state]
    gathered: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(gathered, state)
    return gathered
