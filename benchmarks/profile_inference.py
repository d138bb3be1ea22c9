"""Where the head's inference time goes: the backbone, pixel decoder, transformer decoder,
classifier and labels of one forward, timed apart (median of alternating repeats).

    OMP_NUM_THREADS=1 python benchmarks/profile_inference.py [--size 512] [--batch 1] [--ckpt RUN]

With ``--ckpt`` a trained run (its dataset and VLM on disk), else the default model with random
weights and any ``--set`` overrides; the input is rendered benchmark images (``--batch``, one by
default).
"""

from __future__ import annotations

import argparse
import time

import torch
from bench_speed import _batch, _inference_model

from celseg.config import EvalConfig
from celseg.engine.protocol import build_inference


@torch.no_grad()  # as the library infers
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512, help="image size (px)")
    parser.add_argument("--batch", type=int, default=1, help="images per forward")
    parser.add_argument("--repeats", type=int, default=15, help="timed repeats (median)")
    parser.add_argument("--ckpt", default=None, help="a trained run folder or checkpoint")
    parser.add_argument("--set", nargs="+", default=[], metavar="SECTION.KEY=VALUE",
                        help="config overrides of the random-weight model")
    args = parser.parse_args()
    for flag, value in (("--size", args.size), ("--batch", args.batch),
                        ("--repeats", args.repeats)):
        if value < 1:
            parser.error(f"{flag} must be at least 1, got {value}")
    dev = torch.device("cpu")
    model, emb, names = _inference_model(dev, args.ckpt, tuple(args.set))
    path = build_inference(model, EvalConfig(ensemble=False), names, names[:18], [], None, dev)
    x = _batch(0, args.batch, args.size)[0]
    parts: dict[str, list[float]] = {}

    def timed(name, fn, *fn_args, **fn_kwargs):
        start = time.perf_counter()
        out = fn(*fn_args, **fn_kwargs)
        parts.setdefault(name, []).append(time.perf_counter() - start)
        return out

    size = (args.size, args.size)
    for i in range(args.repeats + 2):
        feats = timed("backbone", model.backbone.forward_features, x)
        mask_features, memory = timed("pixel decoder", model.pixel_decoder, feats)
        preds = timed("transformer decoder", model.transformer_decoder, memory, mask_features,
                      all_predictions=False)
        timed("classifier", model.classifier, preds[-1]["class_feat"], emb)
        timed("labels", path.labels, model(x, emb), None, size)
        if i < 2:  # warm-up
            parts.clear()
    median = {k: 1000 * sorted(v)[len(v) // 2] for k, v in parts.items()}
    head = sum(v for k, v in median.items() if k != "backbone")
    print(f"{args.size} px, batch {args.batch}, {'trained' if args.ckpt else 'random'} weights")
    for name, ms in median.items():
        share = "" if name == "backbone" else f" ({100 * ms / head:.0f} % of the head)"
        print(f"  {name}: {ms:.1f} ms{share}")
    print(f"  head total: {head:.1f} ms = {head / median['backbone']:.2f}x the backbone")


if __name__ == "__main__":
    main()
