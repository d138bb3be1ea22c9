"""The page's request handling without a browser: limits, messages, label map, pixel shares; and
the Gradio server answering bad and good requests in turn (skipped without Gradio)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from serve_run import free_port, train_tiny_run

from celseg.cli import main
from celseg.serve.handler import Limits, PageError, read_class_names, segment_upload


@pytest.fixture(scope="module")
def run(synthetic_root, tmp_path_factory):
    """A 2-step run on the shared generated benchmark (any checkpoint does here)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("CELSEG_CACHE", str(tmp_path_factory.mktemp("cache")))
    yield train_tiny_run(synthetic_root, tmp_path_factory.mktemp("serve") / "run", iterations=2)
    mp.undo()


@pytest.fixture(scope="module")
def predictor(run):
    from celseg.engine.predictor import Predictor

    return Predictor.from_checkpoint(run, device="cpu")


def _noise_png(path, h: int, w: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)
    return path


def test_label_map_and_shares(predictor, tmp_path) -> None:
    image = _noise_png(tmp_path / "a.png", 70, 50)
    result = segment_upload(predictor, image, "cat, dog,road", Limits())
    assert result.label.shape == (70, 50) and result.label.dtype == np.uint8
    assert result.names == ["cat", "dog", "road"] and result.label.max() < 3
    # shares against a naive per-pixel count
    counts = [0, 0, 0]
    for v in result.label.reshape(-1):
        counts[int(v)] += 1
    assert result.shares == pytest.approx([100 * c / (70 * 50) for c in counts])
    # image | overlay | legend, the images enlarged 6x to >= 256 px for the page
    assert result.picture.height >= 6 * 70 and result.picture.width > 2 * 6 * 50


@pytest.mark.parametrize(("text", "words"), [
    ("", "at least one class name"),
    ("   ", "at least one class name"),
    ("cat, cat", "duplicate"),
    (", ".join(f"c{i}" for i in range(201)), "--max-classes"),
    (", ".join(f"c{i}" for i in range(300)), "200"),
    ("x" * 8001, "--max-text"),
])
def test_bad_class_lists_get_a_message(text, words) -> None:
    with pytest.raises(PageError, match=words):
        read_class_names(text, Limits())


def test_two_hundred_names_are_fine() -> None:
    assert len(read_class_names(",".join(f"c{i}" for i in range(200)), Limits())) == 200


def test_bad_uploads_get_a_message(predictor, tmp_path) -> None:
    big = _noise_png(tmp_path / "big.png", 64, 64)  # ~12 kB of noise
    with pytest.raises(PageError, match="--max-bytes"):
        segment_upload(predictor, big, "cat", Limits(max_bytes=5000))
    with pytest.raises(PageError, match="64 x 64 = 4,096 pixels.*--max-pixels"):
        segment_upload(predictor, big, "cat", Limits(max_pixels=4000))
    text = tmp_path / "notes.png"
    text.write_text("not a picture at all")
    with pytest.raises(PageError, match="not an image"):
        segment_upload(predictor, text, "cat", Limits())
    cut = tmp_path / "cut.png"
    cut.write_bytes(big.read_bytes()[:2000])  # a truncated PNG: the header reads, pixels do not
    with pytest.raises(PageError, match="not an image"):
        segment_upload(predictor, cut, "cat", Limits())
    with pytest.raises(PageError, match="Upload an image"):
        segment_upload(predictor, None, "cat", Limits())


def test_respond_never_raises_and_serves_the_next(predictor, tmp_path) -> None:
    from celseg.serve.app import LabelFiles, respond

    files = LabelFiles(keep=2)
    limits = Limits(max_bytes=50_000)
    picture, label, shares, status = respond(predictor, limits, files, None, "cat")
    assert (picture, label, shares) == (None, None, "") and "Upload an image" in status
    image = _noise_png(tmp_path / "ok.png", 40, 30)
    for k in range(3):
        picture, label, shares, status = respond(predictor, limits, files, str(image),
                                                 f"<b>cat{k}</b>, dog")
        assert picture is not None and "Segmented a 30 x 40 image" in status
        assert np.asarray(Image.open(label)).shape == (40, 30)
        assert f"&lt;b&gt;cat{k}&lt;/b&gt;" in shares and "<b>" not in shares  # names escaped
    assert len(list(files.dir.glob("*.png"))) == 2  # only the newest are kept


