"""The run-folder lock: held by a live process it refuses; left by a dead one it is replaced."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from celseg.engine.run_lock import LOCK_NAME, RunLock, RunLockedError, _start_ticks


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _write(out, **owner):
    out.mkdir(parents=True, exist_ok=True)
    (out / LOCK_NAME).write_text(json.dumps({"host": socket.gethostname(), "started": 0,
                                             **owner}))


def test_lock_holds_pid_and_is_released(tmp_path):
    lock = RunLock(tmp_path / "run").acquire()
    owner = json.loads((tmp_path / "run" / LOCK_NAME).read_text())
    assert owner["pid"] == os.getpid() and owner["host"] == socket.gethostname()
    with pytest.raises(RunLockedError, match=rf"pid {os.getpid()}"):
        RunLock(tmp_path / "run").acquire()
    lock.release()
    lock.release()  # idempotent
    assert not (tmp_path / "run").exists()  # it made the folder and nothing else is in it
    RunLock(tmp_path / "run").acquire().release()


def test_stale_locks_are_replaced(tmp_path, capsys):
    out = tmp_path / "run"
    _write(out, pid=_dead_pid())
    RunLock(out).acquire().release()
    assert "stale lock" in capsys.readouterr().err
    _write(out, pid=os.getpid(), start_ticks=(_start_ticks(os.getpid()) or 0) + 12345)
    lock = RunLock(out).acquire()  # same pid, another process start: a reused pid
    assert json.loads((out / LOCK_NAME).read_text())["start_ticks"] == _start_ticks(os.getpid())
    lock.release()
    (out / LOCK_NAME).write_text("{half a lock")
    RunLock(out).acquire().release()


def test_locks_of_live_or_unknown_owners_are_respected(tmp_path):
    out = tmp_path / "run"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _write(out, pid=sleeper.pid, started=time.time())
        with pytest.raises(RunLockedError, match=rf"pid {sleeper.pid}.*{LOCK_NAME}"):
            RunLock(out).acquire()
    finally:
        sleeper.kill()
        sleeper.wait()
    _write(out, pid=1, host="another-machine")  # cannot be checked from here
    with pytest.raises(RunLockedError, match="another-machine"):
        RunLock(out).acquire()
    assert (out / LOCK_NAME).exists()  # a refused run leaves the owner's lock alone
