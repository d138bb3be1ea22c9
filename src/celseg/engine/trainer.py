"""Training loop: data -> segmenter -> set criterion -> AdamW, with eval, logs and checkpoints.

Read top to bottom: :func:`train` claims the run folder, builds the run
(:func:`celseg.engine.training_run.build_run`), restores its checkpoint on ``resume``, runs
:func:`_loop` (one :func:`_train_step` per batch) and evaluates at the end.

Determinism and resume: the sample order of epoch ``e`` is a permutation seeded with
``(seed, e)`` (sharded over ranks like ``DistributedSampler``), and a resumed run starts that
permutation at the batch where the checkpoint stopped. With ``train.num_workers=0`` the
augmentations draw from the process RNGs, whose states the checkpoint stores, so on CPU a resumed
run takes exactly the steps an uninterrupted one would.
"""

from __future__ import annotations

import math
import shutil
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from celseg.config import Config, check_paths, save_config, to_dict, validate
from celseg.data.batching import collate, pad_batch
from celseg.engine import checkpoint as ckpt
from celseg.engine import distributed
from celseg.engine.evaluator import evaluate
from celseg.engine.logger import RunLogger, write_json
from celseg.engine.oom import OutOfMemoryError, out_of_memory_error
from celseg.engine.run_lock import RunLock
from celseg.engine.signals import StopOnSignal
from celseg.engine.training_run import (
    TrainingRun,
    build_run,
    restore_run,
    save_run,
    teacher_dense,
)
from celseg.errors import CelsegError
from celseg.evaluation.metrics import format_table
from celseg.losses.targets import labels_to_targets, labels_to_vocab
from celseg.viz.charts import curves_beside_log


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
    check_paths(validate(cfg))  # every value and path, before anything is touched
    dist_info = distributed.init_from_env(cfg.train.device)
    out = Path(cfg.train.out_dir)
    logger: RunLogger | None = None
    lock, stop_request = RunLock(out), StopOnSignal()
    try:
        if dist_info.is_main:
            lock.acquire()  # before prepare_out_dir: a second run may not --overwrite this one
            prepare_out_dir(out, resume, overwrite)
            out.mkdir(parents=True, exist_ok=True)
            save_config(cfg, out / "config.yaml")
        distributed.barrier()
        run = build_run(cfg, dist_info)
        if resume:
            restore_run(run)
        if dist_info.is_main:
            logger = RunLogger(out, truncate_after=run.step if resume else None)
            if not resume:
                logger.log({"event": "start", "step": 0, "config": to_dict(cfg),
                            "world_size": dist_info.world_size, "device": str(run.device),
                            "train_images": len(run.train_set),
                            "vocabulary": list(run.vocab.names)})
        stop = cfg.train.iterations if max_steps is None else min(cfg.train.iterations, max_steps)
        _loop(run, stop, logger, stop_request, progress)
        if run.step < cfg.train.iterations:  # stopped early on purpose: no final evaluation
            return {"step": run.step, "stopped": True}
        summary = _evaluate(run, logger, progress)
        if dist_info.is_main:
            write_json(out / "metrics.json", summary)
            print(format_table(summary, title=f"{out} (step {run.step})"))
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


