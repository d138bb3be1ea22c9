"""Shipped class lists against the protocol in REFERENCE.md (hand-copied, independent)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from celseg.data.classes import parse_classes

SPLITS = Path(__file__).resolve().parents[1] / "src" / "celseg" / "data" / "splits"


def load(name: str):
    raw = json.loads((SPLITS / name).read_text())
    return raw, parse_classes(raw, name)


@pytest.mark.parametrize("name,n,n_unseen", [("voc.json", 20, 5), ("coco_stuff.json", 171, 15),
                                             ("context59.json", 59, 10), ("ade150.json", 150, 0)])
def test_sizes(name, n, n_unseen):
    _, info = load(name)
    assert info.num_classes == n and len(info.unseen_ids) == n_unseen
    assert len(set(info.names)) == n


def test_voc_split():
    _, info = load("voc.json")
    assert [info.names[i] for i in info.unseen_ids] == [
        "pottedplant", "sheep", "sofa", "train", "tvmonitor"]
    assert info.names[:3] == ("aeroplane", "bicycle", "bird") and info.names[-1] == "tvmonitor"


def test_coco_stuff_split_and_raw_ids():
    raw, info = load("coco_stuff.json")
    assert info.unseen_ids == [19, 23, 28, 29, 36, 51, 76, 88, 94, 112, 133, 136, 137, 157, 160]
    assert [info.names[i] for i in info.unseen_ids] == [
        "cow", "giraffe", "suitcase", "frisbee", "skateboard", "carrot", "scissors", "cardboard",
        "clouds", "grass", "playingfield", "river", "road", "tree", "wall-concrete"]
    ids = raw["raw_ids"]
    assert len(ids) == 171 and ids == sorted(set(ids)) and ids[0] == 0 and ids[-1] == 181
    assert sorted(set(range(182)) - set(ids)) == [11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90]
    assert info.kinds.count("thing") == 80 and set(info.kinds[80:]) == {"stuff"}


def test_context59_split():
    _, info = load("context59.json")
    assert sorted(info.names[i] for i in info.unseen_ids) == [
        "aeroplane", "bed", "bedclothes", "boat", "bottle", "car", "cloth", "cow", "keyboard",
        "plate"]