def test_examples_are_the_runs_validation_images(run, synthetic_root, tmp_path) -> None:
    from celseg.data.classes import load_classes
    from celseg.serve.app import run_examples

    examples = run_examples(run, 3)
    assert [p.split("/")[-1] for p in examples.paths] == ["val_00000.png", "val_00001.png",
                                                          "val_00002.png"]
    assert examples.class_text.split(", ") == list(load_classes(synthetic_root).names)
    moved = tmp_path / "run"
    moved.mkdir()
    (moved / "config.yaml").write_text((run / "config.yaml").read_text().replace(
        str(synthetic_root), str(tmp_path / "gone")))
    (moved / "checkpoints").symlink_to(run / "checkpoints")
    assert run_examples(moved, 3).paths == []  # data.root absent: no examples, no error


def test_command_rejects_bad_limits(tmp_path, capsys) -> None:
    assert main(["serve", "--ckpt", str(tmp_path), "--max-classes", "300"]) == 2
    assert "255" in capsys.readouterr().err
    assert main(["serve", "--ckpt", str(tmp_path), "--port", "0"]) == 2
    assert "--port" in capsys.readouterr().err
    assert main(["serve", "--ckpt", str(tmp_path), "--max-bytes", "0"]) == 2
    assert "--max-bytes" in capsys.readouterr().err


def test_server_survives_bad_requests(predictor, tmp_path) -> None:
    """The real Gradio server in this process, called over HTTP on 127.0.0.1."""
    pytest.importorskip("gradio")
    from gradio_client import Client, handle_file

    from celseg.serve.app import Examples, build_page

    page = build_page(predictor, Limits(max_bytes=20_000), Examples())
    port = free_port()
    page.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True,
                        quiet=True, ssr_mode=False)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False,
                        download_files=str(tmp_path / "dl"))
        big = _noise_png(tmp_path / "big.png", 100, 100)
        note = tmp_path / "note.txt"
        note.write_text("hello")
        for upload, text, words in [(big, "cat", "--max-bytes"), (note, "cat", "not an image"),
                                    (big, "", "class name")]:
            *_, status = client.predict(handle_file(str(upload)), text, api_name="/segment")
            assert words in status
        small = _noise_png(tmp_path / "small.png", 24, 36)
        _, label, _, status = client.predict(handle_file(str(small)), "cat, dog",
                                             api_name="/segment")
        assert "Segmented" in status
        assert np.asarray(Image.open(label)).shape == (24, 36)
    finally:
        page.close()


def test_exif_orientation_is_applied(predictor, tmp_path) -> None:
    """A phone photo stored sideways (EXIF orientation 6: rotate 90 degrees clockwise to show)
    is segmented as shown, so the label map matches what the browser displays."""
    img = Image.fromarray(np.zeros((20, 50, 3), np.uint8))  # stored 50 wide, 20 high
    exif = img.getexif()
    exif[0x0112] = 6
    img.save(tmp_path / "photo.jpg", exif=exif)
    result = segment_upload(predictor, tmp_path / "photo.jpg", "cat, dog", Limits())
    assert result.label.shape == (50, 20)


@pytest.fixture
def fake_server(monkeypatch):
    """``celseg serve`` up to the server: Gradio stubbed, ``serve`` recording its arguments."""
    import sys
    import types

    import celseg.serve.app

    calls = []
    monkeypatch.setitem(sys.modules, "gradio", types.ModuleType("gradio"))
    monkeypatch.setattr(celseg.serve.app, "serve", lambda *a, **k: calls.append((a, k)))
    return calls


def test_serve_takes_an_exported_model_and_a_vlm_alone(run, synthetic_root, tmp_path,
                                                       fake_server, capsys) -> None:
    from celseg.vlm.lit import build_lit, save_lit

    assert main(["export", str(run), str(tmp_path / "model")]) == 0
    assert main(["serve", "--ckpt", str(tmp_path / "model"), "--device", "cpu"]) == 0
    (predictor, _, examples, *_), kwargs = fake_server[-1]
    assert predictor.protocol in ("ensemble", "segmenter") and len(examples.paths) == 6
    assert str(tmp_path / "model") in kwargs["title"]
    image = _noise_png(tmp_path / "a.png", 20, 30)
    assert segment_upload(predictor, image, "cat, dog", Limits()).label.shape == (20, 30)

    vlm = save_lit(build_lit(pretrained_backbone=False), tmp_path / "vlm")
    assert main(["serve", "--vlm", str(vlm), "--device", "cpu", "--examples", "3"]) == 0
    (predictor, _, examples, *_), _ = fake_server[-1]
    assert predictor.protocol == "training-free" and examples.paths == []
    result = segment_upload(predictor, image, "cat, dog", Limits())
    assert result.label.shape == (20, 30) and result.label.max() < 2
    assert main(["serve"]) == 2 and "--vlm" in capsys.readouterr().err
