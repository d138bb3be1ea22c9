"""The model's speed targets, each a ratio of two sides timed alternately in one run.

    python benchmarks/bench_speed.py [--device cpu|cuda] [--steps 9] [--warmup 2] [--ckpt RUN]
        [--train 128x8] [--infer 512x1 128x16 128x1] [--set SECTION.KEY=VALUE ...]
        [--out FILE]

Rows (random weights unless ``--ckpt``; the two sides of a ratio run in turn, step by step, and
their medians are compared, so that load on the machine hits both):

- ``train``: one training step as the trainer takes it (forward, criterion, backward, gradient
  clipping, AdamW) of the paper's background-free + ranking model and of the baseline, built
  from configs/synthetic.yaml at its crop and batch (128 px, batch 8), on batches rendered by
  the synthetic generator, against the backbone's forward and backward on the same batch (a
  frozen backbone: its forward). Target: at most 1.5x.
- ``inference``: ``Segmenter.forward`` plus the labels of the segmenter protocol
  (``SemanticInference.labels``) against the backbone's forward, at 512 px batch 1 and 128 px
  batch 16 (target: at most 1.3x) and 128 px batch 1 (reported). With ``--ckpt`` the trained
  run's model and vocabulary are timed as well.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from common import CONFIGS, measure, ratio_text, rendered_batch, size_batch, write_result

from celseg.config import load_config
from celseg.data.classes import load_classes
from celseg.data.synthetic import class_info
from celseg.data.transforms import normalize
from celseg.engine.checkpoint import load_segmenter
from celseg.engine.schedule import build_optimizer
from celseg.engine.vocab import training_vocabulary
from celseg.losses.criterion import build_criterion
from celseg.losses.targets import labels_to_targets, labels_to_vocab
from celseg.models.build import build_segmenter
from celseg.models.inference import SemanticInference
from celseg.vlm.loading import class_text_embeddings

EMBED_DIM = 384  # the default VLM's text width
VARIANTS = {
    "background-free + ranking": ["model.mode=background_free", "loss.pixel_weight=1.0",
                                  "loss.ranking_weight=1.0"],
    "baseline": ["model.mode=background_embedding"],
}
TRAIN_TARGET = 1.5
INFER_TARGETS = {(512, 1): 1.3, (128, 16): 1.3}


class Trainable:
    """A model with its criterion, optimiser and inductive training vocabulary (random text
    embeddings: the timing does not depend on them)."""

    def __init__(self, overrides: list[str], dev: torch.device) -> None:
        self.cfg = load_config(CONFIGS / "synthetic.yaml", ["model.pretrained=false", *overrides])
        torch.manual_seed(0)
        self.model = build_segmenter(self.cfg.model, EMBED_DIM).to(dev).train()
        self.criterion = build_criterion(self.cfg.loss, self.model.has_background).to(dev)
        self.optimizer = build_optimizer(self.model, self.cfg.train)
        self.amp = dev.type == "cuda" and self.cfg.train.amp
        self.scaler = torch.amp.GradScaler(enabled=self.amp)
        vocab = training_vocabulary(class_info(), "inductive")
        self.lut = vocab.lut()
        self.text_emb = F.normalize(torch.randn(len(vocab.class_ids), EMBED_DIM, device=dev),
                                    dim=-1)

    def step(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        """One training step: images (B,3,H,W) normalised on the device, labels (B,H,W) ids."""
        targets = [{k: v.to(images.device) for k, v in t.items()} for t in labels_to_targets(
            labels, self.lut, with_masks=self.criterion.needs_target_masks)]
        labels_vocab = labels_to_vocab(labels.to(images.device), self.lut)
        with torch.autocast(images.device.type, enabled=self.amp):
            outputs = self.model(images, self.text_emb)
        loss = sum(self.criterion(outputs, targets, labels_vocab).values())
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.cfg.train.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.train.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()

    def backbone_step(self, images: torch.Tensor) -> None:
        """The reference: the backbone's forward, and the backward of a loss on every level
        when the backbone trains."""
        feats = backbone_features(self.model, images)
        loss = sum(f.float().mean() for f in feats.values())
        if loss.requires_grad:
            loss.backward()
        self.optimizer.zero_grad(set_to_none=True)


def backbone_features(model: torch.nn.Module, images: torch.Tensor) -> dict:
    """The backbone's multi-scale features, as ``Segmenter.forward`` computes them."""
    if model.vlm_tower_is_shared:
        return model.backbone.forward_shared(images)[0]
    return model.backbone.forward_features(images)


