"""What each inference protocol costs, as a ratio to the segmenter alone with its ImageNet
backbone, every setting timed in turn in one run.

    python benchmarks/bench_ensemble.py [--device cpu|cuda] [--sizes 128 512] [--repeats 7]
        [--vlm FOLDER] [--dense-input-scales 0.5 0.75] [--out FILE]

At each size, batch 1, on a rendered image with 24 class names, model forward plus labels:

- ``segmenter``: the default model of configs/synthetic.yaml (EfficientNet-Lite0 backbone), the
  segmenter protocol. The reference (1.00x).
- ``ensemble, separate VLM``: the same model with the out-of-vocabulary ensemble, which runs
  the VLM's image tower as a second pass (the default protocol when the VLM has an image tower);
  ``..., no pixel term`` the same without the per-pixel term (``eval.ensemble_pixel_weight=0``).
- ``segmenter, shared tower`` and ``ensemble, shared tower``: ``model.backbone=vlm``, the VLM's
  frozen tower as the backbone, whose dense map from the same pass feeds the ensemble.
- ``ensemble, separate VLM, dense xS`` for each ``--dense-input-scales`` S: the separate pass
  with ``eval.dense_input_scale=S`` (the image resized by S before the VLM's own dense scale of
  2, so S = 0.5 reads the tower at the input size): what a cheaper VLM pass costs. Their scores
  are what ``celseg protocol-study --settings scale`` measures.

The VLM is a LiT model (EfficientNet-Lite0 tower with MiniLM text) with random tower weights,
written to a temporary folder, or the ``--vlm`` folder (a ``celseg pretrain-vlm`` output).
Random weights: the timing does not depend on them.
"""

from __future__ import annotations

import argparse
import os
import tempfile

import torch
import torch.nn.functional as F
from common import CONFIGS, measure, ratio_text, rendered_batch, write_result

from celseg.config import load_config
from celseg.data.transforms import normalize
from celseg.engine.protocol import build_inference
from celseg.models.build import build_segmenter
from celseg.vlm.lit import build_lit, save_lit
from celseg.vlm.loading import load_vlm_cached

NAMES = [f"class {i}" for i in range(24)]
LABELLED = NAMES[:18]  # as in the benchmark's inductive setting: 18 seen names
REFERENCE = "segmenter"
SETTINGS = {  # name -> (config overrides, protocol); {vlm} is the VLM folder
    "segmenter": ([], "segmenter"),
    "ensemble, separate VLM": ([], "ensemble"),
    "ensemble, separate VLM, no pixel term": (["eval.ensemble_pixel_weight=0"], "ensemble"),
    "segmenter, shared tower": (["model.backbone=vlm"], "segmenter"),
    "ensemble, shared tower": (["model.backbone=vlm"], "ensemble"),
}


def random_lit(folder: str) -> str:
    save_lit(build_lit(pretrained_backbone=False), folder, {"dense_scale": 2.0})
    return folder


def scaled_setting(scale: float) -> str:
    return f"ensemble, separate VLM, dense x{scale:g}"


def inference(setting: str, vlm_folder: str, dev: torch.device, settings: dict):
    """(model, inference path, protocol) of one setting."""
    overrides, protocol = settings[setting]
    cfg = load_config(CONFIGS / "synthetic.yaml", [
        "model.pretrained=false", f"model.vlm={vlm_folder}", *overrides,
        f"eval.ensemble={'true' if protocol == 'ensemble' else 'false'}"])
    torch.manual_seed(0)
    vlm = load_vlm_cached(vlm_folder).to(dev)
    model = build_segmenter(cfg.model, vlm.embed_dim).to(dev).eval()
    path = build_inference(model, cfg.eval, NAMES, LABELLED, [], vlm, dev)
    if path.protocol != protocol:
        raise SystemExit(f"{setting}: got protocol {path.protocol}, expected {protocol}")
    return model, path


@torch.no_grad()
def run(dev: torch.device, sizes: list[int], repeats: int, vlm_folder: str,
        dense_scales: tuple[float, ...] = ()) -> list[dict]:
    settings = dict(SETTINGS)
    for scale in dense_scales:
        settings[scaled_setting(scale)] = ([f"eval.dense_input_scale={scale}"], "ensemble")
    parts = {name: inference(name, vlm_folder, dev, settings) for name in settings}
    text_emb = F.normalize(torch.randn(len(NAMES), 384, device=dev), dim=-1)
    rows = []
    for size in sizes:
        x01 = rendered_batch(0, 1, size)[0].to(dev)
        x = normalize(x01)

        def labels(i, model, path, x=x, x01=x01, size=size):
            return path.labels(model(x, text_emb), x01, (size, size))

        times = measure({name: lambda i, p=p: labels(i, *p) for name, p in parts.items()},
                        repeats, device=dev)
        rows += [{"bench": "ensemble", "setting": name, "protocol": settings[name][1],
                  "size": size, "batch": 1, "ms": round(1000 * t, 3),
                  "reference_ms": round(1000 * times[REFERENCE], 3),
                  "ratio": round(t / times[REFERENCE], 4)} for name, t in times.items()]
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 512], help="input sizes")
    parser.add_argument("--repeats", type=int, default=7, help="timed rounds (median)")
    parser.add_argument("--vlm", default=None,
                        help="VLM folder with an image tower (default: a random LiT model)")
    parser.add_argument("--dense-input-scales", type=float, nargs="*", default=[],
                        help="also time the separate VLM pass at these eval.dense_input_scale")
    parser.add_argument("--out", default=None, help="write the rows here as JSON")
    args = parser.parse_args(argv)
    if args.repeats < 1 or min(args.sizes) < 32:
        parser.error("--repeats must be at least 1 and every size at least 32")
    if any(s <= 0 for s in args.dense_input_scales):
        parser.error(f"--dense-input-scales must be positive, got {args.dense_input_scales}")
    dev = torch.device(args.device)
    with tempfile.TemporaryDirectory(prefix="celseg_bench_vlm_") as tmp:
        os.environ["CELSEG_CACHE"] = f"{tmp}/cache"  # the names' embeddings: not the user's cache
        rows = run(dev, args.sizes, args.repeats, args.vlm or random_lit(tmp),
                   tuple(args.dense_input_scales))
    for r in rows:
        print(f"{r['size']} px, batch 1, {r['setting']}: {r['ms']:.1f} ms vs segmenter "
              f"{r['reference_ms']:.1f} ms {ratio_text(r['ratio'])}", flush=True)
    write_result(args.out, rows, dev)


if __name__ == "__main__":
    main()
