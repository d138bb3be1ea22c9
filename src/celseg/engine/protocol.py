"""Build the inference path (``celseg.models.inference.SemanticInference``) of a run.

Which protocol a result used is decided here, once: ``ensemble`` when ``eval.ensemble`` is on
and the run's VLM has an image tower (or the segmenter shares it), ``vlm`` when
alpha = beta = 1, else ``segmenter``; ``eval.two_stage`` selects zsseg's masked crops.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from celseg.config import EvalConfig
from celseg.errors import CelsegError
from celseg.models.inference import OOVBranch, SemanticInference, class_weights
from celseg.models.two_stage import crop_ensemble
from celseg.vlm.cache import text_embeddings
from celseg.vlm.loading import has_image_tower, load_vlm_cached


def resolve_vlm(vlm: Any, device: torch.device | str) -> Any:
    """A loaded VisionLanguageModel, or a name / folder loaded (memoised) and moved to device."""
    if isinstance(vlm, str):

        vlm = load_vlm_cached(vlm)
    return vlm.to(device) if vlm is not None else None


def ensemble_positions(vocab_names: list[str], labelled_names: list[str],
                       pseudo_names: list[str], pseudo_weight: str) -> list[int]:
    """Vocabulary positions weighted by alpha: names with ground truth in training, plus the
    pseudo-labelled ones when ``eval.ensemble_pseudo == "alpha"``."""
    if pseudo_weight not in ("alpha", "beta"):
        raise CelsegError(f"eval.ensemble_pseudo={pseudo_weight!r}; expected 'alpha' or 'beta'")
    alpha_names = set(labelled_names) | (set(pseudo_names) if pseudo_weight == "alpha" else set())
    return [i for i, n in enumerate(vocab_names) if n in alpha_names]


def choose_protocol(eval_cfg: EvalConfig, sees: bool) -> str:
    if eval_cfg.two_stage:
        return "two_stage"
    if not (eval_cfg.ensemble and sees):
        return "segmenter"
    if eval_cfg.ensemble_alpha == 1.0 and eval_cfg.ensemble_beta == 1.0:
        return "vlm"
    return "ensemble"


def build_inference(model: nn.Module, eval_cfg: EvalConfig, vocab_names: list[str],
                    labelled_names: list[str], pseudo_names: list[str], vlm: Any,
                    device: torch.device | str, seen_positions: list[int] | None = None,
                    unseen_positions: list[int] | None = None) -> SemanticInference:
    """The inference path of ``model`` for ``vocab_names``.

    vlm: the image-path VLM (a VisionLanguageModel, a name / folder, or None); its text
    embeddings of ``vocab_names`` feed the out-of-vocabulary classifier. ``labelled_names`` /
    ``pseudo_names``: names with ground-truth / only pseudo labels in the run's training data.
    ``seen_positions`` take the seen-class calibration; ``unseen_positions`` the two-stage weights
    (default: positions not in ``labelled_names``).
    """

    shared = bool(getattr(model, "vlm_tower_is_shared", False))
    vlm = resolve_vlm(vlm or None, device)
    sees = shared or has_image_tower(vlm)
    protocol = choose_protocol(eval_cfg, sees)
    has_bg = bool(getattr(model, "has_background", False))
    oov = two_stage = None
    if protocol in ("ensemble", "vlm", "two_stage") and not sees:
        raise CelsegError(f"protocol {protocol!r} needs a VLM with an image tower; "
                          f"{getattr(vlm, 'name', vlm)!r} has none")
    if protocol != "segmenter" and vlm is None:
        raise CelsegError(f"protocol {protocol!r} needs the VLM for its text embeddings "
                          "(pass the run's model.vlm)")
    text_emb = None
    if vlm is not None and sees:
        with torch.no_grad():
            text_emb = text_embeddings(vlm, list(vocab_names)).float().to(device)
    if protocol in ("ensemble", "vlm") or (sees and eval_cfg.ensemble):
        alpha_pos = ensemble_positions(vocab_names, labelled_names, pseudo_names,
                                       eval_cfg.ensemble_pseudo)
        weight = class_weights(len(vocab_names), alpha_pos, eval_cfg.ensemble_alpha,
                               eval_cfg.ensemble_beta).to(device)
        oov = OOVBranch(None if shared else vlm, text_emb, weight, eval_cfg.pooling,
                        eval_cfg.oov_logit_scale, eval_cfg.ensemble_renorm,
                        eval_cfg.dense_input_scale, eval_cfg.ensemble_pixel_weight)
    if protocol == "two_stage":
        if unseen_positions is None:
            unseen_positions = [i for i, n in enumerate(vocab_names) if n not in labelled_names]
        two_stage = CropClassifier(vlm, text_emb, unseen_positions, eval_cfg)
    return SemanticInference(has_bg, protocol, oov, two_stage, seen_positions,
                             eval_cfg.seen_calibration, eval_cfg.segmenter_calibration)


class CropClassifier:
    """zsseg's masked-crop classifier as a protocol: ``(outputs, images01, p_in) -> (B,Q,V)``."""

    def __init__(self, vlm: Any, text_emb: torch.Tensor, unseen_positions: list[int],
                 eval_cfg: EvalConfig) -> None:
        self.vlm, self.text_emb, self.cfg = vlm, text_emb, eval_cfg
        self.unseen = torch.zeros(text_emb.shape[0], dtype=torch.bool)
        if unseen_positions:
            self.unseen[torch.as_tensor(unseen_positions, dtype=torch.long)] = True

    def __call__(self, outputs: dict, images01: torch.Tensor, p_in: torch.Tensor
                 ) -> torch.Tensor:
        return crop_ensemble(p_in, images01, outputs["pred_masks"], self.vlm, self.text_emb,
                             self.unseen, self.cfg.clip_weight_seen,
                             self.cfg.clip_weight_unseen, self.cfg.two_stage_crop_size)
