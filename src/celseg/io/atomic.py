"""Atomic writes: each file is written under a temporary name beside it, then renamed into place.

A crash, a full disk or a permission error therefore never leaves a half-written file under the
real name, and never harms the file that was there before: the temporary file is removed and an
``OutputError`` names the path and the reason.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from celseg.errors import OutputError


def temp_path(path: Path) -> Path:
    """A hidden temporary name beside ``path``, unique per process."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


@contextmanager
def atomic_paths(*paths: str | Path) -> Iterator[list[Path]]:
    """Yield temporary paths for ``paths``; when the block succeeds, move all of them into place.

    Every file is complete before the first rename, so a failure while writing any of them
    leaves every original untouched. OSErrors (disk full, permission denied) become an
    ``OutputError`` naming the file.
    """
    finals = [Path(p) for p in paths]
    temps = [temp_path(p) for p in finals]
    current = finals[0]
    try:
        for final in finals:
            current = final
            final.parent.mkdir(parents=True, exist_ok=True)
        yield temps
        for tmp, final in zip(temps, finals, strict=True):
            current = final
            os.replace(tmp, final)
    except OSError as exc:
        raise OutputError(f"cannot write {current}: {exc.strerror or exc}; the previous "
                          f"file (if any) is unchanged") from None
    finally:
        for tmp in temps:
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass  # best effort: a leftover temporary name never shadows the real file


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    with atomic_paths(path) as (tmp,):
        tmp.write_text(text)
    return Path(path)


def write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON atomically."""
    return write_text(path, json.dumps(obj, indent=1))


def save_image(image: Any, path: str | Path, **options: Any) -> Path:
    """Save a PIL image atomically; the format follows the suffix of ``path``."""
    from PIL import Image

    path = Path(path)
    fmt = Image.registered_extensions().get(path.suffix.lower(), "PNG")
    with atomic_paths(path) as (tmp,):
        image.save(tmp, format=fmt, **options)
    return path
