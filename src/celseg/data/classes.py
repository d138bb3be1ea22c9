"""Class metadata of a dataset: names in id order, seen/unseen split, thing/stuff kind, palette.

``classes.json`` in a dataset root looks like::

    {"name": "synthetic-shapes", "ignore_index": 255,
     "classes": [{"id": 0, "name": "red circle", "kind": "thing", "split": "seen",
                  "color": [220, 20, 60]}, ...]}

Ids are contiguous from 0. ``split`` is "seen" or "unseen"; ``kind`` is "thing" or "stuff".
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from celseg.errors import DataError


@dataclass(frozen=True)
class ClassInfo:
    names: tuple[str, ...]
    splits: tuple[str, ...]  # "seen" | "unseen" per class
    kinds: tuple[str, ...]  # "thing" | "stuff" per class
    colors: tuple[tuple[int, int, int], ...]
    ignore_index: int = 255
    dataset_name: str = ""

    @property
    def num_classes(self) -> int:
        return len(self.names)

    @property
    def seen_ids(self) -> list[int]:
        return [i for i, s in enumerate(self.splits) if s == "seen"]

    @property
    def unseen_ids(self) -> list[int]:
        return [i for i, s in enumerate(self.splits) if s == "unseen"]

    @property
    def palette(self) -> np.ndarray:
        """(C, 3) uint8 colours in id order."""
        return np.asarray(self.colors, dtype=np.uint8).reshape(-1, 3)

    def index(self, name: str) -> int:
        """Id of a class name; an unknown name is an error that lists the known ones."""
        try:
            return self.names.index(name)
        except ValueError:
            raise DataError(
                f"unknown class name {name!r}; known names: {', '.join(self.names)}"
            ) from None

    def with_split(self, unseen_names: list[str]) -> ClassInfo:
        """A copy whose unseen classes are exactly ``unseen_names`` (a user-defined split)."""
        ids = {self.index(n) for n in unseen_names}
        splits = tuple("unseen" if i in ids else "seen" for i in range(self.num_classes))
        return ClassInfo(self.names, splits, self.kinds, self.colors, self.ignore_index,
                         self.dataset_name)

    def to_json(self) -> dict:
        return {
            "name": self.dataset_name,
            "ignore_index": self.ignore_index,
            "classes": [
                {"id": i, "name": n, "kind": k, "split": s, "color": list(c)}
                for i, (n, k, s, c) in enumerate(
                    zip(self.names, self.kinds, self.splits, self.colors, strict=True)
                )
            ],
        }

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=1))
        tmp.replace(path)


def default_color(i: int) -> tuple[int, int, int]:
    """A deterministic, well-spread colour for class ``i`` (golden-ratio hue walk)."""
    import colorsys

    h = (i * 0.618033988749895) % 1.0
    s = 0.65 + 0.3 * ((i * 7) % 3) / 2
    v = 0.95 - 0.25 * ((i * 5) % 2)
    r, g, b = colorsys.hsv_to_rgb(h, min(s, 1.0), v)
    return int(r * 255), int(g * 255), int(b * 255)


def parse_classes(raw: dict, source: str = "classes.json") -> ClassInfo:
    if not isinstance(raw, dict) or "classes" not in raw:
        raise DataError(f"{source}: expected an object with a 'classes' list")
    entries = raw["classes"]
    if not isinstance(entries, list):
        raise DataError(f"{source}: 'classes' must be a list, got {type(entries).__name__}")
    names, splits, kinds, colors = [], [], [], []
    for pos, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise DataError(f"{source}: class entry {pos} must be an object, got {entry!r}")
        if entry.get("id", pos) != pos:
            raise DataError(f"{source}: class ids must be contiguous from 0; entry {pos} has id "
                            f"{entry.get('id')!r}")
        if "name" not in entry:
            raise DataError(f"{source}: class entry {pos} has no 'name'")
        split = entry.get("split", "seen")
        if split not in ("seen", "unseen"):
            raise DataError(f"{source}: class {entry['name']!r} has split {split!r}; "
                            "expected 'seen' or 'unseen'")
        kind = entry.get("kind", "thing")
        if kind not in ("thing", "stuff"):
            raise DataError(f"{source}: class {entry['name']!r} has kind {kind!r}; "
                            "expected 'thing' or 'stuff'")
        names.append(str(entry["name"]))
        splits.append(split)
        kinds.append(kind)
        colors.append(_color(entry.get("color", default_color(pos)), entry["name"], source))
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise DataError(f"{source}: duplicate class names {dup}")
    ignore = raw.get("ignore_index", 255)
    if not isinstance(ignore, int) or isinstance(ignore, bool) or not 0 <= ignore <= 65535:
        raise DataError(f"{source}: ignore_index must be an integer in 0..65535, got {ignore!r}")
    return ClassInfo(tuple(names), tuple(splits), tuple(kinds), tuple(colors), ignore,
                     str(raw.get("name", "")))


def _color(value: object, name: str, source: str) -> tuple[int, int, int]:
    ok = isinstance(value, (list, tuple)) and len(value) == 3 and all(
        isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 255 for c in value)
    if not ok:
        raise DataError(f"{source}: class {name!r} has color {value!r}; expected three "
                        "integers in 0..255")
    return tuple(value)  # type: ignore[return-value]


def read_json_file(path: str | Path, what: str) -> object:
    """Parse a JSON file; a missing or malformed file is a DataError naming ``what`` and path."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{what} not found: {path}")
    try:
        return json.loads(path.read_text())
    except ValueError as exc:  # JSONDecodeError, or bytes that are not UTF-8 text
        raise DataError(f"{what} {path} is not valid JSON: {exc}") from None
    except OSError as exc:
        raise DataError(f"cannot read {what} {path}: {exc.strerror or exc}") from None


def load_classes(root_or_file: str | Path) -> ClassInfo:
    """Read ``classes.json`` from a dataset root (or the file itself)."""
    path = Path(root_or_file)
    if path.is_dir():
        path = path / "classes.json"
    return parse_classes(read_json_file(path, "class file"), str(path))
