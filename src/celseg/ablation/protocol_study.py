"""Choose the ensemble's free settings on dev data, never on the data they are evaluated on.

    celseg protocol-study --ckpt RUN [RUN ...] [--data DEV_ROOT] [--out FILE.json]

Evaluates each checkpoint under several inference settings (pooling, renormalisation, input
scale of the VLM's dense map, pseudo-label class weights) from ONE segmenter forward pass per
batch, the VLM's dense features computed once per input scale. Dev data means both: images
generated with another seed, and a dev split of unseen classes (``celseg ablate --dev``, whose
runs are read on their own split's view when ``--data`` is not given).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from celseg.config import apply_overrides, load_config
from celseg.data.classes import load_classes
from celseg.data.dataset import SegmentationDataset
from celseg.data.transforms import build_eval_transform
from celseg.engine.checkpoint import label_names, load_segmenter, resolve_checkpoint
from celseg.engine.evaluator import confusion_matrices
from celseg.engine.protocol import build_inference
from celseg.errors import CelsegError
from celseg.evaluation.metrics import summarize
from celseg.vlm.loading import class_text_embeddings, load_vlm_cached

SETTINGS: dict[str, dict] = {
    "segmenter alone": {"ensemble": False},
    "soft, renorm, x1": {"pooling": "soft", "ensemble_renorm": True, "dense_input_scale": 1.0},
    "binary, renorm, x1": {"pooling": "binary", "ensemble_renorm": True,
                           "dense_input_scale": 1.0},
    "soft, no renorm, x1": {"pooling": "soft", "ensemble_renorm": False,
                            "dense_input_scale": 1.0},
    "binary, no renorm, x1": {"pooling": "binary", "ensemble_renorm": False,
                              "dense_input_scale": 1.0},
    "soft, renorm, x0.5": {"pooling": "soft", "ensemble_renorm": True,
                           "dense_input_scale": 0.5},
    "soft, renorm, x1.5": {"pooling": "soft", "ensemble_renorm": True,
                           "dense_input_scale": 1.5},
    "soft, renorm, x2": {"pooling": "soft", "ensemble_renorm": True, "dense_input_scale": 2.0},
    "pseudo classes as alpha": {"ensemble_pseudo": "alpha"},
}
# the default protocol (binary pooling, renormalised) with the VLM's input resized by
# eval.dense_input_scale: what a cheaper VLM pass scores (benchmarks/bench_ensemble.py
# --dense-input-scales times it)
SCALES = (0.5, 0.625, 0.75, 1.0)
SETTINGS.update({f"binary, renorm, x{s:g}": {"pooling": "binary", "ensemble_renorm": True,
                                              "dense_input_scale": s} for s in SCALES})
SETTINGS.update({f"VLM alone, x{s:g}": {"pooling": "binary", "ensemble_alpha": 1.0,
                                        "ensemble_beta": 1.0, "dense_input_scale": s}
                 for s in SCALES})
# the ensemble's class weights (alpha for classes labelled in training, beta for the others),
# the default protocol's other free settings
ALPHAS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6)
BETAS = (0.6, 0.7, 0.8, 0.9)
SETTINGS.update({f"alpha {a:g}, beta {b:g}": {"pooling": "binary", "ensemble_renorm": True,
                                              "ensemble_alpha": a, "ensemble_beta": b}
                 for a in ALPHAS for b in BETAS})
# the weight lambda of the VLM's per-pixel probabilities in the ensemble's scores
PIXEL_WEIGHTS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5)
SETTINGS.update({f"pixel weight {w:g}": {"pooling": "binary", "ensemble_renorm": True,
                                         "ensemble_pixel_weight": w} for w in PIXEL_WEIGHTS})
PRESETS = {
    "all": tuple(SETTINGS),
    "weights": tuple(f"alpha {a:g}, beta {b:g}" for a in ALPHAS for b in BETAS),
    "pixel": tuple(f"pixel weight {w:g}" for w in PIXEL_WEIGHTS),
    "scale": ("segmenter alone", *(f"binary, renorm, x{s:g}" for s in SCALES),
              *(f"VLM alone, x{s:g}" for s in SCALES)),
    "cheap": ("segmenter alone", "soft, renorm, x1", "binary, renorm, x1", "soft, renorm, x0.5",
              "soft, renorm, x1.5", "pseudo classes as alpha"),
}


class MemoDense:
    """Wraps a VLM so that ``dense_features`` of the same batch is computed once."""

    def __init__(self, vlm: object) -> None:
        self.vlm = vlm
        self.key: tuple | None = None
        self.value: torch.Tensor | None = None

    def __getattr__(self, name: str) -> object:
        return getattr(self.vlm, name)

    def to(self, *args, **kwargs) -> MemoDense:
        """Moves the VLM and stays the wrapper (``nn.Module.to`` would hand back the VLM)."""
        self.vlm.to(*args, **kwargs)
        return self

    def dense_features(self, images: torch.Tensor) -> torch.Tensor:
        # the same batch arrives as new tensors (resized per path): key on its content
        key = (tuple(images.shape), float(images.sum()), float(images.flatten()[::997].sum()))
        if key != self.key:
            self.key, self.value = key, self.vlm.dense_features(images)
        return self.value


@torch.no_grad()
def study(ckpt: str | Path, data_root: str | Path, split: str = "val",
          settings: dict[str, dict] | None = None, device: str = "cpu",
          progress: bool = True, max_images: int = 0,
          overrides: list[str] | tuple[str, ...] = ()) -> dict[str, dict]:
    """{setting: summary} for one checkpoint on ``data_root``'s ``split``; ``overrides``
    (``eval.KEY=VALUE``) are the eval settings every setting starts from (default: the run's)."""
    settings = settings or SETTINGS
    model, cfg = load_segmenter(ckpt, device)
    cfg = apply_overrides(cfg, list(overrides))
    info = load_classes(data_root)
    names = list(info.names)
    labelled, pseudo = label_names(ckpt, cfg)
    emb = class_text_embeddings(cfg.model.vlm, names, device)
    seen = [i for i, n in enumerate(names) if n in set(labelled)]
    scales = {s.get("dense_input_scale", cfg.eval.dense_input_scale) for s in settings.values()}
    vlms = {scale: MemoDense(load_vlm_cached(cfg.model.vlm)) for scale in scales}
    heads = {}
    for title, overrides in settings.items():
        eval_cfg = dataclasses.replace(cfg.eval, seen_calibration=0.0, two_stage=False,
                                       **overrides)
        vlm = vlms[eval_cfg.dense_input_scale]
        path = build_inference(model, eval_cfg, names, labelled, pseudo, vlm, device,
                               seen_positions=seen)
        heads[title] = (path, path.protocol)
    dataset = SegmentationDataset(data_root, split, transform=build_eval_transform(cfg.data),
                                  view="full", class_info=info, max_items=max_images)
    loop_cfg = dataclasses.replace(cfg.eval, sliding_window=False)
    cms, _ = confusion_matrices(model, dataset, emb, torch.arange(len(names)), heads, info,
                                loop_cfg, torch.device(device), progress,
                                desc=f"study {Path(ckpt).name}")
    return {t: {**summarize(cm.matrix, info), "protocol": heads[t][0].protocol}
            for t, cm in cms.items()}


def table(results: dict[str, dict[str, dict]]) -> str:
    """Mean over checkpoints of seen / unseen / hIoU per setting."""
    titles = list(next(iter(results.values())))
    lines = ["| setting | seen mIoU | unseen mIoU | hIoU | checkpoints |",
             "|---|---:|---:|---:|---:|"]
    for title in titles:
        rows = [r[title] for r in results.values()]
        mean = {k: sum(r[k] for r in rows) / len(rows) for k in ("miou_seen", "miou_unseen",
                                                                  "hiou")}
        lines.append(f"| {title} | {mean['miou_seen']:.1f} | {mean['miou_unseen']:.1f} | "
                     f"{mean['hiou']:.1f} | {len(rows)} |")
    return "\n".join(lines)


def study_all(ckpts: list[str], data_root: str = "", split: str = "val",
              preset: str = "all", device: str = "cpu", max_images: int = 0,
              progress: bool = True, overrides: list[str] | tuple[str, ...] = (),
              ) -> dict[str, dict[str, dict]]:
    """{checkpoint: {setting: summary}} for the settings of ``preset``; each checkpoint on
    ``data_root`` (default: its own run's data.root, the view of its split)."""
    if preset not in PRESETS:
        raise CelsegError(f"unknown settings preset {preset!r}; known: {', '.join(PRESETS)}")
    chosen = {t: SETTINGS[t] for t in PRESETS[preset]}
    results = {}
    for ckpt in ckpts:
        root = data_root or load_config(resolve_checkpoint(ckpt)[1]).data.root
        results[str(ckpt)] = study(ckpt, root, split, chosen, device=device, progress=progress,
                                   max_images=max_images, overrides=overrides)
    return results


def slim(results: dict[str, dict[str, dict]]) -> dict:
    """``results`` without the per-class tables (the JSON the command writes)."""
    return {c: {t: {k: v for k, v in s.items() if k != "per_class"} for t, s in r.items()}
            for c, r in results.items()}
