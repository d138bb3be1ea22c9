"""Helpers shared by the page's tests (test_serve.py, test_browser.py): a tiny trained run and
the generated image whose largest object it must find."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
from PIL import Image
from test_engine import TINY

# Enough steps for the tiny model to pick out the background "stuff" class of a training image
# among that image's own classes (about 20 s on 2 CPU cores).
LEARNED = ["train.iterations=150", "train.batch_size=4", "train.lr=0.002", "train.log_every=10",
           "train.warmup_iters=2", "train.ckpt_every=0", "data.max_val=2"]


def free_port() -> int:
    """A TCP port of 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_tiny_run(root: Path, out: Path, iterations: int | None = None) -> Path:
    """A run folder with a checkpoint trained on the generated benchmark at ``root``.

    One torch thread: on a machine whose cores are busy with other jobs, two threads spin
    against each other and the same steps take ten times as long."""
    import torch

    from celseg.config import load_config
    from celseg.engine.trainer import train

    extra = [f"train.iterations={iterations}"] if iterations else []
    cfg = load_config(None, [*TINY, *LEARNED, *extra, f"data.root={root}",
                             f"train.out_dir={out}"])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(cfg, progress=False)
    finally:
        torch.set_num_threads(threads)
    return out


def largest_object_image(root: Path) -> tuple[Path, list[str], str]:
    """The training image whose largest ground-truth region (a seen class) covers the most of
    it: (image path, the names of its classes in dataset order, the largest one's name)."""
    from celseg.data.classes import load_classes

    info = load_classes(root)
    best = None
    for path in sorted((root / "images" / "train").glob("*.png")):
        gt = np.asarray(Image.open(root / "annotations" / "train" / path.name))
        ids, counts = np.unique(gt[gt != info.ignore_index], return_counts=True)
        top = int(ids[np.argmax(counts)])
        share = counts.max() / gt.size
        if top in info.seen_ids and (best is None or share > best[0]):
            best = (share, path, [info.names[i] for i in ids], info.names[top])
    assert best is not None, f"no training image of {root} has a seen class as its largest"
    return best[1], best[2], best[3]
