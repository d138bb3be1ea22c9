"""Locked-text contrastive pretraining (LiT) of the default VLM on a caption split.

Captions are embedded once by the frozen MiniLM. The image tower's stem and first
``train_from_block`` blocks are frozen too, so their outputs are computed once per image and
cached; each step then runs only the trainable tail (later blocks, head, projection). BatchNorm
stays in eval mode. Loss: symmetric InfoNCE with a learnable temperature, where identical
captions in a batch count as positives of each other (many images share a caption here).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from celseg.data.captions import read_lines
from celseg.errors import DataError
from celseg.io.images import open_rgb
from celseg.vlm.config import VLMConfig
from celseg.vlm.lit import LiTImageTower, build_lit, save_lit
from celseg.vlm.minilm import MiniLMTextEncoder, load_minilm_encoder

CKPT = "checkpoint.pt"
FEATURES = "frozen_features.pt"


CaptionRoots = str | Path | Sequence[str | Path]


def caption_roots(data: CaptionRoots) -> list[Path]:
    """One dataset root, or several: pretraining on the caption splits of several datasets is
    celseg's analogue of a VLM's web-scale pretraining (one VLM then knows every world's names)."""
    roots = [data] if isinstance(data, (str, Path)) else list(data)
    if not roots:
        raise DataError("no dataset root given for the caption split")
    return [Path(r) for r in roots]


def read_captions(data: CaptionRoots, split: str = "train") -> list[dict]:
    """Entries of ``DATA/captions/captions.jsonl`` with the given split, image paths resolved;
    with several roots, their entries in the order given."""
    roots = caption_roots(data)
    if len(roots) > 1:
        return [e for root in roots for e in read_captions(root, split)]
    path = roots[0] / "captions" / "captions.jsonl"
    if not path.is_file():
        raise DataError(f"no caption file {path} (expected the caption split of the dataset)")
    entries = []
    for n, line in enumerate(read_lines(path), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            image, caption = entry["image"], entry["caption"]
        except (ValueError, KeyError, TypeError) as exc:
            raise DataError(f"{path}:{n}: bad caption entry ({exc})") from None
        if entry.get("split", "train") == split:
            entries.append({**entry, "image": str(path.parent / image), "caption": caption})
    if not entries:
        raise DataError(f"{path}: no caption entries with split {split!r}")
    return entries


def load_image(path: str, size: int | None = None) -> torch.Tensor:
    """RGB file -> (3,H,W) float in [0,1], optionally resized to (size, size)."""
    img = open_rgb(path)
    if size is not None and img.size != (size, size):
        img = img.resize((size, size), Image.BICUBIC)
    return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float() / 255.0


def contrastive_loss(img: torch.Tensor, txt: torch.Tensor, logit_scale: torch.Tensor,
                     same: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE. img, txt: (B,D) normalised; same: (B,B) bool, True where captions of
    i and j are identical (each row has soft targets spread over its positives)."""
    logits = logit_scale.exp().clamp(max=100.0) * img @ txt.T  # (B, B)
    target = same.float() / same.float().sum(1, keepdim=True)
    loss_i = -(target * logits.log_softmax(1)).sum(1).mean()
    loss_t = -(target * logits.T.log_softmax(1)).sum(1).mean()
    return 0.5 * (loss_i + loss_t)


def _augment(feats: torch.Tensor, gen: torch.Generator, min_scale: float) -> torch.Tensor:
    """Random resized crop + horizontal flip on cached feature maps (B,C,h,w)."""
    b, _, h, w = feats.shape
    out = []
    for i in range(b):
        area = float(torch.empty(1).uniform_(min_scale, 1.0, generator=gen))
        ch = max(1, round(h * math.sqrt(area)))
        cw = max(1, round(w * math.sqrt(area)))
        y0 = int(torch.randint(0, h - ch + 1, (1,), generator=gen))
        x0 = int(torch.randint(0, w - cw + 1, (1,), generator=gen))
        f = feats[i : i + 1, :, y0 : y0 + ch, x0 : x0 + cw]
        if (ch, cw) != (h, w):
            f = F.interpolate(f, size=(h, w), mode="bilinear", align_corners=False)
        if bool(torch.rand(1, generator=gen) < 0.5):
            f = f.flip(-1)
        out.append(f)
    return torch.cat(out)


def _cache_frozen(tower: LiTImageTower, entries: list[dict], cfg: VLMConfig, out: Path,
                  progress: bool) -> torch.Tensor:
    """(N, C, h, w) float16 outputs of the frozen prefix for every caption image (cached)."""
    path = out / FEATURES
    key = {"n": len(entries), "size": cfg.image_size, "stop": cfg.train_from_block,
           "first": entries[0]["image"], "last": entries[-1]["image"]}
    if path.is_file():
        saved = torch.load(path, weights_only=True, map_location="cpu")
        if saved.get("key") == json.dumps(key):
            return saved["features"]
    from tqdm import tqdm

    chunks = []
    bar = tqdm(total=len(entries), desc="frozen features", disable=not progress, unit="img")
    with torch.no_grad():
        for i in range(0, len(entries), 64):
            batch = torch.stack([load_image(e["image"], cfg.image_size)
                                 for e in entries[i : i + 64]])
            chunks.append(tower.trunk_prefix(batch, cfg.train_from_block).half())
            bar.update(len(batch))
    bar.close()
    feats = torch.cat(chunks)
    tmp = out / (FEATURES + ".tmp")
    torch.save({"key": json.dumps(key), "features": feats}, tmp)
    tmp.replace(path)
    return feats


def _param_groups(tower: LiTImageTower, cfg: VLMConfig) -> list[dict]:
    for p in tower.parameters():
        p.requires_grad_(False)
    backbone = [p for b in tower.backbone._blocks[cfg.train_from_block:] for p in b.parameters()]
    backbone += list(tower.backbone._conv_head.parameters())
    if not cfg.freeze_bn:
        backbone += list(tower.backbone._bn1.parameters())
    head = list(tower.proj.parameters()) + [tower.logit_scale]
    if cfg.freeze_bn:
        backbone = [p for p in backbone if p.dim() > 1]  # BN affine stays ImageNet's
    for p in backbone + head:
        p.requires_grad_(True)
    return [{"params": backbone, "lr": cfg.lr_backbone},
            {"params": head, "lr": cfg.lr_proj, "weight_decay": 0.0}]


def _set_train_mode(tower: LiTImageTower, cfg: VLMConfig) -> None:
    tower.train()
    if cfg.freeze_bn:
        for m in tower.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.eval()


def _atomic_save(obj: dict, path: Path) -> None:
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


def pretrain(data: CaptionRoots, out: str | Path, cfg: VLMConfig | None = None,
             resume: bool = False, progress: bool = True,
             text: MiniLMTextEncoder | None = None, stop_after: int | None = None) -> dict:
    """Train the LiT image tower on ``DATA/captions`` (of one root or several, see
    :func:`caption_roots`); write the model to ``out``.

    Returns a summary dict (steps, final loss, seconds). With ``resume`` the last checkpoint in
    ``out`` (model, optimiser, step) is continued; without it an existing checkpoint is ignored.
    ``stop_after`` ends this call after that many steps (checkpointed, as if interrupted).
    """
    from tqdm import tqdm

    t0 = time.time()
    cfg = cfg or VLMConfig()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    entries = read_captions(data, "train")
    captions = sorted({e["caption"] for e in entries})
    cap_index = torch.tensor([captions.index(e["caption"]) for e in entries])
    text = text or load_minilm_encoder()
    with torch.no_grad():  # the text tower is frozen: embed every distinct caption once
        cap_emb = torch.cat([text(captions[i : i + 128]) for i in range(0, len(captions), 128)])

    tower = build_lit(pretrained_backbone=True, init_temperature=cfg.init_temperature)
    tower.eval()
    feats = _cache_frozen(tower, entries, cfg, out, progress)
    groups = _param_groups(tower, cfg)
    opt = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
    base_lrs = [g["lr"] for g in groups]
    step, losses = 0, []
    ckpt = out / CKPT
    if resume and ckpt.is_file():
        state = torch.load(ckpt, weights_only=True, map_location="cpu")
        tower.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        step, losses = int(state["step"]), list(state["losses"])

    n = len(entries)
    bs = min(cfg.batch_size, n)
    bar = tqdm(total=cfg.steps, initial=step, desc="pretrain-vlm", disable=not progress)
    _set_train_mode(tower, cfg)
    last = cfg.steps if stop_after is None else min(cfg.steps, step + stop_after)
    while step < last:
        # The batch and its augmentation are pure functions of (seed, step): resuming replays
        # exactly the steps an uninterrupted run would take.
        epoch, pos = divmod(step * bs, n)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed * 1000 + epoch))
        idx = order[torch.arange(pos, pos + bs) % n]
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        x = _augment(feats[idx].float(), gen, cfg.min_scale)
        warm = min(1.0, (step + 1) / max(1, cfg.warmup_steps))
        decay = 0.5 * (1 + math.cos(math.pi * step / max(1, cfg.steps)))
        for g, lr in zip(opt.param_groups, base_lrs, strict=True):
            g["lr"] = lr * warm * decay
        img = F.normalize(tower.proj(tower.trunk_suffix(x, cfg.train_from_block).mean((2, 3))),
                          dim=-1)
        ci = cap_index[idx]
        loss = contrastive_loss(img, cap_emb[ci], tower.logit_scale, ci[:, None] == ci[None])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        losses.append(loss.item())
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}", T=f"{1 / tower.logit_scale.exp().item():.3f}")
        if step % cfg.checkpoint_every == 0 or step == last:
            _atomic_save({"model": tower.state_dict(), "optimizer": opt.state_dict(),
                          "step": step, "losses": losses}, ckpt)
    bar.close()
    tower.eval()
    if step < cfg.steps:
        return {"steps": step, "interrupted": True, "seconds": round(time.time() - t0, 1)}
    save_lit(tower, out, extra={"dense_scale": cfg.dense_scale, "pretrain": cfg.to_dict(),
                                "data": [str(r) for r in caption_roots(data)],
                                "steps": step})
    summary = {"steps": step, "final_loss": float(np.mean(losses[-20:])) if losses else None,
               "seconds": round(time.time() - t0, 1), "images": n, "captions": len(captions)}
    (out / "pretrain_summary.json").write_text(json.dumps(summary, indent=1))
    return summary
