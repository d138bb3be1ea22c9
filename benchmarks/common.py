"""What every benchmark script shares: the timer, the device's sync, the machine's description,
rendered batches and the result files.

A result file is named by what was measured and where (``speed-cpu-2threads-epyc.json``), holds
the latest run only, and records the command that wrote it and the machine it ran on.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

RESULTS = Path(__file__).resolve().parent / "results"
CONFIGS = Path(__file__).resolve().parents[1] / "configs"
# words of a CPU's or GPU's marketing name that say nothing about which chip it is
_NOISE = re.compile(r"\(r\)|\(tm\)|\bcpu\b|\bprocessor\b|\bnvidia\b|\bgeforce\b|\bintel\b|"
                    r"\bamd\b|\d+-core|@.*$", re.IGNORECASE)


def sync(device: torch.device) -> None:
    """Wait for the device's queued work, so that a wall-clock time covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(fns: dict[str, Callable[[int], object]], repeats: int, warmup: int = 2,
            device: torch.device | None = None,
            clock: Callable[[], float] = time.perf_counter) -> dict[str, float]:
    """Median seconds of each callable over ``repeats`` rounds after ``warmup`` rounds.

    Every round calls each function once, in the order given, with the round's index (a script
    may pick that round's batch by it). Alternating the sides of a ratio this way lets a load
    that comes and goes on the machine hit every side alike.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    device = device or torch.device("cpu")
    times: dict[str, list[float]] = {name: [] for name in fns}
    for i in range(warmup + repeats):
        for name, fn in fns.items():
            sync(device)
            start = clock()
            fn(i)
            sync(device)
            if i >= warmup:
                times[name].append(clock() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def ratio_text(ratio: float) -> str:
    """The one way a ratio is printed: ``= 1.23x``."""
    return f"= {ratio:.2f}x"


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (else the platform's processor string)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: torch.device) -> dict:
    """Where a result was measured: device, CPU, threads, GPU and software versions."""
    env = {"device": device.type, "cpu": cpu_model(), "threads": torch.get_num_threads(),
           "cpu_count": os.cpu_count(), "torch": torch.__version__,
           "python": platform.python_version(), "platform": platform.platform()}
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


def chip_slug(name: str) -> str:
    """A marketing name as a short file-name word: 'AMD EPYC 7B13 64-Core Processor' ->
    'epyc-7b13', 'NVIDIA H100 80GB HBM3' -> 'h100-80gb-hbm3'."""
    words = re.sub(r"[^a-z0-9]+", " ", _NOISE.sub(" ", name).lower()).split()
    return "-".join(words) or "unknown"


def machine_tag(env: dict) -> str:
    """'cpu-2threads-epyc' or 'cuda-h100-80gb-hbm3': the 'where' of a result file's name."""
    if env["device"] == "cuda":
        return f"cuda-{chip_slug(env.get('gpu', ''))}"
    threads = env["threads"]
    return f"cpu-{threads}thread{'s' if threads != 1 else ''}-{chip_slug(env['cpu'])}"


def result_path(what: str, device: torch.device, folder: Path = RESULTS) -> Path:
    """benchmarks/results/WHAT-WHERE.json for a run on ``device`` in this process."""
    return folder / f"{what}-{machine_tag(environment(device))}.json"


def write_result(out: str | Path | None, rows: list[dict], device: torch.device) -> None:
    """Write ``{"command", "environment", "rows"}`` to ``out`` as one JSON file, if given."""
    if not out:
        return
    from celseg.io.atomic import write_json

    threads = os.environ.get("OMP_NUM_THREADS")
    command = " ".join(shlex.quote(a) for a in ["python", *sys.argv])
    command = f"OMP_NUM_THREADS={threads} {command}" if threads else command
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    write_json(out, {"command": command, "environment": environment(device), "rows": rows})
    print(f"wrote {out}")


def rendered_batch(start: int, batch: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``start .. start + batch - 1`` of the synthetic benchmark's training split:
    (B,3,size,size) RGB in [0, 1] and (B,size,size) class ids. Real renders rather than noise,
    since the criterion's cost grows with the segments in an image."""
    from celseg.data.synthetic import render_segmentation

    images, labels = [], []
    for i in range(start, start + batch):
        image, label = render_segmentation(0, "train", i, size)
        images.append(torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 255)
        labels.append(torch.from_numpy(np.array(label)).long())
    return torch.stack(images), torch.stack(labels)


def size_batch(text: str) -> tuple[int, int]:
    """'512x1' -> (512, 1): a command-line setting of image size and batch."""
    try:
        size, batch = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected SIZExBATCH such as 128x16, got {text!r}") from None
    if size < 32 or batch < 1:
        raise argparse.ArgumentTypeError(f"size must be >= 32 and batch >= 1, got {text!r}")
    return size, batch
