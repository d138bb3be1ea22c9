"""The ablation's variants, from the peers' baseline to the full method and the oracle.

Each variant is a set of ``--set`` overrides applied on top of the base config, plus two flags:
``pseudo`` trains on the VLM pseudo-label folder (transductive) and ``self_train`` relabels the
training set with the ``+ pseudo labels`` model of the same seed and trains again on that.
"""

from __future__ import annotations

from dataclasses import dataclass

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

VARIANTS: tuple[Variant, ...] = (
    Variant("baseline", "baseline (background embedding)",
            ("model.mode=background_embedding", "loss.pixel_weight=0.0",
             "loss.ranking_weight=0.0", "data.setting=inductive")),
    Variant("bgfree", "background-free", BACKGROUND_FREE + ("loss.ranking_weight=0.0",
                                                            "data.setting=inductive")),
    Variant("ranking", "background-free + ranking", BACKGROUND_FREE + RANKING
            + ("data.setting=inductive",)),
    # the ranked set also holds the unseen NAMES (no unseen labels): the spec's mechanism for
    # "seen-class proposals learn where unseen classes lie"
    # what the auxiliary (earlier decoder layer) losses buy, at the cost of 3 more matchings
    Variant("ranking_noaux", "background-free + ranking, no auxiliary losses",
            BACKGROUND_FREE + RANKING + ("data.setting=inductive", "loss.aux_loss=false")),
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
)


def select(keys: list[str] | None) -> tuple[Variant, ...]:
    """The variants named by ``keys`` (all when None), in table order; unknown keys are errors."""
    if not keys:
        return VARIANTS
    known = {v.key: v for v in VARIANTS}
    unknown = [k for k in keys if k not in known]
    if unknown:

        raise CelsegError(f"unknown ablation variant(s) {unknown}; known: {', '.join(known)}")
    needed = set(keys)
    if "selftrain" in needed:
        needed.add("pseudo")  # self-training starts from the pseudo-label model
    return tuple(v for v in VARIANTS if v.key in needed)
