"""The hub models the paper configs name, by their real configurations, and random-weight folders.

Online, ``microsoft/resnet-101`` and ``openai/clip-vit-base-patch16`` load with their weights.
Offline nothing can fetch them, and a run that needs them stops with an error. ``--random-init``
(``celseg dry-run``, ``celseg reproduce``) then builds the same architectures from the
configurations below with random weights: :func:`random_init_folder` writes each one once, as a
model folder, under ``CELSEG_CACHE/random_init/`` (keyed by model, seed and the torch and
transformers versions, so the weights of a folder never change), and
:func:`random_init_overrides` points the config's keys at those folders. Every command then
loads them like any local model folder.

CLIP's BPE vocabulary ships with its weights, so a random-weight CLIP folder holds a stand-in
tokenizer: a word-level vocabulary of the words of the shipped class lists and prompt templates
(other words map to one unknown id), with CLIP's start and end ids and context length, so the
text tower runs at its real shapes. Like the weights, its token ids carry no meaning.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from celseg.errors import ModelLoadError

CLIP_BOS, CLIP_EOS, CLIP_VOCAB = 49406, 49407, 49408
SPLITS = Path(__file__).resolve().parent.parent / "data" / "splits"


def resnet101_config() -> Any:
    """``microsoft/resnet-101``'s configuration: bottleneck blocks 3-4-23-3, widths 256..2048."""
    from transformers import ResNetConfig

    return ResNetConfig(num_channels=3, embedding_size=64, hidden_sizes=[256, 512, 1024, 2048],
                        depths=[3, 4, 23, 3], layer_type="bottleneck", hidden_act="relu",
                        downsample_in_first_stage=False, downsample_in_bottleneck=False)


def clip_vit_b16_config() -> Any:
    """``openai/clip-vit-base-patch16``'s configuration: a 12-layer 768-wide ViT on 16 px
    patches at 224 px, a 12-layer 512-wide text transformer over 77 tokens, 512-d projections."""
    from transformers import CLIPConfig

    text = dict(vocab_size=CLIP_VOCAB, hidden_size=512, intermediate_size=2048,
                num_hidden_layers=12, num_attention_heads=8, max_position_embeddings=77,
                hidden_act="quick_gelu", layer_norm_eps=1e-5, bos_token_id=CLIP_BOS,
                eos_token_id=CLIP_EOS, pad_token_id=1)
    vision = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                  num_attention_heads=12, image_size=224, patch_size=16, num_channels=3,
                  hidden_act="quick_gelu", layer_norm_eps=1e-5)
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=512,
                      logit_scale_init_value=2.6592)


# hub id -> (configuration, what the folder holds)
ARCHITECTURES: dict[str, tuple[Callable[[], Any], str]] = {
    "microsoft/resnet-101": (resnet101_config, "backbone"),
    "openai/clip-vit-base-patch16": (clip_vit_b16_config, "clip"),
}
# config keys that may name a hub model
MODEL_KEYS = ("model.backbone", "model.vlm", "eval.vlm", "eval.two_stage_vlm")


def _versions() -> str:
    import torch
    import transformers

    return f"torch{torch.__version__.split('+')[0]}-transformers{transformers.__version__}"


def random_init_folder(name: str, seed: int = 0, cache_dir: str | Path | None = None) -> Path:
    """The random-weight folder of hub model ``name`` (written on first use, atomically)."""
    from celseg.vlm.cache import default_cache_dir

    if name not in ARCHITECTURES:
        raise ModelLoadError(f"--random-init knows no architecture for {name!r}; known: "
                             f"{', '.join(ARCHITECTURES)}")
    build, kind = ARCHITECTURES[name]
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    folder = root / "random_init" / f"{name.replace('/', '--')}-seed{seed}-{_versions()}"
    if (folder / "config.json").is_file():
        return folder
    tmp = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    if kind == "clip":
        _write_clip(tmp, build(), seed)
    else:
        build().save_pretrained(tmp)  # the backbone builder reads the config, weights random
    try:
        tmp.rename(folder)
    except OSError:  # another process wrote the same folder first: same seed, same weights
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _write_clip(folder: Path, config: Any, seed: int) -> None:
    import torch
    from transformers import CLIPModel

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        CLIPModel(config).save_pretrained(folder)
    stand_in_tokenizer().save_pretrained(folder)


def _vocabulary_words() -> list[str]:
    """Lower-cased words of the shipped class lists and the prompt templates."""
    from tokenizers import pre_tokenizers

    from celseg.vlm.templates import DEFAULT_TEMPLATES

    texts = [t.replace("{}", " ") for t in DEFAULT_TEMPLATES]
    for path in sorted(SPLITS.glob("*.json")):
        texts += [c["name"] for c in json.loads(path.read_text())["classes"]]
    split = pre_tokenizers.Whitespace()
    return sorted({w.lower() for t in texts for w, _ in split.pre_tokenize_str(t)})


def stand_in_tokenizer() -> Any:
    """A word-level tokenizer with CLIP's special ids, lower-casing and context length."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = _vocabulary_words()
    vocab = {w: i for i, w in enumerate(words)}
    vocab.update({"<unk>": len(words), "<|startoftext|>": CLIP_BOS, "<|endoftext|>": CLIP_EOS})
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="<|startoftext|> $A <|endoftext|>",
        special_tokens=[("<|startoftext|>", CLIP_BOS), ("<|endoftext|>", CLIP_EOS)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>",
                                   bos_token="<|startoftext|>", eos_token="<|endoftext|>",
                                   pad_token="<|endoftext|>", model_max_length=77)


def hub_models(cfg: Any) -> dict[str, str]:
    """``{config key: hub id}`` of the keys in MODEL_KEYS naming a model that is not a local
    folder (the ones a run would download)."""
    found = {}
    for key in MODEL_KEYS:
        section, name = key.split(".")
        value = str(getattr(getattr(cfg, section), name))
        parts = value.split("/")
        if len(parts) == 2 and all(parts) and not Path(value).expanduser().exists():
            found[key] = value
    return found


def random_init_overrides(cfg: Any, seed: int = 0, cache_dir: str | Path | None = None
                          ) -> tuple[list[str], dict[str, str]]:
    """``--set`` items pointing every hub model of ``cfg`` at its random-weight folder (and
    ``model.pretrained=false``), and ``{hub id: folder}`` for the report."""
    folders = {}
    overrides = ["model.pretrained=false"]
    for key, name in hub_models(cfg).items():
        folders[name] = str(random_init_folder(name, seed, cache_dir))
        overrides.append(f"{key}={folders[name]}")
    return overrides, folders
