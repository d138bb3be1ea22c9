"""Segmenter: every registered backbone (shapes, no NaN, every parameter trains), vocabulary as
input, background-free has no background, the decoder's prediction step against dense
references."""

import dataclasses
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from celseg.config import LossConfig, ModelConfig, load_config
from celseg.errors import CelsegError, ModelLoadError
from celseg.losses.criterion import build_criterion
from celseg.losses.targets import build_vocab_lut, labels_to_targets, labels_to_vocab
from celseg.models.backbone import BACKBONES, LEVELS, STRIDES
from celseg.models.build import build_segmenter
from celseg.models.mask_features import MaskFeatures
from celseg.models.transformer_decoder import TransformerDecoder, blocked_positions

TINY = ModelConfig(pretrained=False, hidden_dim=32, mask_dim=16, num_queries=5, dec_layers=2,
                   nheads=2, dim_feedforward=32)
D = 12


@pytest.fixture(scope="module")
def hf_folders(tmp_path_factory):
    """Tiny randomly initialised ResNet and ConvNeXt backbones written with save_pretrained."""
    from transformers import AutoBackbone, ConvNextConfig, ResNetConfig

    root = tmp_path_factory.mktemp("hf")
    stages = ["stage1", "stage2", "stage3", "stage4"]
    configs = {
        "resnet": ResNetConfig(embedding_size=8, hidden_sizes=[8, 16, 16, 24], depths=[1] * 4,
                               out_features=stages),
        "convnext": ConvNextConfig(hidden_sizes=[8, 16, 16, 24], depths=[1] * 4,
                                   out_features=stages),
    }
    for name, cfg in configs.items():
        torch.manual_seed(0)
        AutoBackbone.from_config(cfg).save_pretrained(root / name)
    return {k: str(root / k) for k in configs}


def _text(c, seed=0):
    return F.normalize(torch.randn(c, D, generator=torch.Generator().manual_seed(seed)), dim=-1)


