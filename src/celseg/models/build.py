"""The one place that turns a ``ModelConfig`` into a ``Segmenter``."""

from __future__ import annotations

from celseg.config import Config, ModelConfig, validate
from celseg.config_rules import split_names
from celseg.models.backbone import build_backbone
from celseg.models.classifier import TextClassifier
from celseg.models.pixel_decoder import MEMORY_ORDER, FPNPixelDecoder
from celseg.models.segmenter import Segmenter
from celseg.models.transformer_decoder import TransformerDecoder
from celseg.models.vlm_backbone import VLM_BACKBONE, vlm_backbone


def memory_levels(cfg: ModelConfig) -> tuple[str, ...]:
    """The memory levels the decoder layers read, round robin (``model.dec_levels``; by default
    the first min(3, dec_layers) of res5, res4, res3)."""
    return tuple(split_names(cfg.dec_levels)) or MEMORY_ORDER[:min(3, cfg.dec_layers)]


def build_segmenter(cfg: ModelConfig, embed_dim: int) -> Segmenter:
    """Build the segmenter for text embeddings of width ``embed_dim``.

    ``cfg`` is checked against the rules declared next to its fields (``celseg.config``; a
    ``ConfigError`` names the key and value). ``cfg.mode``: ``"background_free"`` or
    ``"background_embedding"`` (a learnable no-object embedding).
    Reads backbone weights when ``cfg.pretrained`` (a registered backbone,
    ``celseg.models.backbone.BACKBONES``, or a Hugging Face backbone folder / hub id).
    ``cfg.backbone == "vlm"`` always loads ``cfg.vlm`` and keeps its frozen image tower
    (``cfg.pretrained`` does not apply; ``load_segmenter`` then replaces the tower's weights
    with the checkpoint's).
    """
    validate(Config(model=cfg))
    levels = memory_levels(cfg)
    if cfg.backbone == VLM_BACKBONE:
        backbone = vlm_backbone(cfg.vlm, embed_dim, cfg.hidden_dim, cfg.vlm_input_scale,
                                cfg.vlm_original_strides)
    else:
        backbone = build_backbone(cfg.backbone, cfg.pretrained, cfg.freeze_backbone_bn)
    pixel_decoder = FPNPixelDecoder(
        backbone.channels, cfg.hidden_dim, cfg.mask_dim, levels,
        conv=cfg.pixel_decoder_conv,
    )
    decoder = TransformerDecoder(
        hidden_dim=cfg.hidden_dim,
        mask_dim=cfg.mask_dim,
        num_queries=cfg.num_queries,
        num_layers=cfg.dec_layers,
        nheads=cfg.nheads,
        dim_feedforward=cfg.dim_feedforward,
        num_levels=len(levels),
        masked_attention=cfg.masked_attention,
    )
    classifier = TextClassifier(
        cfg.hidden_dim,
        embed_dim,
        logit_scale_init=cfg.logit_scale_init,
        learn_logit_scale=cfg.learn_logit_scale,
        with_background=cfg.mode == "background_embedding",
    )
    return Segmenter(backbone, pixel_decoder, decoder, classifier)
