"""The transformer decoder against its earlier form, timed in alternation.

    OMP_NUM_THREADS=1 python benchmarks/bench_attn_masks.py [--ckpt RUN] [--out FILE.json]

The earlier form (:func:`stride4_decoder`, kept here as the reference) computed every
prediction's masks at stride 4, one product per prediction, and resized them to each memory
level's size for the attention masks. The decoder now reads the attention masks at the level's
size alone (:meth:`celseg.models.mask_features.MaskFeatures.resized_logits`) and computes the
stride-4 masks of the predictions it returns in one product. Three kinds of rows:

- ``inference``: the final prediction, without gradient (``all_predictions=False``);
- ``training``: every prediction, forward and backward of a loss on all their masks (in train
  mode, as the training step runs it);
- ``step``: the whole training step of the ablation's background-free + ranking model and of
  the baseline (forward, criterion, backward, AdamW; random weights, as ``bench_speed.py``),
  against the same model (a copy, the same weights) with the earlier decoder, and against the
  backbone's forward and backward (the training target's reference), all three in alternation.

At 128 px batch 1, 128 px batch 16 (the evaluation's), 512 px batch 1, and for training at the
training step's 128 px batch 8, on rendered benchmark images. How far apart the two forms'
masks are is reported (equal up to float rounding, so a mask pixel at a near tie may flip).
"""

from __future__ import annotations

import copy
import itertools
import types

import torch
import torch.nn.functional as F
from bench_speed import (
    VARIANTS,
    _batch,
    _inference_model,
    _parts,
    alternating_ms,
    backbone_step,
    train_step,
    vocabulary,
)
from bench_traced_head import SETTINGS, bench_args
from bench_train import write_rows

from celseg.engine.schedule import build_optimizer
from celseg.models.mask_features import MaskFeatures

TRAIN_SETTINGS = ((128, 8),)


def stride4_decoder(decoder, memory: list[torch.Tensor], mask_features: MaskFeatures,
                    all_predictions: bool = True) -> list[dict[str, torch.Tensor]]:
    """The decoder as it was before session 8 (the reference): each prediction's stride-4
    masks on its own, the attention masks resized from them. Uses ``decoder``'s modules."""
    srcs, poss, sizes = decoder.levels(memory)
    queries, query_pos = decoder.initial_queries(mask_features.fine.shape[0])

    def predict(queries):
        q = decoder.norm(queries)
        embed = decoder.mask_embed(q)
        return {"class_feat": q, "mask_embed": embed, "pred_masks": mask_features.logits(embed)}

    preds = []
    for i, layer in enumerate(decoder.layers):
        level = i % decoder.num_levels
        attn_mask = None
        pred = predict(queries) if all_predictions or decoder.masked_attention else None
        if all_predictions:
            preds.append(pred)
        if decoder.masked_attention:
            m = pred["pred_masks"].detach()
            if tuple(m.shape[-2:]) != sizes[level]:
                m = F.interpolate(m, size=sizes[level], mode="bilinear", align_corners=False)
            attn_mask = decoder._blocked(m)
        queries = layer(queries, query_pos, srcs[level], poss[level], attn_mask)
    preds.append(predict(queries))
    return preds


def _difference(a: torch.Tensor, b: torch.Tensor) -> dict:
    return {"max_abs_diff": (a - b).abs().max().item(),
            "sign_flips": int(((a > 0) != (b > 0)).sum()), "mask_pixels": a.numel()}


def _backward(preds: list[dict], decoder, mask_features: MaskFeatures) -> list[dict]:
    """Backward of a loss on every prediction's masks, then the gradients cleared."""
    sum(p["pred_masks"].square().mean() for p in preds).backward()
    decoder.zero_grad(set_to_none=True)
    mask_features.fine.grad = None
    return preds


