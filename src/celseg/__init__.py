"""celseg: zero-shot semantic segmentation with class enhancement losses and pseudo labels.

``celseg.load(...)`` returns a model whose ``segment(image, class_names)`` labels every pixel
(see :mod:`celseg.api`). The API is imported on first use, so ``import celseg`` stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Model", "Segmentation", "__version__", "load"]

if TYPE_CHECKING:
    from celseg.api import Model, Segmentation, load


def __getattr__(name: str) -> Any:
    if name in ("Model", "Segmentation", "load"):
        import celseg.api

        return getattr(celseg.api, name)
    raise AttributeError(f"module 'celseg' has no attribute {name!r}")