def _check_trains(model, mode, size=64):
    """Output shapes for two vocabularies, no NaN, a finite loss, and a gradient for every
    trainable parameter."""
    extra = int(mode == "background_embedding")
    images = torch.randn(2, 3, size, size)
    for c in (5, 9):  # the vocabulary is an input
        out = model(images, _text(c))
        assert out["pred_logits"].shape == (2, 5, c + extra)
        assert out["pred_masks"].shape == (2, 5, size // 4, size // 4)
        assert out["class_embed"].shape == (2, 5, D)
        assert torch.allclose(out["class_embed"].norm(dim=-1), torch.ones(2, 5), atol=1e-5)
        assert out["logit_scale"].item() == pytest.approx(100.0, rel=1e-5)
        assert len(out["aux_outputs"]) == 2
        for aux in out["aux_outputs"]:
            assert aux["pred_logits"].shape == out["pred_logits"].shape
            assert aux["pred_masks"].shape == out["pred_masks"].shape
        for t in [out["pred_logits"], out["pred_masks"]]:
            assert torch.isfinite(t).all()
    labels = torch.randint(0, 9, (2, size, size))
    labels[:, :8] = 255
    lut = build_vocab_lut(list(range(9)))
    crit = build_criterion(LossConfig(pixel_weight=1.0, ranking_weight=1.0), model.has_background)
    losses = crit(out, labels_to_targets(labels, lut), labels_to_vocab(labels, lut))
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert trainable
    missing = [n for n, p in trainable if p.grad is None or not torch.isfinite(p.grad).all()]
    assert missing == []


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_every_registered_backbone_gives_its_features(name):
    """Each registered builder works offline (random weights) and gives res2..res5 at strides
    4/8/16/32 with the channels it declares, without NaN."""
    torch.manual_seed(0)
    backbone = BACKBONES[name](False, True).eval()
    with torch.no_grad():
        feats = backbone.forward_features(torch.randn(1, 3, 64, 64))
    assert list(feats) == list(LEVELS)
    for level, f in feats.items():
        assert f.shape == (1, backbone.channels[level], 64 // STRIDES[level], 64 // STRIDES[level])
        assert torch.isfinite(f).all()


@pytest.mark.parametrize("name", sorted(BACKBONES))
@pytest.mark.parametrize("mode", ["background_free", "background_embedding"])
def test_forward_shapes_and_every_parameter_gets_gradient(name, mode):
    torch.manual_seed(0)
    model = build_segmenter(dataclasses.replace(TINY, backbone=name, mode=mode), D).train()
    _check_trains(model, mode)


@pytest.mark.parametrize("arch", ["resnet", "convnext"])
def test_hugging_face_backbone_folder_trains(arch, hf_folders):
    """Any Hugging Face backbone folder (here tiny random ResNet and ConvNeXt) is a backbone."""
    torch.manual_seed(0)
    cfg = dataclasses.replace(TINY, backbone=hf_folders[arch], pretrained=True)
    _check_trains(build_segmenter(cfg, D).train(), cfg.mode)


def test_background_free_has_no_background_parameter():
    model = build_segmenter(dataclasses.replace(TINY, mode="background_free"), D)
    names = [n.lower() for n, _ in model.named_parameters()]
    names += [n.lower() for n, _ in model.named_buffers()]
    assert not [n for n in names if "background" in n or "no_object" in n]
    assert model.has_background is False
    base = build_segmenter(dataclasses.replace(TINY, mode="background_embedding"), D)
    bg = [n for n, _ in base.named_parameters() if "background" in n]
    assert bg == ["classifier.background_embed"] and base.has_background is True


@pytest.mark.parametrize("old, new", [("ce", "background_free"),
                                      ("baseline", "background_embedding")])
def test_old_mode_spelling_builds_the_same_model(old, new):
    """A config saying model.mode=ce (baseline) is the model of background_free
    (background_embedding): same parameters, same initial values, same forward."""
    models = []
    for mode in (old, new):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            cfg = load_config(None, [f"model.mode={mode}", "model.pretrained=false",
                                     "model.hidden_dim=32", "model.mask_dim=16",
                                     "model.num_queries=5", "model.dec_layers=2",
                                     "model.nheads=2", "model.dim_feedforward=32"])
        torch.manual_seed(0)
        models.append(build_segmenter(cfg.model, D).eval())
    a, b = (m.state_dict() for m in models)
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
    torch.manual_seed(1)
    images, text = torch.randn(1, 3, 32, 32), _text(3)
    with torch.no_grad():
        out_a, out_b = (m(images, text) for m in models)
    assert torch.equal(out_a["pred_logits"], out_b["pred_logits"])
    assert torch.equal(out_a["pred_masks"], out_b["pred_masks"])


def test_logits_are_scaled_cosines_and_background_is_last_column():
    model = build_segmenter(dataclasses.replace(TINY, mode="background_embedding"), D).eval()
    text = _text(3)
    out = model(torch.randn(1, 3, 32, 32), text)
    e = out["class_embed"][0, 0].tolist()
    bg = model.classifier.background_embed.detach()
    bg = (bg / bg.norm()).tolist()
    for c, t in enumerate(text.tolist() + [bg]):
        cos = sum(a * b for a, b in zip(e, t, strict=True)) / math.sqrt(sum(a * a for a in t))
        assert out["pred_logits"][0, 0, c].item() == pytest.approx(100 * cos, abs=1e-3)


def test_fixed_logit_scale_is_a_buffer():
    model = build_segmenter(dataclasses.replace(TINY, learn_logit_scale=False,
                                                logit_scale_init=20.0), D)
    assert "classifier.log_logit_scale" not in dict(model.named_parameters())
    assert model(torch.randn(1, 3, 32, 32), _text(2))["logit_scale"].item() == pytest.approx(20.0)


def test_frozen_batchnorm_stays_frozen():
    model = build_segmenter(TINY, D).train()
    bns = [m for m in model.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(not m.training for m in bns)
    assert all(not p.requires_grad for m in bns for p in m.parameters())
    before = bns[0].running_mean.clone()
    model(torch.randn(2, 3, 32, 32) * 5, _text(2))
    assert torch.equal(before, bns[0].running_mean)
    free = build_segmenter(dataclasses.replace(TINY, freeze_backbone_bn=False), D).train()
    assert all(m.training for m in free.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_hf_backbone_loads_saved_weights(hf_folders):
    cfg = dataclasses.replace(TINY, backbone=hf_folders["resnet"], pretrained=True)
    model = build_segmenter(cfg, D)
    saved = load_file(f"{hf_folders['resnet']}/model.safetensors")
    mine = model.backbone.model.state_dict()
    assert saved and all(torch.equal(mine[k], v) for k, v in saved.items())
    assert model.backbone.channels == {"res2": 8, "res3": 16, "res4": 16, "res5": 24}


def test_pretrained_efficientnet_backbone_loads():
    model = build_segmenter(dataclasses.replace(TINY, pretrained=True), D).eval()
    feats = model.backbone.forward_features(torch.zeros(1, 3, 64, 64))
    assert {k: v.shape[1] for k, v in feats.items()} == model.backbone.channels
    assert [v.shape[-1] for v in feats.values()] == [16, 8, 4, 2]


def test_bad_backbone_and_mode_raise(tmp_path):
    with pytest.raises(ModelLoadError, match="no-such"):
        build_segmenter(dataclasses.replace(TINY, backbone=str(tmp_path / "no-such")), D)
    with pytest.raises(CelsegError, match="mode"):
        build_segmenter(dataclasses.replace(TINY, mode="other"), D)


def test_autocast_forward_gives_float32_losses():
    model = build_segmenter(TINY, D).train()
    labels = torch.randint(0, 3, (2, 32, 32))
    lut = build_vocab_lut([0, 1, 2])
    crit = build_criterion(LossConfig(pixel_weight=1.0, ranking_weight=1.0), False)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(torch.randn(2, 3, 32, 32), _text(3))
        losses = crit(out, labels_to_targets(labels, lut), labels_to_vocab(labels, lut))
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in losses.values())


def test_odd_input_size_rounds_up():
    out = build_segmenter(TINY, D).eval()(torch.randn(1, 3, 50, 37), _text(4))
    assert out["pred_masks"].shape == (1, 5, 13, 10)


@pytest.mark.parametrize("conv", ["full", "separable", "light", "pointwise", "lean"])
def test_pixel_decoder_conv_options_give_the_same_shapes_and_train(conv):
    """Every ``model.pixel_decoder_conv`` builds, keeps the output shapes, and every parameter
    gets a gradient; the stride-4 3 x 3 is dense, depthwise or absent as documented."""
    torch.manual_seed(0)
    model = build_segmenter(dataclasses.replace(TINY, pixel_decoder_conv=conv), D).train()
    out = model(torch.randn(2, 3, 64, 64), _text(5))
    assert out["pred_masks"].shape == (2, 5, 16, 16)
    sum(o["pred_masks"].mean() + o["pred_logits"].mean()
        for o in [out, *out["aux_outputs"]]).backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == []
    decoder = model.pixel_decoder
    if conv in ("pointwise", "lean"):
        assert "res2" not in decoder.output
    else:
        first = decoder.output["res2"][0]
        assert first.kernel_size == (3, 3)
        assert first.groups == (1 if conv == "full" else first.in_channels)
    for level in decoder.memory_names:  # dense on the memory levels but for these two
        assert decoder.output[level][0].groups == (32 if conv in ("separable", "lean") else 1)


def test_attention_mask_blocks_outside_the_mask_and_nothing_for_an_empty_one():
    """Masked attention: a query attends where its mask logit is >= 0 (sigmoid >= 0.5); one
    whose mask is empty everywhere attends everywhere, against a loop by hand."""
    logits = torch.tensor([[[[1.0, -1.0], [0.0, -2.0]], [[-1.0, -1.0], [-3.0, -0.5]],
                            [[2.0, 2.0], [2.0, 2.0]]]]).repeat(2, 1, 1, 1)  # (2,3,2,2)
    logits[1, 0] = -1.0  # image 1: query 0 empty too
    blocked = blocked_positions(logits)
    assert blocked.shape == (2, 3, 4) and blocked.dtype == torch.bool
    for b in range(2):
        for q in range(3):
            row = [bool(v < 0) for v in logits[b, q].flatten()]
            assert blocked[b, q].tolist() == ([False] * 4 if all(row) else row)


def _decoder_inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    memory = [torch.randn(2, 32, s, s, generator=g) for s in (4, 8, 16)]
    factored = MaskFeatures(torch.randn(2, 24, 32, 32, generator=g),
                            torch.randn(2, 24, 16, 16, generator=g),
                            torch.nn.Conv2d(24, 16, 1))  # as the `pointwise` decoder has it
    return memory, factored


def test_prediction_heads_against_the_dense_reference():
    """The prediction step: class feature = norm(queries), mask embedding = MLP of it, and the
    attention mask = the dense mask logits (einsum with ``dense()``) resized bilinearly to the
    level's size and thresholded at 0 (compared where the logit is not within rounding of 0)."""
    torch.manual_seed(0)
    decoder = TransformerDecoder(hidden_dim=32, mask_dim=16, num_queries=5, nheads=4)
    _, features = _decoder_inputs()
    queries = torch.randn(2, 5, 32)
    with torch.no_grad():
        class_feat, embed, blocked = decoder.prediction_heads(queries, features, (8, 8))
        feat = F.layer_norm(queries, (32,), decoder.norm.weight, decoder.norm.bias)
        hidden = feat
        linears = [m for m in decoder.mask_embed if isinstance(m, torch.nn.Linear)]
        for i, linear in enumerate(linears):
            hidden = linear(hidden) if i == 2 else linear(hidden).relu()
        dense = torch.einsum("bqc,bchw->bqhw", hidden, features.dense())
        small = F.interpolate(dense, size=(8, 8), mode="bilinear", align_corners=False)
        assert decoder.prediction_heads(queries, features, None)[2] is None
    torch.testing.assert_close(class_feat, feat)
    torch.testing.assert_close(embed, hidden)
    want = (small < 0).flatten(2)
    want &= ~want.all(-1, keepdim=True)
    clear = small.flatten(2).abs() > 1e-4
    assert torch.equal(blocked[clear], want[clear]) and clear.float().mean() > 0.99


@pytest.mark.parametrize("masked", [True, False])
def test_eval_mode_returns_the_final_training_prediction(masked):
    """The decoder computes the same in both modes: eval mode returns the last of training's
    ``num_layers + 1`` predictions (masks up to the rounding of one product against four)."""
    torch.manual_seed(0)
    decoder = TransformerDecoder(hidden_dim=32, mask_dim=16, num_queries=5, num_layers=3,
                                 nheads=4, dim_feedforward=64, masked_attention=masked)
    memory, features = _decoder_inputs()
    with torch.no_grad():
        train = decoder.train()(memory, features)
        final = decoder.eval()(memory, features)
    assert len(train) == 4 and len(final) == 1
    for key in ("class_feat", "mask_embed"):
        assert torch.equal(final[0][key], train[-1][key])
    torch.testing.assert_close(final[0]["pred_masks"], train[-1]["pred_masks"], rtol=0,
                               atol=1e-5)


def test_eval_mode_outputs_have_no_auxiliary_predictions():
    model = build_segmenter(TINY, D)
    text = _text(3)
    assert len(model.train()(torch.randn(1, 3, 64, 64), text)["aux_outputs"]) == 2
    assert model.eval()(torch.randn(1, 3, 64, 64), text)["aux_outputs"] == []


def test_config_accepts_every_pixel_decoder_conv_and_names_a_wrong_one():
    """``model.pixel_decoder_conv`` takes exactly the pixel decoder's options (two lists, one
    torch-free in the config: kept in step here); a wrong one is an error naming it."""
    from celseg.models.pixel_decoder import CONVS

    for conv in CONVS:
        assert load_config(None, [f"model.pixel_decoder_conv={conv}"]).model.pixel_decoder_conv \
            == conv
    with pytest.raises(CelsegError, match="slim"):
        load_config(None, ["model.pixel_decoder_conv=slim"])


@pytest.mark.parametrize("levels, layers, expected", [
    ("", 3, ["res5", "res4", "res3"]), ("", 1, ["res5"]), ("res4", 1, ["res4"]),
    ("res3, res5", 3, ["res3", "res5"])])
def test_dec_levels_choose_the_memory_the_layers_read(levels, layers, expected):
    """``model.dec_levels`` names the memory levels the decoder reads round robin (default: the
    first min(3, dec_layers) of res5, res4, res3); only those get an output convolution, each
    layer attends to its level's tokens (strides 32, 16, 8), and every parameter trains."""
    torch.manual_seed(0)
    cfg = dataclasses.replace(TINY, dec_layers=layers, dec_levels=levels)
    model = build_segmenter(cfg, D).train()
    assert model.pixel_decoder.memory_names == expected
    assert sorted(model.pixel_decoder.output) == sorted(expected)  # pointwise: no res2 conv
    assert model.transformer_decoder.level_embed.num_embeddings == len(expected)
    images = torch.randn(2, 3, 64, 64)
    feats = model.backbone.forward_features(images)
    _, memory = model.pixel_decoder(feats)
    stride = {"res5": 32, "res4": 16, "res3": 8}
    assert [tuple(m.shape[-2:]) for m in memory] == [(64 // stride[n],) * 2 for n in expected]
    seen = []  # the (tokens) each layer's cross-attention reads, in order
    hooks = [layer.register_forward_hook(lambda mod, args, out: seen.append(args[2].shape[1]))
             for layer in model.transformer_decoder.layers]
    out = model(images, _text(5))
    for h in hooks:
        h.remove()
    assert seen == [(64 // stride[expected[i % len(expected)]]) ** 2 for i in range(layers)]
    sum(o["pred_masks"].mean() + o["pred_logits"].mean()
        for o in [out, *out["aux_outputs"]]).backward()
    assert [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None] == []


def test_wrong_model_keys_are_named():
    """An unknown or repeated level, more levels than layers (a level no layer reads), or a
    hidden width the position code cannot split in four is a config error naming the value,
    from a config file and from build_segmenter alike."""
    for bad, text in (("res6", "res6"), ("res4,res4", "twice")):
        with pytest.raises(CelsegError, match=text):
            load_config(None, [f"model.dec_levels={bad}"])
    with pytest.raises(CelsegError, match=r"'res4,res3' names 2, more than dec_layers \(1\)"):
        load_config(None, ["model.dec_layers=1", "model.dec_levels=res4,res3"])
    with pytest.raises(CelsegError, match=r"'model.dec_levels'.*dec_layers \(1\)"):
        build_segmenter(dataclasses.replace(TINY, dec_layers=1, dec_levels="res4,res3"), D)
    with pytest.raises(CelsegError, match=r"'model.hidden_dim': value 30 .*multiple of 4"):
        build_segmenter(dataclasses.replace(TINY, hidden_dim=30, nheads=1), D)


def test_full_pixel_decoder_keeps_its_initial_weights():
    """The dense decoder's parameters are built in the order of before the options existed
    (res2 output first), so a seed gives the same initial weights as the runs made with it."""
    torch.manual_seed(0)
    full = dataclasses.replace(TINY, pixel_decoder_conv="full")
    names = [n for n, _ in build_segmenter(full, D).pixel_decoder.named_parameters()]
    outputs = [n.split(".")[1] for n in names if n.startswith("output.")]
    assert list(dict.fromkeys(outputs)) == ["res2", "res5", "res4", "res3"][: len(set(outputs))]


def test_factored_mask_features_equal_the_dense_projection():
    """The ``pointwise`` decoder returns mask_proj(fine + up(coarse)) factored; its logits equal
    the einsum with the dense features built the plain way (resize, add, project)."""
    torch.manual_seed(0)
    proj = torch.nn.Conv2d(12, 8, 1)
    fine, coarse = torch.randn(2, 12, 10, 14), torch.randn(2, 12, 5, 7)
    embed = torch.randn(2, 5, 8)
    factored = MaskFeatures(fine, coarse=coarse, proj=proj)
    up = F.interpolate(coarse, size=(10, 14), mode="bilinear", align_corners=False)
    dense = proj(fine + up)
    reference = torch.einsum("bqc,bchw->bqhw", embed, dense)
    assert torch.allclose(factored.dense(), dense)
    assert torch.allclose(factored.logits(embed), reference, atol=1e-5)
    assert not torch.allclose(MaskFeatures(fine, proj=proj).logits(embed), reference, atol=1e-2)
    assert torch.equal(MaskFeatures(dense).logits(embed), reference)


@pytest.mark.parametrize("size", [(4, 4), (8, 8), (16, 16), (5, 3), (20, 28), (23, 31)])
def test_resized_logits_equal_resizing_the_logits(size):
    """The decoder's attention masks read the logits at each level's size; computed on the rows
    that bilinear resize reads, they equal F.interpolate of the whole map, for the factored,
    projected and plain features, at integer and other factors, down and up."""
    torch.manual_seed(1)
    proj = torch.nn.Conv2d(12, 8, 1)
    fine, coarse = torch.randn(2, 12, 20, 28), torch.randn(2, 12, 10, 14)
    embed = torch.randn(2, 5, 8)
    for features in (MaskFeatures(fine, coarse=coarse, proj=proj), MaskFeatures(fine, proj=proj),
                     MaskFeatures(fine[:, :8]), MaskFeatures(fine[:, :8], coarse=coarse[:, :8])):
        full = features.logits(embed)
        reference = F.interpolate(full, size=size, mode="bilinear", align_corners=False)
        resized = features.resized_logits(embed, size)
        assert resized.shape == reference.shape
        assert torch.allclose(resized, reference, atol=1e-5 * full.abs().max().item())
