"""Helpers of the bad-input suite: checksums of a folder tree, a PNG that lies about its size,
a tiny checkpoint, and one assertion that checks exit code, message and unchanged files."""

from __future__ import annotations

import hashlib
import struct
import zlib
from collections.abc import Iterable
from pathlib import Path

TINY_MODEL = ["model.pretrained=false", "model.hidden_dim=32", "model.mask_dim=32",
              "model.num_queries=4", "model.dec_layers=1", "model.nheads=2",
              "model.dim_feedforward=64", "model.vlm=minilm"]


def tiny_training(iterations: int, ckpt_every: int) -> list[str]:
    """Overrides of a few-second CPU training of the tiny model (64 px crops, batch 2)."""
    return [*TINY_MODEL, "data.crop_size=64", "data.max_val=2", "train.batch_size=2",
            "train.warmup_iters=1", "train.log_every=1", f"train.ckpt_every={ckpt_every}",
            "train.device=cpu", "eval.batch_size=2", f"train.iterations={iterations}"]


def snapshot(*roots: Path, exclude: Iterable[Path] = ()) -> dict[str, str]:
    """sha256 of every file under ``roots`` except those under ``exclude``."""
    skip = [Path(p).resolve() for p in exclude]
    sums = {}
    for root in roots:
        for path in sorted(Path(root).rglob("*")):
            resolved = path.resolve()
            if path.is_file() and not any(resolved == s or s in resolved.parents for s in skip):
                sums[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return sums


def assert_refused(main, argv: list[str], capsys, names: Iterable[str], watch: Iterable[Path],
                   output: Iterable[Path] = (), rc: int = 2) -> str:
    """Run ``celseg ARGV``: exit code ``rc``, every text of ``names`` in the message, no
    traceback, and no file under ``watch`` (outside ``output``) created, changed or removed."""
    watch = list(watch)
    before = snapshot(*watch, exclude=output)
    code = main(argv)
    err = capsys.readouterr().err
    assert code == rc, f"exit code {code}, stderr: {err}"
    for text in names:
        assert str(text) in err, f"{text!r} not named in: {err}"
    assert "Traceback" not in err
    assert snapshot(*watch, exclude=output) == before, "a file outside the output changed"
    return err


def png_header(width: int, height: int) -> bytes:
    """A PNG file whose header declares ``width`` x ``height`` RGB (with almost no pixels)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0"))
            + chunk(b"IEND", b""))


def tiny_checkpoint(run: Path, data_root: Path | str = "data/synthetic") -> Path:
    """A run folder holding an untrained tiny segmenter for 384-d MiniLM text embeddings."""
    import torch

    from celseg.config import load_config, save_config
    from celseg.engine.checkpoint import save_checkpoint
    from celseg.models.build import build_segmenter

    cfg = load_config(None, [*TINY_MODEL, f"data.root={data_root}", f"train.out_dir={run}"])
    torch.manual_seed(0)
    save_checkpoint(run, build_segmenter(cfg.model, 384), {"step": 0},
                    {"embed_dim": "384", "step": "0"})
    save_config(cfg, run / "config.yaml")
    return run
