"""Training loop: data -> segmenter -> set criterion -> AdamW, with eval, logs and checkpoints.

Read top to bottom: :func:`train` prepares the run folder, data, frozen text embeddings, model,
criterion and optimiser, restores a checkpoint on ``resume``, then runs :func:`_train_step` for
``train.iterations`` steps.

Determinism and resume: the sample order of epoch ``e`` is a permutation seeded with
``(seed, e)`` (sharded over ranks like ``DistributedSampler``), and a resumed run starts that
permutation at the batch where the checkpoint stopped. With ``train.num_workers=0`` the
augmentations draw from the process RNGs, whose states the checkpoint stores, so on CPU a resumed
run takes exactly the steps an uninterrupted one would.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from celseg.config import Config, check_paths, save_config, to_dict, validate
from celseg.engine import checkpoint as ckpt
from celseg.engine import distributed
from celseg.engine.evaluator import evaluate, pad_batch
from celseg.engine.logger import RunLogger
from celseg.engine.oom import OutOfMemoryError, out_of_memory_error
from celseg.engine.run_lock import RunLock
from celseg.engine.schedule import build_optimizer, build_scheduler
from celseg.engine.seeding import get_rng_state, seed_everything, set_rng_state
from celseg.engine.signals import StopOnSignal
from celseg.engine.vocab import label_sources, training_vocabulary
from celseg.errors import CelsegError
from celseg.viz.charts import curves_beside_log
from celseg.vlm.loading import class_text_embeddings


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


def prepare_out_dir(out: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to silently replace another run's outputs."""
    if resume:
        if not ckpt.has_checkpoint(out):
            raise CelsegError(f"--resume: no checkpoint in {out / 'checkpoints'} to resume from")
        return
    if ckpt.has_checkpoint(out) or (out / "metrics.json").exists():
        if not overwrite:
            raise CelsegError(
                f"{out} already holds a run (checkpoint or metrics.json); pass --resume to "
                "continue it, --overwrite to replace it, or choose another train.out_dir"
            )
        for name in ("checkpoints", "tensorboard"):
            shutil.rmtree(out / name, ignore_errors=True)
        for name in ("metrics.json", "log.jsonl"):
            (out / name).unlink(missing_ok=True)


def _autocast(device: torch.device, enabled: bool):
    if not enabled or device.type != "cuda":
        return nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


