"""Two CPU processes under torchrun (gloo): replicas stay equal and rank 0 writes the run."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import torch
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
