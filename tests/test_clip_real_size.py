"""CLIP ViT-B/16 at its real size, built from its real configuration with random weights (no
CLIP weights install offline): MaskCLIP dense features at 512 px through the sliding window, and
the text embeddings of all 171 COCO-Stuff names under the prompt templates, batched and cached.
Each is checked against a naive loop; the time and peak memory are printed (``pytest -s``)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from celseg.engine.sliding import sliding_window
from celseg.paper.architectures import clip_vit_b16_config, stand_in_tokenizer
from celseg.paper.measure import PeakMemory
from celseg.pseudo.dense import dense_probs
from celseg.vlm.cache import text_embeddings
from celseg.vlm.hf_clip import HFCLIP
from celseg.vlm.templates import DEFAULT_TEMPLATES

SPLITS = Path(__file__).resolve().parents[1] / "src" / "celseg" / "data" / "splits"


@pytest.fixture(scope="module")
def clip() -> HFCLIP:
    from transformers import CLIPModel

    torch.manual_seed(0)
    return HFCLIP(CLIPModel(clip_vit_b16_config()), stand_in_tokenizer(),
                  "random-init:openai/clip-vit-base-patch16")


def test_the_architecture_is_clip_vit_b16(clip):
    vision, text = clip.model.config.vision_config, clip.model.config.text_config
    assert (vision.num_hidden_layers, vision.hidden_size, vision.patch_size) == (12, 768, 16)
    assert (text.num_hidden_layers, text.hidden_size, text.max_position_embeddings) == (12, 512,
                                                                                          77)
    # OpenAI's ViT-B/16 CLIP has 149.62 M parameters (open_clip's model table)
    assert sum(p.numel() for p in clip.model.parameters()) == 149_620_737


def test_dense_features_at_512_px_through_the_sliding_window(clip):
    torch.manual_seed(1)
    image = torch.rand(1, 3, 512, 768)  # RGB in [0, 1], wider than one window
    text = F.normalize(torch.randn(20, 512), dim=-1)
    features = clip.dense_features(image[..., :512])
    assert features.shape == (1, 512, 32, 32)  # 512 / 16 patches a side
    assert torch.allclose(features.norm(dim=1), torch.ones(1, 32, 32), atol=1e-5)

    start = time.perf_counter()
    with PeakMemory(torch.device("cpu")) as peak:
        got = sliding_window(lambda crop: dense_probs(clip, crop, text), image, 512, 341)
    seconds = time.perf_counter() - start
    # naive loop: a 768 px row of 512 px windows at stride 341 starts at 0 and at 768 - 512
    total, count = torch.zeros(1, 20, 512, 768), torch.zeros(1, 1, 512, 768)
    for x in (0, 256):
        total[..., x:x + 512] += dense_probs(clip, image[..., x:x + 512], text)
        count[..., x:x + 512] += 1
    assert got.shape == (1, 20, 512, 768)
    torch.testing.assert_close(got, total / count, atol=1e-5, rtol=1e-4)
    print(f"\nCLIP ViT-B/16 MaskCLIP dense, 512 x 768 px in 2 windows of 512: {seconds:.1f} s, "
          f"peak {peak.result['peak_mib']:.0f} MiB ({peak.result['kind']}), "
          f"{torch.get_num_threads()} threads")


@pytest.mark.slow
def test_all_coco_stuff_names_batched_and_cached_equal_a_per_name_loop(clip, tmp_path):
    names = [c["name"] for c in json.loads((SPLITS / "coco_stuff.json").read_text())["classes"]]
    assert len(names) == 171
    start = time.perf_counter()
    with PeakMemory(torch.device("cpu")) as peak:
        batched = text_embeddings(clip, names, cache_dir=tmp_path)
    seconds = time.perf_counter() - start
    naive = []
    for name in names:
        sentences = F.normalize(clip.encode_sentences([t.format(name) for t in DEFAULT_TEMPLATES]),
                                dim=-1)
        naive.append(F.normalize(sentences.mean(dim=0), dim=0))
    assert batched.shape == (171, 512)
    torch.testing.assert_close(batched, torch.stack(naive), atol=1e-5, rtol=1e-4)

    class Unused:  # the same model name: the second call must come from the cache
        name = clip.name

        def encode_text(self, *args):
            raise AssertionError("recomputed instead of read from the cache")

    assert torch.equal(text_embeddings(Unused(), names, cache_dir=tmp_path), batched)
    print(f"\n171 COCO-Stuff names x {len(DEFAULT_TEMPLATES)} templates, CLIP ViT-B/16 text: "
          f"{seconds:.1f} s, peak {peak.result['peak_mib']:.0f} MiB, "
          f"{torch.get_num_threads()} threads")
