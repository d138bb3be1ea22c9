"""Training throughput (images/s) of the default config: forward, criterion, backward, AdamW.

    python benchmarks/bench_train.py [--device cpu|cuda] [--out FILE.json]
        [--mode background_free|background_embedding]

Batches are rendered by the synthetic benchmark generator (128 px, batch 8, the default crop),
so the criterion sees realistic segment counts; no dataset on disk is needed.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from celseg.config import RENAMED_VALUES, apply_override, load_config
from celseg.data.synthetic import class_info, render_segmentation
from celseg.data.transforms import normalize
from celseg.engine.schedule import build_optimizer
from celseg.engine.vocab import training_vocabulary
from celseg.losses.criterion import build_criterion
from celseg.losses.targets import labels_to_targets, labels_to_vocab
from celseg.models.build import MODES, build_segmenter


def write_rows(out: str | None, rows) -> None:
    """Write the rows as JSON to ``out`` (every benchmark's ``--out``), if given."""
    if out:
        Path(out).write_text(json.dumps(rows, indent=1))


def _batch(start: int, batch: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    imgs, labels = [], []
    for i in range(start, start + batch):
        image, label = render_segmentation(0, "train", i, size)
        imgs.append(torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 255)
        labels.append(torch.from_numpy(np.array(label)).long())
    return normalize(torch.stack(imgs)), torch.stack(labels)


def run(device: str = "cpu", mode: str = "background_free", steps: int = 10, batch: int = 8,
        size: int = 128) -> list[dict]:
    from bench_inference import peak_memory_mb

    dev = torch.device(device)
    cfg = load_config(None, [f"model.mode={mode}", "model.pretrained=false"])  # old names too
    mode = cfg.model.mode
    cfg = apply_override(cfg, f"loss.pixel_weight={1.0 if mode == 'background_free' else 0.0}")
    info = class_info()
    vocab = training_vocabulary(info, "inductive")
    lut = vocab.lut()
    torch.manual_seed(0)
    model = build_segmenter(cfg.model, 384).to(dev).train()
    criterion = build_criterion(cfg.loss, model.has_background).to(dev)
    optimizer = build_optimizer(model, cfg.train)
    emb = torch.nn.functional.normalize(torch.randn(len(vocab.class_ids), 384, device=dev), dim=-1)
    batches = [_batch(i * batch, batch, size) for i in range(steps + 2)]
    times = []
    for i, (images, labels) in enumerate(batches):
        images, labels = images.to(dev), labels.to(dev)
        # unseen pixels hidden, as in the inductive training view
        unseen = torch.tensor([s == "unseen" for s in info.splits], device=dev)
        labels = torch.where(unseen[labels.clamp(max=len(unseen) - 1)] & (labels != 255),
                             torch.full_like(labels, 255), labels)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        t = time.perf_counter()
        out = model(images, emb)
        losses = criterion(out, labels_to_targets(labels, lut), labels_to_vocab(labels, lut),
                           None, None)
        optimizer.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        optimizer.step()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        if i >= 2:  # two warm-up steps
            times.append(time.perf_counter() - t)
    step = sorted(times)[len(times) // 2]
    return [{"bench": "train", "device": device, "mode": mode, "size": size, "batch": batch,
             "step_s": step, "images_per_s": batch / step, "peak_mem_mb": peak_memory_mb(dev)}]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="cpu or cuda")
    parser.add_argument("--mode", default="background_free",
                        choices=[*MODES, *RENAMED_VALUES[("model", "mode")]],
                        help="model mode (ce, baseline: old names of the two)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps (median reported)")
    parser.add_argument("--out", default=None, help="also write the rows as JSON here")
    args = parser.parse_args()
    rows = run(args.device, args.mode, args.steps)
    for r in rows:
        print(f"train {r['mode']}: {r['step_s']:.3f} s/step  {r['images_per_s']:.1f} img/s  "
              f"peak {r['peak_mem_mb']:.0f} MB")
    write_rows(args.out, rows)


if __name__ == "__main__":
    main()
