"""The head at inference through frozen TorchScript traces, one per input shape.

At batch 1 on CPU the head (pixel decoder, transformer decoder and the text classifier of its
final prediction, against the vocabulary's embeddings, an input of the trace) is about 150
small operators, and Python's dispatch of each is a large share of its time. A trace frozen
with its weights runs the same operators in the same order, with the same kernels, without
that: the outputs are bit-identical (tests/test_traced_head.py), and the head took 8.24 -> 6.72
ms at 128 px, 69.3 -> 65.3 ms at 128 px batch 16 and 60.0 -> 56.6 ms at 512 px
(benchmarks/bench_traced_head.py, docs/bench_traced_head_cpu.json; then without the
classifier).

A trace holds for one set of input shapes (sizes and Python-level shape checks become
constants), so one is made per shape, dtype and device, once that key has been seen ``after``
times: one-off shapes (a dataset of varying image sizes) stay eager. At most ``max_shapes``
are kept. The parameters' version counters are part of the key, so new weights (an optimizer
step, ``load_state_dict``; not writes through ``.data``) are never run through a stale trace.
TorchScript is deprecated in torch 2.13; where tracing fails the head warns once per shape
and runs eagerly.
"""

from __future__ import annotations

import warnings
from collections import Counter

import torch
from torch import Tensor, nn

from celseg.models.backbone import LEVELS


def weights_key(tensors) -> tuple:
    """Each tensor's identity, storage and version counter: the key of what is computed once
    per weights (the traces here, ``TransformerDecoder.first_mask_embed``). It changes when a
    tensor is swapped, moved, or written in place (an optimizer step, ``load_state_dict``; not
    writes through ``.data``)."""
    return tuple((id(t), t.data_ptr(), t._version) for t in tensors)


class _Head(nn.Module):
    """text embeddings (C,D), features res2..res5 -> the final prediction's pred_masks
    (B,Q,H/4,W/4) and the text classifier's logits, class_embed and logit_scale."""

    def __init__(self, pixel_decoder: nn.Module, transformer_decoder: nn.Module,
                 classifier: nn.Module) -> None:
        super().__init__()
        self.pixel_decoder = pixel_decoder
        self.transformer_decoder = transformer_decoder
        self.classifier = classifier

    def forward(self, text_emb: Tensor, *features: Tensor) -> tuple[Tensor, ...]:
        mask_features, memory = self.pixel_decoder(dict(zip(LEVELS, features, strict=True)))
        final = self.transformer_decoder(memory, mask_features, all_predictions=False)[-1]
        logits, class_embed, scale = self.classifier(final["class_feat"], text_emb)
        return final["pred_masks"], logits, class_embed, scale


class TracedHead:
    """Calls the head through a trace when its key has been seen often enough, else returns
    None (the caller runs the head eagerly). A plain object, not a module: the head's
    parameters stay registered once, in the segmenter.

    Args:
        pixel_decoder, transformer_decoder, classifier: the segmenter's own modules.
        after: a key is traced on its ``after``-th call (>= 1).
        max_shapes: traces kept at most (the oldest is dropped).
    """

    def __init__(self, pixel_decoder: nn.Module, transformer_decoder: nn.Module,
                 classifier: nn.Module, after: int = 2, max_shapes: int = 8) -> None:
        if after < 1 or max_shapes < 1:
            raise ValueError(f"after and max_shapes must be at least 1, got {after}, "
                             f"{max_shapes}")
        self.head = _Head(pixel_decoder, transformer_decoder, classifier)
        self.head.training = False  # the wrapper's own flag (freeze needs it); not recursive
        self.after = after
        self.max_shapes = max_shapes
        self.seen: Counter = Counter()
        self.traces: dict[tuple, torch.jit.ScriptModule] = {}
        # where each parameter and buffer lives, read once: walking the modules on every call
        # to key it cost 59-108 us of a 3 ms head (a submodule swapped in later needs a new
        # TracedHead, ``Segmenter.set_tracing``; a tensor swapped in its slot is still seen)
        self.slots = [(d, name) for m in self.head.modules() for d in (m._parameters, m._buffers)
                      for name, v in d.items() if v is not None]

    def __getstate__(self) -> dict:
        """Copies and pickles (``copy.deepcopy``, ``torch.save`` of the whole model) leave the
        traces out: they are a cache, and frozen traces cannot be pickled."""
        state = dict(self.__dict__)
        state["seen"], state["traces"] = Counter(), {}
        return state

    def usable(self) -> bool:
        """Inference without autograd and outside inference mode (whose tensors a trace must
        not capture), with the head in eval mode."""
        return (not torch.is_grad_enabled() and not torch.is_inference_mode_enabled()
                and not self.head.pixel_decoder.training
                and not self.head.transformer_decoder.training
                and not self.head.classifier.training)

    def __call__(self, features: dict[str, Tensor],
                 text_emb: Tensor) -> tuple[Tensor, ...] | None:
        """(pred_masks, logits, class_embed, logit_scale) of the final prediction against the
        (C,D) text embeddings, or None."""
        if not self.usable():
            return None
        inputs = (text_emb, *(features[k] for k in LEVELS))
        key = (tuple((tuple(x.shape), x.dtype, x.device) for x in inputs),
               weights_key(params[name] for params, name in self.slots))
        if key not in self.traces:
            self.seen[key] += 1
            if self.seen[key] < self.after:
                return None
            if len(self.traces) >= self.max_shapes:
                self.traces.pop(next(iter(self.traces)))
            self.traces[key] = self._trace(inputs)
            del self.seen[key]
        if self.traces[key] is None:  # this torch cannot trace it: eager
            return None
        return self.traces[key](*inputs)

    def _trace(self, inputs: tuple[Tensor, ...]) -> torch.jit.ScriptModule | None:
        """The frozen trace, or None (with a warning) where tracing fails."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)  # the shape checks
            warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript, in torch 2.13
            try:
                traced = torch.jit.trace(self.head, inputs, check_trace=False)
                return torch.jit.freeze(traced, optimize_numerics=False)
            except Exception as exc:  # noqa: BLE001 - any failure leaves the head eager
                failure = exc
        warnings.warn(f"the head could not be traced ({type(failure).__name__}: {failure}); "
                      "it runs eagerly (eval.trace_head=false skips the attempt)", stacklevel=3)
        return None
