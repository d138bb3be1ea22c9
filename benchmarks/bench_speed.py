"""The training-speed targets, each as a ratio measured side by side in one run.

    python benchmarks/bench_speed.py [--device cpu|cuda] [--steps 9] [--out FILE.json]
    python benchmarks/bench_speed.py --device cuda --voc   # the paper's VOC training config

Rows (random weights; timing does not depend on them; each ratio's two sides are timed
alternately, step by step, and their medians compared, so load on the machine hits both):

- ``train``: one training step (forward, criterion, backward, AdamW) of the ablation's
  background-free + ranking model and of the baseline, at 128 px, batch 8, with batches rendered
  by the synthetic generator, against the forward and backward of the model's backbone alone on
  the same batch. For the frozen shared VLM backbone (``model.backbone=vlm``) the reference is
  the tower's forward plus the head's forward and backward (pixel decoder, decoder, classifier).
- ``inference``: the full model's forward plus the semantic map (segmenter protocol) against
  the backbone's forward, at 128 and 512 px with batch 1 and at 128 px with the evaluation's
  batch (16), on rendered images; with random weights and, given ``--ckpt``, a trained model.
- ``matcher``: the Hungarian matcher per image at 512 px, 100 queries, with the default point
  sampling and, for reference, at every pixel.
- ``--voc``: img/s and peak memory of training at the paper's VOC config (512 px crop, batch 16,
  100 queries), on CUDA with mixed precision.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from bench_train import _batch, write_rows

from celseg.ablation.demo import config_path
from celseg.config import EvalConfig, load_config
from celseg.data.classes import load_classes
from celseg.engine.checkpoint import load_segmenter
from celseg.engine.protocol import build_inference
from celseg.engine.schedule import build_optimizer
from celseg.losses.criterion import build_criterion
from celseg.losses.matcher import HungarianMatcher
from celseg.losses.targets import build_vocab_lut, labels_to_targets, labels_to_vocab
from celseg.models.build import build_segmenter
from celseg.vlm.loading import class_text_embeddings

NAMES = [f"class {i}" for i in range(24)]
VARIANTS = {
    "ranking": ["model.mode=background_free", "loss.pixel_weight=1.0", "loss.ranking_weight=1.0"],
    "baseline": ["model.mode=background_embedding"],
}


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _timed(fn, dev: torch.device) -> float:
    _sync(dev)
    start = time.perf_counter()
    fn()
    _sync(dev)
    return time.perf_counter() - start


def _median(xs: list[float]) -> float:
    return sorted(xs)[len(xs) // 2]


def alternating_ms(fns: dict, repeats: int) -> dict[str, float]:
    """Median ms of each callable (CPU), called in alternation after two warm-up rounds, so
    that load on the machine hits every side alike."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for i in range(repeats + 2):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            if i >= 2:
                times[name].append(time.perf_counter() - start)
    return {k: 1000 * _median(v) for k, v in times.items()}


def _shared_vlm() -> str:
    from celseg.vlm.lit import build_lit, save_lit

    folder = Path(tempfile.mkdtemp(prefix="celseg_bench_vlm_"))
    save_lit(build_lit(pretrained_backbone=False), folder, {"dense_scale": 2.0})
    return str(folder)


