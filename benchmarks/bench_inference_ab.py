"""Inference after the backbone, this tree's code against a baseline checkout's, in one process
on the same weights: the head (traced, as inference runs it) and the labels, each timed right
after a backbone forward (so both run on the caches the backbone leaves, as in
``bench_speed.inference_ratio``), in alternating order.

    git worktree add /tmp/base 08b9199   # the code to compare against
    OMP_NUM_THREADS=1 python benchmarks/bench_inference_ab.py --baseline /tmp/base \
        --ckpt RUN [--size 128] [--batch 1] [--repeats 200] [--out F.json]

The baseline's model modules (segmenter, traced head, pixel decoder, mask features, transformer
decoder, classifier, inference) are loaded from ``BASELINE/src/celseg/models`` under other
names and given this tree's weights; the rest (backbone, data, config) is this tree's. Its
constructors must take what this tree's take (true from 08b9199 on). The labels of both must
be equal (checked). ``ratio`` is 1 + (head and labels) / backbone, the figure that
``bench_speed.py``'s inference row measures end to end.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

import torch
from bench_speed import _batch, _inference_model
from bench_train import write_rows

from celseg.models.inference import SemanticInference

PARTS = ("traced_head", "mask_features", "pixel_decoder", "transformer_decoder", "classifier",
         "inference", "segmenter")


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def baseline_model(root: str, model):
    """(the baseline's Segmenter with ``model``'s backbone and weights, its SemanticInference
    class)."""
    src = Path(root) / "src" / "celseg" / "models"
    if not src.is_dir():
        raise SystemExit(f"--baseline {root}: no src/celseg/models there")
    mods = {p: _load(f"baseline_{p}", src / f"{p}.py") for p in PARTS}
    for p in ("pixel_decoder", "transformer_decoder"):  # their own mask features
        mods[p].MaskFeatures = mods["mask_features"].MaskFeatures
    mods["segmenter"].TracedHead = mods["traced_head"].TracedHead
    pd, td, cl = model.pixel_decoder, model.transformer_decoder, model.classifier
    pixel = mods["pixel_decoder"].FPNPixelDecoder(
        {k: pd.lateral[k][0].in_channels for k in pd.lateral}, pd.conv_dim, pd.mask_dim,
        pd.memory_names, "pointwise" if pd.bilinear_res2 else "full")
    decoder = mods["transformer_decoder"].TransformerDecoder(
        td.hidden_dim, td.mask_embed[-1].out_features, td.query_feat.num_embeddings,
        len(td.layers), td.nheads, td.layers[0].ffn[0].out_features, td.num_levels,
        td.masked_attention)
    classifier = mods["classifier"].TextClassifier(cl.proj.in_features, cl.embed_dim,
                                                   with_background=cl.has_background)
    for new, old in ((pd, pixel), (td, decoder), (cl, classifier)):
        old.load_state_dict(new.state_dict())
    base = mods["segmenter"].Segmenter(model.backbone, pixel.eval(), decoder.eval(),
                                       classifier.eval()).eval()
    return base, mods["inference"].SemanticInference


@torch.no_grad()
def measure(baseline: str, ckpt: str | None, size: int, batch: int, repeats: int) -> dict:
    dev = torch.device("cpu")
    model, emb, _ = _inference_model(dev, ckpt)
    base, base_inference = baseline_model(baseline, model)
    paths = {"baseline": (base, base_inference(model.has_background)),
             "this": (model, SemanticInference(model.has_background))}
    x = _batch(0, batch, size)[0]
    out = (size, size)
    labels = {k: p.labels(m(x, emb), None, out)["segmenter"] for k, (m, p) in paths.items()}
    if not torch.equal(labels["baseline"], labels["this"]):
        raise AssertionError("the labels differ from the baseline's")
    times: dict[str, list[float]] = {"backbone": [], "baseline": [], "this": []}
    for i in range(repeats + 4):
        for name in (("baseline", "this") if i % 2 == 0 else ("this", "baseline")):
            m, path = paths[name]
            start = time.perf_counter()
            feats = model.backbone.forward_features(x)
            mid = time.perf_counter()
            path.labels(m.decode(feats, emb), None, out)
            end = time.perf_counter()
            if i >= 4:  # warm-up: the traces are made on the second call
                times["backbone"].append(mid - start)
                times[name].append(end - mid)
    ms = {k: 1000 * sorted(v)[len(v) // 2] for k, v in times.items()}
    return {"size": size, "batch": batch, "weights": "trained" if ckpt else "random",
            "baseline": baseline, "backbone_ms": ms["backbone"],
            "baseline_after_ms": ms["baseline"], "this_after_ms": ms["this"],
            "baseline_ratio": 1 + ms["baseline"] / ms["backbone"],
            "this_ratio": 1 + ms["this"] / ms["backbone"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", required=True, help="a checkout of the code to compare")
    parser.add_argument("--ckpt", default=None, help="a trained run folder (else random)")
    parser.add_argument("--size", type=int, nargs="+", default=[128], help="image sizes (px)")
    parser.add_argument("--batch", type=int, default=1, help="images per forward")
    parser.add_argument("--repeats", type=int, default=200, help="timed repeats (median)")
    parser.add_argument("--out", default=None, help="also write the rows as JSON here")
    args = parser.parse_args()
    for flag, value in (("--batch", args.batch), ("--repeats", args.repeats),
                        *(("--size", s) for s in args.size)):
        if value < 1:
            parser.error(f"{flag} must be at least 1, got {value}")
    rows = [measure(args.baseline, args.ckpt, s, args.batch, args.repeats) for s in args.size]
    for r in rows:
        print(f"{r['size']} px, batch {r['batch']}, {r['weights']} weights: backbone "
              f"{r['backbone_ms']:.2f} ms; after it, head + labels {r['baseline_after_ms']:.2f} "
              f"ms (baseline) -> {r['this_after_ms']:.2f} ms; ratio {r['baseline_ratio']:.3f}x "
              f"-> {r['this_ratio']:.3f}x")
    if args.out:
        write_rows(args.out, rows)


if __name__ == "__main__":
    main()
