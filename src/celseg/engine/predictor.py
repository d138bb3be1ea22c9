"""A trained run's inference for an arbitrary list of class names (``Predictor``).

The files and pictures made from its labels are ``celseg.api`` (``Segmentation.save``,
``celseg predict``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from celseg.data.batching import pad_batch
from celseg.data.transforms import normalize, to_unit_rgb
from celseg.engine.checkpoint import label_names, load_segmenter
from celseg.engine.protocol import build_inference, choose_protocol
from celseg.errors import DataError
from celseg.models.inference import labels_from_probs
from celseg.vlm.cache import text_embeddings
from celseg.vlm.loading import has_image_tower, load_vlm_cached


def parse_class_names(text: str) -> list[str]:
    """``"cat, dog,road"`` -> ``["cat", "dog", "road"]``; empty or duplicate names are errors."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise DataError(f"no class names in {text!r}; give e.g. --classes \"cat,dog,road\"")
    if len(names) > 255:
        raise DataError(f"{len(names)} class names; label PNGs hold at most 255")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise DataError(f"duplicate class names {dup}")
    return names


class Predictor:
    """A trained segmenter with its inference path, for any list of class names.

    ``segment(image, class_names)`` returns (H,W) uint8 positions in ``class_names``. A name
    counts as seen (ensemble weight alpha) when it had ground-truth labels in the run's training
    data. ``protocol`` says which path produced the labels ("ensemble" or "segmenter").
    """

    def __init__(self, model: nn.Module, text_vlm: Any, eval_cfg: Any, image_vlm: Any = None,
                 labelled_names: list[str] | None = None, pseudo_names: list[str] | None = None,
                 cache_dir: str | Path | None = None) -> None:
        self.model = model.eval()
        self.text_vlm = text_vlm
        self.image_vlm = image_vlm
        self.eval_cfg = eval_cfg
        self.labelled_names = list(labelled_names or [])
        self.pseudo_names = list(pseudo_names or [])
        self.cache_dir = cache_dir
        sees = bool(getattr(model, "vlm_tower_is_shared", False)) or has_image_tower(image_vlm)
        self.protocol = choose_protocol(eval_cfg, sees)
        self._paths: dict[tuple[str, ...], Any] = {}

    @classmethod
    def from_checkpoint(cls, ckpt: str | Path, device: str | torch.device = "cpu",
                        vlm: str | None = None, ensemble: bool = True,
                        cache_dir: str | Path | None = None,
                        compile_backbone: bool | None = None) -> Predictor:
        """Load a run; ``vlm`` overrides its model.vlm (text space and image path);
        ``ensemble=False`` gives the segmenter alone; ``compile_backbone`` overrides the run's
        ``eval.compile_backbone`` (None: keep it)."""

        model, cfg = load_segmenter(ckpt, device)
        if cfg.eval.compile_backbone if compile_backbone is None else compile_backbone:
            model.compile_backbone()
        text_vlm = load_vlm_cached(vlm or cfg.model.vlm)
        image_vlm = load_vlm_cached(cfg.eval.vlm) if cfg.eval.vlm and not vlm else text_vlm
        eval_cfg = dataclasses.replace(cfg.eval, ensemble=cfg.eval.ensemble and ensemble,
                                       two_stage=False)
        labelled, pseudo = label_names(ckpt, cfg)
        return cls(model, text_vlm, eval_cfg, image_vlm, labelled, pseudo, cache_dir)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def path(self, class_names: list[str]) -> Any:
        """The inference path for this vocabulary (built once per vocabulary)."""

        key = tuple(class_names)
        if key not in self._paths:
            labelled = set(self.labelled_names)
            if len(self._paths) > 8:
                self._paths.clear()
            self._paths[key] = build_inference(
                self.model, self.eval_cfg, list(class_names), self.labelled_names,
                self.pseudo_names, self.image_vlm if self.protocol != "segmenter" else None,
                self.device,
                seen_positions=[i for i, n in enumerate(class_names) if n in labelled])
        return self._paths[key]

    def text_embeddings(self, class_names: list[str]) -> torch.Tensor:
        return text_embeddings(self.text_vlm, list(class_names), cache_dir=self.cache_dir)

    @torch.no_grad()
    def probs(self, image: np.ndarray, class_names: list[str]) -> torch.Tensor:
        """(V,H,W) class probabilities for an (H,W,3) uint8 image."""
        x01 = torch.tensor(image).permute(2, 0, 1).float().div(255.0)[None]  # copy: read-only ok
        return self.probs_batch(x01, class_names)[0]

    @torch.no_grad()
    def probs_batch(self, images01: torch.Tensor, class_names: list[str]) -> torch.Tensor:
        """(B,V,H,W) class probabilities for (B,3,H,W) RGB images in [0, 1]."""

        h, w = images01.shape[-2:]
        x, _ = pad_batch(normalize(images01))  # padded as in evaluation, the VLM sees the same
        x = x.to(self.device)
        outputs = self.model(x, self.text_embeddings(class_names).to(self.device))
        probs = self.path(class_names).probs(outputs, to_unit_rgb(x), tuple(x.shape[-2:]))
        return probs[..., :h, :w]

    @torch.no_grad()
    def segment(self, image: np.ndarray, class_names: list[str]) -> np.ndarray:
        """(H,W) uint8 positions in ``class_names`` for an (H,W,3) uint8 image."""
        return self.labels(self.probs(image, class_names), class_names)

    def labels(self, probs: torch.Tensor, class_names: list[str]) -> np.ndarray:
        """(V,H,W) probabilities of :meth:`probs` -> (H,W) uint8 positions in ``class_names``,
        after the seen-class calibration (applied to ``probs`` in place)."""
        path = self.path(class_names)
        pred = labels_from_probs(probs[None], path.seen_positions, path.calibration)[0]
        return pred.to(torch.uint8).cpu().numpy()