def measure(ckpt: str | None, repeats: int, settings=SETTINGS,
            train_settings=TRAIN_SETTINGS) -> list[dict]:
    dev = torch.device("cpu")
    model, _, _ = _inference_model(dev, ckpt)
    decoder = model.transformer_decoder
    weights = "trained" if ckpt else "random"
    rows = []
    for size, batch in settings:
        with torch.no_grad():
            mask_features, memory = model.pixel_decoder(
                model.backbone.forward_features(_batch(0, batch, size)[0]))

            def before(mf=mask_features, mem=memory):
                return stride4_decoder(decoder, mem, mf, all_predictions=False)[-1]

            def now(mf=mask_features, mem=memory):
                return decoder(mem, mf, all_predictions=False)[-1]

            diff = _difference(before()["pred_masks"], now()["pred_masks"])
            ms = alternating_ms({"before": before, "now": now}, repeats)
        rows.append({"pass": "inference", "size": size, "batch": batch, "weights": weights,
                     **diff, "before_ms": ms["before"], "now_ms": ms["now"]})
    decoder.train()
    for size, batch in train_settings:
        with torch.no_grad():
            mask_features, memory = model.pixel_decoder(
                model.backbone.forward_features(_batch(0, batch, size)[0]))
        fine = mask_features.fine.requires_grad_(True)  # gradients flow into the features too
        mf = MaskFeatures(fine, mask_features.coarse, mask_features.proj)

        def before_step(mf=mf, mem=memory):
            return _backward(stride4_decoder(decoder, mem, mf), decoder, mf)

        def now_step(mf=mf, mem=memory):
            return _backward(decoder(mem, mf), decoder, mf)

        diff = _difference(torch.stack([p["pred_masks"] for p in before_step()]),
                           torch.stack([p["pred_masks"] for p in now_step()]))
        ms = alternating_ms({"before": before_step, "now": now_step}, repeats)
        rows.append({"pass": "training", "size": size, "batch": batch, "weights": weights,
                     **diff, "before_ms": ms["before"], "now_ms": ms["now"]})
    decoder.eval()
    return rows


def step_rows(repeats: int, size: int = 128, batch: int = 8) -> list[dict]:
    """The ``step`` rows (see the module docstring), ms medians."""
    rows = []
    dev = torch.device("cpu")
    emb, lut = vocabulary(dev)
    batches = [_batch(i * batch, batch, size) for i in range(4)]
    turn = itertools.count()

    def data():
        return batches[next(turn) % len(batches)]

    for name, overrides in VARIANTS.items():
        cfg, model, criterion, optimizer = _parts(overrides, dev)
        earlier = copy.deepcopy(model)
        earlier.transformer_decoder.forward = types.MethodType(
            lambda self, mem, mf, all_predictions=True: stride4_decoder(self, mem, mf,
                                                                        all_predictions),
            earlier.transformer_decoder)
        earlier_optimizer = build_optimizer(earlier, cfg.train)

        def backbone(model=model, optimizer=optimizer):
            backbone_step(model, optimizer, data()[0])

        def before(m=earlier, c=criterion, o=earlier_optimizer):
            train_step(m, c, o, emb, lut, *data())

        def now(m=model, c=criterion, o=optimizer):
            train_step(m, c, o, emb, lut, *data())

        ms = alternating_ms({"backbone": backbone, "before": before, "now": now}, repeats)
        rows.append({"pass": "step", "model": name, "size": size, "batch": batch,
                     "weights": "random", "backbone_ms": ms["backbone"],
                     "before_ms": ms["before"], "now_ms": ms["now"],
                     "before_ratio": ms["before"] / ms["backbone"],
                     "now_ratio": ms["now"] / ms["backbone"]})
    return rows


def main() -> None:
    args = bench_args(__doc__)
    rows = measure(args.ckpt, args.repeats) + step_rows(args.repeats)
    for r in rows:
        if r["pass"] == "step":
            print(f"training step, {r['model']}, {r['size']} px, batch {r['batch']}: before "
                  f"{r['before_ms']:.0f} ms ({r['before_ratio']:.2f}x the backbone's forward "
                  f"and backward, {r['backbone_ms']:.0f} ms), now {r['now_ms']:.0f} ms "
                  f"({r['now_ratio']:.2f}x; {r['now_ms'] / r['before_ms']:.3f}x before)")
            continue
        what = ("forward" if r["pass"] == "inference" else "forward + backward of every "
                "prediction")
        print(f"{r['pass']}, {r['size']} px, batch {r['batch']}, {r['weights']} weights, "
              f"decoder {what}: before {r['before_ms']:.2f} ms, now {r['now_ms']:.2f} ms "
              f"({r['now_ms'] / r['before_ms']:.2f}x); masks differ by "
              f"{r['max_abs_diff']:.2g} at most, {r['sign_flips']} of {r['mask_pixels']} signs")
    write_rows(args.out, rows)


if __name__ == "__main__":
    main()
