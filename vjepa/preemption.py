"""Preemption: how a training run inside a SLURM job saves itself between two steps.

SLURM warns a job before its time limit (USR2, `signal_delay_s` ahead) and preempts it with
SIGTERM. The launcher (`vjepa.submit`) installs submitit's handlers, which checkpoint and requeue
on USR2; this module gives SIGTERM the same handler and makes it safe for a training loop. The loop registers `save_now` (write `latest.pt`
for the last finished step) and runs each step, from loading its batch on, inside `deferred()`: a
signal that arrives mid-step waits until the step's update, log row and step count are all done,
so a checkpoint never holds a half-updated model, and the handler's exit never runs inside a data
loader's cleanup. Data-loader workers ignore the signals (`ignore_in_worker`).
"""
from __future__ import annotations

import contextlib
import os
import signal
from typing import Any, Callable, Iterator, Optional


def requeue_signal() -> signal.Signals:
    """The signal submitit checkpoints and requeues on: USR2 unless `SUBMITIT_PREEMPT_SIGNAL` names another."""
    return signal.Signals["SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2").upper().removeprefix("SIG")]


class Preemption:
    SIGNALS = (signal.SIGUSR2, signal.SIGTERM)

    def __init__(self) -> None:
        self.armed = False  # True inside submitted jobs, where the signals checkpoint and requeue
        self.save_now: Optional[Callable[[], None]] = None

    def arm(self) -> None:
        """In a submitted job, once submitit's handlers are set: SIGTERM does what its USR2 does, once, in this process only.

        submitit only logs SIGTERM, the signal SLURM preempts with (and `scancel --signal=TERM` sends): the
        job would run on until SIGKILL and lose every step since its last checkpoint, so it gets the
        checkpoint-and-requeue handler too. The first of the signals acts; the SIGTERM that SLURM sends
        the requeued job's old processes while they exit must not save and requeue a second time. SLURM
        signals every process of a job step; a forked data-loader worker that ran the handler would save
        its stale copy of the model and requeue the job itself.
        """
        owner = os.getpid()
        requeue = signal.getsignal(requeue_signal())
        if not callable(requeue):
            return
        acted: list[int] = []

        def handle(signum: int, frame: Any) -> None:
            if os.getpid() == owner and not acted:
                acted.append(signum)
                requeue(signum, frame)

        self.SIGNALS = tuple({requeue_signal(), signal.SIGTERM})
        for s in self.SIGNALS:
            signal.signal(s, handle)
        self.armed = True

    def ignore_in_worker(self) -> None:
        """In a data-loader worker of a submitted job: the main process checkpoints on these; a worker must not die of them."""
        if self.armed:
            for s in self.SIGNALS:
                signal.signal(s, signal.SIG_IGN)

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        if not self.armed:
            yield
            return
        # Swap the handlers rather than mask the signals: Python runs a handler in the main thread
        # whichever thread the kernel delivered to, so masking the main thread alone defers nothing.
        pending: list[int] = []
        previous = {s: signal.signal(s, lambda signum, _frame: pending.append(signum)) for s in self.SIGNALS}
        try:
            yield
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
        for signum in pending:
            signal.raise_signal(signum)


preemption = Preemption()
