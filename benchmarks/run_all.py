"""Run every benchmark, print one table and write ``benchmarks/results.json``.

    python benchmarks/run_all.py [--device cpu|cuda] [--out FILE.json]    (or: make bench)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_inference  # noqa: E402
import bench_matcher  # noqa: E402
import bench_train  # noqa: E402
import torch  # noqa: E402


def table(rows: list[dict]) -> str:
    lines = ["| benchmark | setting | latency / time | throughput | peak memory |",
             "|---|---|---:|---:|---:|"]
    for r in rows:
        if r["bench"] == "inference":
            lines.append(f"| inference | {r['size']} px (latency batch 1, throughput batch "
                         f"{r['batch']}) | {r['latency_ms']:.1f} ms | "
                         f"{r['images_per_s']:.1f} img/s | {r['peak_mem_mb']:.0f} MB |")
        elif r["bench"] == "train":
            lines.append(f"| train ({r['mode']}) | {r['size']} px, batch {r['batch']} | "
                         f"{r['step_s']:.3f} s/step | {r['images_per_s']:.1f} img/s | "
                         f"{r['peak_mem_mb']:.0f} MB |")
        else:
            lines.append(f"| matcher | {r['size']} px, {r['queries']} queries, "
                         f"{r['segments_per_image']:.1f} segments | {r['ms_per_image']:.2f} "
                         "ms/image | | |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="cpu or cuda")
    parser.add_argument("--out", default=str(Path(__file__).with_name("results.json")),
                        help="JSON file for the results")
    args = parser.parse_args()
    rows = bench_inference.run(args.device)
    rows += bench_train.run(args.device, "background_free")
    rows += bench_train.run(args.device, "background_embedding")
    rows += bench_matcher.run(args.device)
    env = {"device": args.device, "torch": torch.__version__, "threads": torch.get_num_threads(),
           "cpu_count": os.cpu_count(), "platform": platform.platform()}
    if args.device.startswith("cuda"):
        env["gpu"] = torch.cuda.get_device_name()
    print(f"environment: {env}")
    print(table(rows))
    Path(args.out).write_text(json.dumps({"environment": env, "rows": rows}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
