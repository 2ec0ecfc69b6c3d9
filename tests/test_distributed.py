"""DDP on CPU: two gloo processes under torchrun train exactly like one process with the same global batch, also
when one rank's whole batch is unreadable."""
from __future__ import annotations

import csv
import os
import socket
import subprocess
import sys

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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(world, output, nproc: int, batch_size: int, *overrides: str) -> subprocess.CompletedProcess:
    args = ["-m", "app", "pretrain", f"data.train_list={world / 'train.txt'}", f"output={output}",
            f"data.batch_size={batch_size}", *TINY, *overrides]
    if nproc > 1:
        launcher = ["-m", "torch.distributed.run", "--nnodes=1", f"--nproc_per_node={nproc}",
                    "--master_addr=127.0.0.1", f"--master_port={free_port()}"]
        args = [*launcher, *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


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


def test_two_gloo_processes_match_one_process_with_the_same_global_batch(tiny_world, tmp_path):
    run(tiny_world, tmp_path / "single", nproc=1, batch_size=8)
    run(tiny_world, tmp_path / "ddp", nproc=2, batch_size=4)
    single, ddp = losses(tmp_path / "single"), losses(tmp_path / "ddp")
    assert len(single) == len(ddp) == 4
    assert all(abs(a - b) <= 1e-5 * max(1.0, abs(a)) for a, b in zip(single, ddp)), (single, ddp)
    assert load_checkpoint(tmp_path / "ddp" / "checkpoints" / "latest.pt")["world_size"] == 2
    same_weights(tmp_path / "single" / "checkpoints" / "latest.pt", tmp_path / "ddp" / "checkpoints" / "latest.pt")


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


def test_a_rank_whose_batch_is_all_unreadable_trains_with_the_others_instead_of_hanging(tiny_world, tmp_path):
    data, bad = list_with_rank1_unreadable_at_step_0(tiny_world, tmp_path / "data")
    one_epoch = ["optimization.steps=3"]  # later epochs mix the bad files into partly readable batches
    run(data, tmp_path / "single", 1, 8, *one_epoch)
    ddp = run(data, tmp_path / "ddp", 2, 4, *one_epoch)  # before the fix: rank 0 waited in the all-reduce forever
    single, two = losses(tmp_path / "single"), losses(tmp_path / "ddp")
    assert len(two) == 3 and all(abs(a - b) <= 1e-5 * max(1.0, abs(a)) for a, b in zip(single, two)), (single, two)
    same_weights(tmp_path / "single" / "checkpoints" / "latest.pt", tmp_path / "ddp" / "checkpoints" / "latest.pt")
    assert [row["skipped_videos"] for row in log_rows(tmp_path / "ddp")] == ["4", "4", "4"]
    assert sorted(load_checkpoint(tmp_path / "ddp" / "checkpoints" / "latest.pt")["skipped_videos"]) == sorted(bad)
    for path in bad:  # one line each from the project, though rank 1 met them and rank 0 reports
        assert sum(f"skipping {path}:" in line for line in ddp.stderr.splitlines()) == 1, ddp.stderr[-3000:]
