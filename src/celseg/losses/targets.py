"""Dataset label maps -> per-image segment targets in vocabulary index space."""

from __future__ import annotations

import torch


def labels_to_vocab(
    labels: torch.Tensor, vocab_lut: torch.Tensor, ignore_index: int = 255
) -> torch.Tensor:
    """(B,H,W) dataset ids -> (B,H,W) vocabulary indices, ``ignore_index`` where the pixel is
    ignored or its id maps to -1 in ``vocab_lut`` (256,)."""
    lut = vocab_lut.to(labels.device)
    mapped = lut[labels.clamp(0, lut.numel() - 1)]
    drop = (labels == ignore_index) | (mapped < 0)
    return torch.where(drop, torch.full_like(mapped, ignore_index), mapped)


def labels_to_targets(
    labels: torch.Tensor, vocab_lut: torch.Tensor, ignore_index: int = 255,
    with_masks: bool = True,
) -> list[dict[str, torch.Tensor]]:
    """One target per image: ``labels`` (K,) long vocabulary indices of the classes present
    (ascending) and, ``with_masks``, ``masks`` (K,H,W) float binary masks (the point-sampled
    losses read the label map instead). labels: (B,H,W) dataset ids."""
    vocab = labels_to_vocab(labels, vocab_lut, ignore_index)
    out = []
    for image in vocab:
        present = torch.unique(image)
        present = present[present != ignore_index]
        target = {"labels": present}
        if with_masks:
            target["masks"] = (image[None] == present[:, None, None]).float()
        out.append(target)
    return out


def build_vocab_lut(class_ids: list[int], size: int = 256) -> torch.Tensor:
    """(size,) long: dataset id ``class_ids[i]`` -> vocabulary index i, every other id -> -1."""
    lut = torch.full((size,), -1, dtype=torch.long)
    lut[torch.as_tensor(class_ids, dtype=torch.long)] = torch.arange(len(class_ids))
    return lut
