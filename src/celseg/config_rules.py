"""Value rules of config keys, declared next to each dataclass field.

A field names its rules with :func:`spec`::

    crop_size: int = spec(128, at_least(1))
    setting: str = spec("inductive", one_of("inductive", "transductive", "oracle"))

A rule is a callable ``(value, section) -> str | None`` that returns what is wrong with the
value (``None`` when it is fine); ``section`` is the whole section dataclass, so a rule may
compare with another key (:func:`not_below`). :func:`problems` runs every value rule of a
section; rules that look at the file system (:func:`existing_dir`, :func:`vlm_name`) run only in
:func:`path_problems`, because a run's saved config is read on machines where its data is absent.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

Rule = Callable[[Any, Any], "str | None"]


def spec(default: Any, *rules: Rule) -> Any:
    """A dataclass field with ``default`` whose values must pass every rule in ``rules``."""
    return dataclasses.field(default=default, metadata={"rules": rules})


def _rule(fn: Rule, text: str, checks_paths: bool = False) -> Rule:
    fn.text = text  # type: ignore[attr-defined]  # shown by docs and tests
    fn.checks_paths = checks_paths  # type: ignore[attr-defined]
    return fn


def at_least(low: float) -> Rule:
    return _rule(lambda v, _: None if v >= low else f"must be at least {low}", f">= {low}")


def above(low: float) -> Rule:
    return _rule(lambda v, _: None if v > low else f"must be greater than {low}", f"> {low}")


def between(low: float, high: float) -> Rule:
    return _rule(lambda v, _: None if low <= v <= high else f"must lie in [{low}, {high}]",
                 f"in [{low}, {high}]")


def one_of(*choices: str) -> Rule:
    listed = ", ".join(repr(c) for c in choices)
    return _rule(lambda v, _: None if v in choices else f"must be one of {listed}",
                 f"one of {listed}")


def split_names(value: str) -> list[str]:
    """The names of a comma-separated value, stripped; ``[]`` for an empty one."""
    return [n.strip() for n in value.split(",")] if value.strip() else []


def name_list(*choices: str) -> Rule:
    """A comma-separated list of distinct names out of ``choices``; ``""`` allowed (a default)."""
    listed = ", ".join(repr(c) for c in choices)

    def check(v: str, _: Any) -> str | None:
        names = split_names(v)
        bad = [n for n in names if n not in choices]
        if bad:
            return f"lists {bad[0]!r}, which is not one of {listed}"
        if len(set(names)) < len(names):
            return "lists a name twice"
        return None
    return _rule(check, f"comma-separated, each one of {listed}")


def not_empty() -> Rule:
    return _rule(lambda v, _: None if str(v).strip() else "must not be empty", "not empty")


def not_below(key: str) -> Rule:
    """The value may not be smaller than the section's ``key`` (ordered scales)."""
    def check(v: Any, section: Any) -> str | None:
        other = getattr(section, key)
        return None if v >= other else f"must not be below {key} ({other!r})"
    return _rule(check, f">= {key}")


def not_above(key: str) -> Rule:
    """The value may not exceed the section's ``key`` (a stride within its window)."""
    def check(v: Any, section: Any) -> str | None:
        other = getattr(section, key)
        return None if v <= other else f"must not exceed {key} ({other!r})"
    return _rule(check, f"<= {key}")


def multiple_of(key: str | int) -> Rule:
    """The value must be a multiple of the section's ``key`` (e.g. hidden_dim of nheads), or of
    a number."""
    def check(v: Any, section: Any) -> str | None:
        other = key if isinstance(key, int) else getattr(section, key)
        named = str(key) if isinstance(key, int) else f"{key} ({other})"
        return None if other > 0 and v % other == 0 else f"must be a multiple of {named}"
    return _rule(check, f"multiple of {key}")


def names_at_most(key: str) -> Rule:
    """A comma-separated list of at most as many names as the section's ``key`` says."""
    def check(v: str, section: Any) -> str | None:
        count, other = len(split_names(v)), getattr(section, key)
        return None if count <= other else f"names {count}, more than {key} ({other})"
    return _rule(check, f"at most {key} names")


_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def device_name() -> Rule:
    return _rule(lambda v, _: None if _DEVICE.match(v) else
                 "must be 'auto', 'cpu', 'mps', 'cuda' or 'cuda:N'", "auto|cpu|mps|cuda[:N]")


def existing_dir(marker: str = "", allow_empty: bool = False) -> Rule:
    """A folder that must exist (holding ``marker`` when given); ``""`` allowed if asked."""
    def check(v: str, _: Any) -> str | None:
        if allow_empty and not v:
            return None
        path = Path(v).expanduser()
        if not path.is_dir():
            return "is not an existing folder"
        if marker and not (path / marker).is_file():
            return f"holds no {marker}"
        return None
    return _rule(check, "existing folder", checks_paths=True)


def vlm_name(allow_empty: bool = False) -> Rule:
    """'default', 'minilm', an existing model folder or a hub id 'owner/name'."""
    def check(v: str, _: Any) -> str | None:
        if (allow_empty and not v) or v in ("default", "minilm"):
            return None
        path = Path(v).expanduser()
        if path.is_dir():
            return None
        parts = v.split("/")
        if len(parts) == 2 and all(parts) and not v.startswith((".", "/", "~")):
            return None  # a hub id (or a two-part folder that does not exist: load_vlm says so)
        return ("is neither 'default', 'minilm', an existing model folder nor a hub id "
                "'owner/name'")
    return _rule(check, "VLM name or folder", checks_paths=True)


def _checked(section: Any, paths: bool) -> Iterator[tuple[str, Any, str]]:
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        for rule in f.metadata.get("rules", ()):
            if getattr(rule, "checks_paths", False) != paths:
                continue
            problem = rule(value, section)
            if problem:
                yield f.name, value, problem
                break


def problems(section: Any) -> list[tuple[str, Any, str]]:
    """``(key, value, what is wrong)`` for every key of ``section`` that breaks a value rule."""
    return list(_checked(section, paths=False))


def path_problems(section: Any) -> list[tuple[str, Any, str]]:
    """Like :func:`problems` for the rules that look at the file system."""
    return list(_checked(section, paths=True))


def describe(section_type: type) -> dict[str, list[str]]:
    """``{key: [rule text, ...]}`` of a section dataclass (for docs and tests)."""
    return {f.name: [r.text for r in f.metadata.get("rules", ())]
            for f in dataclasses.fields(section_type)}
