"""Pseudo labels: dense VLM probabilities, the labelling rule, the report, the command.

A fake VLM whose dense features are a fixed function of the pixel colour (feature = normalised
2*rgb - 1, at full resolution) makes the expected pseudo label of every pixel computable by a naive
per-pixel loop in the test.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from celseg.errors import DataError
from celseg.pseudo import dense
from celseg.pseudo.generate import apply_rule, check_out_dir
from celseg.pseudo.report import PseudoLabelStats, format_table, summarize

NAMES = ["red thing", "green thing", "blue thing", "dark thing"]
SPLITS = ["seen", "seen", "unseen", "unseen"]
TEXT = np.array([[1, -1, -1], [-1, 1, -1], [-1, -1, 1], [-1, -1, -1]], dtype=np.float64)
TEXT /= np.linalg.norm(TEXT, axis=1, keepdims=True)


class FakeVLM(torch.nn.Module):
    """Implements the VisionLanguageModel interface; dense feature = normalise(2*rgb - 1)."""

    name = "fake-rgb"
    embed_dim = 3

    def __init__(self, stride: int = 1) -> None:
        super().__init__()
        self.stride = stride
        self.dummy = torch.nn.Parameter(torch.zeros(1))  # gives the model a device

    def encode_text(self, names: list[str], templates: list[str] | None = None) -> torch.Tensor:
        return torch.tensor(TEXT[[NAMES.index(n) for n in names]], dtype=torch.float32)

    def dense_features(self, images: torch.Tensor) -> torch.Tensor:
        x = 2 * images - 1
        if self.stride > 1:
            x = F.avg_pool2d(x, self.stride)
        return F.normalize(x, dim=1)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.dense_features(images).mean(dim=(2, 3)), dim=1)


def naive_probs(rgb_uint8: np.ndarray, temperature: float) -> np.ndarray:
    """(H, W, 3) uint8 -> (H, W, C) probabilities, one pixel at a time."""
    h, w, _ = rgb_uint8.shape
    out = np.zeros((h, w, len(NAMES)))
    for y in range(h):
        for x in range(w):
            f = 2 * rgb_uint8[y, x].astype(np.float64) / 255 - 1
            f /= np.linalg.norm(f)
            s = np.array([float(t @ f) for t in TEXT]) / temperature
            e = np.exp(s - s.max())
            out[y, x] = e / e.sum()
    return out


def naive_pseudo(label: np.ndarray, probs: np.ndarray, threshold: float) -> np.ndarray:
    unseen = [i for i, s in enumerate(SPLITS) if s == "unseen"]
    out = np.full_like(label, 255)
    for y in range(label.shape[0]):
        for x in range(label.shape[1]):
            v = int(label[y, x])
            if v != 255 and v not in unseen:
                out[y, x] = v  # seen label kept
                continue
            c = int(np.argmax(probs[y, x]))
            if c in unseen and probs[y, x, c] >= threshold:
                out[y, x] = c
    return out


def make_dataset(root: Path, n: int = 3, size: tuple[int, int] = (9, 11), seed: int = 0) -> dict:
    """A tiny dataset with random colours and labels; returns {name: (rgb, label)}."""
    rng = np.random.default_rng(seed)
    classes = {"name": "fake", "ignore_index": 255, "classes": [
        {"id": i, "name": nm, "split": sp, "kind": "thing", "color": [40 * i, 0, 0]}
        for i, (nm, sp) in enumerate(zip(NAMES, SPLITS, strict=True))]}
    root.mkdir(parents=True, exist_ok=True)
    (root / "classes.json").write_text(json.dumps(classes))
    items = {}
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "annotations" / split).mkdir(parents=True)
        for i in range(n):
            rgb = rng.integers(0, 256, size=(*size, 3), dtype=np.uint8)
            label = rng.choice(np.array([0, 1, 2, 3, 255], dtype=np.uint8), size=size)
            name = f"img{i:02d}"
            Image.fromarray(rgb).save(root / "images" / split / f"{name}.png")
            Image.fromarray(label).save(root / "annotations" / split / f"{name}.png")
            if split == "train":
                items[name] = (rgb, label)
    return items


# --- dense probabilities -------------------------------------------------------------------


def test_dense_probs_match_naive_softmax_and_upsample():
    rgb = np.random.default_rng(1).integers(0, 256, size=(6, 8, 3), dtype=np.uint8)
    images = torch.tensor(rgb / 255.0, dtype=torch.float32).permute(2, 0, 1)[None]
    text = torch.tensor(TEXT, dtype=torch.float32)
    probs = dense.dense_probs(FakeVLM(), images, text, temperature=0.1)
    assert probs.shape == (1, 4, 6, 8)
    expected = naive_probs(rgb, 0.1).transpose(2, 0, 1)
    np.testing.assert_allclose(probs[0].numpy(), expected, atol=1e-5)
    # stride-2 features are upsampled to the image size and still sum to 1 over classes
    probs2 = dense.dense_probs(FakeVLM(stride=2), images, text, temperature=0.1)
    assert probs2.shape == (1, 4, 6, 8)
    torch.testing.assert_close(probs2.sum(1), torch.ones(1, 6, 8))


def test_prompt_denoising_drops_classes_below_threshold():
    # class 0 wins everywhere with high confidence, class 1 reaches 0.4 at best, class 2 never
    probs = torch.tensor([[0.9, 0.6], [0.5, 0.55]]), torch.tensor([[0.05, 0.3], [0.3, 0.4]])
    p0, p1 = probs
    p2 = 1 - p0 - p1
    scores = torch.log(torch.stack([p0, p1, p2])[None]) * 0.01  # softmax(scores/0.01) = probs
    out = torch.softmax(dense.prompt_denoise(scores, 0.01, 0.35) / 0.01, dim=1)
    # max confidence: class 0 -> 0.9 kept, class 1 -> 0.4 kept, class 2 -> 0.2 dropped
    assert torch.all(out[0, 2] == 0)
    expected = torch.stack([p0, p1]) / (p0 + p1)
    torch.testing.assert_close(out[0, :2], expected)
    # a threshold above every class keeps only the best class instead of dropping all
    out = torch.softmax(dense.prompt_denoise(scores, 0.01, 0.99) / 0.01, dim=1)
    assert torch.all(out[0, 0] == 1)


def test_key_smoothing_against_naive_loop():
    g = torch.Generator().manual_seed(0)
    feats = F.normalize(torch.randn(1, 5, 3, 4, generator=g), dim=1)
    feats[0, :, 0, 1] = feats[0, :, 0, 0]  # two identical locations
    probs = torch.softmax(torch.randn(1, 3, 3, 4, generator=g), dim=1)
    k, tau = 3, 0.2
    out = dense.key_smooth(probs, feats, k=k, tau=tau, chunk=5)  # chunking across rows
    f = feats[0].flatten(1).T.double()  # (N, D)
    p = probs[0].flatten(1).T.double()  # (N, C)
    for i in range(f.shape[0]):
        sims = [(float(f[i] @ f[j]), j) for j in range(f.shape[0])]
        top = sorted(sims, reverse=True)[:k]
        w = np.array([math.exp(s / tau) for s, _ in top])
        w /= w.sum()
        ref = sum(wi * p[j] for wi, (_, j) in zip(w, top, strict=True))
        torch.testing.assert_close(out[0].flatten(1)[:, i].double(), ref, atol=1e-5, rtol=0)
    # k = 1 keeps every location as it was (its own feature is its most similar)
    distinct = F.normalize(torch.randn(1, 5, 3, 4, generator=g), dim=1)
    torch.testing.assert_close(dense.key_smooth(probs, distinct, k=1), probs)


# --- labelling rule and report -------------------------------------------------------------


def test_apply_rule_hand_case():
    zs = torch.tensor([[0, 255, 255, 255]])
    probs = torch.tensor([  # (C=4, 1, 4): per pixel the column
        [[0.1, 0.1, 0.7, 0.1]],
        [[0.1, 0.1, 0.1, 0.1]],
        [[0.7, 0.6, 0.1, 0.4]],
        [[0.1, 0.2, 0.1, 0.4]],
    ])
    out = apply_rule(zs, probs, [2, 3], threshold=0.5)
    # pixel 0: seen label kept although an unseen class wins; pixel 1: unseen 2 with 0.6;
    # pixel 2: seen argmax -> stays 255; pixel 3: unseen argmax (tie -> 2) below threshold
    assert out.tolist() == [[0, 2, 255, 255]]


def test_report_against_naive_count():
    rng = np.random.default_rng(3)
    info_names = NAMES
    from celseg.data.classes import parse_classes

    info = parse_classes({"classes": [{"name": n, "split": s} for n, s in
                                      zip(info_names, SPLITS, strict=True)]})
    stats = PseudoLabelStats(4)
    pairs = []
    for _ in range(3):
        truth = rng.choice([0, 1, 2, 3, 255], size=(7, 5))
        pseudo = rng.choice([0, 1, 2, 3, 255], size=(7, 5))
        stats.update(torch.tensor(pseudo), torch.tensor(truth))
        pairs.append((pseudo.ravel(), truth.ravel()))
    pseudo = np.concatenate([p for p, _ in pairs])
    truth = np.concatenate([t for _, t in pairs])
    report = summarize(stats.matrix, info)
    assert set(report["per_class"]) == {"blue thing", "dark thing"}
    for c, name in ((2, "blue thing"), (3, "dark thing")):
        tp = sum(1 for p, t in zip(pseudo, truth, strict=True) if p == c and t == c)
        lab_known = sum(1 for p, t in zip(pseudo, truth, strict=True) if p == c and t != 255)
        true = sum(1 for t in truth if t == c)
        row = report["per_class"][name]
        assert row["precision"] == pytest.approx(100 * tp / lab_known)
        assert row["recall"] == pytest.approx(100 * tp / true)
    unseen_px = [(p, t) for p, t in zip(pseudo, truth, strict=True) if t in (2, 3)]
    assert report["coverage"] == pytest.approx(
        100 * sum(p in (2, 3) for p, _ in unseen_px) / len(unseen_px))
    assert report["accuracy"] == pytest.approx(100 * sum(p == t for p, t in unseen_px)
                                               / len(unseen_px))
    assert report["labelled_on_unlabelled"] == sum(
        1 for p, t in zip(pseudo, truth, strict=True) if t == 255 and p in (2, 3))
    assert "blue thing" in format_table(report)
    # an empty denominator is None, not a crash or NaN
    empty = summarize(PseudoLabelStats(4).matrix, info)
    assert empty["per_class"]["blue thing"]["precision"] is None
    assert empty["coverage"] is None


# --- refusal to overwrite the dataset ------------------------------------------------------


def test_refuses_to_write_into_dataset_annotations(tmp_path):
    root = tmp_path / "data"
    make_dataset(root, n=1)
    for bad in (root / "annotations", root / "annotations" / "train",
                root / "annotations" / "train" / "sub", root / "images" / "train", root):
        with pytest.raises(DataError, match="refusing"):
            check_out_dir(root, bad)
    check_out_dir(root, tmp_path / "pseudo")  # a folder outside is fine
    check_out_dir(root, root / "pseudo")  # and so is a new folder inside the root

    from celseg.cli import main

    before = {p: p.read_bytes() for p in (root / "annotations").rglob("*.png")}
    rc = main(["pseudo-label", "--vlm", "whatever", "--data", str(root),
               "--out", str(root / "annotations" / "train")])
    assert rc == 2
    assert before == {p: p.read_bytes() for p in (root / "annotations").rglob("*.png")}


# --- the generator on a hand-built dataset -------------------------------------------------


def read_png(path: Path) -> np.ndarray:
    return np.array(Image.open(path))


@pytest.mark.parametrize("threshold", [0.45, 0.8])
def test_pseudo_label_matches_naive_rule(tmp_path, threshold):
    from celseg.pseudo.generate import pseudo_label

    root = tmp_path / "data"
    items = make_dataset(root)
    out = tmp_path / "pseudo"
    report = pseudo_label(FakeVLM(), root, out, threshold, temperature=0.1,
                          cache_dir=tmp_path / "cache", progress=False)
    assert sorted(p.name for p in out.glob("*.png")) == sorted(
        p.name for p in (root / "annotations" / "train").glob("*.png"))
    written_total = 0
    all_pseudo, all_truth = [], []
    for name, (rgb, label) in items.items():
        pseudo = read_png(out / f"{name}.png")
        expected = naive_pseudo(label, naive_probs(rgb, 0.1), threshold)
        np.testing.assert_array_equal(pseudo, expected)
        seen = np.isin(label, [0, 1])
        np.testing.assert_array_equal(pseudo[seen], label[seen])  # seen labels kept
        written = ~seen & (pseudo != 255)
        assert set(np.unique(pseudo[written])) <= {2, 3}  # only unseen ids written
        written_total += int(written.sum())
        all_pseudo.append(pseudo.ravel())
        all_truth.append(label.ravel())
    assert written_total > 0
    p, t = np.concatenate(all_pseudo), np.concatenate(all_truth)
    for c, name in ((2, "blue thing"), (3, "dark thing")):
        tp = int(((p == c) & (t == c)).sum())
        row = report["per_class"][name]
        assert row["recall"] == pytest.approx(100 * tp / (t == c).sum())
        known = int(((p == c) & (t != 255)).sum())
        assert row["precision"] == (pytest.approx(100 * tp / known) if known else None)
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk["settings"]["threshold"] == threshold
    assert on_disk["images"] == len(items)


def test_higher_threshold_writes_a_subset(tmp_path):
    from celseg.pseudo.generate import pseudo_label

    root = tmp_path / "data"
    items = make_dataset(root, n=2)
    kw = dict(temperature=0.1, cache_dir=tmp_path / "cache", progress=False)
    pseudo_label(FakeVLM(stride=2), root, tmp_path / "lo", 0.3, key_smoothing=True,
                 prompt_denoising=True, **kw)
    pseudo_label(FakeVLM(stride=2), root, tmp_path / "hi", 0.9, key_smoothing=True,
                 prompt_denoising=True, **kw)
    for name in items:
        lo = read_png(tmp_path / "lo" / f"{name}.png")
        hi = read_png(tmp_path / "hi" / f"{name}.png")
        changed = hi != 255
        np.testing.assert_array_equal(hi[changed], lo[changed])
        assert (lo != 255).sum() >= changed.sum()


# --- self-training relabel -----------------------------------------------------------------


class FakeSegmenter(torch.nn.Module):
    """Query q predicts class q; its mask is a constant with sigmoid = MASK_PROB[q]."""

    has_background = False

    def __init__(self, mask_prob: list[float]) -> None:
        super().__init__()
        self.mask_logit = torch.nn.Parameter(torch.logit(torch.tensor(mask_prob)))

    def forward(self, images: torch.Tensor, text_emb: torch.Tensor) -> dict:
        b, _, h, w = images.shape
        assert h % 32 == 0 and w % 32 == 0  # padded like evaluation
        assert images.min() < 0  # ImageNet-normalised, not [0, 1]
        c = text_emb.shape[0]
        logits = 100.0 * torch.eye(c).expand(b, c, c)  # softmax ~ one-hot per query
        masks = self.mask_logit.view(1, c, 1, 1).expand(b, c, h // 4, w // 4)
        return {"pred_logits": logits, "pred_masks": masks}


@pytest.mark.parametrize("threshold,writes", [(0.5, True), (0.7, False)])
def test_self_train_relabel_rule(tmp_path, threshold, writes):
    from celseg.config import EvalConfig
    from celseg.engine.predictor import Predictor
    from celseg.pseudo.self_train import relabel

    root = tmp_path / "data"
    items = make_dataset(root, n=2)
    # normalised over classes: p = (0.1, 0.2, 0.6, 0.1) everywhere -> unseen class 2 wins
    model = FakeSegmenter([0.1, 0.2, 0.6, 0.1])
    predictor = Predictor(model, FakeVLM(), EvalConfig(ensemble=False),
                          cache_dir=tmp_path / "cache")
    assert predictor.protocol == "segmenter"
    relabel(predictor, root, tmp_path / "st", threshold, progress=False)
    for name, (_, label) in items.items():
        pseudo = read_png(tmp_path / "st" / f"{name}.png")
        expected = np.where(np.isin(label, [0, 1]), label, 2 if writes else 255)
        np.testing.assert_array_equal(pseudo, expected)


def test_class_balanced_thresholds_hand_case():
    from celseg.pseudo.generate import HIST_BINS, class_balanced_thresholds

    hist = torch.zeros(3, HIST_BINS, dtype=torch.long)
    hist[0, [999]] = 10  # all confident: the global threshold decides
    hist[1, [100, 200, 300, 400]] = 1  # top half lies at >= bin 300
    # class 2 has no candidate pixel
    t = class_balanced_thresholds(hist, share=0.5, threshold=0.7)
    assert t[0] == pytest.approx(0.7)
    assert t[1] == pytest.approx(300 / (HIST_BINS - 1))
    assert t[2] == pytest.approx(0.7)


def test_self_train_class_share_keeps_a_low_confidence_class(tmp_path):
    from celseg.config import EvalConfig
    from celseg.engine.predictor import Predictor
    from celseg.pseudo.self_train import relabel

    root = tmp_path / "data"
    items = make_dataset(root, n=2)
    model = FakeSegmenter([0.1, 0.2, 0.6, 0.1])  # unseen class 2 at confidence 0.6 everywhere
    predictor = Predictor(model, FakeVLM(), EvalConfig(ensemble=False),
                          cache_dir=tmp_path / "cache")
    report = relabel(predictor, root, tmp_path / "st", 0.9, class_share=0.5, progress=False)
    assert report["class_thresholds"]["blue thing"] <= 0.6
    for name, (_, label) in items.items():  # 0.9 alone would write nothing
        pseudo = read_png(tmp_path / "st" / f"{name}.png")
        np.testing.assert_array_equal(pseudo, np.where(np.isin(label, [0, 1]), label, 2))


# --- the command end to end ----------------------------------------------------------------


@pytest.fixture
def benchmark_root(request, tmp_path):
    """The shared ``synthetic_root`` fixture where conftest provides it, else a tiny benchmark."""
    try:
        return Path(request.getfixturevalue("synthetic_root"))
    except pytest.FixtureLookupError:
        from celseg.data.synthetic import generate

        generate(tmp_path / "synthetic", seed=0, n_train=4, n_val=2, size=64, n_captions=0)
        return tmp_path / "synthetic"


def test_command_end_to_end_with_tiny_lit(tmp_path, benchmark_root, monkeypatch, capsys):
    from celseg.cli import main
    from celseg.vlm.lit import build_lit, save_lit

    monkeypatch.setenv("CELSEG_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    vlm_dir = save_lit(build_lit(pretrained_backbone=False), tmp_path / "vlm")
    synthetic_root = benchmark_root
    out = tmp_path / "pseudo"
    rc = main(["pseudo-label", "--vlm", str(vlm_dir), "--data", str(synthetic_root),
               "--out", str(out), "--threshold", "0.0", "--key-smoothing",
               "--prompt-denoising", "--no-progress"])
    assert rc == 0
    names = sorted(p.name for p in (synthetic_root / "annotations" / "train").glob("*.png"))
    assert sorted(p.name for p in out.glob("*.png")) == names
    report = json.loads((out / "report.json").read_text())
    from celseg.data.classes import load_classes

    info = load_classes(synthetic_root)
    assert set(report["per_class"]) == {info.names[i] for i in info.unseen_ids}
    assert "coverage" in capsys.readouterr().out
    # the output folder works as a label_dir: unknown ids would raise here
    from celseg.data.dataset import SegmentationDataset

    ds = SegmentationDataset(synthetic_root, "train", view="full", label_dir=str(out))
    for i in range(len(ds)):
        _, label, _ = ds[i]
        ok = (label == 255) | torch.isin(label, torch.arange(info.num_classes))
        assert bool(ok.all())
