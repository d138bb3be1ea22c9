"""Every reader maps its library's exceptions to a CelsegError naming the file and the problem:
images, labels, checkpoints (weights and side state), configs, class / split JSON, VLM folders and
caption files."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from bad_input_tools import png_header
from PIL import Image
from torch import nn

from celseg.errors import CelsegError, DataError, ModelLoadError


def _png(path, shape=(16, 16, 3), mode=None):
    Image.fromarray(np.zeros(shape, np.uint8), mode=mode).save(path)
    return path


# ------------------------------------------------------------------------------------- images
@pytest.mark.parametrize("make, named", [
    (lambda p: p.write_bytes(b""), "cannot read image"),
    (lambda p: p.write_bytes(b"GIF89a but not really"), "cannot read image"),
    (lambda p: p.write_bytes(_png(p, (64, 64, 3)).read_bytes()[:60]), "cannot read image"),
    (lambda p: p.mkdir(), "is a folder"),
    (lambda p: None, "not found"),
])
def test_image_reader_names_the_file(tmp_path, make, named):
    from celseg.data.dataset import read_image

    path = tmp_path / "img.png"
    make(path)
    with pytest.raises(DataError, match=named) as exc:
        read_image(path)
    assert str(path) in str(exc.value)


def test_decompression_bomb_guard_and_raising_the_limit(tmp_path, monkeypatch):
    from celseg.io.images import image_size, open_image

    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_header(50_000, 50_000))
    with pytest.raises(DataError, match=r"50000x50000.*CELSEG_MAX_IMAGE_PIXELS"):
        image_size(bomb)
    small = _png(tmp_path / "small.png", (40, 50, 3))
    monkeypatch.setenv("CELSEG_MAX_IMAGE_PIXELS", "1000")
    with pytest.raises(DataError, match="50x40"):
        open_image(small)
    monkeypatch.setenv("CELSEG_MAX_IMAGE_PIXELS", "3000000000")  # raised on purpose
    assert image_size(bomb) == (50_000, 50_000)
    monkeypatch.setenv("CELSEG_MAX_IMAGE_PIXELS", "lots")
    with pytest.raises(DataError, match="CELSEG_MAX_IMAGE_PIXELS"):
        open_image(small)
    monkeypatch.setenv("CELSEG_MAX_IMAGE_PIXELS", "0")  # no limit
    assert open_image(small).size == (50, 40)
    assert Image.MAX_IMAGE_PIXELS is not None  # PIL's own guard is left as it was


def test_label_reader_refuses_colour_and_damage(tmp_path):
    from celseg.data.dataset import read_label

    with pytest.raises(DataError, match=r"mode 'RGB'"):
        read_label(_png(tmp_path / "rgb.png"))
    (tmp_path / "cut.png").write_bytes(_png(tmp_path / "l.png", (64, 64), "L").read_bytes()[:50])
    with pytest.raises(DataError, match=r"cannot read label .*cut.png"):
        read_label(tmp_path / "cut.png")


# -------------------------------------------------------------------------------- checkpoints
def _saved(tmp_path):
    from celseg.engine import checkpoint as ckpt

    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    ckpt.save_checkpoint(tmp_path, model, {"step": 3}, {"step": "3"})
    return model, ckpt.checkpoint_paths(tmp_path)


def test_damaged_weights_and_state_are_named(tmp_path):
    from celseg.engine import checkpoint as ckpt

    model, (weights, state) = _saved(tmp_path)
    weights.write_bytes(weights.read_bytes()[:40])
    with pytest.raises(ModelLoadError, match="damaged") as exc:
        ckpt.load_weights(model, weights)
    assert str(weights) in str(exc.value)
    with pytest.raises(ModelLoadError, match=str(weights)):
        ckpt.read_metadata(weights)
    state.write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(ModelLoadError, match=rf"{state}.*damaged"):
        ckpt.load_state(tmp_path)
    torch.save([1, 2], state)
    with pytest.raises(ModelLoadError, match="'step'"):
        ckpt.load_state(tmp_path)


def test_weights_and_state_of_different_steps_are_refused(tmp_path):
    from celseg.engine import checkpoint as ckpt

    model, (_, state) = _saved(tmp_path)
    torch.save({"step": 5}, state)  # the side state of a later checkpoint
    with pytest.raises(ModelLoadError, match=r"step 3.*step 5"):
        ckpt.load_state(tmp_path)


# -------------------------------------------------------------------------- config and JSON
def test_yaml_reader(tmp_path):
    from celseg.config import ConfigError, load_config

    (tmp_path / "bin.yaml").write_bytes(b"\x00\x9f\x92\x96")
    with pytest.raises(ConfigError, match=r"bin.yaml.*YAML"):
        load_config(tmp_path / "bin.yaml")
    (tmp_path / "dir.yaml").mkdir()
    with pytest.raises(ConfigError, match="dir.yaml"):
        load_config(tmp_path / "dir.yaml")


@pytest.mark.parametrize("content, named", [
    (b"\xff\xfe binary", "not valid JSON"),
    (b"", "not valid JSON"),
    (b'{"classes": [{"name": "a", "split": "maybe"}]}', "'maybe'"),
    (b'{"classes": [{"name": "a", "color": "red"}]}', "'red'"),
    (b'{"classes": [{"name": "a"}], "ignore_index": -1}', "ignore_index"),
])
def test_class_file_reader(tmp_path, content, named):
    from celseg.data.classes import load_classes

    (tmp_path / "classes.json").write_bytes(content)
    with pytest.raises(DataError, match=named) as exc:
        load_classes(tmp_path)
    assert "classes.json" in str(exc.value)


def test_split_file_reader(tmp_path):
    from celseg.data.convert.common import read_split_file

    (tmp_path / "split.json").write_bytes(b"\x89PNG\r\n")
    with pytest.raises(DataError, match=r"split.json.*JSON"):
        read_split_file(tmp_path / "split.json")


# ------------------------------------------------------------------------ VLMs and captions
@pytest.mark.parametrize("meta, weights, named", [
    (b"{not json", b"", "cannot read the model"),
    (b"[1, 2]", None, "unknown model type"),
    (b'{"type": "lit"}', b"\x01\x02", "cannot read the model"),
])
def test_vlm_folder_reader(tmp_path, meta, weights, named):
    from celseg.vlm.registry import load_vlm

    (tmp_path / "celseg_vlm.json").write_bytes(meta)
    if weights is None:
        from safetensors.torch import save_file

        save_file({"x": torch.zeros(2)}, str(tmp_path / "model.safetensors"))
    else:
        (tmp_path / "model.safetensors").write_bytes(weights)
    with pytest.raises(ModelLoadError, match=named) as exc:
        load_vlm(str(tmp_path))
    assert str(tmp_path) in str(exc.value)


@pytest.mark.parametrize("content, named", [
    (b"\xff\xfe\x00\x00", "UTF-8"),
    (b'{"image": 1}\n7\n', "line 1"),
    (b'[1, 2]\n', "not a JSON object"),
])
def test_caption_reader(tmp_path, content, named):
    from celseg.data.captions import read_captions

    (tmp_path / "captions").mkdir()
    (tmp_path / "captions" / "captions.jsonl").write_bytes(content)
    with pytest.raises(DataError, match=named) as exc:
        read_captions(tmp_path)
    assert "captions.jsonl" in str(exc.value)


def test_every_reader_error_is_a_celseg_error():
    """The command line prints CelsegErrors without a traceback; these are all of them."""
    from celseg.config import ConfigError
    from celseg.errors import Interrupted, OutputError

    for cls in (DataError, ModelLoadError, ConfigError, OutputError, Interrupted):
        assert issubclass(cls, CelsegError)
