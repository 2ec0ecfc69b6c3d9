"""DDP on CPU: two gloo processes under torchrun train exactly like one process with the same global batch, on one
node or on two nodes with a launcher each (as on a cluster), also when one rank's whole batch is unreadable."""
from __future__ import annotations

import contextlib
import csv
import os
import re
import socket
import subprocess
import sys
import tempfile
import time

import pytest
import torch

from conftest import REPO, TINY_MASKS
from vjepa.checkpoint import load_checkpoint
from vjepa.data.dataset import epoch_batches

TINY = [
    "data.frames_per_clip=8", "data.frame_step=2", "data.crop_size=32", "data.num_workers=0",
    "model.name=vit_micro", "model.depth=2", "model.pred_depth=1", "model.pred_embed_dim=48",
    "optimization.steps=4", "optimization.warmup_steps=1", "logging.progress=false", "logging.rankme_every=0",
    TINY_MASKS,
]
TIMEOUT = 300  # seconds for a whole run, all its nodes together


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launchers(nnodes: int, nproc_per_node: int) -> list[list[str]]:
    """Each node's launcher, the arguments before `-m app ...`: none for one process alone, else torchrun with the
    static rendezvous a cluster job gives every node (node 0 at 127.0.0.1 and a free port, this node's rank)."""
    if nnodes * nproc_per_node == 1:
        return [[]]
    port = free_port()
    return [["-m", "torch.distributed.run", f"--nnodes={nnodes}", f"--nproc_per_node={nproc_per_node}",
             f"--node_rank={node}", "--master_addr=127.0.0.1", f"--master_port={port}"] for node in range(nnodes)]


def stop(procs: list[subprocess.Popen]) -> None:
    """SIGTERM every launcher still running (torchrun then ends its workers, which run in sessions of their own);
    SIGKILL any that is left a minute later."""
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def run(world, output, nproc: int, batch_size: int, *overrides: str,
        nnodes: int = 1) -> list[subprocess.CompletedProcess]:
    """Pretrain on `world` into `output`: `nproc` processes on each of `nnodes` nodes, a launcher per node started
    together on this machine, `batch_size` clips per process. Every launcher must exit 0 within TIMEOUT; when one
    fails or time is up, all are stopped and the test fails with each one's stderr. One result per node."""
    args = ["-m", "app", "pretrain", f"data.train_list={world / 'train.txt'}", f"output={output}",
            f"data.batch_size={batch_size}", *TINY, *overrides]
    scratch = output.parent / f"{output.name}-tmp"  # torchrun leaves a torchelastic_* folder in TMPDIR
    scratch.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LOGLEVEL": "INFO",  # INFO: torchrun logs the ranks it started
           "TMPDIR": str(scratch)}
    hung = False
    with contextlib.ExitStack() as files:
        nodes = launchers(nnodes, nproc)
        logs = [[files.enter_context(tempfile.TemporaryFile("w+")) for _ in ("stdout", "stderr")] for _ in nodes]
        procs = [subprocess.Popen([sys.executable, *launcher, *args], cwd=REPO, env=env, stdout=out, stderr=err,
                                  text=True) for launcher, (out, err) in zip(nodes, logs)]
        try:  # until all have exited, one has failed (its partners would wait for it) or time is up
            deadline = time.monotonic() + TIMEOUT
            while None in (codes := [p.poll() for p in procs]) and not any(codes):
                if time.monotonic() > deadline:
                    hung = True
                    break
                time.sleep(0.1)
        finally:
            stop(procs)
        for f in (f for pair in logs for f in pair):
            f.seek(0)
        results = [subprocess.CompletedProcess(p.args, p.returncode, out.read(), err.read())
                   for p, (out, err) in zip(procs, logs)]
    tails = "\n".join(f"--- node {node} (exit {r.returncode}), stderr ends:\n{r.stderr[-3000:]}"
                      for node, r in enumerate(results))
    assert not hung, f"not done within {TIMEOUT}s, every node stopped\n{tails}"
    assert all(r.returncode == 0 for r in results), tails
    return results


def started(launcher_stderr: str) -> dict[str, str]:
    """What a torchrun launcher says it started on its node: its node rank and count, and its workers' local and
    global ranks (from its INFO log of the rendezvous)."""
    keys = "group_rank|group_world_size|local_ranks|global_ranks"
    return dict(re.findall(rf"\]\s+({keys})=(.*\S)\s*$", launcher_stderr, re.MULTILINE))


def log_rows(output) -> list[dict]:
    with open(output / "log.csv", newline="") as f:
        return list(csv.DictReader(f))


def losses(output) -> list[float]:
    return [float(row["loss"]) for row in log_rows(output)]


