"""Out-of-memory on CUDA, reported with the sizes that caused it and what to lower."""

from __future__ import annotations

import torch

from celseg.config import Config
from celseg.errors import CelsegError

OutOfMemoryError = torch.cuda.OutOfMemoryError


def out_of_memory_error(cfg: Config, exc: BaseException, world_size: int = 1) -> CelsegError:
    """A CelsegError naming batch size, crop size and the keys that use less memory."""
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else "out of memory"
    per = f" per process, {world_size} processes" if world_size > 1 else ""
    return CelsegError(
        f"CUDA ran out of memory with train.batch_size={cfg.train.batch_size}{per} and "
        f"data.crop_size={cfg.data.crop_size} (eval.batch_size={cfg.eval.batch_size}). Lower "
        f"train.batch_size or data.crop_size, lower loss.num_points (now {cfg.loss.num_points}; "
        "0 means every pixel), keep train.amp=true; if it happened while evaluating, lower "
        f"eval.batch_size or use eval.sliding_window=true. ({first_line})")