def vocabulary(dev: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The random-weight benchmarks' vocabulary: (len(NAMES), 384) random unit text embeddings
    and the look-up table of its class ids."""
    return (F.normalize(torch.randn(len(NAMES), 384, device=dev), dim=-1),
            build_vocab_lut(list(range(len(NAMES)))))


def _parts(overrides: list[str], dev: torch.device, queries: int | None = None,
           base: str = "synthetic.yaml"):
    """(config, model, criterion, optimizer) of the ``base`` config in configs/ (by default the
    shipped default model of the demo and the ablation) with random weights and ``overrides``."""
    sized = [f"model.num_queries={queries}"] if queries else []
    cfg = load_config(config_path(base), ["model.pretrained=false", *overrides, *sized])
    torch.manual_seed(0)
    model = build_segmenter(cfg.model, 384).to(dev).train()
    criterion = build_criterion(cfg.loss, model.has_background).to(dev)
    return cfg, model, criterion, build_optimizer(model, cfg.train)


def train_step(model, criterion, optimizer, emb: torch.Tensor, lut: torch.Tensor,
               images: torch.Tensor, labels: torch.Tensor) -> None:
    """One training step as the trainer takes it: forward, criterion, backward, AdamW."""
    out = model(images, emb)
    targets = labels_to_targets(labels, lut, with_masks=criterion.needs_target_masks)
    losses = criterion(out, targets, labels_to_vocab(labels, lut))
    optimizer.zero_grad(set_to_none=True)
    sum(losses.values()).backward()
    optimizer.step()


def backbone_step(model, optimizer, images: torch.Tensor) -> None:
    """The training target's reference: the backbone's forward, and backward of a loss on
    every feature level."""
    feats = model.backbone.forward_features(images)
    sum(f.float().mean() for f in feats.values()).backward()
    optimizer.zero_grad(set_to_none=True)


def train_ratio(name: str, overrides: list[str], dev: torch.device, steps: int,
                size: int = 128, batch: int = 8) -> dict:
    """Median training step against its reference (see the module docstring)."""
    cfg, model, criterion, optimizer = _parts(overrides, dev)
    emb, lut = vocabulary(dev)
    shared = model.vlm_tower_is_shared
    refs, stepped = [], []
    for i in range(steps + 2):
        images, labels = (t.to(dev) for t in _batch(i * batch, batch, size))

        def reference(images=images):
            if shared:
                with torch.no_grad():
                    feats, _ = model.backbone.forward_shared(images)
                mask_features, memory = model.pixel_decoder(feats)
                preds = model.transformer_decoder(memory, mask_features)
                loss = sum(model.classifier(p["class_feat"], emb)[0].mean()
                           + p["pred_masks"].mean() for p in preds)
                loss.backward()
                optimizer.zero_grad(set_to_none=True)
            else:
                backbone_step(model, optimizer, images)

        def step(images=images, labels=labels):
            train_step(model, criterion, optimizer, emb, lut, images, labels)

        ref_t, step_t = _timed(reference, dev), _timed(step, dev)
        if i >= 2:  # two warm-up steps
            refs.append(ref_t)
            stepped.append(step_t)
    ref, step_s = _median(refs), _median(stepped)
    what = "tower forward + head f/b" if shared else "backbone forward + backward"
    return {"bench": "train", "model": name, "size": size, "batch": batch, "reference": what,
            "reference_s": ref, "step_s": step_s, "ratio": step_s / ref,
            "images_per_s": batch / step_s}


def _inference_model(dev: torch.device, ckpt: str | None, extra: tuple[str, ...] = ()):
    """(model, text embeddings (V,D), names): a trained checkpoint with its vocabulary (every
    name of its dataset, embedded by its VLM), or the shipped default model with random
    weights and the ``extra`` config overrides."""
    if ckpt is None:
        _, model, _, _ = _parts(list(extra), dev)
        return model.eval(), vocabulary(dev)[0], NAMES
    model, cfg = load_segmenter(ckpt, dev)
    names = load_classes(cfg.data.root).names
    return model, class_text_embeddings(cfg.model.vlm, names, dev), names


@torch.no_grad()  # as the library infers
def inference_ratio(dev: torch.device, size: int, repeats: int, batch: int = 1,
                    ckpt: str | None = None, extra: tuple[str, ...] = ()) -> dict:
    """Full model + semantic map against the backbone's forward, on images rendered by the
    synthetic generator (the labels' cost depends on how many pixels are class boundaries, so
    a trained ``ckpt`` gives the realistic figure; random weights give many boundaries)."""
    model, emb, names = _inference_model(dev, ckpt, extra)
    path = build_inference(model, EvalConfig(ensemble=False), names, names[:18], [], None, dev)
    x = _batch(0, batch, size)[0].to(dev)
    backbone, full = [], []
    for i in range(repeats + 2):
        b = _timed(lambda: model.backbone.forward_features(x), dev)
        f = _timed(lambda: path.labels(model(x, emb), None, (size, size)), dev)
        if i >= 2:
            backbone.append(b)
            full.append(f)
    ref, total = _median(backbone), _median(full)
    return {"bench": "inference", "size": size, "batch": batch,
            "weights": "trained" if ckpt else "random", "backbone_ms": 1000 * ref,
            "full_ms": 1000 * total, "ratio": total / ref}


def matcher_time(dev: torch.device, num_points: int, images: int, size: int = 512,
                 queries: int = 100) -> dict:
    """Matcher ms per image (cost matrices + assignment)."""
    _, labels = _batch(0, images, size)
    labels = labels.to(dev)
    lut = build_vocab_lut(list(range(len(NAMES))))
    targets = labels_to_targets(labels, lut, with_masks=num_points == 0)
    vocab_map = labels_to_vocab(labels, lut)
    g = torch.Generator().manual_seed(0)
    outputs = {
        "pred_logits": torch.randn(images, queries, len(NAMES), generator=g).to(dev),
        "pred_masks": torch.randn(images, queries, size // 4, size // 4, generator=g).to(dev),
    }
    matcher = HungarianMatcher(num_points=num_points)
    valid = labels != 255
    matcher(outputs, targets, valid, vocab_map)  # warm-up
    per_image = _median([_timed(lambda: matcher(outputs, targets, valid, vocab_map), dev)
                         for _ in range(3)]) / images
    return {"bench": "matcher", "size": size, "queries": queries, "num_points": num_points,
            "ms_per_image": 1000 * per_image}


def voc_throughput(dev: torch.device, steps: int = 5, size: int = 512, batch: int = 16,
                   queries: int = 100, extra: tuple[str, ...] = ()) -> dict:
    """Training img/s and peak memory at the paper's VOC config (512 px crop, batch 16, 100
    queries, mixed precision on CUDA)."""
    cfg, model, criterion, optimizer = _parts([*VARIANTS["ranking"], *extra], dev,
                                              queries=queries, base="paper/voc_base.yaml")
    emb = F.normalize(torch.randn(20, 384, device=dev), dim=-1)
    lut = build_vocab_lut(list(range(20)))
    scaler = torch.amp.GradScaler(enabled=dev.type == "cuda")
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    times = []
    for i in range(steps + 2):
        images, labels = (t.to(dev) for t in _batch(i * batch, batch, size))
        labels = torch.where(labels < 20, labels, torch.full_like(labels, 255))

        def step(images=images, labels=labels):
            with torch.autocast(dev.type, enabled=dev.type == "cuda"):
                out = model(images, emb)
            targets = labels_to_targets(labels.cpu(), lut, with_masks=criterion.needs_target_masks)
            targets = [{k: v.to(dev) for k, v in t.items()} for t in targets]
            losses = criterion(out, targets, labels_to_vocab(labels, lut))
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(sum(losses.values())).backward()
            scaler.step(optimizer)
            scaler.update()

        t = _timed(step, dev)
        if i >= 2:
            times.append(t)
    step_s = _median(times)
    peak = torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else float("nan")
    return {"bench": "voc_train", "size": size, "batch": batch, "queries": queries,
            "step_s": step_s, "images_per_s": batch / step_s, "peak_mem_mb": peak}


def run(device: str, steps: int, voc: bool, ckpt: str | None = None,
        eval_batch: int = 16, extra: tuple[str, ...] = ()) -> list[dict]:
    """Every row; ``extra`` config overrides apply to every random-weight model."""
    dev = torch.device(device)
    rows = [train_ratio(name, [*ov, *extra], dev, steps) for name, ov in VARIANTS.items()]
    shared = [*VARIANTS["ranking"], "model.backbone=vlm", f"model.vlm={_shared_vlm()}",
              "model.vlm_input_scale=2.0", *extra]
    rows.append(train_ratio("ranking, shared frozen VLM", shared, dev, steps))
    for weights in [None, ckpt] if ckpt else [None]:
        rows += [inference_ratio(dev, size, 2 * steps + 1, 1, weights, extra)
                 for size in (128, 512)]
        rows.append(inference_ratio(dev, 128, steps, eval_batch, weights, extra))
    rows += [matcher_time(dev, 12544, 16), matcher_time(dev, 0, 4)]
    if voc:
        rows.append(voc_throughput(dev, extra=extra))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="cpu or cuda")
    parser.add_argument("--steps", type=int, default=9, help="timed steps per ratio (median)")
    parser.add_argument("--voc", action="store_true", help="also the VOC training config")
    parser.add_argument("--set", nargs="+", default=[], metavar="SECTION.KEY=VALUE",
                        help="config overrides for every model, e.g. "
                             "model.pixel_decoder_conv=separable")
    parser.add_argument("--ckpt", default=None,
                        help="also time inference with this trained checkpoint (its dataset "
                             "and VLM must be on disk)")
    parser.add_argument("--eval-batch", type=int, default=16,
                        help="batch of the batched inference row (the eval config's)")
    parser.add_argument("--out", default=None, help="also write the rows as JSON here")
    args = parser.parse_args()
    for flag, value in (("--steps", args.steps), ("--eval-batch", args.eval_batch)):
        if value < 1:
            parser.error(f"{flag} must be at least 1, got {value}")
    rows = run(args.device, args.steps, args.voc, args.ckpt, args.eval_batch, tuple(args.set))
    for r in rows:
        if r["bench"] == "train":
            print(f"train {r['model']}: step {r['step_s']:.3f} s vs {r['reference']} "
                  f"{r['reference_s']:.3f} s = {r['ratio']:.2f}x ({r['images_per_s']:.1f} img/s)")
        elif r["bench"] == "inference":
            print(f"inference {r['size']} px, batch {r['batch']}, {r['weights']} weights: "
                  f"{r['full_ms']:.1f} ms vs backbone "
                  f"{r['backbone_ms']:.1f} ms = {r['ratio']:.2f}x")
        elif r["bench"] == "matcher":
            print(f"matcher {r['size']} px, {r['queries']} queries, num_points "
                  f"{r['num_points']}: {r['ms_per_image']:.1f} ms/image")
        else:
            print(f"VOC training ({r['size']} px, batch {r['batch']}, {r['queries']} queries): "
                  f"{r['step_s']:.3f} s/step, "
                  f"{r['images_per_s']:.1f} img/s, peak {r['peak_mem_mb']:.0f} MB")
    write_rows(args.out, rows)


if __name__ == "__main__":
    main()
