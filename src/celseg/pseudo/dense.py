"""Dense class probabilities from a vision-language model (MaskCLIP-style, no training).

For an image batch in [0, 1] the VLM gives dense features ``f (B, D, h, w)`` (L2-normalised along
D) and the class names give text embeddings ``t (C, D)`` (prompt ensemble: averaged over templates
and re-normalised). The per-location class scores are cosines ``s_c(x) = <f(x), t_c>``, and the
class probabilities are a softmax over ALL classes with a temperature T::

    p_c(x) = exp(s_c(x) / T) / sum_k exp(s_k(x) / T)

T defaults to 0.01, i.e. CLIP's logit scale of 100. Two optional refinements from MaskCLIP are
applied at feature resolution, in MaskCLIP's order, before the probabilities are upsampled
bilinearly to the image size (a convex combination of distributions, so they still sum to 1):

* prompt denoising (:func:`prompt_denoise`): a class whose highest probability anywhere in the
  image is below ``denoise_threshold`` is taken to be absent and dropped from that image;
* key smoothing (:func:`key_smooth`): each location's probabilities are replaced by a weighted
  mean over the locations whose features are most similar to its own.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

DEFAULT_TEMPERATURE = 0.01
DEFAULT_SMOOTHING_K = 16
DEFAULT_SMOOTHING_TAU = 0.05
DEFAULT_DENOISE_THRESHOLD = 0.5


def cosine_scores(features: Tensor, text_emb: Tensor) -> Tensor:
    """Cosine class scores.

    features: (B, D, h, w) normalised along D; text_emb: (C, D) normalised. Returns (B, C, h, w).
    """
    return torch.einsum("bdhw,cd->bchw", features, text_emb.to(features))


def prompt_denoise(scores: Tensor, temperature: float, threshold: float) -> Tensor:
    """Drop, per image, the classes whose maximum confidence over the whole image is < threshold.

    Confidence is the temperature softmax over all classes (see the module docstring). A dropped
    class gets score -inf so it can never win and gets probability 0 afterwards. The class with
    the highest maximum confidence is always kept so that every location keeps a distribution.

    scores: (B, C, h, w) cosines. Returns (B, C, h, w).
    """
    probs = torch.softmax(scores / temperature, dim=1)
    max_conf = probs.flatten(2).amax(dim=2)  # (B, C): best confidence of each class in the image
    drop = max_conf < threshold
    drop[torch.arange(scores.shape[0]), max_conf.argmax(dim=1)] = False
    return scores.masked_fill(drop[:, :, None, None], float("-inf"))


def key_smooth(probs: Tensor, features: Tensor, k: int = DEFAULT_SMOOTHING_K,
               tau: float = DEFAULT_SMOOTHING_TAU, chunk: int = 4096) -> Tensor:
    """Smooth each location's class probabilities with those of its most similar locations.

    MaskCLIP uses the keys of CLIP's last attention block as the affinity; a CNN image tower has
    no keys, so the dense features themselves are used. For location i of an image with N = h*w
    locations::

        a_ij = <f_i, f_j>                      (cosine, features are normalised)
        N_i  = the k locations j with the largest a_ij (i itself is among them, a_ii = 1)
        w_ij = softmax_{j in N_i}(a_ij / tau)
        p'_i = sum_{j in N_i} w_ij p_j

    Unlike MaskCLIP, which only replaces low-confidence locations, every location is smoothed;
    a small ``tau`` keeps the weight on near-identical features. The result still sums to 1.

    probs: (B, C, h, w) class probabilities; features: (B, D, h, w) normalised along D.
    Returns (B, C, h, w).
    """
    b, c, h, w = probs.shape
    n = h * w
    k = max(1, min(int(k), n))
    feats = features.flatten(2).transpose(1, 2)  # (B, N, D)
    p = probs.flatten(2).transpose(1, 2)  # (B, N, C)
    out = torch.empty_like(p)
    for start in range(0, n, chunk):  # rows in chunks: the full (N, N) affinity may be large
        sim = feats[:, start:start + chunk] @ feats.transpose(1, 2)  # (B, n_chunk, N)
        top, idx = sim.topk(k, dim=2)  # (B, n_chunk, k)
        weights = torch.softmax(top / tau, dim=2)
        neigh = torch.gather(p, 1, idx.flatten(1)[:, :, None].expand(-1, -1, c))
        neigh = neigh.view(b, idx.shape[1], k, c)  # (B, n_chunk, k, C)
        out[:, start:start + chunk] = (weights[..., None] * neigh).sum(dim=2)
    return out.transpose(1, 2).reshape(b, c, h, w)


def dense_probs_from_features(
    features: Tensor,
    text_emb: Tensor,
    out_size: tuple[int, int] | None = None,
    temperature: float = DEFAULT_TEMPERATURE,
    key_smoothing: bool = False,
    smoothing_k: int = DEFAULT_SMOOTHING_K,
    smoothing_tau: float = DEFAULT_SMOOTHING_TAU,
    prompt_denoising: bool = False,
    denoise_threshold: float = DEFAULT_DENOISE_THRESHOLD,
) -> Tensor:
    """Class probabilities from dense features (see the module docstring for the formulas).

    features: (B, D, h, w) normalised; text_emb: (C, D) normalised; out_size: (H, W) to upsample
    to (bilinear, align_corners=False), or None to stay at (h, w). Returns (B, C, H, W), summing
    to 1 over C.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    features = features.float()
    scores = cosine_scores(features, text_emb.float())
    if prompt_denoising:
        scores = prompt_denoise(scores, temperature, denoise_threshold)
    probs = torch.softmax(scores / temperature, dim=1)
    if key_smoothing:
        probs = key_smooth(probs, features, smoothing_k, smoothing_tau)
    if out_size is not None and tuple(out_size) != tuple(probs.shape[-2:]):
        probs = F.interpolate(probs, size=tuple(out_size), mode="bilinear", align_corners=False)
    return probs


@torch.no_grad()
def dense_probs(vlm: torch.nn.Module, images: Tensor, text_emb: Tensor, **kwargs) -> Tensor:
    """Class probabilities of a VLM over the classes of ``text_emb``, at the image size.

    vlm: a ``celseg.vlm.base.VisionLanguageModel``; images: (B, 3, H, W) RGB in [0, 1];
    text_emb: (C, D) normalised. Keyword arguments are those of
    :func:`dense_probs_from_features`. Returns (B, C, H, W).
    """
    features = vlm.dense_features(images)
    return dense_probs_from_features(features, text_emb, out_size=tuple(images.shape[-2:]),
                                     **kwargs)
