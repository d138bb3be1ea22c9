"""The Python API: :func:`load` a model, :meth:`Model.segment` images, use the
:class:`Segmentation` (labels, shares, overlay, save)."""

from celseg.api.model import Model, load
from celseg.api.segmentation import Segmentation

__all__ = ["Model", "Segmentation", "load"]
