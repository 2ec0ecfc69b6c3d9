"""One run per output folder: a second run is refused naming the first; a dead or requeued run's lock is taken over."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO, TINY_PRETRAIN
from vjepa.checkpoint import load_checkpoint
from vjepa.runlock import RunLock, RunLocked


def pretrain_cli(world, output, *overrides: str) -> list[str]:
    return [sys.executable, "-m", "app", "pretrain", f"data.train_list={world / 'train.txt'}", f"output={output}",
            *TINY_PRETRAIN, *overrides]


def holder(output, job: str | None) -> subprocess.Popen:
    """Another process holding the lock of `output`, as SLURM job `job`, until it is killed."""
    env = {**os.environ, "SLURM_JOB_ID": job or ""}
    code = (f"import time; from vjepa.runlock import RunLock; lock = RunLock({str(output)!r}); lock.acquire(); print('held', flush=True); "
            "time.sleep(600)")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_run_into_the_same_output_is_refused_naming_the_first(tiny_world, tmp_path, fault):
    out = tmp_path / "run"
    first = subprocess.Popen(pretrain_cli(tiny_world, out, "optimization.steps=100000", "logging.checkpoint_every=2"),
                             cwd=REPO, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not (out / "checkpoints" / "latest.pt").is_file():
            assert time.time() < deadline and first.poll() is None
            time.sleep(0.2)
        second = subprocess.run(pretrain_cli(tiny_world, out, "optimization.steps=4", "resume=true"),
                                cwd=REPO, capture_output=True, text=True, timeout=120)
        assert second.returncode == 2 and "Traceback" not in second.stderr
        [line] = [line for line in second.stderr.splitlines() if "error:" in line]
        assert line.startswith(f"vjepa pretrain: error: {out} is in use by another run (pid {first.pid} on ")
        assert "since" in line and f"delete {out / 'run.lock'}" in line
        assert first.poll() is None  # the first run trains on
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # the kernel released the dead run's lock: resuming needs no cleanup by hand
    resumed = subprocess.run(pretrain_cli(tiny_world, out, "optimization.steps=4", "resume=true"),
                             cwd=REPO, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert load_checkpoint(out / "checkpoints" / "latest.pt")["step"] >= 4
    fault.record("a second run started into the output folder of a running one", line,
                 "the first run trains on, alone")
    fault.record("a run killed with kill -9 while it checkpoints every 2 steps",
                 "", "its last latest.pt; resume=true takes the lock and goes on without cleanup by hand")


def test_a_requeued_slurm_job_takes_over_its_earlier_attempts_lock(tmp_path, monkeypatch, caplog, fault):
    # a node that died holding the lock on a network filesystem: the same job's next attempt goes on
    earlier = holder(tmp_path, job="4242")
    try:
        monkeypatch.setenv("SLURM_JOB_ID", "4243")
        with pytest.raises(RunLocked, match="SLURM job 4242"):
            RunLock(tmp_path).acquire()
        monkeypatch.setenv("SLURM_JOB_ID", "4242")
        with RunLock(tmp_path) as lock:
            assert lock.holder()["pid"] == os.getpid()
        assert "taking over" in caplog.text and f"pid {earlier.pid}" in caplog.text
        fault.record("a requeued SLURM job whose earlier attempt still seems to hold the lock (a dead node)",
                     f"WARNING {caplog.records[-1].getMessage()}", "the run goes on under the same job")
    finally:
        earlier.kill()
        earlier.wait()
