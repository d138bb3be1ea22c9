"""What a dry run measures: parameters, peak memory and seconds per training step.

Peak memory on CPU is the process's peak resident set size (``VmHWM`` in ``/proc/self/status``),
reset before the measured part by writing ``5`` to ``/proc/self/clear_refs`` (Linux 4.0 and
later); where that file cannot be written the peak since the process started is reported and the
result says so. On CUDA it is ``torch.cuda.max_memory_allocated`` after
``reset_peak_memory_stats``.
"""

from __future__ import annotations

import resource
from pathlib import Path

import torch
from torch import nn

from celseg.engine.logger import read_log

MIB = 1024 * 1024


class PeakMemory:
    """``with PeakMemory(device) as peak: ...`` then ``peak.result`` = {"peak_mib", "kind"}."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.result: dict = {}
        self._since_start = False

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            try:
                Path("/proc/self/clear_refs").write_text("5")
            except OSError:
                self._since_start = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.result = {"peak_mib": torch.cuda.max_memory_allocated(self.device) / MIB,
                           "kind": "torch.cuda.max_memory_allocated"}
            return
        kind = "resident set size (VmHWM)"
        peak = _vm_hwm_kib()
        if peak is None:  # no /proc: ru_maxrss is KiB on Linux
            peak, self._since_start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, True
            kind = "resident set size (ru_maxrss)"
        if self._since_start:
            kind += ", peak since the process started"
        self.result = {"peak_mib": peak / 1024, "kind": kind}


def _vm_hwm_kib() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def cpu_seconds() -> float:
    """User + system CPU seconds of this process and its finished children so far. Over a
    stretch of wall time ``w`` with ``n`` threads, ``cpu / (w * n)`` is the share of the cores
    the process got: below 1 when other jobs shared the machine."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def parameter_counts(model: nn.Module) -> dict[str, int]:
    """{"total", "trainable", "frozen"} parameter counts (a frozen VLM tower counts as frozen)."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"total": total, "trainable": trainable, "frozen": total - trainable}


def seconds_per_step(log_path: str | Path, batch_size: int) -> float:
    """Seconds per optimiser step after the first (which also warms up): the trainer logs step 1
    and the last step, and the last record's ``img_s`` covers the steps between the two."""
    records = [r for r in read_log(log_path) if "img_s" in r and r.get("step", 0) > 1]
    if not records:
        raise ValueError(f"{log_path} has no timed step after the first; run at least 2 steps")
    return batch_size / records[-1]["img_s"]
