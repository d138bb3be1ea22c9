"""EfficientNet-Lite0: shapes, gradients, strict weight loading and real ImageNet predictions."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from celseg.errors import ModelLoadError
from celseg.models.efficientnet_lite import (
    Conv2dSame,
    EfficientNetLite0,
    efficientnet_lite0,
    load_pretrained,
    weights_path,
)

IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


@pytest.fixture(scope="module")
def pretrained() -> EfficientNetLite0:
    return efficientnet_lite0(pretrained=True).eval()


def test_feature_shapes_and_gradients() -> None:
    model = efficientnet_lite0(pretrained=False)
    x = torch.randn(2, 3, 64, 96)
    feats = model.forward_features(x)
    expected = {"res2": (24, 16, 24), "res3": (40, 8, 12), "res4": (112, 4, 6), "res5": (320, 2, 3)}
    assert {k: tuple(v.shape[1:]) for k, v in feats.items()} == expected
    loss = model(x).sum()
    loss.backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert not no_grad
    assert all(torch.isfinite(v).all() for v in feats.values())


def test_odd_sizes_round_up() -> None:
    feats = efficientnet_lite0(pretrained=False).forward_features(torch.randn(1, 3, 33, 70))
    assert tuple(feats["res5"].shape[-2:]) == (2, 3)  # ceil(33/32), ceil(70/32)


def _tf_same_reference(conv: Conv2dSame, x: torch.Tensor) -> torch.Tensor:
    """TensorFlow "same" padding written out: pad (extra pixel bottom / right), then convolve."""
    (kh, kw), (sh, sw) = conv.kernel_size, conv.stride
    ph = max((-(-x.shape[-2] // sh) - 1) * sh + kh - x.shape[-2], 0)
    pw = max((-(-x.shape[-1] // sw) - 1) * sw + kw - x.shape[-1], 0)
    padded = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
    return F.conv2d(padded, conv.weight, None, conv.stride, 0, 1, conv.groups)


@pytest.mark.parametrize("kernel,stride,size", [(3, 1, (16, 16)), (5, 1, (9, 12)), (3, 2, (16, 16)),
                                                (5, 2, (15, 16)), (3, 2, (7, 7)), (1, 1, (8, 8))])
@pytest.mark.parametrize("groups", [1, 8])
def test_same_padding_equals_padding_first(kernel, stride, size, groups) -> None:
    """Symmetric cases let the convolution pad itself; values and gradients are those of
    padding first (asymmetric ones, e.g. stride 2 on an even size, still pad first)."""
    torch.manual_seed(kernel + stride + groups)
    conv = Conv2dSame(8, 8, kernel, stride=stride, groups=groups, bias=False)
    x = torch.randn(2, 8, *size, requires_grad=True)
    got, want = conv(x), _tf_same_reference(conv, x)
    assert got.shape == want.shape == (2, 8, -(-size[0] // stride), -(-size[1] // stride))
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    g = torch.randn_like(got)
    for a, b in zip(torch.autograd.grad(got, (x, conv.weight), g),
                    torch.autograd.grad(want, (x, conv.weight), g), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_every_key_matches_the_file() -> None:
    state = torch.load(weights_path(), weights_only=True, map_location="cpu")
    own = EfficientNetLite0().state_dict()
    assert set(state) == set(own)
    assert all(tuple(state[k].shape) == tuple(own[k].shape) for k in own)


def test_mismatch_names_the_key(tmp_path) -> None:
    state = torch.load(weights_path(), weights_only=True, map_location="cpu")
    state["_fc.weight"] = torch.zeros(10, 1280)
    bad = tmp_path / "bad.pth"
    torch.save(state, bad)
    with pytest.raises(ModelLoadError, match="_fc.weight"):
        load_pretrained(EfficientNetLite0(), str(bad))
    del state["_fc.weight"]
    torch.save(state, bad)
    with pytest.raises(ModelLoadError, match="_fc.weight"):
        load_pretrained(EfficientNetLite0(), str(bad))


def test_chelsea_is_a_cat(pretrained: EfficientNetLite0) -> None:
    """Real weights on a real photo: proves padding, BN eps and activations are right."""
    skimage_data = pytest.importorskip("skimage.data")
    img = torch.from_numpy(skimage_data.chelsea()).permute(2, 0, 1).float()[None] / 255.0
    img = F.interpolate(img, size=(224, 224), mode="bilinear", antialias=True, align_corners=False)
    with torch.no_grad():
        probs = pretrained((img - IMAGENET_MEAN) / IMAGENET_STD).softmax(-1)[0]
    cat_mass = probs[281:286].sum().item()  # tabby, tiger cat, Persian, Siamese, Egyptian cat
    assert int(probs.argmax()) in range(281, 286)
    assert cat_mass > 0.8
