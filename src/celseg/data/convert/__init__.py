"""Converters from official dataset releases to the project layout (``celseg make-data``).

Each converter is ``convert(src, out, *, variant=None, split_file=None, progress=True) -> dict``
and returns a summary of counts. The table is explicit; nothing registers itself on import.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from celseg.data.convert import ade20k, coco_stuff, context, voc
from celseg.errors import DataError

CONVERTERS: dict[str, Callable[..., dict]] = {
    "voc": voc.convert,
    "coco-stuff": coco_stuff.convert,
    "context": context.convert,
    "ade20k": ade20k.convert,
}



def convert_dataset(name: str, src: Path | None, out: Path, variant: str | None = None,
                    split_file: Path | None = None, progress: bool = True,
                    claim: Callable[[], None] | None = None) -> dict:
    """Run the converter called ``name`` (``celseg make-data NAME --src RAW``); ``claim`` (the
    output guard) runs once the arguments are known to be valid, before anything is written."""
    if name not in CONVERTERS:
        known = ", ".join(["synthetic", *sorted(CONVERTERS)])
        raise DataError(f"unknown dataset {name!r}; known: {known}")
    if src is None:
        raise DataError(f"make-data {name} needs --src, the folder of the raw download")
    if claim is not None:
        claim()
    return CONVERTERS[name](src=src, out=out, variant=variant, split_file=split_file,
                           progress=progress)


__all__ = ["CONVERTERS", "convert_dataset"]
