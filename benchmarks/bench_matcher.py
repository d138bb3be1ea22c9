"""Hungarian matcher time per image (cost matrix + ``linear_sum_assignment``).

    python benchmarks/bench_matcher.py [--device cpu|cuda] [--out FILE.json]

16 queries, masks at 1/4 of a 128 px crop (the default), K ground-truth segments per image as
rendered by the synthetic generator, 24-way logits; also at 512 px with 100 queries. The matcher
is the default config's (``loss.num_points`` points per image, capped at the mask's pixels).
"""

from __future__ import annotations

import argparse
import time

import torch
from bench_train import write_rows

from celseg.config import LossConfig
from celseg.losses.matcher import HungarianMatcher
from celseg.losses.targets import build_vocab_lut, labels_to_targets, labels_to_vocab


def run(device: str = "cpu", images: int = 32,
        settings: tuple[tuple[int, int], ...] = ((128, 16), (512, 100))) -> list[dict]:
    from bench_train import _batch

    dev = torch.device(device)
    matcher = HungarianMatcher(num_points=LossConfig().num_points)
    lut = build_vocab_lut(list(range(24)))
    rows = []
    for size, queries in settings:
        _, labels = _batch(0, images, size)
        labels = labels.to(dev)
        targets = labels_to_targets(labels, lut, with_masks=False)
        label_map = labels_to_vocab(labels, lut)
        g = torch.Generator().manual_seed(0)
        outputs = {
            "pred_logits": torch.randn(images, queries, 24, generator=g).to(dev),
            "pred_masks": torch.randn(images, queries, size // 4, size // 4, generator=g).to(dev),
        }
        valid = labels != 255
        matcher(outputs, targets, valid, label_map)  # warm-up
        t = time.perf_counter()
        matcher(outputs, targets, valid, label_map)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        per_image = (time.perf_counter() - t) / images
        segments = sum(int(tg["labels"].numel()) for tg in targets) / images
        rows.append({"bench": "matcher", "device": device, "size": size, "queries": queries,
                     "segments_per_image": segments, "ms_per_image": 1000 * per_image})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="cpu or cuda")
    parser.add_argument("--out", default=None, help="also write the rows as JSON here")
    args = parser.parse_args()
    for r in (rows := run(args.device)):
        print(f"matcher {r['size']} px, {r['queries']} queries, {r['segments_per_image']:.1f} "
              f"segments: {r['ms_per_image']:.2f} ms/image")
    write_rows(args.out, rows)


if __name__ == "__main__":
    main()
