"""Hugging Face CLIP: a tiny random CLIPModel saved with save_pretrained, loaded offline.

The MaskCLIP dense path is checked against plain tensor maths on the saved weights.
"""

from __future__ import annotations

import math
import os

import pytest
import torch
import torch.nn.functional as F

os.environ.setdefault("HF_HUB_OFFLINE", "1")

WORDS = ["a", "photo", "of", "the", "red", "circle", "square", "brick", "wall", "cat", ".",
         "an", "image", "picture", "in", "scene", "there", "is", "close-up", "{}"]
BOS, EOS = 49406, 49407


def _write_tiny_clip(folder) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import CLIPConfig, CLIPModel, PreTrainedTokenizerFast

    torch.manual_seed(0)
    config = CLIPConfig(
        text_config=dict(vocab_size=49408, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=32,
                         bos_token_id=BOS, eos_token_id=EOS, pad_token_id=EOS),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=2, image_size=32, patch_size=8),
        projection_dim=16,
    )
    model = CLIPModel(config).eval()
    with torch.no_grad():  # make LayerNorm affine parameters non-trivial
        for name, p in model.named_parameters():
            if "layer_norm" in name or "layrnorm" in name or "layernorm" in name:
                p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(folder)

    vocab = {w: i for i, w in enumerate(WORDS)}
    vocab.update({"<unk>": len(WORDS), "<|startoftext|>": BOS, "<|endoftext|>": EOS})
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="<|startoftext|> $A <|endoftext|>",
        special_tokens=[("<|startoftext|>", BOS), ("<|endoftext|>", EOS)],
    )
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>",
                                   bos_token="<|startoftext|>", eos_token="<|endoftext|>",
                                   pad_token="<|endoftext|>")
    fast.save_pretrained(folder)


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny_clip")
    _write_tiny_clip(folder)
    return folder


def _reference_dense(folder, images: torch.Tensor) -> torch.Tensor:
    """MaskCLIP by hand from the safetensors file: (B, D, h, w)."""
    from safetensors.torch import load_file

    sd = load_file(str(folder / "model.safetensors"))
    pre = "vision_model."
    width, p, eps = 32, 8, 1e-5

    def g(key: str) -> torch.Tensor:
        return sd[pre + key] if pre + key in sd else sd[key]

    def ln(x, key):
        return F.layer_norm(x, (width,), g(key + ".weight"), g(key + ".bias"), eps)

    def lin(x, key):
        return x @ g(key + ".weight").T + g(key + ".bias")

    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
    x = (images - mean) / std
    patches = F.conv2d(x, g("embeddings.patch_embedding.weight"), stride=p)  # (B, W, h, w)
    b, _, h, w = patches.shape
    tokens = patches.flatten(2).transpose(1, 2)
    cls = g("embeddings.class_embedding").expand(b, 1, width)
    pos = g("embeddings.position_embedding.weight")  # (1 + n*n, W)
    n = int(math.sqrt(pos.shape[0] - 1))
    grid = pos[1:].reshape(1, n, n, width).permute(0, 3, 1, 2)
    if (h, w) != (n, n):
        grid = F.interpolate(grid, size=(h, w), mode="bicubic", align_corners=False)
    pos_all = torch.cat([pos[:1], grid.permute(0, 2, 3, 1).reshape(h * w, width)])
    hid = ln(torch.cat([cls, tokens], 1) + pos_all, "pre_layrnorm")

    def mlp(z, layer):
        z = lin(z, f"{layer}.mlp.fc1")
        z = z * torch.sigmoid(1.702 * z)  # quick_gelu
        return lin(z, f"{layer}.mlp.fc2")

    heads, hd = 2, 16
    layer = "encoder.layers.0"
    z = ln(hid, f"{layer}.layer_norm1")
    q = lin(z, f"{layer}.self_attn.q_proj").view(b, -1, heads, hd).transpose(1, 2)
    k = lin(z, f"{layer}.self_attn.k_proj").view(b, -1, heads, hd).transpose(1, 2)
    v = lin(z, f"{layer}.self_attn.v_proj").view(b, -1, heads, hd).transpose(1, 2)
    att = ((q @ k.transpose(-1, -2)) / math.sqrt(hd)).softmax(-1) @ v
    hid = hid + lin(att.transpose(1, 2).reshape(b, -1, width), f"{layer}.self_attn.out_proj")
    hid = hid + mlp(ln(hid, f"{layer}.layer_norm2"), layer)

    layer = "encoder.layers.1"
    v = lin(lin(ln(hid, f"{layer}.layer_norm1"), f"{layer}.self_attn.v_proj"),
            f"{layer}.self_attn.out_proj") + hid
    v = v + mlp(ln(v, f"{layer}.layer_norm2"), layer)
    out = ln(v[:, 1:], "post_layernorm") @ sd["visual_projection.weight"].T
    out = F.normalize(out, dim=-1)
    return out.transpose(1, 2).reshape(b, -1, h, w)


def test_round_trip_and_shapes(clip_dir) -> None:
    from celseg.vlm.registry import load_vlm

    vlm = load_vlm(str(clip_dir))
    assert vlm.embed_dim == 16
    text = vlm.encode_text(["red circle", "brick wall"], ["a photo of the {} ."])
    assert text.shape == (2, 16)
    assert torch.allclose(text.norm(dim=-1), torch.ones(2), atol=1e-5)
    img = vlm.encode_image(torch.rand(3, 3, 40, 50))
    assert img.shape == (3, 16)
    assert torch.allclose(img.norm(dim=-1), torch.ones(3), atol=1e-5)


def test_text_matches_get_text_features(clip_dir) -> None:
    """Template averaging of one template equals the model's own normalised text features."""
    from transformers import AutoTokenizer, CLIPModel

    from celseg.vlm.registry import load_vlm

    vlm = load_vlm(str(clip_dir))
    model = CLIPModel.from_pretrained(clip_dir).eval()
    tok = AutoTokenizer.from_pretrained(clip_dir)(["red circle"], return_tensors="pt")
    with torch.no_grad():
        ref = model.get_text_features(input_ids=tok["input_ids"])
    ref = ref if isinstance(ref, torch.Tensor) else ref.pooler_output
    ours = vlm.encode_text(["red circle"], ["{}"])
    assert torch.allclose(ours, F.normalize(ref, dim=-1), atol=1e-5)


@pytest.mark.parametrize("size", [(32, 32), (48, 64)])
def test_dense_matches_hand_computation(clip_dir, size) -> None:
    from celseg.vlm.registry import load_vlm

    vlm = load_vlm(str(clip_dir))
    images = torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(1))
    dense = vlm.dense_features(images)
    assert dense.shape == (2, 16, size[0] // 8, size[1] // 8)
    ref = _reference_dense(clip_dir, images)
    assert torch.allclose(dense, ref, atol=1e-4), (dense - ref).abs().max()