def _loop(run: TrainingRun, stop: int, logger: RunLogger | None, stop_request: StopOnSignal,
          progress: bool) -> None:
    """Optimiser steps from ``run.step`` up to ``stop``: logs every ``train.log_every`` steps,
    evaluates every ``train.eval_every``, checkpoints every ``train.ckpt_every`` and at ``stop``;
    SIGTERM / SIGINT checkpoint the current step and raise ``Interrupted``."""
    tc = run.cfg.train
    bar = tqdm(total=tc.iterations, initial=run.step, desc="train", dynamic_ncols=True,
               disable=not (progress and run.dist.is_main), file=sys.stderr)
    meter = _Meter()
    parts = _step_parts(run)
    run.model.train()
    stop_request.install()
    while run.step < stop:
        epoch, offset = divmod(run.step, run.batches_per_epoch)
        for images, labels, _ in _epoch_loader(run, epoch, offset):
            images, labels = pad_batch(images, labels, ignore_index=run.ignore_index)
            images = images.to(run.device)  # labels move inside the step, after the targets
            terms = _train_step(parts, images, labels)
            # terms stay on the device; they are read (one transfer) only when logged
            run.scheduler.step()
            run.step += 1
            meter.add(terms["loss"], images.shape[0] * run.dist.world_size, run.step)
            bar.update(1)
            if run.step % tc.log_every == 0 or run.step == 1 or run.step == stop:
                _log_step(run, logger, bar, meter, terms, epoch)
            if tc.eval_every and run.step % tc.eval_every == 0 and run.step < tc.iterations:
                _evaluate(run, logger, progress)
                meter.restart()
            if stop_request.pending(run.device):  # SIGTERM / SIGINT: checkpoint this step, exit
                save_run(run)
                raise stop_request.interrupted(run.step, run.out)
            if (tc.ckpt_every and run.step % tc.ckpt_every == 0) or run.step == stop:
                save_run(run)
            if run.step >= stop:
                break
    bar.close()
    stop_request.uninstall()


def _epoch_loader(run: TrainingRun, epoch: int, offset: int) -> DataLoader:
    """Batches of ``epoch`` from batch ``offset`` on (a resumed run starts mid-epoch)."""
    tc = run.cfg.train
    run.sampler.set_epoch(epoch)
    run.sampler.set_start(offset * tc.batch_size)
    # own generator: creating an iterator must not draw from the global RNG, or a resumed run
    # (which creates one mid-epoch) would diverge
    generator = torch.Generator().manual_seed(tc.seed * 100_003 + epoch)
    return DataLoader(run.train_set, batch_size=tc.batch_size, sampler=run.sampler,
                      collate_fn=collate, num_workers=tc.num_workers, drop_last=True,
                      generator=generator)


class _Meter:
    """Exponential moving average of the loss and images per second since the last log.

    The average is a tensor on the training device, so adding a step costs no transfer; it is
    read, and checked to be finite, when logged (``check``)."""

    def __init__(self) -> None:
        self.ema: torch.Tensor | None = None
        self.ema_loss = float("nan")
        self.checked_step = 0
        self.restart()

    def restart(self) -> None:
        self.t_last, self.n_last = time.perf_counter(), 0

    def add(self, loss: torch.Tensor, images: int, step: int) -> None:
        self.n_last += images
        # a non-finite step poisons the average until it is checked
        self.ema = loss if self.ema is None else 0.9 * self.ema + 0.1 * loss

    def check(self, step: int) -> None:
        """Read the average; a NaN or infinite loss since the last check is an error."""
        self.ema_loss = float(self.ema) if self.ema is not None else float("nan")
        if not math.isfinite(self.ema_loss):
            raise CelsegError(f"loss became {self.ema_loss} between steps {self.checked_step + 1}"
                              f" and {step}; lower train.lr or check the data")
        self.checked_step = step

    def images_per_second(self) -> float:
        return self.n_last / max(time.perf_counter() - self.t_last, 1e-9)


def _log_step(run: TrainingRun, logger: RunLogger | None, bar: tqdm, meter: _Meter,
              terms: dict[str, torch.Tensor], epoch: int) -> None:
    """Loss terms averaged over ranks, learning rate and throughput: to the bar and the log."""
    img_s = meter.images_per_second()
    meter.check(run.step)
    terms = distributed.all_reduce_mean(_to_floats(terms), run.device)
    bar.set_postfix(loss=f"{meter.ema_loss:.3f}", img_s=f"{img_s:.1f}")
    if logger is not None:
        logger.log({"step": run.step, "epoch": epoch,
                    "lr": run.optimizer.param_groups[-1]["lr"], **terms, "img_s": img_s})
    meter.restart()


