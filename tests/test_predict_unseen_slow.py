"""End to end: ``celseg predict`` on a freshly generated image labels an object whose class name
had no label in training, through the default ensemble path (slow: trains a real model).

Set ``CELSEG_E2E_RUN`` to an existing run folder of the inductive background-free + ranking
model (e.g. ``runs/ablation/ranking/split0/seed0``) to skip the ~7 minutes of data, VLM and
training.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def inductive_run(tmp_path_factory) -> Path:
    given = os.environ.get("CELSEG_E2E_RUN")
    if given:
        return Path(given)
    from celseg.ablation.demo import config_path, make_data, pretrain_vlm
    from celseg.config import load_config
    from celseg.engine.trainer import train

    out = tmp_path_factory.mktemp("e2e")
    data, data_ov = make_data(out, 0, False)
    vlm = pretrain_vlm(out, (data, data_ov), False)
    cfg = load_config(config_path("synthetic_ranking.yaml"),
                      [f"data.root={data}", f"train.out_dir={out / 'run'}", f"model.vlm={vlm}"])
    train(cfg, progress=False)
    return out / "run"


def _images_with_a_large_unseen_object(n: int = 4, min_pixels: int = 900):
    """Generated images (a seed never used for training) whose largest object is unseen."""
    from celseg.data.synthetic import class_info, render_segmentation

    info = class_info()
    found = []
    for index in range(400):
        image, label = render_segmentation(91, "val", index, 128)
        ids, counts = np.unique(label, return_counts=True)
        things = [(c, i) for i, c in zip(ids, counts, strict=True)
                  if i != 255 and info.kinds[i] == "thing"]
        if not things:
            continue
        count, cid = max(things)
        if info.splits[cid] == "unseen" and count >= min_pixels:
            found.append((image, label, int(cid)))
        if len(found) == n:
            break
    return info, found


def test_predict_labels_unseen_objects(inductive_run, tmp_path):
    from celseg.cli import main

    info, samples = _images_with_a_large_unseen_object()
    assert len(samples) >= 3
    paths = []
    for k, (image, _, _) in enumerate(samples):
        paths.append(tmp_path / f"img{k}.png")
        Image.fromarray(image).save(paths[-1])
    out = tmp_path / "pred"
    names = ",".join(info.names)
    assert main(["predict", "--ckpt", str(inductive_run), "--classes", names,
                 *map(str, paths), "--out", str(out)]) == 0
    hits = 0
    for k, (_, label, cid) in enumerate(samples):
        pred = np.asarray(Image.open(out / f"img{k}.png"))
        assert pred.shape == label.shape
        hits += (pred[label == cid] == cid).mean() > 0.5
    # the object's own (never labelled) name wins on most of its pixels in most images
    assert hits >= len(samples) - 1, hits
