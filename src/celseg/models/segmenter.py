"""The mask-proposal segmenter, assembled from finished parts."""

from __future__ import annotations

import os
import shutil

import torch
from torch import nn

from celseg.errors import CelsegError
from celseg.models.classifier import TextClassifier


def has_cxx_compiler() -> bool:
    """A C++ compiler on PATH ($CXX, c++, g++ or clang++), which torch.compile needs on CPU."""
    return any(shutil.which(c) for c in (os.environ.get("CXX"), "c++", "g++", "clang++") if c)


class Segmenter(nn.Module):
    """Backbone -> pixel decoder -> transformer decoder -> text classifier.

    ``forward(images (B,3,H,W) ImageNet-normalised, text_emb (C,D) normalised)`` returns

    - ``pred_logits`` (B,Q,C) logits; background_embedding mode (B,Q,C+1), last column = no-object
    - ``pred_masks`` (B,Q,H/4,W/4) mask logits
    - ``class_embed`` (B,Q,D) normalised query class embeddings
    - ``logit_scale`` () the classifier's scale
    - ``text_emb`` (C,D) the vocabulary it was given (the ranking loss and inference read it)
    - ``aux_outputs`` list (one per earlier decoder prediction) of dicts with the same keys;
      empty in eval mode (only the loss reads them)
    - ``vlm_dense`` (B,D,h,w) only when the backbone is the VLM's shared frozen tower
      (``vlm_tower_is_shared``): the VLM's L2-normalised dense features of ``images`` from the
      same pass, without gradient (``celseg.models.vlm_backbone``)

    With a shared tower and ``model.vlm_input_scale`` s, the masks are (B,Q,sH/4,sW/4), except
    for a LiT tower at s = 2 with ``model.vlm_original_strides`` (the default): (B,Q,H/4,W/4).
    """

    def __init__(
        self,
        backbone: nn.Module,
        pixel_decoder: nn.Module,
        transformer_decoder: nn.Module,
        classifier: TextClassifier,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.pixel_decoder = pixel_decoder
        self.transformer_decoder = transformer_decoder
        self.classifier = classifier

    @property
    def has_background(self) -> bool:
        return self.classifier.has_background

    @property
    def vlm_tower_is_shared(self) -> bool:
        """True when the backbone is the VLM's image tower and outputs carry ``vlm_dense``."""
        return bool(getattr(self.backbone, "shares_vlm_tower", False))

    def compile_backbone(self) -> None:
        """``torch.compile`` the backbone's forward in place, for inference
        (``eval.compile_backbone``): on CPU the backbone is most of the time, and compiling it
        pays after a few seconds; it needs a C++ compiler."""
        on_cpu = next(self.parameters()).device.type == "cpu"
        if on_cpu and not has_cxx_compiler():
            raise CelsegError("eval.compile_backbone (--compile-backbone) needs a C++ compiler "
                              "for torch.compile on CPU, and none was found on PATH (c++, g++, "
                              "clang++ or $CXX); install one or leave the option off")
        name = "forward_shared" if self.vlm_tower_is_shared else "forward_features"
        setattr(self.backbone, name, torch.compile(getattr(self.backbone, name)))

    def forward(self, images: torch.Tensor, text_emb: torch.Tensor) -> dict:
        vlm_dense = None
        if self.vlm_tower_is_shared:
            feats, vlm_dense = self.backbone.forward_shared(images)
        else:
            feats = self.backbone.forward_features(images)
        return self.decode(feats, text_emb, vlm_dense)

    def decode(self, feats: dict[str, torch.Tensor], text_emb: torch.Tensor,
               vlm_dense: torch.Tensor | None = None) -> dict:
        """Everything after the backbone: its features res2..res5 (and the VLM's dense
        features where the tower is shared) -> the outputs of :meth:`forward`."""
        mask_features, memory = self.pixel_decoder(feats)
        outs = []
        for p in self.transformer_decoder(memory, mask_features):  # eval mode: the final one
            logits, class_embed, scale = self.classifier(p["class_feat"], text_emb)
            outs.append({
                "pred_logits": logits,
                "pred_masks": p["pred_masks"],
                "class_embed": class_embed,
                "logit_scale": scale,
                "text_emb": text_emb,
            })
        final = dict(outs[-1])
        final["aux_outputs"] = outs[:-1]
        if vlm_dense is not None:
            final["vlm_dense"] = vlm_dense
        return final
