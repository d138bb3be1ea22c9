"""Seen-class calibration of the segmenter-alone protocol (``eval.segmenter_calibration``):
subtracted from seen columns under ``segmenter`` only, on top of ``eval.seen_calibration``."""

import math

import pytest
import torch

from celseg.config import EvalConfig
from celseg.engine.protocol import build_inference
from celseg.models.inference import OOVBranch, SemanticInference


def _outputs():
    # one query, vocabulary (seen "a", unseen "b"): p_in = (0.55, 0.45); its mask covers the
    # only pixel; the VLM's dense feature there is text "b"'s embedding
    logits = torch.tensor([[[math.log(0.55), math.log(0.45)]]])
    return {"pred_logits": logits, "pred_masks": torch.full((1, 1, 1, 1), 20.0),
            "vlm_dense": torch.tensor([0.0, 1.0]).view(1, 2, 1, 1)}


def _path(calibration, segmenter_calibration):
    oov = OOVBranch(None, torch.eye(2), torch.tensor([0.4, 0.8]), pooling="binary")
    return SemanticInference(False, "ensemble", oov, seen_positions=[0],
                             calibration=calibration,
                             segmenter_calibration=segmenter_calibration)


def test_segmenter_alone_is_calibrated_and_the_ensemble_is_not():
    # segmenter: 0.55 - 0.05 = 0.50 > 0.45 -> "a"; 0.55 - 0.05 - 0.10 = 0.40 < 0.45 -> "b"
    plain = _path(0.05, 0.0).labels(_outputs(), None, (1, 1), ("segmenter", "ensemble"))
    calibrated = _path(0.05, 0.10).labels(_outputs(), None, (1, 1), ("segmenter", "ensemble"))
    assert plain["segmenter"].item() == 0 and calibrated["segmenter"].item() == 1
    assert torch.equal(plain["ensemble"], calibrated["ensemble"])


def test_the_paths_own_calibration_and_the_config_key():
    path = _path(0.05, 0.10)
    assert path.calibration == pytest.approx(0.05)  # its protocol is the ensemble
    assert path.calibration_for("segmenter") == pytest.approx(0.15)
    alone = build_inference(torch.nn.Module(), EvalConfig(ensemble=False,
                                                          segmenter_calibration=0.2),
                            ["a", "b"], ["a"], [], None, "cpu", seen_positions=[0])
    assert alone.protocol == "segmenter" and alone.calibration == pytest.approx(0.2)
