"""Run every benchmark with small settings and write each result to benchmarks/results/.

    python benchmarks/run_all.py [--device cpu|cuda] [--ckpt RUN] [--only speed ensemble]
    (or: make bench)

Each script runs as its own process (``bench_startup`` times new processes, and one script's
allocations must not sit in another's measurements) and writes
``benchmarks/results/WHAT-WHERE.json``, replacing the previous result of the same machine.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import torch
from common import result_path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent  # the scripts run from here, so that each result records a short command
SCRIPTS = {  # what -> (script, its small settings)
    "speed": ("bench_speed.py", ["--steps", "5"]),
    "ensemble": ("bench_ensemble.py", ["--repeats", "5"]),
    "startup": ("bench_startup.py", ["--runs", "3"]),
}


def command(what: str, device: str, ckpt: str | None, folder: Path) -> list[str]:
    script, settings = SCRIPTS[what]
    out = result_path(what, torch.device(device), folder.resolve())
    if out.is_relative_to(ROOT):
        out = out.relative_to(ROOT)
    cmd = [sys.executable, f"benchmarks/{script}", *settings, "--out", str(out),
           "--device", device]
    if ckpt and what in ("speed", "startup"):
        cmd += ["--ckpt", str(Path(ckpt).resolve())]  # the scripts run from ROOT
    return cmd


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--ckpt", default=None,
                        help="a trained run for the speed and startup benchmarks")
    parser.add_argument("--only", nargs="+", choices=list(SCRIPTS), default=list(SCRIPTS),
                        help="run only these benchmarks")
    parser.add_argument("--results", type=Path, default=HERE / "results",
                        help="folder of the result files")
    args = parser.parse_args(argv)
    failed = []
    for what in args.only:
        print(f"== {what}", flush=True)
        if subprocess.run(command(what, args.device, args.ckpt, args.results),
                          cwd=ROOT).returncode:
            failed.append(what)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
