"""Generation speed of the synthetic benchmark, in images per second.

    .venv/bin/python benchmarks/bench_synthetic.py [--n 1000] [--size 128] [--workers 1]
"""

from __future__ import annotations

import argparse
import tempfile
import time

from celseg.data.synthetic import generate, render_caption, render_segmentation


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--n", type=int, default=1000, help="segmentation images (captions: same n)")
    p.add_argument("--size", type=int, default=128, help="image side in pixels")
    p.add_argument("--workers", type=int, default=1, help="worker processes for the full run")
    a = p.parse_args()
    render_segmentation(0, "train", 0, a.size)  # warm-up: texture photos
    t = time.perf_counter()
    for i in range(a.n):
        render_segmentation(0, "train", i, a.size)
    seg = a.n / (time.perf_counter() - t)
    t = time.perf_counter()
    for i in range(a.n):
        render_caption(0, i, a.size)
    cap = a.n / (time.perf_counter() - t)
    with tempfile.TemporaryDirectory() as d:
        stats = generate(d + "/out", seed=0, n_train=a.n, n_val=0, size=a.size,
                         n_captions=a.n, workers=a.workers)
    print(f"render only: segmentation {seg:.0f} img/s, captions {cap:.0f} img/s ({a.size} px)")
    print(f"render + PNG write, {2 * a.n} images, workers={a.workers}: "
          f"{stats['images_per_s']:.0f} img/s ({stats['seconds']:.1f} s)")


if __name__ == "__main__":
    main()
