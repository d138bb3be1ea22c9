"""The pointwise pixel decoder's mask logits, dense against factored, timed in alternation.

    OMP_NUM_THREADS=1 python benchmarks/bench_mask_features.py [--out FILE.json]

``dense``: the stride-4 features built as mask_proj(fine + up(coarse)) (128-channel bilinear
upsampling, add, 1 x 1 projection at stride 4), then one einsum per decoder prediction (4: the
default's 3 layers plus the first). ``factored``: :meth:`MaskFeatures.logits` for each
prediction, no stride-4 features. Inference at 128 and 512 px (batch 1) and forward + backward
at the training size (128 px, batch 8); hidden 128, 16 queries. Both give the same logits up
to float rounding (checked here too).
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from bench_traced_head import bench_args
from bench_train import write_rows

from celseg.models.mask_features import MaskFeatures


def _case(size: int, batch: int, grad: bool, dim: int = 128, queries: int = 16,
          predictions: int = 4):
    g = torch.Generator().manual_seed(0)
    proj = torch.nn.Conv2d(dim, dim, 1)
    fine = torch.randn(batch, dim, size // 4, size // 4, generator=g).requires_grad_(grad)
    coarse = torch.randn(batch, dim, size // 8, size // 8, generator=g).requires_grad_(grad)
    embeds = [torch.randn(batch, queries, dim, generator=g).requires_grad_(grad)
              for _ in range(predictions)]

    def dense():
        up = F.interpolate(coarse, size=fine.shape[-2:], mode="bilinear", align_corners=False)
        feats = proj(fine + up)
        return [torch.einsum("bqc,bchw->bqhw", e, feats) for e in embeds]

    def factored():
        feats = MaskFeatures(fine, coarse=coarse, proj=proj)
        return [feats.logits(e) for e in embeds]

    return dense, factored


def measure(size: int, batch: int, grad: bool, repeats: int) -> dict:
    dense, factored = _case(size, batch, grad)
    with torch.no_grad():
        for a, b in zip(dense(), factored(), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)

    def run(fn):
        start = time.perf_counter()
        if grad:
            sum(o.square().mean() for o in fn()).backward()
        else:
            with torch.inference_mode():
                fn()
        return time.perf_counter() - start

    times: dict[str, list[float]] = {"dense": [], "factored": []}
    for i in range(repeats + 2):
        for name, fn in (("dense", dense), ("factored", factored)):
            t = run(fn)
            if i >= 2:
                times[name].append(t)
    med = {k: 1000 * sorted(v)[len(v) // 2] for k, v in times.items()}
    return {"size": size, "batch": batch, "pass": "forward + backward" if grad else "inference",
            "dense_ms": med["dense"], "factored_ms": med["factored"],
            "ratio": med["factored"] / med["dense"]}


def main() -> None:
    args = bench_args(__doc__, ckpt=False, repeats=21)
    rows = [measure(128, 1, False, args.repeats), measure(512, 1, False, args.repeats),
            measure(128, 8, True, args.repeats)]
    for r in rows:
        print(f"{r['pass']}, {r['size']} px, batch {r['batch']}: dense {r['dense_ms']:.1f} ms, "
              f"factored {r['factored_ms']:.1f} ms ({r['ratio']:.2f}x)")
    write_rows(args.out, rows)


if __name__ == "__main__":
    main()
