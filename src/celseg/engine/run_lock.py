"""One training per run folder: ``OUT/train.lock`` holds the owner's pid, host and start time.

The lock file is created atomically (written under a temporary name, then hard-linked into
place, which fails when it exists). A lock whose process is gone (or whose pid now belongs to a
younger process) is stale and is replaced; a lock from another host is respected, since its
process cannot be checked from here.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path

from celseg.errors import CelsegError

LOCK_NAME = "train.lock"


class RunLockedError(CelsegError):
    """Another live training holds the run folder."""


def _start_ticks(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot (Linux), to tell a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _alive(owner: dict) -> bool:
    pid = owner.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    if owner.get("host") != socket.gethostname():
        return True  # cannot be checked from here: respect it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by another user
    ticks = owner.get("start_ticks")
    return ticks is None or _start_ticks(pid) in (None, ticks)


def read_owner(path: Path) -> dict:
    """The lock's content; ``{}`` when it is unreadable or damaged (treated as stale)."""
    try:
        owner = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return owner if isinstance(owner, dict) else {}


class RunLock:
    """``acquire()`` before touching a run folder, ``release()`` when done (idempotent)."""

    def __init__(self, out_dir: str | Path) -> None:
        self.out_dir = Path(out_dir)
        self.path = self.out_dir / LOCK_NAME
        self.held = False
        self._created_dir = False

    def acquire(self) -> RunLock:
        self._created_dir = not self.out_dir.exists()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
              "start_ticks": _start_ticks(os.getpid())}
        tmp = self.path.with_name(f".{LOCK_NAME}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(me))
        try:
            for _ in range(3):
                try:
                    os.link(tmp, self.path)
                    self.held = True
                    return self
                except FileExistsError:
                    self._clear_stale()
        finally:
            tmp.unlink(missing_ok=True)
        raise RunLockedError(f"could not take the lock {self.path}; another training keeps "
                             "taking it")

    def _clear_stale(self) -> None:
        owner = read_owner(self.path)
        if _alive(owner):
            started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(owner.get("started", 0)))
            raise RunLockedError(
                f"{self.out_dir} is in use by another training (pid {owner['pid']} on "
                f"{owner.get('host')}, started {started}); wait for it to finish or choose "
                f"another train.out_dir. If that process is gone, delete {self.path}")
        print(f"celseg: removing the stale lock {self.path} (pid {owner.get('pid', '?')} is not "
              "running)", file=sys.stderr)
        self.path.unlink(missing_ok=True)

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        if read_owner(self.path).get("pid") == os.getpid():
            self.path.unlink(missing_ok=True)
        if self._created_dir:
            try:
                self.out_dir.rmdir()  # only when the refused run left it empty
            except OSError:
                pass
