"""The first generated dataset is frozen: the same seed gives the same images and labels.

The digests below were computed from the code of main at 4135c29, before the second dataset
(``--variant ov``) was added; they hash the decoded pixels (not the PNG bytes, which depend on
the zlib build), so any change to the first world's rendering fails here.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from PIL import Image

from celseg.data.synthetic import generate

DIGESTS = {
    "images": "268b956aca0d672877c33b79dfdf85dd92af14f2dee04549c17040353a830c75",
    "annotations": "92c162a1e7e0c0cdb1d49f8c1621f2d37994b159c2ce75c180b18fa019ab4a27",
    "captions": "69b935cf1230f28a54c00a19a14ffc3bc6de12731a1c24887055e7e299dbf262",
}
CAPTIONS_JSONL = "917c3a8a02f2b5f206393c8c903488c4ce0e6a9a47b5eeabde19d067eb043633"
CLASSES_JSON = "fd0308216629003d8a2c1d560cfdf5c30a77dd22f6d84017732bd69d715fd82d"


def pixel_digest(root: Path, sub: str) -> str:
    """sha256 over (relative path, shape, pixels) of every PNG below ``root/sub``, sorted."""
    h = hashlib.sha256()
    for path in sorted((root / sub).rglob("*.png")):
        arr = np.asarray(Image.open(path))
        h.update(str(path.relative_to(root)).encode())
        h.update(str(arr.shape).encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def test_first_dataset_unchanged_for_same_seed(tmp_path):
    generate(tmp_path, seed=0, n_train=4, n_val=3, size=64, n_captions=10)
    assert {sub: pixel_digest(tmp_path, sub) for sub in DIGESTS} == DIGESTS
    jsonl = (tmp_path / "captions" / "captions.jsonl").read_bytes()
    assert hashlib.sha256(jsonl).hexdigest() == CAPTIONS_JSONL
    assert hashlib.sha256((tmp_path / "classes.json").read_bytes()).hexdigest() == CLASSES_JSON
