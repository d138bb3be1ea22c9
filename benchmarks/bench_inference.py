"""Inference latency (batch 1) and throughput (batch 8) of the default segmenter at 128/256/512 px.

    python benchmarks/bench_inference.py [--device cpu|cuda] [--out FILE.json]

Random weights (timing does not depend on them) and 24 random 384-d class embeddings, as on the
synthetic benchmark. Peak memory: ``resource.getrusage`` max RSS of the process on CPU (it never
decreases, so later rows include earlier ones), ``torch.cuda.max_memory_allocated`` on GPU.
"""

from __future__ import annotations

import argparse
import resource
import time

import torch
from bench_train import write_rows

from celseg.config import ModelConfig
from celseg.models.build import build_segmenter
from celseg.models.inference import semantic_map


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def _time(model, x, emb, repeats: int, device: torch.device) -> float:
    """Median seconds of one forward + semantic map."""
    times = []
    for _ in range(repeats):
        _sync(device)
        t = time.perf_counter()
        out = model(x, emb)
        semantic_map(out, tuple(x.shape[-2:]), has_background=model.has_background)
        _sync(device)
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def run(device: str = "cpu", sizes: tuple[int, ...] = (128, 256, 512), batch: int = 8,
        repeats: int = 5) -> list[dict]:
    dev = torch.device(device)
    torch.manual_seed(0)
    model = build_segmenter(ModelConfig(pretrained=False), 384).to(dev).eval()
    emb = torch.nn.functional.normalize(torch.randn(24, 384, device=dev), dim=-1)
    rows = []
    for size in sizes:
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        one = torch.randn(1, 3, size, size, device=dev)
        many = torch.randn(batch, 3, size, size, device=dev)
        _time(model, one, emb, 2, dev)  # warm-up
        latency = _time(model, one, emb, repeats, dev)
        batch_s = _time(model, many, emb, max(2, repeats // 2), dev)
        rows.append({"bench": "inference", "device": device, "size": size,
                     "latency_ms": 1000 * latency, "images_per_s": batch / batch_s,
                     "batch": batch, "peak_mem_mb": peak_memory_mb(dev)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="cpu or cuda")
    parser.add_argument("--out", default=None, help="also write the rows as JSON here")
    args = parser.parse_args()
    rows = run(args.device)
    for r in rows:
        print(f"{r['size']:>4} px  latency {r['latency_ms']:8.1f} ms  "
              f"{r['images_per_s']:7.1f} img/s  peak {r['peak_mem_mb']:.0f} MB")
    write_rows(args.out, rows)


if __name__ == "__main__":
    main()
