"""The configs that ship inside the package (``celseg/configs``), found wherever celseg is
installed: from a wheel as from the repository (whose ``configs/`` links to them)."""

from __future__ import annotations

from pathlib import Path

import celseg
from celseg.errors import CelsegError

CONFIGS = Path(celseg.__file__).resolve().parent / "configs"


def config_path(name: str) -> Path:
    """The packaged config ``name`` (e.g. "synthetic.yaml" or "paper/voc_base.yaml")."""
    path = CONFIGS / name
    if not path.is_file():
        raise CelsegError(f"config {name} is not among the packaged configs in {CONFIGS}")
    return path
