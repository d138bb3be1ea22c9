"""The caption split of the synthetic benchmark (``ROOT/captions``), for VLM pretraining.

``captions.jsonl`` holds one record per line: ``{"image": "images/NAME.png", "caption": str,
"class_ids": [int, ...], "split": "train"|"val"}`` with paths relative to ``ROOT/captions``.
"""

from __future__ import annotations

import json
from pathlib import Path

from celseg.errors import DataError


def read_captions(root: str | Path, split: str | None = None) -> list[dict]:
    """Records of ``ROOT/captions/captions.jsonl`` (all, or one split); errors name the line."""
    path = Path(root) / "captions" / "captions.jsonl"
    if not path.is_file():
        raise DataError(f"caption file not found: {path}")
    records = []
    for n, line in enumerate(read_lines(path), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path} line {n} is not valid JSON: {exc}") from None
        if not isinstance(rec, dict):
            raise DataError(f"{path} line {n} is not a JSON object: {line[:80]!r}")
        missing = {"image", "caption", "class_ids", "split"} - set(rec)
        if missing:
            raise DataError(f"{path} line {n} lacks key(s) {sorted(missing)}")
        if split is None or rec["split"] == split:
            records.append(rec)
    return records


def read_lines(path: Path) -> list[str]:
    """Lines of a UTF-8 text file; unreadable or binary files raise a DataError naming it."""
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not UTF-8 text: {exc}") from None
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None

