"""The ablation's variants, from the peers' baseline to the full method and the oracle.

Each variant is a set of ``--set`` overrides applied on top of the base config, plus two flags:
``pseudo`` trains on the VLM pseudo-label folder (transductive) and ``self_train`` relabels the
training set with the ``+ pseudo labels`` model of the same seed and trains again on that.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

from celseg.config import RENAMED_VARIANTS, RenamedValueWarning
from celseg.errors import CelsegError


@dataclass(frozen=True)
class Variant:
    key: str  # folder name
    title: str  # row label in the results table
    overrides: tuple[str, ...]
    pseudo: bool = False
    self_train: bool = False


BACKGROUND_FREE = ("model.mode=background_free", "loss.pixel_weight=1.0")
RANKING = ("loss.ranking_weight=1.0",)
DISTILL = ("loss.distill_weight=2.0",)
SHARED1 = ("model.backbone=vlm", "model.vlm_input_scale=1.0")

VARIANTS: tuple[Variant, ...] = (
    Variant("baseline", "baseline (background embedding)",
            ("model.mode=background_embedding", "loss.pixel_weight=0.0",
             "loss.ranking_weight=0.0", "data.setting=inductive")),
    Variant("background_free", "background-free",
            BACKGROUND_FREE + ("loss.ranking_weight=0.0", "data.setting=inductive")),
    Variant("ranking", "background-free + ranking", BACKGROUND_FREE + RANKING
            + ("data.setting=inductive",)),
    # what the auxiliary (earlier decoder layer) losses buy, at the cost of more matchings
    Variant("ranking_noaux", "background-free + ranking, no auxiliary losses",
            BACKGROUND_FREE + RANKING + ("data.setting=inductive", "loss.aux_loss=false")),
    # the ranked set also holds the unseen NAMES (no unseen labels): the spec's mechanism for
    # "seen-class proposals learn where unseen classes lie"
    Variant("ranking_all", "background-free + ranking over all names", BACKGROUND_FREE + RANKING
            + ("data.setting=inductive", "loss.ranking_include_unseen=true")),
    Variant("pseudo", "+ pseudo labels", BACKGROUND_FREE + RANKING
            + ("data.setting=transductive",), pseudo=True),
    Variant("selftrain", "+ self-training", BACKGROUND_FREE + RANKING
            + ("data.setting=transductive",), pseudo=True, self_train=True),
    Variant("oracle", "oracle (all labels, upper bound)", BACKGROUND_FREE + RANKING
            + ("data.setting=oracle",)),
    # FC-CLIP's design: the VLM's own image tower, frozen, is the backbone and feeds the
    # out-of-vocabulary branch from the same pass (input x2 for the VLM's 8x8 dense map)
    Variant("ranking_shared", "background-free + ranking, shared frozen VLM backbone",
            BACKGROUND_FREE + RANKING + ("data.setting=inductive", "model.backbone=vlm",
                                         "model.vlm_input_scale=2.0")),
    # the same tower at its own input size: one pass of the trunk the ImageNet backbone costs,
    # the dense map at stride 32
    Variant("ranking_shared1", "background-free + ranking, shared frozen VLM backbone, input x1",
            BACKGROUND_FREE + RANKING + ("data.setting=inductive", "model.backbone=vlm",
                                         "model.vlm_input_scale=1.0")),
    # ViLD / OpenSeg: every proposal's class embedding distilled towards the VLM's mask-pooled
    # image embedding of its mask, so that the segmenter's embeddings live in the VLM's space
    Variant("ranking_distill", "background-free + ranking + distillation",
            BACKGROUND_FREE + RANKING + DISTILL + ("data.setting=inductive",)),
    Variant("shared1_distill", "background-free + ranking + distillation, shared VLM backbone x1",
            BACKGROUND_FREE + RANKING + DISTILL + SHARED1 + ("data.setting=inductive",)),
    # the ranking's target order also from the VLM's image-text space (losses/ranking.py); with
    # a separate backbone the trainer runs the VLM's image tower on every batch
    Variant("ranking_both", "background-free + image-text ranking",
            BACKGROUND_FREE + RANKING + ("data.setting=inductive", "loss.ranking_target=both")),
    Variant("shared1_distill_both", "background-free + image-text ranking + distillation, "
            "shared VLM backbone x1", BACKGROUND_FREE + RANKING + DISTILL + SHARED1
            + ("data.setting=inductive", "loss.ranking_target=both",
               # its own segmenter-alone calibration, chosen on the dev splits
               "eval.segmenter_calibration=0.1")),
)


def select(keys: list[str] | None) -> tuple[Variant, ...]:
    """The variants named by ``keys`` (all when None), in table order; an old name (the alias
    table ``RENAMED_VARIANTS``) is read as the new one with a warning; unknown keys are errors."""
    if not keys:
        return VARIANTS
    known = {v.key: v for v in VARIANTS}
    names = {k: current_name(k) for k in keys}
    needed = set(names.values())
    unknown = [k for k, name in names.items() if name not in known]
    if unknown:
        raise CelsegError(f"unknown ablation variant(s) {unknown}; known: {', '.join(known)}")
    if "selftrain" in needed:
        needed.add("pseudo")  # self-training starts from the pseudo-label model
    return tuple(v for v in VARIANTS if v.key in needed)


def current_name(key: str) -> str:
    """``key``, or the variant an old name of it (``RENAMED_VARIANTS``) stands for (warned)."""
    new = RENAMED_VARIANTS.get(key)
    if new is None:
        return key
    warnings.warn(f"variant {key!r} is now called {new!r} (read as {new!r})",
                  RenamedValueWarning, stacklevel=3)
    return new


def old_names(key: str) -> list[str]:
    """The earlier names of variant ``key`` (its run folders written before the rename)."""
    return [old for old, new in RENAMED_VARIANTS.items() if new == key]
