"""The wheel: ``python -m build``, installed into a fresh virtual environment outside the
repository, runs ``celseg --help``, a tiny demo from the packaged configs, and predictions on a
generated image (slow: ``pytest -m slow tests/test_wheel.py``).

The fresh environment gets the wheel alone (``--no-deps``); its dependencies (torch, ...) are
this environment's site-packages, added as a plain path so that the editable install of the
repository is not.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def _run(command: list[str], cwd: Path, env: dict | None = None, timeout: int = 900) -> str:
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, f"{command}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.mark.slow
def test_wheel_installs_and_runs_outside_the_repository(tmp_path) -> None:
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist), str(ROOT)],
         cwd=tmp_path)
    (wheel,) = dist.glob("celseg-*.whl")
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], cwd=tmp_path)
    python = venv / "bin" / "python"
    site = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                cwd=tmp_path).strip()
    (Path(site) / "celseg_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
         cwd=tmp_path)

    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", HF_HUB_OFFLINE="1",
               CELSEG_CACHE=str(tmp_path / "cache"), OMP_NUM_THREADS="1")
    where = _run(["python", "-c", "import celseg; print(celseg.__file__)"], work, env)
    assert where.startswith(str(venv)), where  # the wheel, not the repository
    assert "export" in _run(["celseg", "--help"], work, env)
    assert "--variants" in _run(["celseg", "demo", "--help"], work, env)
    # the demo reads configs/synthetic.yaml from the package
    _run(["celseg", "demo", "--out", "demo", "--variants", "baseline", "--train-images", "4",
          "--val-images", "2", "--captions", "16", "--size", "64", "--vlm-steps", "2",
          "--jobs", "1", "--no-progress", "--set", "train.iterations=2", "train.batch_size=2",
          "train.warmup_iters=0", "eval.batch_size=2"], work, env)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(work / "image.png")
    for model in (["--ckpt", "demo/runs/baseline"], ["--vlm", "demo/vlm"]):
        out = f"pred_{model[0][2:]}"
        _run(["celseg", "predict", *model, "--classes", "red circle,grass", "image.png",
              "--out", out], work, env)
        labels = np.asarray(Image.open(work / out / "image.png"))
        assert labels.shape == (48, 64) and labels.max() < 2