def _evaluate(run: TrainingRun, logger: RunLogger | None, progress: bool) -> dict:
    """Evaluate on the validation split at the current step (and log it on rank 0)."""
    summary = evaluate(run.model, run.val_set, run.all_emb, run.class_info, run.cfg.eval,
                       run.device, progress=progress and run.dist.is_main,
                       vlm=run.cfg.model.vlm, labelled_ids=run.labelled_ids,
                       pseudo_ids=run.pseudo_ids)
    summary["step"] = run.step
    if logger is not None:
        logger.log({"step": run.step, "eval": {k: v for k, v in summary.items()
                                               if k != "per_class"}})
    return summary


@dataclass(frozen=True)
class StepParts:
    """What every training step uses, the same from step to step."""

    model: nn.Module  # DDP-wrapped under torch.distributed
    criterion: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    lut: torch.Tensor  # (256,) dataset id -> vocabulary index, -1 outside; on the host
    text_emb: torch.Tensor  # (V, D) text embeddings of the training vocabulary
    rank_emb: torch.Tensor | None  # (R, D) ranked set, None: rank over text_emb
    rank_index: torch.Tensor | None  # (V,) vocabulary index -> row of rank_emb
    grad_clip: float  # maximum gradient norm, 0: no clipping
    use_amp: bool
    ignore_index: int
    teacher: Any = None  # VLM giving outputs["vlm_dense"] (training_run._teacher), or None
    teacher_scale: float = 1.0  # input upsampling before it, as at inference


def _step_parts(run: TrainingRun) -> StepParts:
    return StepParts(
        model=run.train_model, criterion=run.criterion, optimizer=run.optimizer,
        scaler=run.scaler, lut=run.lut, text_emb=run.train_emb, rank_emb=run.rank_emb,
        rank_index=run.rank_index, grad_clip=run.cfg.train.grad_clip, use_amp=run.use_amp,
        ignore_index=run.ignore_index, teacher=run.teacher,
        teacher_scale=run.cfg.eval.dense_input_scale,
    )


def _train_step(parts: StepParts, images: torch.Tensor,
                labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """One optimiser step. images (B,3,H,W) normalised, on the device; labels (B,H,W) dataset
    ids, on the host: the per-image segments (a data-dependent shape) are found there, and
    everything after that stays on the device, except the matcher's assignment.

    Returns every weighted loss term and their sum ``loss``, detached, on the device.
    """
    device = images.device
    with_masks = getattr(parts.criterion, "needs_target_masks", True)
    targets = [{k: v.to(device, non_blocking=True) for k, v in t.items()}
               for t in labels_to_targets(labels, parts.lut, parts.ignore_index, with_masks)]
    labels = labels.to(device, non_blocking=True)
    labels_vocab = labels_to_vocab(labels, parts.lut, parts.ignore_index)  # (B,H,W) vocabulary
    with _autocast(device, parts.use_amp):
        outputs = parts.model(images, parts.text_emb)
    if parts.teacher is not None:
        outputs["vlm_dense"] = teacher_dense(parts.teacher, images, parts.teacher_scale)
    losses = parts.criterion(_to_float(outputs), targets, labels_vocab, parts.rank_emb,
                             parts.rank_index)
    loss = sum(losses.values())
    optimizer, scaler = parts.optimizer, parts.scaler
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if parts.grad_clip > 0:
        scaler.unscale_(optimizer)
        params = [p for g in optimizer.param_groups for p in g["params"]]
        torch.nn.utils.clip_grad_norm_(params, parts.grad_clip)
    scaler.step(optimizer)
    scaler.update()
    return {"loss": loss.detach(), **{k: v.detach() for k, v in losses.items()}}


def _to_floats(terms: dict[str, torch.Tensor]) -> dict[str, float]:
    """One device-to-host transfer for every logged term."""
    keys = list(terms)
    values = torch.stack([terms[k].float() for k in keys]).tolist()
    return dict(zip(keys, values, strict=True))
