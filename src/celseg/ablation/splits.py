"""Unseen sets of the split-robust protocol: which classes are unseen, drawn reproducibly.

A different zero-shot problem is a different set of unseen classes, not the same set on images
generated with another seed. The sets are a pure function of the dataset's class list (names,
kinds and its own seen / unseen split), their number and a seed (``SPLIT_SEED`` by default):

**Evaluated splits** (:func:`unseen_sets`, ``celseg ablate --splits K``):

- split 0 is the dataset's own split (its ``classes.json``);
- every split holds as many unseen classes of each kind (thing / stuff) as split 0;
- within a kind the sets are drawn in rounds without replacement: a class is unseen a second
  time only after every class of its kind has been unseen once. So the first ``ceil(n / u)``
  splits of a kind with ``n`` classes and ``u`` unseen ones make each of them unseen once
  (:func:`splits_for_coverage`; 4 on the generated benchmark: 16 things with 4 unseen, 8 stuff
  classes with 2 unseen). With fewer splits the sets are disjoint, and the classes that stay
  seen in all of them are named in the report (:func:`never_unseen`);
- at most ``MAX_SPLITS`` splits.

**Dev splits** (:func:`dev_sets`, ``celseg ablate --dev --splits K``): for choosing defaults.
Each keeps the same number of unseen classes per kind and shares at most half of its unseen
classes with every evaluated split of the same seed (all ``MAX_SPLITS`` of them, so whatever
``--splits`` an evaluation uses); no two dev sets are equal.

Order comes from SHA-256 of ``"seed/kind/round/name"``, not from a random generator whose
stream could change between Python or numpy versions.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from celseg.data.classes import ClassInfo
from celseg.errors import CelsegError

SPLIT_SEED = 0
MAX_SPLITS = 8
DEV_ATTEMPTS = 10_000


@dataclass(frozen=True)
class UnseenSplit:
    name: str  # "split0", "dev1": also the run folder's name
    unseen: tuple[str, ...]  # class names, in the dataset's id order


def _rank(names: list[str], salt: str) -> list[str]:
    """``names`` in the order of the SHA-256 of ``salt/name``."""
    return sorted(names, key=lambda n: hashlib.sha256(f"{salt}/{n}".encode()).hexdigest())


def _kinds(info: ClassInfo) -> dict[str, tuple[list[str], list[str]]]:
    """{kind: (its class names, those unseen in the dataset's own split)} in id order."""
    kinds: dict[str, tuple[list[str], list[str]]] = {}
    for name, kind, split in zip(info.names, info.kinds, info.splits, strict=True):
        names, unseen = kinds.setdefault(kind, ([], []))
        names.append(name)
        if split == "unseen":
            unseen.append(name)
    return kinds


def _kind_sets(names: list[str], shipped: list[str], k: int, salt: str) -> list[list[str]]:
    """``k`` unseen sets of one kind, the first ``shipped``, drawn in rounds without
    replacement (module docstring)."""
    u = len(shipped)
    sets, fresh, round_ = [list(shipped)], [n for n in names if n not in shipped], 0
    for _ in range(1, k):
        take = _rank(fresh, f"{salt}/{round_}")[:u]
        if len(take) < u:  # every class of the kind has been unseen once: a new round
            round_ += 1
            fresh = [n for n in names if n not in take]
            take += _rank(fresh, f"{salt}/{round_}")[:u - len(take)]
        fresh = [n for n in fresh if n not in take]
        sets.append(take)
    return sets


def _in_id_order(info: ClassInfo, names: set[str]) -> tuple[str, ...]:
    return tuple(n for n in info.names if n in names)


def _check(info: ClassInfo, k: int, flag: str) -> None:
    if not 1 <= k <= MAX_SPLITS:
        raise CelsegError(f"{flag} must lie in 1..{MAX_SPLITS}, got {k}")
    if not info.unseen_ids:
        raise CelsegError(f"dataset {info.dataset_name or ''} has no unseen class: its "
                          "classes.json defines no zero-shot split to draw others like")


def unseen_sets(info: ClassInfo, k: int, seed: int = SPLIT_SEED) -> tuple[UnseenSplit, ...]:
    """The ``k`` evaluated splits ``split0`` .. ``split{k-1}`` (module docstring)."""
    _check(info, k, "--splits")
    per_kind = [_kind_sets(names, shipped, k, f"{seed}/{kind}")
                for kind, (names, shipped) in _kinds(info).items()]
    return tuple(UnseenSplit(f"split{i}", _in_id_order(info, {n for s in per_kind for n in s[i]}))
                 for i in range(k))


def dev_sets(info: ClassInfo, k: int, seed: int = SPLIT_SEED) -> tuple[UnseenSplit, ...]:
    """The ``k`` dev splits ``dev0`` .. ``dev{k-1}``: each shares at most half of its unseen
    classes with every one of the ``MAX_SPLITS`` evaluated splits of ``seed``."""
    _check(info, k, "--splits (with --dev)")
    evaluated = [set(s.unseen) for s in unseen_sets(info, MAX_SPLITS, seed)]
    limit = len(evaluated[0]) // 2
    found: list[set[str]] = []
    for attempt in range(DEV_ATTEMPTS):
        if len(found) == k:
            break
        candidate = {n for kind, (names, shipped) in _kinds(info).items()
                     for n in _rank(names, f"{seed}/dev/{attempt}/{kind}")[:len(shipped)]}
        if candidate not in found and all(len(candidate & e) <= limit for e in evaluated):
            found.append(candidate)
    if len(found) < k:
        raise CelsegError(f"found only {len(found)} dev splits sharing at most {limit} unseen "
                          f"classes with every evaluated split; asked for {k}")
    return tuple(UnseenSplit(f"dev{j}", _in_id_order(info, s)) for j, s in enumerate(found))


def splits_for_coverage(info: ClassInfo) -> int:
    """The fewest evaluated splits in which every class of a kind with unseen classes is
    unseen at least once."""
    return max(-(-len(names) // len(shipped))
               for names, shipped in _kinds(info).values() if shipped)


def never_unseen(info: ClassInfo, splits: tuple[UnseenSplit, ...]) -> list[str]:
    """Classes that are seen in every one of ``splits``, in id order."""
    unseen = {n for s in splits for n in s.unseen}
    return [n for n in info.names if n not in unseen]
