"""Text side: template averaging, the real MiniLM, and the disk cache's hits and misses."""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

from celseg.vlm.base import VisionLanguageModel
from celseg.vlm.cache import text_embeddings

os.environ.setdefault("HF_HUB_OFFLINE", "1")


class CountingText(VisionLanguageModel):
    """A deterministic fake text tower: one-hot-ish hash embeddings, counts its calls."""

    embed_dim = 8
    text_batch_size = 3

    def __init__(self, name: str = "fake") -> None:
        super().__init__()
        self.name = name
        self.calls = 0
        self.sentences: list[str] = []

    def encode_sentences(self, sentences: list[str]) -> torch.Tensor:
        self.calls += 1
        self.sentences += sentences
        g = [torch.Generator().manual_seed(sum(map(ord, s)) * 31 + len(s)) for s in sentences]
        return F.normalize(torch.stack([torch.randn(8, generator=x) for x in g]), dim=-1)


def test_template_average_matches_naive_loop() -> None:
    vlm = CountingText()
    names, templates = ["red circle", "grass"], ["a {}.", "the {} here", "{}"]
    emb = vlm.encode_text(names, templates)
    for i, n in enumerate(names):
        per = F.normalize(vlm.encode_sentences([t.format(n) for t in templates]), dim=-1)
        ref = F.normalize(per.mean(0), dim=0)
        assert torch.allclose(emb[i], ref, atol=1e-6)
    # 6 sentences in batches of 3 -> 2 calls
    assert vlm.calls == 2 + len(names)


def test_cache_hits_and_misses(tmp_path) -> None:
    vlm = CountingText()
    names, templates = ["a", "b"], ["{}", "a photo of {}"]
    first = text_embeddings(vlm, names, templates, cache_dir=tmp_path)
    calls = vlm.calls
    again = text_embeddings(vlm, names, templates, cache_dir=tmp_path)
    assert vlm.calls == calls and torch.equal(first, again)  # hit
    text_embeddings(vlm, ["a", "c"], templates, cache_dir=tmp_path)  # other names
    assert vlm.calls > calls
    calls = vlm.calls
    text_embeddings(vlm, names, ["{}"], cache_dir=tmp_path)  # other templates
    assert vlm.calls > calls
    calls = vlm.calls
    text_embeddings(vlm, ["b", "a"], templates, cache_dir=tmp_path)  # order matters
    assert vlm.calls > calls
    other = CountingText(name="other-model")
    text_embeddings(other, names, templates, cache_dir=tmp_path)  # other model
    assert other.calls > 0
    calls = vlm.calls
    text_embeddings(vlm, names, templates, cache_dir=tmp_path)
    assert vlm.calls == calls  # the first entry is still there


def test_cache_env_and_corrupt_entry(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("CELSEG_CACHE", str(tmp_path))
    vlm = CountingText()
    text_embeddings(vlm, ["x"], ["{}"])
    files = list((tmp_path / "text").glob("*.safetensors"))
    assert len(files) == 1
    files[0].write_bytes(b"garbage")
    calls = vlm.calls
    emb = text_embeddings(vlm, ["x"], ["{}"])
    assert vlm.calls > calls and emb.shape == (1, 8)


@pytest.fixture(scope="module")
def minilm():
    from celseg.vlm.registry import load_vlm

    return load_vlm("minilm")


def test_minilm_similarities(minilm) -> None:
    emb = minilm.encode_text(["red circle", "red square", "brick wall"], ["{}"])
    assert emb.shape == (3, 384)
    assert torch.allclose(emb.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert float(emb[0] @ emb[1]) > float(emb[0] @ emb[2])


def test_minilm_is_text_only(minilm) -> None:
    from celseg.errors import ModelLoadError

    with pytest.raises(ModelLoadError, match="text-only"):
        minilm.encode_image(torch.rand(1, 3, 32, 32))


def test_default_resolves_to_minilm(monkeypatch) -> None:
    from celseg.vlm.registry import resolve_name

    monkeypatch.delenv("CELSEG_VLM", raising=False)
    assert resolve_name("default") == "minilm"
    monkeypatch.setenv("CELSEG_VLM", "/some/folder")
    assert resolve_name("default") == "/some/folder"
