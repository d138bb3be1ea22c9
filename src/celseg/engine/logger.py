"""Run logging: one JSON object per line in ``OUT/log.jsonl``, TensorBoard when installed."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from celseg.io.atomic import write_json as _write_json_atomic


class RunLogger:
    """Appends records to a JSONL file; mirrors scalars to TensorBoard if it can be imported.

    Only rank 0 should create one. ``truncate_after`` (on resume) drops records of steps later
    than the checkpoint, which an interrupted run had logged but will now redo.
    """

    def __init__(self, out_dir: str | Path, truncate_after: int | None = None,
                 tensorboard: bool = True) -> None:
        self.path = Path(out_dir) / "log.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if truncate_after is None:
            self.path.write_text("")
        elif self.path.exists():
            kept = [line for line in self.path.read_text().splitlines()
                    if line.strip() and json.loads(line).get("step", 0) <= truncate_after]
            self.path.write_text("".join(line + "\n" for line in kept))
        self._tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package
            except ImportError:
                SummaryWriter = None  # noqa: N806
            if SummaryWriter is not None:
                self._tb = SummaryWriter(str(Path(out_dir) / "tensorboard"))

    def log(self, record: dict[str, Any]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(jsonable(record)) + "\n")
        if self._tb is not None and "step" in record:
            for key, value in _flatten(record).items():
                if key != "step" and isinstance(value, (int, float)) and math.isfinite(value):
                    self._tb.add_scalar(key, value, record["step"])

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def read_log(path: str | Path) -> list[dict[str, Any]]:
    """All records of a ``log.jsonl``."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def _flatten(record: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in record.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}/"))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def jsonable(obj: Any) -> Any:
    """``obj`` with tensors and numpy scalars as numbers, tuples as lists, NaN / inf as None."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if hasattr(obj, "item"):
        return jsonable(obj.item())
    return obj


def write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` (through :func:`jsonable`) as indented JSON, atomically."""
    return _write_json_atomic(path, jsonable(obj))
