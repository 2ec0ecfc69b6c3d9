"""One training run per output folder: `<output>/run.lock`, held by the main process while it trains.

Two runs writing the same `latest.pt` (a requeued job racing a manual restart) would each resume
from, and overwrite, the other's steps. The lock is an open file with an exclusive `flock`, which
the kernel releases however the holder ends (even `kill -9`), so a dead run never blocks the
next; the file says who holds it, for the error the second run reports. A requeued SLURM job of
the same run takes over a lock its earlier attempt still appears to hold (a node that died
without releasing it on a network filesystem).
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Optional

LOCK = "run.lock"
log = logging.getLogger(__name__)


class RunLocked(RuntimeError):
    """Another run is training into the same output folder."""


def this_process() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(), "slurm_job": os.environ.get("SLURM_JOB_ID"),
            "since": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def describe(holder: dict) -> str:
    job = f", SLURM job {holder['slurm_job']}" if holder.get("slurm_job") else ""
    return f"pid {holder.get('pid')} on {holder.get('host')}{job}, since {holder.get('since')}"


class RunLock:
    """`with RunLock(output):` or acquire()/release(); a second holder gets RunLocked naming the first."""

    def __init__(self, output: str | Path) -> None:
        self.path = Path(output) / LOCK
        self.file = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        file = open(self.path, "a+")
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self.holder()
            me = this_process()
            if not (me["slurm_job"] and holder.get("slurm_job") == me["slurm_job"]):
                file.close()
                raise RunLocked(
                    f"{self.path.parent} is in use by another run ({describe(holder)}); wait for it to end or "
                    f"choose another output. If that run is gone, delete {self.path}") from None
            log.warning("taking over %s from an earlier attempt of this SLURM job (%s)", self.path, describe(holder))
        file.seek(0)
        file.truncate()
        json.dump(this_process(), file)
        file.write("\n")
        file.flush()
        self.file = file

    def holder(self) -> dict:
        try:
            return json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            return {}

    def release(self) -> None:
        if self.file is not None:
            self.file.close()  # closing the file releases the flock; the file stays, naming the last holder
            self.file = None

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> Optional[bool]:
        self.release()
        return None
