"""The ``pseudo-label`` job: check the request, then label with a VLM or a trained segmenter.

Both sources write ``OUT/NAME.png`` for every image of the split (usable as ``data.label_dir``)
and ``OUT/report.json``.
"""

from __future__ import annotations

from pathlib import Path

from celseg.data.dataset import SegmentationDataset
from celseg.errors import CelsegError
from celseg.io.outputs import OutputGuard
from celseg.pseudo.generate import check_out_dir, pseudo_label
from celseg.pseudo.self_train import relabel_from_checkpoint
from celseg.vlm.registry import load_vlm


def check_numbers(threshold: float, denoise_threshold: float, temperature: float,
                  smoothing_k: int, smoothing_tau: float, max_items: int) -> None:
    """Thresholds in [0, 1], positive temperatures and k, a count >= 0; errors name the flag."""
    for flag, value, ok in (
            ("--threshold", threshold, 0.0 <= threshold <= 1.0),
            ("--denoise-threshold", denoise_threshold, 0.0 <= denoise_threshold <= 1.0),
            ("--temperature", temperature, temperature > 0),
            ("--smoothing-k", smoothing_k, smoothing_k >= 1),
            ("--smoothing-tau", smoothing_tau, smoothing_tau > 0),
            ("--max-items", max_items, max_items >= 0)):
        if not ok:
            raise CelsegError(f"{flag} {value} is out of range (thresholds lie in [0, 1], "
                              "temperatures are positive, counts are positive or 0)")


def check_request(data: str, out: str, split: str, vlm: str | None, from_ckpt: str | None,
                  max_items: int = 0, overwrite: bool = False) -> OutputGuard:
    """Outputs that replace nothing foreign, before any model is loaded; returns the guard
    that claimed them."""
    check_out_dir(data, out)
    guard = OutputGuard("pseudo-label", overwrite=overwrite).read_dataset(data)
    guard.read_path(vlm)
    if from_ckpt:
        guard.read_checkpoint(from_ckpt)
    dataset = SegmentationDataset(data, split, max_items=max_items)
    guard.claim(files=[*(Path(out) / f"{image.stem}.png" for image, _ in dataset.samples),
                       Path(out) / "report.json"])
    return guard


def label_split(data: str, out: str, threshold: float, split: str = "train",
                vlm: str | None = None, from_ckpt: str | None = None, device: str = "cpu",
                max_items: int = 0, progress: bool = True, class_share: float = 0.0,
                ensemble: bool = True, dense_options: dict | None = None) -> dict:
    """Pseudo labels from the VLM ``vlm`` (``dense_options``: ``pseudo_label``'s temperature,
    key smoothing and prompt denoising settings), or self-training labels from the segmenter
    checkpoint ``from_ckpt`` (``class_share``, ``ensemble``); returns the report dict."""
    if from_ckpt:
        if vlm:
            raise CelsegError("--vlm and --from-ckpt exclude each other: the checkpoint's config "
                              "names the VLM used for its text embeddings")
        return relabel_from_checkpoint(from_ckpt, data, out, threshold, split=split,
                                       device=device, progress=progress, max_items=max_items,
                                       class_share=class_share, ensemble=ensemble)
    if not vlm:
        raise CelsegError("give --vlm NAME_OR_PATH (or --from-ckpt CKPT for self-training)")
    return pseudo_label(load_vlm(vlm, device=device), data, out, threshold, split=split,
                        progress=progress, max_items=max_items, **(dense_options or {}))
