"""``celseg.load`` and the model it returns: segment images with any list of class names."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from celseg.api.inputs import to_rgb
from celseg.api.segmentation import Segmentation
from celseg.errors import CelsegError, DataError

ImageLike = str | Path | Image.Image | np.ndarray


class Model:
    """A segmenter for any vocabulary: a trained run, an exported model, or a VLM alone.

    Built by :func:`load`. ``predictor`` is the inference object underneath
    (``celseg.engine.predictor.Predictor``, or ``TrainingFreeSegmenter`` for a VLM alone);
    ``protocol`` names the path that produces the labels ("ensemble", "segmenter",
    "training-free").
    """

    def __init__(self, predictor: Any, source: str) -> None:
        self.predictor = predictor
        self.source = source

    @property
    def protocol(self) -> str:
        return str(self.predictor.protocol)

    def __repr__(self) -> str:
        return f"celseg.Model({self.source!r}, protocol={self.protocol!r})"

    def segment(self, images: ImageLike | Sequence[ImageLike],
                class_names: Sequence[str] | str, *, probs: bool = False,
                max_size: int = 0) -> Segmentation | list[Segmentation]:
        """Label every pixel with one of ``class_names``.

        Args:
            images: a file path, a PIL image or an (H, W, 3) array; or a list of them (then a
                list of results comes back).
            class_names: the vocabulary, a list or a comma-separated string.
            probs: also return the (C, H, W) class probabilities.
            max_size: shrink images whose longer side exceeds this many pixels (0: keep).
        """
        from celseg.engine.predictor import parse_class_names

        names = parse_class_names(class_names if isinstance(class_names, str)
                                  else ",".join(_names(class_names)))
        if max_size < 0:
            raise DataError(f"max_size must be 0 (keep) or positive, got {max_size}")
        if isinstance(images, (list, tuple)):
            return [self._one(image, names, probs, max_size) for image in images]
        return self._one(images, names, probs, max_size)

    def _one(self, image: ImageLike, names: list[str], want_probs: bool,
             max_size: int) -> Segmentation:
        rgb = to_rgb(image, max_size)
        source = str(image) if isinstance(image, (str, Path)) else None
        if want_probs:  # one forward for both; the labels' calibration works on a copy
            probs = self.predictor.probs(rgb, names)
            labels = self.predictor.labels(probs.clone(), names)
            p = probs.float().cpu().numpy()
        else:
            labels, p = self.predictor.segment(rgb, names), None
        return Segmentation(rgb, labels, tuple(names), p,
                            Path(source).stem if source else "segmentation", source)


def _names(names: Sequence[str]) -> list[str]:
    bad = [n for n in names if not isinstance(n, str) or "," in n]
    if bad:
        raise DataError(f"class names must be strings without commas, got {bad[:3]!r}")
    return list(names)


def load(model: str | Path | None = None, *, vlm: str | None = None, device: str = "auto",
         ensemble: bool = True, compile_backbone: bool | None = None) -> Model:
    """A :class:`Model` from a run folder, a folder written by ``celseg export``, or a Hugging
    Face Hub id; with ``model=None`` and ``vlm`` given, the training-free model of that VLM.

    Args:
        model: a run folder (or its checkpoints/ folder or weights file), an export, a Hub id.
        vlm: a VLM name or folder: with a model, it replaces the run's ``model.vlm``; alone, it
            segments by itself (``celseg.vlm.training_free``).
        device: "cpu", "cuda", "cuda:1" or "auto" (CUDA when available).
        ensemble: with a run, combine it with the VLM's image path when the run does.
        compile_backbone: ``torch.compile`` the backbone (None: as the run says).
    """
    from celseg.engine.distributed import resolve_device

    dev = resolve_device(device)
    if model is None:
        if vlm is None:
            raise CelsegError("celseg.load needs a model (a run folder, an exported model or a "
                              "Hub id) or vlm=... for training-free segmentation")
        from celseg.vlm.loading import load_vlm_cached
        from celseg.vlm.training_free import TrainingFreeSegmenter

        return Model(TrainingFreeSegmenter(load_vlm_cached(vlm).to(dev)), f"vlm:{vlm}")
    from celseg.engine.hub import fetch_model
    from celseg.engine.predictor import Predictor

    predictor = Predictor.from_checkpoint(fetch_model(model), dev, vlm=vlm, ensemble=ensemble,
                                          compile_backbone=compile_backbone)
    return Model(predictor, str(model))