def same_weights(a_path, b_path) -> None:
    a, b = load_checkpoint(a_path), load_checkpoint(b_path)
    for key in ("encoder", "predictor", "target_encoder"):
        for name, tensor in a[key].items():
            assert torch.allclose(tensor, b[key][name], atol=1e-5, rtol=1e-4), f"{key}.{name}"


def assert_trains_like(single, ddp, steps: int) -> None:
    """The two-process run in `ddp` took the same `steps` as the one process in `single`: the same losses, the same
    weights at the end."""
    a, b = losses(single), losses(ddp)
    assert len(a) == len(b) == steps, (a, b)
    assert all(abs(x - y) <= 1e-5 * max(1.0, abs(x)) for x, y in zip(a, b)), (a, b)
    assert load_checkpoint(ddp / "checkpoints" / "latest.pt")["world_size"] == 2
    same_weights(single / "checkpoints" / "latest.pt", ddp / "checkpoints" / "latest.pt")


@pytest.fixture(scope="module")
def one_process(tiny_world, tmp_path_factory):
    """The reference the DDP runs are compared with: one process with the global batch of 8 on the tiny world."""
    out = tmp_path_factory.mktemp("single")
    run(tiny_world, out, 1, 8)
    return out


def test_two_gloo_processes_match_one_process_with_the_same_global_batch(tiny_world, one_process, tmp_path):
    (node,) = run(tiny_world, tmp_path / "ddp", 2, 4)
    assert started(node.stderr) == {"group_rank": "0", "group_world_size": "1", "local_ranks": "[0, 1]",
                                    "global_ranks": "[0, 1]"}, node.stderr[-3000:]
    assert_trains_like(one_process, tmp_path / "ddp", steps=4)


def test_two_nodes_with_a_launcher_each_match_one_process_with_the_same_global_batch(tiny_world, one_process,
                                                                                     tmp_path):
    nodes = run(tiny_world, tmp_path / "ddp", 1, 4, nnodes=2)  # two torchruns, one gloo process each
    for rank, node in enumerate(nodes):  # each node's one worker has local rank 0 and the node's rank as global rank
        assert started(node.stderr) == {"group_rank": str(rank), "group_world_size": "2", "local_ranks": "[0]",
                                        "global_ranks": f"[{rank}]"}, node.stderr[-3000:]
    assert_trains_like(one_process, tmp_path / "ddp", steps=4)


def list_with_rank1_unreadable_at_step_0(world, out):
    """The world's train list with the four videos rank 1 of two reads at step 0 (batch 4) replaced by bad files:
    missing, empty, not a video, and an H.264 file cut short."""
    lines = (world / "train.txt").read_text().splitlines()
    entries = [(str((world / path).resolve()), label) for path, label in (line.rsplit(" ", 1) for line in lines)]
    rank1 = epoch_batches(len(entries), 4, seed=0, epoch=0, rank=1, world_size=2, drop_last=True)[0]
    out.mkdir()
    (out / "empty.mp4").write_bytes(b"")
    (out / "notes.mp4").write_text("not a video\n")
    (out / "cut.mp4").write_bytes(open(entries[rank1[3]][0], "rb").read()[:400])
    bad = [str(out / "missing.mp4"), str(out / "empty.mp4"), str(out / "notes.mp4"), str(out / "cut.mp4")]
    for i, path in zip(rank1, bad):
        entries[i] = (path, entries[i][1])
    (out / "train.txt").write_text("".join(f"{path} {label}\n" for path, label in entries))
    return out, bad


def test_a_rank_whose_batch_is_all_unreadable_trains_with_the_others_instead_of_hanging(tiny_world, tmp_path, fault):
    data, bad = list_with_rank1_unreadable_at_step_0(tiny_world, tmp_path / "data")
    one_epoch = ["optimization.steps=3"]  # later epochs mix the bad files into partly readable batches
    run(data, tmp_path / "single", 1, 8, *one_epoch)
    (ddp,) = run(data, tmp_path / "ddp", 2, 4, *one_epoch)  # before the fix: rank 0 waited in the all-reduce forever
    assert_trains_like(tmp_path / "single", tmp_path / "ddp", steps=3)
    assert [row["skipped_videos"] for row in log_rows(tmp_path / "ddp")] == ["4", "4", "4"]
    assert sorted(load_checkpoint(tmp_path / "ddp" / "checkpoints" / "latest.pt")["skipped_videos"]) == sorted(bad)
    for path in bad:  # one line each from the project, though rank 1 met them and rank 0 reports
        assert sum(f"skipping {path}:" in line for line in ddp.stderr.splitlines()) == 1, ddp.stderr[-3000:]
    warning = next(line for line in ddp.stderr.splitlines() if f"skipping {bad[0]}:" in line)
    fault.record("DDP, 2 gloo processes: one rank's whole batch unreadable", warning[warning.index("skipping"):],
                 "no hang; the same losses and weights as one process without the bad files; each file reported once")