def _to_float(obj: Any) -> Any:
    """Outputs cast back to float32 so the losses (and Hungarian costs) run in full precision."""
    if isinstance(obj, torch.Tensor):
        return obj.float() if obj.is_floating_point() else obj
    if isinstance(obj, dict):
        return {k: _to_float(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to_float(v) for v in obj]
    return obj


def train(cfg: Config, resume: bool = False, progress: bool = True, overwrite: bool = False,
          max_steps: int | None = None) -> dict:
    """Train a segmenter as ``cfg`` says; returns the final evaluation summary.

    Writes ``OUT/config.yaml``, ``OUT/log.jsonl``, ``OUT/checkpoints/last.{safetensors,state.pt}``
    and ``OUT/metrics.json``. ``max_steps`` stops (with a checkpoint) after that global step, as
    an interruption would; the schedule still spans ``train.iterations``.
    """
    from celseg.data.classes import load_classes
    from celseg.data.dataset import SegmentationDataset, collate
    from celseg.data.transforms import build_eval_transform, build_train_transform
    from celseg.losses.targets import labels_to_targets
    from celseg.models.build import build_segmenter

    check_paths(validate(cfg))  # every value and path, before anything is touched
    tc = cfg.train
    dist_info = distributed.init_from_env(tc.device)
    device, is_main = dist_info.device, dist_info.is_main
    out = Path(tc.out_dir)
    logger: RunLogger | None = None
    lock, stop_request = RunLock(out), StopOnSignal()
    try:
        if is_main:
            lock.acquire()  # before prepare_out_dir: a second run may not --overwrite this one
            prepare_out_dir(out, resume, overwrite)
            out.mkdir(parents=True, exist_ok=True)
            save_config(cfg, out / "config.yaml")
        distributed.barrier()

        # --- data and vocabulary -----------------------------------------------------------
        class_info = load_classes(cfg.data.root)
        if class_info.num_classes > 255:
            raise CelsegError(
                f"{cfg.data.root} has {class_info.num_classes} classes: training supports at "
                "most 255 (8-bit labels, 255 = ignore); larger datasets (Context-459, "
                "ADE20K-847) are for `celseg evaluate`"
            )
        vocab = training_vocabulary(class_info, cfg.data.setting, cfg.data.label_dir)
        labelled_ids, pseudo_ids = label_sources(class_info, cfg.data.setting,
                                                 cfg.data.label_dir)
        lut = vocab.lut().to(device)
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
        sampler = ResumableSampler(train_set, dist_info.world_size, dist_info.rank, tc.seed)
        batches_per_epoch = len(sampler) // tc.batch_size
        if batches_per_epoch == 0:
            raise CelsegError(
                f"{len(train_set)} training images cannot fill one batch of {tc.batch_size} "
                f"per process ({dist_info.world_size} processes); lower train.batch_size"
            )

        # --- frozen text embeddings of the training and ranking vocabularies ---------------
        all_emb = class_text_embeddings(cfg.model.vlm, list(class_info.names), device)  # (C, D)
        train_emb = all_emb[torch.tensor(vocab.class_ids, device=device)]  # (V, D)
        rank_emb = rank_index = None
        if cfg.loss.ranking_weight > 0 and cfg.loss.ranking_include_unseen:
            rank_emb = all_emb  # (C_all, D); vocab index v -> row class_ids[v]
            rank_index = torch.tensor(vocab.class_ids, dtype=torch.long, device=device)

        # --- model, criterion, optimiser (same init on every rank) ------------------------
        seed_everything(tc.seed)
        model = build_segmenter(cfg.model, embed_dim=int(all_emb.shape[1])).to(device)
        criterion = _build_criterion(cfg.loss, model.has_background).to(device)
        optimizer = build_optimizer(model, tc)
        scheduler = build_scheduler(optimizer, tc)
        use_amp = tc.amp and device.type == "cuda"
        # fp16 needs loss scaling; bf16 (and CPU float32) does not
        scaler = torch.amp.GradScaler(
            "cuda", enabled=use_amp and not torch.cuda.is_bf16_supported()
        )
        # augmentations differ per rank
        seed_everything(tc.seed + 1000 * dist_info.rank)

        step = 0
        if resume:
            state = ckpt.load_state(out)
            weights, _ = ckpt.checkpoint_paths(out)
            ckpt.load_weights(model, weights)
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            scaler.load_state_dict(state["scaler"])
            step = int(state["step"])
            rng = state["rng"][dist_info.rank] if dist_info.rank < len(state["rng"]) else None
            if rng is not None:
                set_rng_state(rng)

        train_model: nn.Module = model
        if dist_info.distributed:
            train_model = nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None,
                find_unused_parameters=True,
            )
        logger = RunLogger(out, truncate_after=step if resume else None) if is_main else None
        if is_main and not resume:
            logger.log({"event": "start", "step": 0, "config": to_dict(cfg),
                        "world_size": dist_info.world_size, "device": str(device),
                        "train_images": len(train_set), "vocabulary": list(vocab.names)})

        def save(at_step: int) -> None:
            rng_states = _gather_rng(get_rng_state())
            if is_main:
                ckpt.save_checkpoint(
                    out, model,
                    {"step": at_step, "optimizer": optimizer.state_dict(),
                     "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                     "rng": rng_states},
                    {"format": "celseg-segmenter", "embed_dim": str(int(all_emb.shape[1])),
                     "step": str(at_step), "mode": cfg.model.mode,
                     "labelled_names": json.dumps([class_info.names[i] for i in labelled_ids]),
                     "pseudo_names": json.dumps([class_info.names[i] for i in pseudo_ids])},
                )
            distributed.barrier()

        def run_eval(at_step: int) -> dict:
            summary = evaluate(model, val_set, all_emb, class_info, cfg.eval, device,
                               progress=progress and is_main, vlm=cfg.model.vlm,
                               labelled_ids=labelled_ids, pseudo_ids=pseudo_ids)
            summary["step"] = at_step
            if is_main:
                logger.log({"step": at_step, "eval": {k: v for k, v in summary.items()
                                                      if k != "per_class"}})
            return summary

        # --- the loop ----------------------------------------------------------------------
        total = tc.iterations
        stop = min(total, max_steps) if max_steps is not None else total
        bar = tqdm(total=total, initial=step, desc="train", disable=not (progress and is_main),
                   dynamic_ncols=True, file=sys.stderr)
        model.train()
        ema_loss, t_last, n_last = None, time.perf_counter(), 0
        stop_request.install()
        while step < stop:
            epoch, offset = divmod(step, batches_per_epoch)
            sampler.set_epoch(epoch)
            sampler.set_start(offset * tc.batch_size)
            # own generator: creating an iterator must not draw from the global RNG, or a
            # resumed run (which creates one mid-epoch) would diverge
            loader_gen = torch.Generator().manual_seed(tc.seed * 100_003 + epoch)
            loader = DataLoader(train_set, batch_size=tc.batch_size, sampler=sampler,
                                collate_fn=collate, num_workers=tc.num_workers, drop_last=True,
                                generator=loader_gen)
            for images, labels, _ in loader:
                images, labels = pad_batch(images, labels, ignore_index=class_info.ignore_index)
                images, labels = images.to(device), labels.to(device)
                terms = _train_step(train_model, criterion, optimizer, scaler, images, labels, lut,
                                    train_emb, rank_emb, rank_index, tc.grad_clip, use_amp,
                                    labels_to_targets, class_info.ignore_index)
                scheduler.step()
                step += 1
                n_last += images.shape[0] * dist_info.world_size
                loss = terms["loss"]
                if not math.isfinite(loss):
                    raise CelsegError(f"loss became {loss} at step {step}; lower train.lr or "
                                      "check the data")
                ema_loss = loss if ema_loss is None else 0.9 * ema_loss + 0.1 * loss
                bar.update(1)
                if step % tc.log_every == 0 or step == 1 or step == stop:
                    elapsed = time.perf_counter() - t_last
                    img_s = n_last / max(elapsed, 1e-9)
                    terms = distributed.all_reduce_mean(terms, device)
                    bar.set_postfix(loss=f"{ema_loss:.3f}", img_s=f"{img_s:.1f}")
                    if is_main:
                        logger.log({"step": step, "epoch": epoch,
                                    "lr": optimizer.param_groups[-1]["lr"],
                                    **terms, "img_s": img_s})
                    t_last, n_last = time.perf_counter(), 0
                if tc.eval_every and step % tc.eval_every == 0 and step < total:
                    run_eval(step)
                    t_last, n_last = time.perf_counter(), 0
                if stop_request.pending(device):  # SIGTERM / SIGINT: checkpoint this step, exit
                    save(step)
                    raise stop_request.interrupted(step, out)
                if (tc.ckpt_every and step % tc.ckpt_every == 0) or step == stop:
                    save(step)
                if step >= stop:
                    break
        bar.close()
        stop_request.uninstall()

        if step < total:  # stopped early on purpose (max_steps): no final evaluation
            return {"step": step, "stopped": True}
        summary = run_eval(step)
        if is_main:
            _write_json(out / "metrics.json", summary)
            from celseg.evaluation.metrics import format_table

            print(format_table(summary, title=f"{out} (step {step})"))
        return summary
    except OutOfMemoryError as exc:
        raise out_of_memory_error(cfg, exc, dist_info.world_size) from None
    finally:
        stop_request.uninstall()
        lock.release()
        if logger is not None:
            logger.close()
            curves_beside_log(logger.path)  # a warning, never an error, when plotting fails
        distributed.cleanup(dist_info)


def _build_criterion(loss_cfg: Any, has_background: bool) -> nn.Module:
    try:
        from celseg.losses import build_criterion
    except ImportError:  # exported from the package or from its criterion module
        from celseg.losses.criterion import build_criterion
    return build_criterion(loss_cfg, has_background)


def _train_step(model: nn.Module, criterion: nn.Module, optimizer: torch.optim.Optimizer,
                scaler: torch.amp.GradScaler, images: torch.Tensor, labels: torch.Tensor,
                lut: torch.Tensor, text_emb: torch.Tensor, rank_emb: torch.Tensor | None,
                rank_index: torch.Tensor | None, grad_clip: float, use_amp: bool,
                labels_to_targets: Any, ignore_index: int) -> dict[str, float]:
    """One optimiser step. images (B,3,H,W) normalised; labels (B,H,W) dataset ids.

    Returns every weighted loss term and their sum ``loss`` as floats.
    """
    from celseg.losses.targets import labels_to_vocab

    labels_vocab = labels_to_vocab(labels, lut, ignore_index)  # (B,H,W) vocabulary indices
    targets = labels_to_targets(labels, lut, ignore_index=ignore_index)
    with _autocast(images.device, use_amp):
        outputs = model(images, text_emb)
    losses = criterion(_to_float(outputs), targets, labels_vocab, rank_emb, rank_index)
    loss = sum(losses.values())
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if grad_clip > 0:
        scaler.unscale_(optimizer)
        params = [p for g in optimizer.param_groups for p in g["params"]]
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
    scaler.step(optimizer)
    scaler.update()
    return {"loss": float(loss.detach()), **{k: float(v.detach()) for k, v in losses.items()}}


def _gather_rng(state: dict[str, Any]) -> list[dict[str, Any]]:
    """RNG states of every rank (index = rank), so each rank resumes its own augmentations."""
    if not distributed.is_dist():
        return [state]
    gathered: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(gathered, state)
    return gathered


def _write_json(path: Path, obj: dict) -> None:
    from celseg.engine.logger import _jsonable

    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(_jsonable(obj), indent=1))
    tmp.replace(path)


def replace_train(cfg: Config, **changes: Any) -> Config:
    """``cfg`` with ``train`` fields replaced (helper for commands and the demo)."""
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, **changes))
