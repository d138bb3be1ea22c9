"""The transformer decoder at inference: every earlier prediction at stride 4 (the training
path, which the inference path was before) against the attention masks read at each memory
level's size (:meth:`celseg.models.mask_features.MaskFeatures.resized_logits`, the inference
path now), timed in alternation.

    OMP_NUM_THREADS=1 python benchmarks/bench_attn_masks.py [--ckpt RUN] [--out FILE.json]

At 128 px batch 1, 128 px batch 16 (the evaluation's) and 512 px batch 1, on rendered benchmark
images. Both give the final prediction; how far apart the two are is reported (the masks are
equal up to float rounding, so a mask pixel at a near tie may flip).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from bench_speed import _batch, _inference_model, alternating_ms
from bench_traced_head import SETTINGS, head_bench_args


@torch.no_grad()
def measure(ckpt: str | None, repeats: int, settings=SETTINGS) -> list[dict]:
    dev = torch.device("cpu")
    model, _, _ = _inference_model(dev, ckpt)
    decoder = model.transformer_decoder
    rows = []
    for size, batch in settings:
        mask_features, memory = model.pixel_decoder(
            model.backbone.forward_features(_batch(0, batch, size)[0]))

        def stride4(mf=mask_features, mem=memory):
            return decoder(mem, mf, all_predictions=True)[-1]

        def level_size(mf=mask_features, mem=memory):
            return decoder(mem, mf, all_predictions=False)[-1]

        a, b = stride4()["pred_masks"], level_size()["pred_masks"]
        ms = alternating_ms({"stride4": stride4, "level_size": level_size}, repeats)
        rows.append({"size": size, "batch": batch, "weights": "trained" if ckpt else "random",
                     "max_abs_diff": (a - b).abs().max().item(),
                     "sign_flips": int(((a > 0) != (b > 0)).sum()), "mask_pixels": a.numel(),
                     "stride4_ms": ms["stride4"], "level_size_ms": ms["level_size"]})
    return rows


def main() -> None:
    args = head_bench_args(__doc__)
    rows = measure(args.ckpt, args.repeats)
    for r in rows:
        print(f"{r['size']} px, batch {r['batch']}, {r['weights']} weights: decoder with every "
              f"prediction at stride 4 {r['stride4_ms']:.2f} ms, masks at the level's size "
              f"{r['level_size_ms']:.2f} ms ({r['level_size_ms'] / r['stride4_ms']:.2f}x); "
              f"final masks differ by {r['max_abs_diff']:.2g} at most, "
              f"{r['sign_flips']} of {r['mask_pixels']} signs")
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
