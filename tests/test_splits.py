"""Shipped class lists against the protocol in REFERENCE.md (hand-copied, independent), and the
unseen sets of the split-robust protocol against their rules (properties)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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


# --- the split-robust protocol's unseen sets (celseg.ablation.splits) -------------------------

BENCHMARK_THINGS, BENCHMARK_STUFF = 16, 8  # synthetic_classes.json: 4 and 2 of them unseen


def benchmark():
    from celseg.data.synthetic import class_info

    return class_info()


def _kinds_of(info, names):
    return sorted(info.kinds[info.index(n)] for n in names)


def test_benchmark_sets_keep_the_shipped_split_and_proportions():
    from celseg.ablation.splits import MAX_SPLITS, unseen_sets

    info = benchmark()
    shipped = ("red triangle", "yellow circle", "green star", "blue square", "dry grass",
               "green water")  # hand-copied from synthetic_classes.json
    for seed in range(4):
        sets = unseen_sets(info, MAX_SPLITS, seed)
        assert [s.name for s in sets] == [f"split{i}" for i in range(MAX_SPLITS)]
        assert sets[0].unseen == shipped
        for s in sets:
            assert _kinds_of(info, s.unseen) == ["stuff"] * 2 + ["thing"] * 4
        assert len({frozenset(s.unseen) for s in sets}) == MAX_SPLITS  # all distinct


def test_benchmark_sets_cover_every_class_in_four_splits_and_are_disjoint_before():
    from celseg.ablation.splits import never_unseen, splits_for_coverage, unseen_sets

    info = benchmark()
    assert splits_for_coverage(info) == 4  # max(16 / 4, 8 / 2)
    four = unseen_sets(info, 4)
    assert sorted(n for s in four for n in s.unseen) == sorted(info.names)  # a partition
    assert never_unseen(info, four) == []
    three = unseen_sets(info, 3)
    assert three == four[:3]  # a split does not depend on how many are drawn
    left = never_unseen(info, three)
    assert len(left) == BENCHMARK_THINGS + BENCHMARK_STUFF - 3 * 6
    assert set(left) == set(four[3].unseen)


def test_sets_are_a_pure_function_of_classes_count_and_seed():
    from celseg.ablation.splits import dev_sets, unseen_sets

    info = benchmark()
    assert unseen_sets(info, 8, 3) == unseen_sets(benchmark(), 8, 3)
    assert dev_sets(info, 3, 3) == dev_sets(benchmark(), 3, 3)
    assert unseen_sets(info, 8, 0)[1:] != unseen_sets(info, 8, 1)[1:]


def test_dev_sets_differ_from_every_evaluated_set():
    from celseg.ablation.splits import MAX_SPLITS, dev_sets, unseen_sets

    info = benchmark()
    for seed in range(3):
        evaluated = [set(s.unseen) for s in unseen_sets(info, MAX_SPLITS, seed)]
        dev = dev_sets(info, MAX_SPLITS, seed)
        assert [d.name for d in dev] == [f"dev{j}" for j in range(MAX_SPLITS)]
        assert len({frozenset(d.unseen) for d in dev}) == MAX_SPLITS
        for d in dev:
            assert _kinds_of(info, d.unseen) == ["stuff"] * 2 + ["thing"] * 4
            assert max(len(set(d.unseen) & e) for e in evaluated) <= 3


@pytest.mark.parametrize("k", [0, 9, -1])
def test_the_number_of_splits_is_checked(k):
    from celseg.ablation.splits import dev_sets, unseen_sets
    from celseg.errors import CelsegError

    with pytest.raises(CelsegError, match=f"--splits.*got {k}"):
        unseen_sets(benchmark(), k)
    with pytest.raises(CelsegError, match=f"got {k}"):
        dev_sets(benchmark(), k)


def test_a_dataset_without_unseen_classes_has_no_sets_to_draw():
    from celseg.ablation.splits import unseen_sets
    from celseg.errors import CelsegError

    _, ade = load("ade150.json")
    with pytest.raises(CelsegError, match="no unseen class"):
        unseen_sets(ade, 2)


@settings(max_examples=60, deadline=None)
@given(things=st.integers(1, 12), stuff=st.integers(0, 8), data=st.data())
def test_sets_of_any_class_list_by_property(things, stuff, data):
    """Proportions per kind, split 0 the dataset's own, rounds without replacement (coverage in
    ceil(n / u) splits, disjoint before), for random class lists."""
    from celseg.ablation.splits import MAX_SPLITS, splits_for_coverage, unseen_sets
    from celseg.data.classes import ClassInfo

    u_thing = data.draw(st.integers(1, things))
    u_stuff = data.draw(st.integers(0, stuff))
    kinds = ["thing"] * things + ["stuff"] * stuff
    order = data.draw(st.permutations(range(things)))
    unseen = set(order[:u_thing]) | set(range(things, things + u_stuff))
    info = ClassInfo(tuple(f"c{i}" for i in range(len(kinds))),
                     tuple("unseen" if i in unseen else "seen" for i in range(len(kinds))),
                     tuple(kinds), ((0, 0, 0),) * len(kinds))
    k = data.draw(st.integers(1, MAX_SPLITS))
    sets = unseen_sets(info, k, data.draw(st.integers(0, 5)))
    assert set(sets[0].unseen) == {f"c{i}" for i in unseen}
    for kind, n, u in (("thing", things, u_thing), ("stuff", stuff, u_stuff)):
        per_set = [[c for c in s.unseen if info.kinds[info.index(c)] == kind] for s in sets]
        assert all(len(p) == u for p in per_set)
        rounds = -(-n // u) if u else 0
        first = [c for p in per_set[:min(k, rounds)] for c in p]
        if u and k * u <= n:  # the first k sets of the kind are disjoint
            assert len(first) == len(set(first))
        if u and k >= rounds:  # every class of the kind unseen at least once
            assert {c for p in per_set for c in p} == {info.names[i] for i in range(len(kinds))
                                                     if info.kinds[i] == kind}
    assert splits_for_coverage(info) == max(-(-things // u_thing),
                                            -(-stuff // u_stuff) if u_stuff else 0)
