"""A full disk or a permission error while saving leaves the previous checkpoint intact and
readable; CUDA out-of-memory is reported with the sizes that caused it."""

from __future__ import annotations

import errno
import os
import resource
import signal

import pytest
import torch
from bad_input_tools import snapshot, tiny_training
from torch import nn

from celseg.cli import main
from celseg.engine import checkpoint as ckpt
from celseg.errors import OutputError

TINY = tiny_training(4, ckpt_every=2)


@pytest.fixture()
def cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("CELSEG_CACHE", str(tmp_path_factory.getbasetemp() / "text_cache"))


def _model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Linear(128, 256)  # 130 kB of weights


def _train_cli(tmp_path, root, out, capsys) -> tuple[int, str]:
    """``celseg train`` of the tiny model; returns (exit code, stderr)."""
    config = tmp_path / "c.yaml"
    config.write_text("{}\n")
    rc = main(["train", "-c", str(config), "--no-progress", "--set", *TINY, f"data.root={root}",
               f"train.out_dir={out}"])
    return rc, capsys.readouterr().err


def _assert_previous_intact(out, before, model_seed=0):
    assert snapshot(out) == before  # byte for byte, and no temporary file left behind
    restored = _model(99)
    ckpt.load_weights(restored, ckpt.checkpoint_paths(out)[0])
    assert torch.equal(restored.weight, _model(model_seed).weight)
    assert ckpt.load_state(out)["step"] == 1


@pytest.mark.parametrize("fail", ["state", "weights"])
@pytest.mark.parametrize("error", [errno.ENOSPC, errno.EACCES])
def test_a_failed_save_leaves_the_previous_checkpoint(tmp_path, monkeypatch, fail, error):
    ckpt.save_checkpoint(tmp_path, _model(0), {"step": 1}, {"step": "1"})
    before = snapshot(tmp_path)

    def broken(obj, path, *args, **kwargs):
        with open(path, "wb") as fh:  # half a file, then the disk is full
            fh.write(b"\0" * 100)
        raise OSError(error, os.strerror(error))

    monkeypatch.setattr(ckpt.torch if fail == "state" else ckpt, "save" if fail == "state"
                        else "save_file", broken)
    with pytest.raises(OutputError, match=rf"step 2.*{os.strerror(error)}.*intact"):
        ckpt.save_checkpoint(tmp_path, _model(1), {"step": 2}, {"step": "2"})
    monkeypatch.undo()
    _assert_previous_intact(tmp_path, before)


def test_a_real_write_limit_leaves_the_previous_checkpoint(tmp_path):
    """No mock: the kernel refuses writes beyond 64 kB (RLIMIT_FSIZE) as a full disk would."""
    ckpt.save_checkpoint(tmp_path, _model(0), {"step": 1}, {"step": "1"})
    before = snapshot(tmp_path)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, hard))
        with pytest.raises(OutputError, match="step 2"):
            ckpt.save_checkpoint(tmp_path, _model(1), {"step": 2, "pad": torch.zeros(10)},
                                 {"step": "2"})
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old_handler)
    _assert_previous_intact(tmp_path, before)


def test_training_stops_on_a_failed_save_and_resumes_from_the_previous(tmp_path, synthetic_root,
                                                                       monkeypatch, cache,
                                                                       capsys):
    from celseg.config import load_config
    from celseg.engine.trainer import train

    out = tmp_path / "run"
    cfg = load_config(None, [*TINY, f"data.root={synthetic_root}", f"train.out_dir={out}"])
    real_save = ckpt.save_file
    calls = []

    def full_disk_on_second_save(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(*args, **kwargs)

    monkeypatch.setattr(ckpt, "save_file", full_disk_on_second_save)
    rc, err = _train_cli(tmp_path, synthetic_root, out, capsys)
    assert rc == 2 and "step 4" in err and "No space left" in err and "--resume" in err
    monkeypatch.undo()
    assert ckpt.load_state(out)["step"] == 2  # the previous checkpoint, whole
    assert not (out / "train.lock").exists()
    assert train(cfg, resume=True, progress=False)["step"] == 4


def test_cuda_out_of_memory_names_batch_and_crop_size(tmp_path, synthetic_root, monkeypatch,
                                                      cache, capsys):
    from celseg.engine import trainer

    def oom(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(trainer, "_train_step", oom)
    rc, err = _train_cli(tmp_path, synthetic_root, tmp_path / "run", capsys)
    assert rc == 2 and "Traceback" not in err
    for text in ("train.batch_size=2", "data.crop_size=64", "lower", "2.00 GiB"):
        assert text in err
