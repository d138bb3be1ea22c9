"""The head (pixel decoder and transformer decoder) eager against its frozen trace
(:mod:`celseg.models.traced_head`, the default at inference), timed in alternation.

    OMP_NUM_THREADS=1 python benchmarks/bench_traced_head.py [--ckpt RUN] [--out FILE.json]

At 128 px batch 1, 128 px batch 16 (the evaluation's) and 512 px batch 1, on rendered benchmark
images; the two outputs are compared bit for bit.
"""

from __future__ import annotations

import argparse

import torch
from bench_speed import _batch, _inference_model, alternating_ms
from bench_train import write_rows

from celseg.models.traced_head import TracedHead

SETTINGS = ((128, 1), (128, 16), (512, 1))


@torch.no_grad()
def measure(ckpt: str | None, repeats: int, settings=SETTINGS) -> list[dict]:
    dev = torch.device("cpu")
    model, emb, _ = _inference_model(dev, ckpt)
    rows = []
    for size, batch in settings:
        feats = model.backbone.forward_features(_batch(0, batch, size)[0])
        traced = TracedHead(model.pixel_decoder, model.transformer_decoder, model.classifier,
                            after=1)

        def eager(feats=feats):
            mask_features, memory = model.pixel_decoder(feats)
            final = model.transformer_decoder(memory, mask_features, all_predictions=False)[-1]
            return (final["pred_masks"], *model.classifier(final["class_feat"], emb))

        same = all(torch.equal(a, b) for a, b in zip(eager(), traced(feats, emb), strict=True))
        ms = alternating_ms({"eager": eager,
                             "traced": lambda t=traced, f=feats: t(f, emb)}, repeats)
        rows.append({"size": size, "batch": batch, "weights": "trained" if ckpt else "random",
                     "bit_identical": same, "eager_ms": ms["eager"], "traced_ms": ms["traced"]})
    return rows


def bench_args(doc: str, ckpt: bool = True, repeats: int = 15,
               overrides: bool = False) -> argparse.Namespace:
    """``--ckpt`` (with ``ckpt``), ``--set`` (with ``overrides``), ``--repeats`` (default
    ``repeats``) and ``--out``, the options of the A/B benchmarks (this one, bench_attn_masks,
    bench_matcher_points, bench_mask_features, bench_head_floor), checked."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    if ckpt:
        parser.add_argument("--ckpt", default=None,
                            help="a trained run folder (else random weights)")
    if overrides:
        parser.add_argument("--set", nargs="+", default=[], metavar="SECTION.KEY=VALUE",
                            help="config overrides of the random-weight model")
    parser.add_argument("--repeats", type=int, default=repeats, help="timed repeats (median)")
    parser.add_argument("--out", default=None, help="also write the rows as JSON here")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")
    if overrides and args.set and getattr(args, "ckpt", None):
        parser.error("--set applies to the random-weight model; leave out --ckpt")
    return args


def main() -> None:
    args = bench_args(__doc__)
    rows = measure(args.ckpt, args.repeats)
    for r in rows:
        print(f"{r['size']} px, batch {r['batch']}, {r['weights']} weights: head eager "
              f"{r['eager_ms']:.2f} ms, traced {r['traced_ms']:.2f} ms "
              f"({r['traced_ms'] / r['eager_ms']:.2f}x), bit-identical: {r['bit_identical']}")
    write_rows(args.out, rows)


if __name__ == "__main__":
    main()
