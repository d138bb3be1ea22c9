"""Semantic scores -> labels: the resized-map reference against ``scores_to_labels``, timed in
alternation on the scores of real predictions.

    OMP_NUM_THREADS=1 python benchmarks/bench_labels.py [--ckpt RUN] [--size 512] [--out F.json]

``dense``: the whole (B,C,H,W) map resized, normalised and argmaxed (the reference route).
``labels``: :func:`celseg.models.inference.scores_to_labels` (uniform cells from the low
resolution, boundary pixels resized exactly over their candidate classes). Both must give the
same labels (checked). Also ``argmax`` against :func:`first_argmax` on the resized map. With
``--ckpt`` the scores are a trained run's on rendered benchmark images (batch 1), else the
default model's with random weights (many boundaries); ``--random-scores``: uniform noise, where
every cell is a boundary.
"""

from __future__ import annotations

import argparse

import torch
from bench_speed import _batch, _inference_model, alternating_ms
from bench_train import write_rows

from celseg.config import EvalConfig
from celseg.engine.protocol import build_inference
from celseg.models.inference import (
    _dense_labels,
    class_probs,
    first_argmax,
    scores_to_labels,
)


@torch.no_grad()
def measure(ckpt: str | None, size: int, images: int, repeats: int,
            calibration: float, random_scores: bool = False) -> list[dict]:
    dev = torch.device("cpu")
    model, emb, names = _inference_model(dev, ckpt)
    path = build_inference(model, EvalConfig(ensemble=False), names, names[:18], [], None, dev)
    seen = list(range(18)) if calibration else None
    rows, out = [], (size, size)
    for i in range(images):
        if random_scores:  # every cell a boundary: the cell route's worst case
            g = torch.Generator().manual_seed(i)
            scores = torch.rand(1, len(names), size // 4, size // 4, generator=g)
        else:
            scores = path.scores(model(_batch(i, 1, size)[0], emb))["segmenter"]
        fast = scores_to_labels(scores, out, seen, calibration)
        if not torch.equal(fast, _dense_labels(scores, out, seen, calibration)):
            raise AssertionError(f"image {i}: the labels differ from the reference route")
        probs = class_probs(scores, out)
        if not torch.equal(probs.argmax(1), first_argmax(probs, 1)):
            raise AssertionError(f"image {i}: first_argmax differs from argmax")
        ms = alternating_ms({
            "dense": lambda s=scores: _dense_labels(s, out, seen, calibration),
            "labels": lambda s=scores: scores_to_labels(s, out, seen, calibration),
            "argmax": lambda p=probs: p.argmax(1),
            "first_argmax": lambda p=probs: first_argmax(p, 1),
        }, repeats)
        rows.append({"image": i, "size": size, "calibration": calibration,
                     "weights": "no (uniform-noise scores)" if random_scores else
                     "trained" if ckpt else "random",
                     **{f"{k}_ms": v for k, v in ms.items()}})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", default=None, help="a trained run folder or checkpoint")
    parser.add_argument("--size", type=int, default=512, help="image size (px)")
    parser.add_argument("--images", type=int, default=3, help="rendered images")
    parser.add_argument("--repeats", type=int, default=9, help="timed repeats (median)")
    parser.add_argument("--calibration", type=float, default=0.0,
                        help="seen-class calibration (the first 18 names seen)")
    parser.add_argument("--random-scores", action="store_true",
                        help="uniform noise as the scores (every cell a boundary)")
    parser.add_argument("--out", default=None, help="also write the rows as JSON here")
    args = parser.parse_args()
    for flag, value in (("--size", args.size), ("--images", args.images),
                        ("--repeats", args.repeats)):
        if value < 1:
            parser.error(f"{flag} must be at least 1, got {value}")
    rows = measure(args.ckpt, args.size, args.images, args.repeats, args.calibration,
                   args.random_scores)
    for r in rows:
        print(f"image {r['image']}, {r['size']} px, {r['weights']} weights: dense "
              f"{r['dense_ms']:.1f} ms, labels {r['labels_ms']:.1f} ms; argmax "
              f"{r['argmax_ms']:.1f} ms, first_argmax {r['first_argmax_ms']:.1f} ms")
    write_rows(args.out, rows)


if __name__ == "__main__":
    main()
