"""Stop a training run cleanly on SIGTERM or SIGINT: finish the step, checkpoint, exit.

The handler only records the signal; the loop asks :meth:`StopOnSignal.pending` after each step,
saves a checkpoint at that step and raises :class:`~celseg.errors.Interrupted` (exit code
128 + signal number), so ``--resume`` continues exactly where the run stopped. A second signal
stops at once (``KeyboardInterrupt``); the last checkpoint on disk is then the previous one.
Under torch.distributed every rank stops at the same step (the flag is all-reduced).
"""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import torch

from celseg.errors import Interrupted

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopOnSignal:
    """Records SIGTERM / SIGINT between :meth:`install` and :meth:`uninstall`."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def install(self) -> StopOnSignal:
        # signal handlers can only be set from the main thread; elsewhere signals keep their
        # default behaviour
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is not None:
            self.uninstall()
            raise KeyboardInterrupt
        self.received = signum
        print(f"\ncelseg: got {signal.Signals(signum).name}; saving a checkpoint after this step "
              "(send it again to stop at once)", file=sys.stderr, flush=True)

    def pending(self, device: torch.device | str = "cpu") -> bool:
        """True once any process of the run got a signal."""
        from celseg.engine import distributed

        if not distributed.is_dist():
            return self.received is not None
        flag = torch.tensor([0.0 if self.received is None else 1.0], device=device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return bool(flag.item())

    def interrupted(self, step: int, out_dir: str | Path) -> Interrupted:
        signum = self.received if self.received is not None else int(signal.SIGTERM)
        name = signal.Signals(signum).name
        return Interrupted(f"stopped by {name} at step {step}; the checkpoint of that step is in "
                           f"{Path(out_dir) / 'checkpoints'}; continue with --resume",
                           exit_code=128 + signum)
