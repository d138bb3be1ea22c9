"""Runs that survive signals and each other: SIGTERM / SIGINT checkpoint the current step and
``--resume`` continues exactly; a second training on the same run folder is refused."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from bad_input_tools import tiny_training
from safetensors.torch import load_file

from celseg.cli import main

ITERATIONS = 16
TINY = tiny_training(ITERATIONS, ckpt_every=0)


@pytest.fixture()
def cache(tmp_path_factory, monkeypatch):
    path = tmp_path_factory.getbasetemp() / "text_cache"
    monkeypatch.setenv("CELSEG_CACHE", str(path))
    return path


def _overrides(root: Path, out: Path) -> list[str]:
    return [*TINY, f"data.root={root}", f"train.out_dir={out}"]


def _argv(root: Path, out: Path) -> list[str]:
    config = out.parent / "empty.yaml"
    config.write_text("{}\n")
    return ["train", "-c", str(config), "--no-progress", "--set", *_overrides(root, out)]


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out / "checkpoints" / "last.safetensors"))


def _logged_step(out: Path) -> int:
    try:
        lines = (out / "log.jsonl").read_text().splitlines()
    except OSError:
        return 0
    steps = [json.loads(line).get("step", 0) for line in lines if line.strip().endswith("}")]
    return max(steps, default=0)


def _wait(condition, child: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not condition() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert child.poll() is None, f"training ended too early: {child.stderr.read()}"
    assert condition(), "training did not get there in time"


def test_sigterm_checkpoints_the_step_and_resume_matches_an_uninterrupted_run(
        tmp_path, synthetic_root, cache):
    from celseg.config import load_config
    from celseg.engine.checkpoint import load_state
    from celseg.engine.trainer import train

    full = tmp_path / "full"
    train(load_config(None, _overrides(synthetic_root, full)), progress=False)

    out = tmp_path / "interrupted"
    child = subprocess.Popen(
        [sys.executable, "-m", "celseg", *_argv(synthetic_root, out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait(lambda: (out / "train.lock").exists(), child)
        # a second training on the same folder is refused while the first one runs
        assert main(_argv(synthetic_root, out)) == 2
        _wait(lambda: _logged_step(out) >= 2, child)
        child.send_signal(signal.SIGTERM)
        _, err = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 128 + signal.SIGTERM, err
    assert "SIGTERM" in err and "--resume" in err and "Traceback" not in err
    stopped = load_state(out)["step"]
    assert 2 <= stopped < ITERATIONS  # the step it was at, not a periodic checkpoint
    assert not (out / "train.lock").exists()

    train(load_config(None, _overrides(synthetic_root, out)), resume=True, progress=False)
    resumed, reference = _weights(out), _weights(full)
    assert resumed.keys() == reference.keys()
    for key in reference:
        assert torch.equal(resumed[key], reference[key]), key


def test_second_training_on_a_live_folder_is_refused(tmp_path, synthetic_root, capsys, cache):
    """The refusal itself, with the owner a live process other than this one."""
    import socket

    out = tmp_path / "run"
    out.mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / "train.lock").write_text(json.dumps(
            {"pid": sleeper.pid, "host": socket.gethostname(), "started": time.time()}))
        rc = main(_argv(synthetic_root, out))
    finally:
        sleeper.kill()
        sleeper.wait()
    err = capsys.readouterr().err
    assert rc == 2 and f"pid {sleeper.pid}" in err and "in use by another training" in err
    assert sorted(p.name for p in out.iterdir()) == ["train.lock"]  # nothing else touched


def test_stop_on_signal_records_sigint_and_a_second_one_stops_at_once():
    from celseg.engine.signals import StopOnSignal

    before = signal.getsignal(signal.SIGINT)
    stop = StopOnSignal().install()
    try:
        assert not stop.pending()
        signal.raise_signal(signal.SIGINT)  # no KeyboardInterrupt: only recorded
        assert stop.pending()
        err = stop.interrupted(7, "runs/x")
        assert err.exit_code == 130 and "SIGINT at step 7" in str(err) and "--resume" in str(err)
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
    finally:
        stop.uninstall()
    assert signal.getsignal(signal.SIGINT) is before
