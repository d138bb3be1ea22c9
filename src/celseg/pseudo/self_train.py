"""Self-training: relabel the training split with a trained segmenter's own predictions.

The rule is the one of ``celseg.pseudo.generate``: on pixels that are 255 in the zero-shot view of
the true training labels, write the segmenter's argmax when it is an unseen class with confidence
>= threshold; seen labels are kept; the rest stays 255. The base is always the original
annotations, never a previous round's pseudo labels.

Confidence is the class probability of the run's inference path (``Predictor.probs_batch``:
the ensemble with the VLM's mask-pooled image features when the VLM sees, else the segmenter
alone), over ALL class names of the dataset, at the image size; ``class_share`` adds
class-balanced thresholds (``celseg.pseudo.generate.class_balanced_thresholds``).
"""

from __future__ import annotations

from pathlib import Path

from torch import Tensor

from celseg.data.classes import load_classes
from celseg.engine.predictor import Predictor
from celseg.pseudo.generate import write_labels


def relabel(predictor: object, data_root: str | Path, out_dir: str | Path,
            threshold: float = 0.5, *, split: str = "train", progress: bool = True,
            max_items: int = 0, class_share: float = 0.0, settings: dict | None = None) -> dict:
    """Write self-training labels for ``split`` with a ``celseg.engine.predictor.Predictor``
    (its inference path: the ensemble when its VLM sees); returns the report dict."""

    names = list(load_classes(data_root).names)

    def score_fn(images: Tensor) -> Tensor:
        return predictor.probs_batch(images, names)

    return write_labels(score_fn, data_root, out_dir, threshold, split, progress, max_items,
                        {"source": "segmenter", "protocol": predictor.protocol,
                         **(settings or {})},
                        desc="self-training", class_share=class_share)


def relabel_from_checkpoint(ckpt: str | Path, data_root: str | Path, out_dir: str | Path,
                            threshold: float = 0.5, *, split: str = "train",
                            device: str = "cpu", cache_dir: str | Path | None = None,
                            progress: bool = True, max_items: int = 0,
                            class_share: float = 0.0, ensemble: bool = True) -> dict:
    """Load a segmenter checkpoint (and the VLM its config names) and relabel."""

    predictor = Predictor.from_checkpoint(ckpt, device, ensemble=ensemble, cache_dir=cache_dir)
    return relabel(predictor, data_root, out_dir, threshold, split=split, progress=progress,
                   max_items=max_items, class_share=class_share,
                   settings={"checkpoint": str(ckpt)})