def train_row(name: str, overrides: list[str], dev: torch.device, rounds: tuple[int, int],
              size: int, batch: int, target: float | None) -> dict:
    """rounds: (timed steps, warm-up steps)."""
    parts = Trainable(overrides, dev)
    batches = [rendered_batch(i * batch, batch, size) for i in range(sum(rounds))]
    batches = [(normalize(images).to(dev), labels) for images, labels in batches]
    frozen = not any(p.requires_grad for p in parts.model.backbone.parameters())
    times = measure({"reference": lambda i: parts.backbone_step(batches[i][0]),
                     "step": lambda i: parts.step(*batches[i])}, *rounds, device=dev)
    return row("train", name, size, batch, "backbone forward" + ("" if frozen else " + backward"),
               times["reference"], times["step"], target)


def row(bench: str, model: str, size: int, batch: int, reference: str, reference_s: float,
        seconds: float, target: float | None) -> dict:
    return {"bench": bench, "model": model, "size": size, "batch": batch, "reference": reference,
            "reference_ms": round(1000 * reference_s, 3), "ms": round(1000 * seconds, 3),
            "ratio": round(seconds / reference_s, 4), "target": target,
            "images_per_s": round(batch / seconds, 3)}


def inference_model(dev: torch.device, ckpt: str | None, overrides: list[str]):
    """(model in eval mode, (V,D) text embeddings, what): the default model with random
    weights, or a trained run with its dataset's names embedded by its VLM."""
    if ckpt is None:
        model = Trainable([*VARIANTS["background-free + ranking"], *overrides], dev).model
        return model.eval(), F.normalize(torch.randn(24, EMBED_DIM, device=dev), dim=-1), "random"
    model, cfg = load_segmenter(ckpt, dev)
    names = load_classes(cfg.data.root).names
    return model, class_text_embeddings(cfg.model.vlm, names, dev).to(dev), "trained"


@torch.no_grad()
def inference_rows(dev: torch.device, rounds: tuple[int, int], settings: list[tuple[int, int]],
                   ckpt: str | None, overrides: list[str]) -> list[dict]:
    model, text_emb, weights = inference_model(dev, ckpt, overrides)
    path = SemanticInference(model.has_background, "segmenter")
    rows = []
    for size, batch in settings:
        x = normalize(rendered_batch(0, batch, size)[0]).to(dev)
        times = measure({
            "reference": lambda i, x=x: backbone_features(model, x),
            "full": lambda i, x=x: path.labels(model(x, text_emb), None, tuple(x.shape[-2:])),
        }, *rounds, device=dev)
        rows.append(row("inference", f"{weights} weights", size, batch, "backbone forward",
                        times["reference"], times["full"], INFER_TARGETS.get((size, batch))))
    return rows


def describe(r: dict) -> str:
    goal = "no target" if r["target"] is None else (
        f"target <= {r['target']:.1f}x: {'met' if r['ratio'] <= r['target'] else 'MISSED'}")
    return (f"{r['bench']} {r['model']}, {r['size']} px, batch {r['batch']}: {r['ms']:.1f} ms "
            f"vs {r['reference']} {r['reference_ms']:.1f} ms {ratio_text(r['ratio'])} ({goal})")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=9, help="timed steps per ratio (median)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps before them")
    parser.add_argument("--train", type=size_batch, default=None, metavar="SIZExBATCH",
                        help="training crop and batch (default: the config's, 128x8)")
    parser.add_argument("--infer", type=size_batch, nargs="+", metavar="SIZExBATCH",
                        default=[(512, 1), (128, 16), (128, 1)], help="inference settings")
    parser.add_argument("--set", nargs="+", default=[], metavar="SECTION.KEY=VALUE",
                        help="config overrides for every model, e.g. model.dec_layers=3")
    parser.add_argument("--ckpt", default=None, help="also time inference with this trained run "
                        "(its dataset and VLM must be on disk)")
    parser.add_argument("--out", default=None, help="write the rows here as JSON")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.warmup < 0:
        parser.error(f"--steps must be at least 1 and --warmup at least 0, got {args.steps} "
                     f"and {args.warmup}")
    dev = torch.device(args.device)
    cfg = load_config(CONFIGS / "synthetic.yaml")
    default = (cfg.data.crop_size, cfg.train.batch_size)
    size, batch = args.train or default
    target = TRAIN_TARGET if (size, batch) == default else None  # set for the config's setting
    rounds = (args.steps, args.warmup)
    rows = [train_row(name, [*ov, *args.set], dev, rounds, size, batch, target)
            for name, ov in VARIANTS.items()]
    for ckpt in [None, args.ckpt] if args.ckpt else [None]:
        rows += inference_rows(dev, rounds, args.infer, ckpt, args.set)
    for r in rows:
        print(describe(r), flush=True)
    write_result(args.out, rows, dev)


if __name__ == "__main__":
    main()
