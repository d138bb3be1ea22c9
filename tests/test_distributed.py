"""Two CPU processes (gloo): replicas stay equal, rank 0 writes the run, and DDP's gradients
equal one process's on the whole batch."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file

# Wraps the CLI so every rank also dumps its final weights: the evaluation at the end of
# training receives the (unwrapped) model on every rank.
DRIVER = textwrap.dedent("""
    import os, sys, torch
    import celseg.engine.trainer as trainer
    real = trainer.evaluate
    def spy(model, *args, **kwargs):
        out = os.path.join(os.environ["SPY_DIR"], f"rank{os.environ['RANK']}.pt")
        torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, out)
        return real(model, *args, **kwargs)
    trainer.evaluate = spy
    from celseg.cli import main
    raise SystemExit(main(sys.argv[1:]))
""")


def test_two_process_cpu_training(tmp_path) -> None:
    from celseg.config import load_config, save_config
    from celseg.data.synthetic import generate

    root = tmp_path / "data"
    generate(root, seed=0, n_train=8, n_val=4, size=64, n_captions=0)
    out = tmp_path / "run"
    cfg = load_config(None, [
        "model.pretrained=false", "model.hidden_dim=32", "model.mask_dim=32",
        "model.num_queries=4", "model.dec_layers=1", "model.nheads=2",
        "model.dim_feedforward=64", "model.vlm=minilm", "data.crop_size=64",
        f"data.root={root}", f"train.out_dir={out}", "train.batch_size=2",
        "train.iterations=3", "train.warmup_iters=1", "train.log_every=1", "train.device=cpu",
        "eval.batch_size=2",
    ])
    save_config(cfg, tmp_path / "cfg.yaml")
    (tmp_path / "driver.py").write_text(DRIVER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SPY_DIR": str(tmp_path),
           "CELSEG_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
         "--standalone", str(tmp_path / "driver.py"), "train", "-c",
         str(tmp_path / "cfg.yaml"), "--no-progress"],
        env=env, capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert r0.keys() == r1.keys()
    for key in r0:
        assert torch.equal(r0[key], r1[key]), key
    saved = load_file(str(out / "checkpoints" / "last.safetensors"))
    for key in r0:
        assert torch.equal(saved[key], r0[key]), key
    log = (out / "log.jsonl").read_text()
    assert '"world_size": 2' in log and (out / "metrics.json").is_file()
    # only rank 0 writes: one start record, one record per step
    assert log.count('"event": "start"') == 1


# ----------------------------------------------------------- gradients of DDP vs one process

class _TinySegmenter(torch.nn.Module):
    """The segmenter's outputs, image by image: Q queries with class logits over C names and
    mask logits at half the image size, plus one auxiliary prediction."""

    def __init__(self, queries: int = 5, classes: int = 5, dim: int = 8) -> None:
        super().__init__()
        self.pixels = torch.nn.Conv2d(3, dim, 3, stride=2, padding=1)
        self.queries = torch.nn.Parameter(torch.randn(queries, dim))
        self.refine = torch.nn.Linear(dim, dim)
        self.classify = torch.nn.Linear(dim, classes)

    def forward(self, images: torch.Tensor) -> dict:
        pixels = self.pixels(images).relu()  # (B,D,h,w)
        first = self.queries + pixels.mean((2, 3))[:, None]  # (B,Q,D)
        out = self._predict(first + self.refine(first).relu(), pixels)
        out["aux_outputs"] = [self._predict(first, pixels)]
        return out

    def _predict(self, queries: torch.Tensor, pixels: torch.Tensor) -> dict:
        return {"pred_logits": self.classify(queries),
                "pred_masks": torch.einsum("bqd,bdhw->bqhw", queries, pixels)}


def _segments_case() -> tuple[torch.Tensor, torch.Tensor]:
    """A global batch of 4 images (32 px): the first half has one segment per image, the
    second four (quadrants), so the two halves hold 2 and 8 of the 10 segments. Every image
    has the same ignore strip, so each half has as many labelled pixels."""
    g = torch.Generator().manual_seed(0)
    images = torch.randn(4, 3, 32, 32, generator=g)
    labels = torch.zeros(4, 32, 32, dtype=torch.long)
    labels[0], labels[1] = 1, 3
    for b in (2, 3):
        labels[b, :16, :16], labels[b, :16, 16:] = 0, 1
        labels[b, 16:, :16], labels[b, 16:, 16:] = 2, 4
    labels[:, -3:] = 255
    return images, labels


def _gradients(model, images, labels) -> dict[str, torch.Tensor]:
    """Gradients of the summed terms of the default mode's criterion (background_free, every
    term), read at every pixel: no random points, so both sides see the same numbers."""
    from celseg.config import LossConfig
    from celseg.losses.criterion import build_criterion
    from celseg.losses.targets import build_vocab_lut, labels_to_targets, labels_to_vocab

    criterion = build_criterion(LossConfig(num_points=0, pixel_weight=1.0), has_background=False)
    lut = build_vocab_lut(list(range(5)))
    losses = criterion(model(images), labels_to_targets(labels, lut), labels_to_vocab(labels, lut))
    sum(losses.values()).backward()
    return {k: p.grad.clone() for k, p in model.named_parameters()}


def _ddp_worker(rank: int, port: int, folder: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=2)
    try:
        model = _TinySegmenter()
        model.load_state_dict(torch.load(Path(folder) / "weights.pt", weights_only=True))
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        images, labels = _segments_case()
        half = slice(2 * rank, 2 * rank + 2)
        grads = _gradients(ddp, images[half], labels[half])
        if rank == 0:
            torch.save(grads, Path(folder) / "ddp_grads.pt")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_ddp_gradients_equal_one_process_on_the_global_batch(tmp_path) -> None:
    """The mask, dice and class terms are divided by the segments per process over the whole
    batch (5 here), not by each process's own count (2 and 8): two processes on half a batch
    each then get the gradients of one process on the whole batch."""
    torch.manual_seed(0)
    model = _TinySegmenter()
    torch.save(model.state_dict(), tmp_path / "weights.pt")
    want = _gradients(model, *_segments_case())

    mp.spawn(_ddp_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    got = torch.load(tmp_path / "ddp_grads.pt", weights_only=True)
    assert got.keys() == {"module." + k for k in want}
    for name, grad in want.items():
        error = (got["module." + name] - grad).abs().max()
        assert error <= 1e-5 * grad.abs().max(), (name, float(error), float(grad.abs().max()))
