"""A split applied to a dataset without copying or regenerating an image.

The view of split ``S`` is a folder whose ``classes.json`` marks ``S``'s classes unseen and whose
other entries (``images/``, ``annotations/``, ``captions/``) are symbolic links to the dataset's
own. Training, evaluation and pseudo labelling read seen / unseen from ``classes.json`` only, so
a run on the view is the run of that split; the images and labels are the dataset's, byte for
byte.
"""

from __future__ import annotations

import os
from pathlib import Path

from celseg.ablation.splits import UnseenSplit
from celseg.data.classes import load_classes
from celseg.errors import CelsegError
from celseg.io.outputs import MANIFEST


def split_root(root: str | Path, split: UnseenSplit, folder: str | Path) -> Path:
    """The dataset root of ``split``: ``root`` itself when ``split`` is its own split, else the
    view ``folder/split.name`` (made or refreshed here)."""
    root = Path(root)
    info = load_classes(root)
    if {info.names[i] for i in info.unseen_ids} == set(split.unseen):
        return root
    view = Path(folder) / split.name
    view.mkdir(parents=True, exist_ok=True)
    for entry in sorted(root.iterdir()):
        if entry.name in ("classes.json", MANIFEST):
            continue
        link = view / entry.name
        if link.exists() and not link.is_symlink():
            raise CelsegError(f"{link} is not a link to the dataset; remove it so the split's "
                              f"view of {root} can be made")
        if link.is_symlink() and Path(os.readlink(link)) != entry.resolve():
            # runs recorded this view as their data.root: never point it at other images
            raise CelsegError(f"{view} is the view of split {split.name} of another dataset "
                              f"({os.readlink(link)}); use another --out for {root}")
        if link.is_symlink():
            continue
        try:
            os.symlink(entry.resolve(), link, target_is_directory=entry.is_dir())
        except OSError as exc:
            raise CelsegError(f"cannot link {link} to {entry} for split {split.name}: "
                              f"{exc.strerror or exc}") from None
    info.with_split(list(split.unseen)).save(view / "classes.json")
    return view
