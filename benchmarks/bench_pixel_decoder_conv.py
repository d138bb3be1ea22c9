"""The pixel decoder's convolutions (``model.pixel_decoder_conv``) side by side: each option's
training step and inference against one backbone, timed in alternation in one process.

    OMP_NUM_THREADS=1 python benchmarks/bench_pixel_decoder_conv.py [--repeats 15] [--out F.json]

Rows (random weights, the ablation's background-free + ranking model, batches rendered by the
synthetic generator):

- ``train``: one training step (``bench_speed.train_step``) of each option at 128 px, batch 8,
  and the backbone's forward and backward (``bench_speed.backbone_step``), the reference of
  bench_speed's training ratio.
- ``inference``: each option's full forward plus semantic map (segmenter protocol) and the
  backbone's forward, at 128 and 512 px with batch 1 and at 128 px with batch 16.

Each option's ``ratio`` is its median over the backbone's, both timed in the same rounds.
"""

from __future__ import annotations

import bench_speed as speed
import torch
from bench_traced_head import bench_args
from bench_train import write_rows

from celseg.config import EvalConfig
from celseg.engine.protocol import build_inference

OPTIONS = ("pointwise", "lean")
INFERENCE = ((128, 1), (512, 1), (128, 16))  # size, batch


def _row(bench: str, size: int, batch: int, ms: dict[str, float]) -> dict:
    ratios = {f"{o}_ratio": ms[o] / ms["backbone"] for o in ms if o != "backbone"}
    return {"bench": bench, "size": size, "batch": batch,
            **{f"{k}_ms": v for k, v in ms.items()}, **ratios}


def train_row(repeats: int, options=OPTIONS, size: int = 128, batch: int = 8) -> dict:
    dev = torch.device("cpu")
    emb, lut = speed.vocabulary(dev)
    images, labels = speed._batch(0, batch, size)
    fns = {}
    for conv in options:
        _, model, criterion, optimizer = speed._parts(
            [*speed.VARIANTS["ranking"], f"model.pixel_decoder_conv={conv}"], dev)
        fns[conv] = (lambda m=model, c=criterion, o=optimizer:
                     speed.train_step(m, c, o, emb, lut, images, labels))
        if "backbone" not in fns:  # the backbones are alike: one reference
            fns["backbone"] = lambda m=model, o=optimizer: speed.backbone_step(m, o, images)
    return _row("train", size, batch, speed.alternating_ms(fns, repeats))


@torch.no_grad()  # as the library infers
def inference_row(repeats: int, size: int, batch: int, options=OPTIONS) -> dict:
    dev = torch.device("cpu")
    x = speed._batch(0, batch, size)[0]
    fns = {}
    for conv in options:
        model, emb, names = speed._inference_model(
            dev, None, (f"model.pixel_decoder_conv={conv}",))
        path = build_inference(model, EvalConfig(ensemble=False), names, names[:18], [], None,
                               dev)
        fns[conv] = (lambda m=model, p=path, e=emb:
                     p.labels(m(x, e), None, (size, size)))
        if "backbone" not in fns:
            fns["backbone"] = lambda m=model: m.backbone.forward_features(x)
    return _row("inference", size, batch, speed.alternating_ms(fns, repeats))


def measure(repeats: int, options=OPTIONS, inference=INFERENCE, train_size: int = 128,
            train_batch: int = 8) -> list[dict]:
    rows = [train_row(repeats, options, train_size, train_batch)]
    return rows + [inference_row(2 * repeats if b == 1 else repeats, s, b, options)
                   for s, b in inference]


def main() -> None:
    args = bench_args(__doc__, ckpt=False, repeats=15)
    for r in (rows := measure(args.repeats)):
        parts = ", ".join(f"{o} {r[f'{o}_ms']:.1f} ms = {r[f'{o}_ratio']:.3f}x"
                          for o in OPTIONS)
        print(f"{r['bench']} {r['size']} px, batch {r['batch']}: backbone "
              f"{r['backbone_ms']:.1f} ms; {parts}")
    write_rows(args.out, rows)


if __name__ == "__main__":
    main()
