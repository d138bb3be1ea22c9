"""The transformer decoder's inference time by how the model was built and run.

    OMP_NUM_THREADS=1 python benchmarks/bench_decoder_build.py [--ckpt RUN] [--size 512]
    OMP_NUM_THREADS=1 python benchmarks/bench_decoder_build.py --compile --size 128

Rows: the model built normally or inside ``torch.inference_mode()``, each then run under
``no_grad`` or ``inference_mode`` (the decoder alone, batch 1, median of repeats, on a rendered
benchmark image). Run it at two commits to compare code. ``--compile`` instead times the
model and semantic map eager, with the backbone compiled (``eval.compile_backbone``) and with
the whole model compiled, and the backbone alone eager and compiled (compile times apart).
"""

from __future__ import annotations

import argparse
import contextlib
import time

import torch
from bench_speed import _batch, _inference_model, alternating_ms

from celseg.config import EvalConfig
from celseg.engine.protocol import build_inference


def decoder_rows(ckpt: str | None, size: int, repeats: int) -> list[dict]:
    dev = torch.device("cpu")
    x = _batch(0, 1, size)[0]
    rows = []
    for build in ("normal", "inference_mode"):
        ctx = torch.inference_mode() if build == "inference_mode" else contextlib.nullcontext()
        with ctx:
            model, _, _ = _inference_model(dev, ckpt)
        for run in ("no_grad", "inference_mode"):
            with torch.no_grad() if run == "no_grad" else torch.inference_mode():
                mask_features, memory = model.pixel_decoder(model.backbone.forward_features(x))
                ms = alternating_ms({"decoder": lambda m=model, mf=mask_features, me=memory:
                                     m.transformer_decoder(me, mf, all_predictions=False)},
                                    repeats)["decoder"]
            rows.append({"size": size, "built": build, "run": run, "decoder_ms": ms})
    return rows


@torch.no_grad()
def compile_row(ckpt: str | None, size: int, repeats: int, batch: int = 1) -> dict:
    """Model + semantic map eager, with the backbone compiled (``eval.compile_backbone``) and
    with the whole model compiled, and the backbone alone eager and compiled, timed in
    alternation (median ms), with each compile's seconds."""
    dev = torch.device("cpu")
    x = _batch(0, batch, size)[0]
    eager, emb, names = _inference_model(dev, ckpt)
    path = build_inference(eager, EvalConfig(ensemble=False), names, names[:18], [], None, dev)
    part, _, _ = _inference_model(dev, ckpt)
    start = time.perf_counter()
    part.compile_backbone()
    part(x, emb)
    backbone_s = time.perf_counter() - start
    start = time.perf_counter()
    whole = torch.compile(eager)
    whole(x, emb)
    whole_s = time.perf_counter() - start
    out = (size, size)
    fns = {"eager_ms": lambda: path.labels(eager(x, emb), None, out),
           "backbone_compiled_ms": lambda: path.labels(part(x, emb), None, out),
           "whole_compiled_ms": lambda: path.labels(whole(x, emb), None, out),
           "backbone_alone_eager_ms": lambda: eager.backbone.forward_features(x),
           "backbone_alone_compiled_ms": lambda: part.backbone.forward_features(x)}
    row = alternating_ms(fns, repeats)
    return {"size": size, "batch": batch, **row, "backbone_compile_s": backbone_s,
            "whole_compile_s": whole_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", default=None, help="a trained run folder (else random weights)")
    parser.add_argument("--size", type=int, default=512, help="image size (px)")
    parser.add_argument("--repeats", type=int, default=15, help="timed repeats (median)")
    parser.add_argument("--compile", action="store_true", help="eager against torch.compile")
    parser.add_argument("--batch", type=int, default=1, help="images per forward (--compile)")
    args = parser.parse_args()
    for flag, value in (("--size", args.size), ("--repeats", args.repeats),
                        ("--batch", args.batch)):
        if value < 1:
            parser.error(f"{flag} must be at least 1, got {value}")
    if args.compile:
        r = compile_row(args.ckpt, args.size, args.repeats, args.batch)
        print(f"{r['size']} px, batch {r['batch']}, model + labels: eager {r['eager_ms']:.1f} ms, "
              f"backbone compiled {r['backbone_compiled_ms']:.1f} ms (compile "
              f"{r['backbone_compile_s']:.0f} s), whole model compiled "
              f"{r['whole_compiled_ms']:.1f} ms (compile {r['whole_compile_s']:.0f} s); "
              f"backbone alone: eager {r['backbone_alone_eager_ms']:.1f} ms, compiled "
              f"{r['backbone_alone_compiled_ms']:.1f} ms")
        return
    for r in decoder_rows(args.ckpt, args.size, args.repeats):
        print(f"{r['size']} px, built {r['built']}, run under {r['run']}: "
              f"decoder {r['decoder_ms']:.1f} ms")


if __name__ == "__main__":
    main()
