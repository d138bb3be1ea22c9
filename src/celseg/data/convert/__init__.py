"""Converters from official dataset releases to the project layout (``celseg make-data``).

Each converter is ``convert(src, out, *, variant=None, split_file=None, progress=True) -> dict``
and returns a summary of counts. The table is explicit; nothing registers itself on import.
"""

from __future__ import annotations

from collections.abc import Callable

from celseg.data.convert import ade20k, coco_stuff, context, voc

CONVERTERS: dict[str, Callable[..., dict]] = {
    "voc": voc.convert,
    "coco-stuff": coco_stuff.convert,
    "context": context.convert,
    "ade20k": ade20k.convert,
}

__all__ = ["CONVERTERS"]
