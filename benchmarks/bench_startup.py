"""Wall time of a new ``celseg predict`` process on one image, against a Python process that
only imports torch.

    python benchmarks/bench_startup.py [--ckpt RUN] [--runs 3] [--device cpu] [--out FILE]

The image is one generated 128 px picture and the three class names' text embeddings are
already cached (a first predict fills a private cache; so is a first ``import torch`` run, for
the file cache). Then ``celseg predict`` and ``python -c "import torch"`` run in turn ``--runs``
times, and their medians are compared. Target: at most 1.5x.

Without ``--ckpt`` a tiny run is made first in a temporary folder (``celseg make-data synthetic``
with 8 + 4 images at 64 px, then ``celseg train`` on configs/synthetic.yaml for 2 iterations,
about a minute on 2 cores): how long a process takes to start does not depend on training.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import CONFIGS, ratio_text, rendered_batch, write_result
from PIL import Image

CLASSES = "cat,dog,road"
TARGET = 1.5


def celseg_command() -> list[str]:
    """The ``celseg`` script installed beside this Python, as a user runs it."""
    script = Path(sys.executable).with_name("celseg")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "celseg"]


def run_quiet(command: list[str], env: dict) -> float:
    """Seconds of wall time of ``command``, which must succeed."""
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    return seconds


def tiny_run(folder: Path, env: dict) -> str:
    """A run folder trained for 2 iterations on a tiny generated dataset."""
    data, run = folder / "data", folder / "run"
    run_quiet([*celseg_command(), "make-data", "synthetic", "--out", str(data), "--train", "8",
               "--val", "4", "--size", "64", "--captions", "0", "--quiet"], env)
    run_quiet([*celseg_command(), "train", "-c", str(CONFIGS / "synthetic.yaml"), "--no-progress",
               "--set", f"data.root={data}", f"train.out_dir={run}", "train.iterations=2",
               "train.warmup_iters=0", "model.pretrained=false"], env)
    return str(run)


def measure_startup(ckpt: str, image: Path, folder: Path, runs: int, device: str,
                    env: dict) -> dict:
    def predict(i: int) -> float:
        return run_quiet([*celseg_command(), "predict", "--ckpt", ckpt, "--classes", CLASSES,
                          "--device", device, "--out", str(folder / f"out{i}"), str(image)], env)

    def import_torch(_: int) -> float:
        return run_quiet([sys.executable, "-c", "import torch"], env)

    predict(-1)  # warm-up: the text embeddings cached, the files read once
    import_torch(-1)
    predicts, imports = [], []
    for i in range(runs):
        predicts.append(predict(i))
        imports.append(import_torch(i))
    seconds, reference = statistics.median(predicts), statistics.median(imports)
    return {"bench": "startup", "what": "celseg predict, one 128 px image, a new process",
            "reference": 'python -c "import torch"', "s": round(seconds, 3),
            "reference_s": round(reference, 3), "ratio": round(seconds / reference, 4),
            "target": TARGET, "runs_s": [round(t, 3) for t in predicts],
            "reference_runs_s": [round(t, 3) for t in imports], "device": device}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", default=None,
                        help="run folder or checkpoint (default: train a tiny one first)")
    parser.add_argument("--runs", type=int, default=3, help="alternated runs of each (median)")
    parser.add_argument("--device", default="cpu", help="predict's --device")
    parser.add_argument("--out", default=None, help="write the row here as JSON")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error(f"--runs must be at least 1, got {args.runs}")
    with tempfile.TemporaryDirectory(prefix="celseg_bench_startup_") as tmp:
        folder = Path(tmp)
        env = {**os.environ, "CELSEG_CACHE": str(folder / "cache")}
        image = folder / "image.png"
        array = rendered_batch(0, 1, 128)[0][0].permute(1, 2, 0).mul(255).round().byte()
        Image.fromarray(array.numpy()).save(image)
        ckpt = args.ckpt or tiny_run(folder, env)
        r = measure_startup(ckpt, image, folder, args.runs, args.device, env)
    print(f"celseg predict, new process: {r['s']:.2f} s vs {r['reference']} "
          f"{r['reference_s']:.2f} s {ratio_text(r['ratio'])} (target <= {TARGET:.1f}x: "
          f"{'met' if r['ratio'] <= TARGET else 'MISSED'})")
    write_result(args.out, [r], torch.device(args.device))


if __name__ == "__main__":
    main()
