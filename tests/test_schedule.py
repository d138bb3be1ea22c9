"""Poly schedule with warmup, optimiser parameter groups, and the training vocabulary."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from celseg.config import TrainConfig
from celseg.data.classes import ClassInfo
from celseg.engine.schedule import build_optimizer, build_scheduler, poly_warmup_factor
from celseg.engine.vocab import eval_vocabulary, training_vocabulary
from celseg.errors import CelsegError


def test_poly_warmup_hand_values() -> None:
    # warmup 4 of 10: 1/4, 2/4, 3/4, 1 then (1 - k/6)^0.9
    got = [poly_warmup_factor(s, 10, 4, 0.9) for s in range(10)]
    want = [0.25, 0.5, 0.75, 1.0] + [(1 - k / 6) ** 0.9 for k in range(6)]
    assert got[:4] == pytest.approx(want[:4])
    assert got[4:] == pytest.approx(want[4:])
    assert poly_warmup_factor(10, 10, 4, 0.9) == 0.0


class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
        self.head = nn.Linear(4, 2)
        self.query = nn.Embedding(3, 4)
        self.scale = nn.Parameter(torch.tensor(1.0))
        self.frozen = nn.Parameter(torch.ones(2), requires_grad=False)


def test_param_groups_lr_and_decay() -> None:
    cfg = TrainConfig(lr=1e-3, backbone_lr_mult=0.1, weight_decay=0.05, warmup_iters=0,
                      iterations=10)
    model = _Tiny()
    opt = build_optimizer(model, cfg)
    by_id = {id(p): g for g in opt.param_groups for p in g["params"]}
    assert by_id[id(model.backbone[0].weight)]["lr"] == pytest.approx(1e-4)
    assert by_id[id(model.backbone[0].weight)]["weight_decay"] == 0.05
    assert by_id[id(model.backbone[1].weight)]["weight_decay"] == 0.0
    assert by_id[id(model.head.weight)]["lr"] == pytest.approx(1e-3)
    assert by_id[id(model.head.bias)]["weight_decay"] == 0.0
    assert by_id[id(model.query.weight)]["weight_decay"] == 0.0
    assert by_id[id(model.scale)]["weight_decay"] == 0.0
    assert id(model.frozen) not in by_id
    n_trainable = sum(1 for p in model.parameters() if p.requires_grad)
    assert len(by_id) == n_trainable


def test_scheduler_follows_factor_and_keeps_multiplier() -> None:
    cfg = TrainConfig(lr=1e-3, backbone_lr_mult=0.1, warmup_iters=3, iterations=12,
                      poly_power=0.9)
    opt = build_optimizer(_Tiny(), cfg)
    sched = build_scheduler(opt, cfg)
    for step in range(12):
        f = poly_warmup_factor(step, 12, 3, 0.9)
        lrs = {g["name"]: g["lr"] for g in opt.param_groups}
        assert lrs["head"] == pytest.approx(1e-3 * f)
        assert lrs["backbone"] == pytest.approx(1e-4 * f)
        opt.step()
        sched.step()
    assert math.isclose(opt.param_groups[0]["lr"], 0.0, abs_tol=1e-12)


def _info() -> ClassInfo:
    names = ("a", "b", "c", "d")
    return ClassInfo(names, ("seen", "unseen", "seen", "unseen"), ("thing",) * 4,
                     ((0, 0, 0),) * 4)


def test_training_vocabulary_settings() -> None:
    info = _info()
    ind = training_vocabulary(info, "inductive")
    assert ind.class_ids == (0, 2) and ind.view == "zero_shot"
    lut = ind.lut()
    assert lut[0] == 0 and lut[2] == 1 and lut[1] == -1 and lut[3] == -1 and lut[255] == -1
    tra = training_vocabulary(info, "transductive")
    assert tra.class_ids == (0, 1, 2, 3) and tra.view == "zero_shot"
    assert training_vocabulary(info, "transductive", label_dir="pl").view == "full"
    ora = training_vocabulary(info, "oracle")
    assert ora.names == ("a", "b", "c", "d") and ora.view == "full"
    assert eval_vocabulary(info, "all") == (0, 1, 2, 3)
    assert eval_vocabulary(info, "seen") == (0, 2)
    with pytest.raises(CelsegError, match="setting"):
        training_vocabulary(info, "semi")
