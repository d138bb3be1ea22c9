"""Latency of the inference protocols against the backbone's own forward, in one run.

    python benchmarks/bench_ensemble.py [--device cpu|cuda] [--sizes 128 512] [--out FILE.json]

For each input size (batch 1, median of ``--repeats``), two models with random weights (timing
does not depend on them) and 24 class names embedded by the VLM's text tower:

- ``separate``: the default segmenter (ImageNet EfficientNet-Lite0 backbone) plus a second pass
  of the default VLM (LiT, dense_scale 2) for the out-of-vocabulary branch;
- ``shared``: ``model.backbone=vlm``, the frozen LiT tower shared by the pixel decoder and the
  branch (``model.vlm_input_scale``, default 2 as the VLM's own dense_scale).

Columns: the backbone's own forward (``forward_features``; for the shared tower its full forward,
dense map included), the segmenter alone (model forward + labels), the ensemble (model forward +
VLM branch + labels) and zsseg's crop two-stage (separate model only), with the ratios of the
last two to the backbone.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from bench_train import write_rows

from celseg.config import EvalConfig, ModelConfig
from celseg.engine.protocol import build_inference
from celseg.models.build import build_segmenter
from celseg.vlm.lit import build_lit, load_lit, save_lit

NAMES = [f"class {i}" for i in range(24)]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def median_time(fn, repeats: int, device: torch.device) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        _sync(device)
        t = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def run(device: str = "cpu", sizes: tuple[int, ...] = (128, 512), repeats: int = 7,
        input_scale: float = 2.0) -> list[dict]:
    dev = torch.device(device)
    torch.manual_seed(0)
    tmp = Path(tempfile.mkdtemp(prefix="celseg_bench_vlm_"))
    save_lit(build_lit(pretrained_backbone=False), tmp, {"dense_scale": 2.0})
    vlm = load_lit(tmp, device=device)
    emb = F.normalize(torch.randn(len(NAMES), 384, device=dev), dim=-1)
    models = {
        "separate": build_segmenter(ModelConfig(pretrained=False), 384),
        "shared": build_segmenter(ModelConfig(pretrained=False, backbone="vlm", vlm=str(tmp),
                                              vlm_input_scale=input_scale), 384),
    }
    labelled = NAMES[:18]
    rows = []
    for kind, model in models.items():
        model = model.to(dev).eval()
        paths = {}
        for protocol, cfg in (("segmenter", EvalConfig(ensemble=False)),
                              ("ensemble", EvalConfig()),
                              ("two_stage", EvalConfig(two_stage=True, two_stage_crop_size=64))):
            if kind == "shared" and protocol == "two_stage":
                continue
            paths[protocol] = build_inference(model, cfg, NAMES, labelled, [], vlm, dev)
        for size in sizes:
            x = torch.randn(1, 3, size, size, device=dev)
            x01 = torch.rand(1, 3, size, size, device=dev)
            backbone = median_time(lambda m=model, x=x: _backbone(m, x), repeats, dev)
            row = {"bench": "ensemble", "model": kind, "size": size, "device": device,
                   "backbone_ms": 1000 * backbone}
            for protocol, path in paths.items():
                reps = 2 if protocol == "two_stage" else repeats

                def infer(m=model, p=path, x=x, x01=x01):
                    out = m(x, emb)
                    return p.labels(out, x01, tuple(x.shape[-2:]))

                t = median_time(infer, reps, dev)
                row[f"{protocol}_ms"] = 1000 * t
                row[f"{protocol}_ratio"] = t / backbone
            rows.append(row)
    return rows


def _backbone(model, x):
    if hasattr(model.backbone, "forward_shared"):
        return model.backbone.forward_shared(x)
    return model.backbone.forward_features(x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="cpu or cuda")
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 512],
                        help="input sizes (px)")
    parser.add_argument("--repeats", type=int, default=7, help="timed repeats per cell")
    parser.add_argument("--input-scale", type=float, default=2.0,
                        help="model.vlm_input_scale of the shared model")
    parser.add_argument("--out", default=None, help="also write the rows as JSON here")
    args = parser.parse_args()
    rows = run(args.device, tuple(args.sizes), args.repeats, args.input_scale)
    print("| model | size | backbone ms | segmenter ms (x) | ensemble ms (x) | two-stage ms (x) |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        def cell(p, r=r):
            return (f"{r[p + '_ms']:.1f} ({r[p + '_ratio']:.2f}x)" if p + "_ms" in r else "-")
        print(f"| {r['model']} | {r['size']} | {r['backbone_ms']:.1f} | {cell('segmenter')} | "
              f"{cell('ensemble')} | {cell('two_stage')} |")
    write_rows(args.out, rows)


if __name__ == "__main__":
    main()
