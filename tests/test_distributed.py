"""DDP on CPU: two gloo processes under torchrun train exactly like one process with the same global batch."""
from __future__ import annotations

import csv
import os
import socket
import subprocess
import sys

import torch

from conftest import REPO, TINY_MASKS
from vjepa.checkpoint import load_checkpoint

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


def run(world, output, nproc: int, batch_size: int) -> None:
    args = ["-m", "app", "pretrain", f"data.train_list={world / 'train.txt'}", f"output={output}",
            f"data.batch_size={batch_size}", *TINY]
    if nproc > 1:
        launcher = ["-m", "torch.distributed.run", "--nnodes=1", f"--nproc_per_node={nproc}",
                    "--master_addr=127.0.0.1", f"--master_port={free_port()}"]
        args = [*launcher, *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


def losses(output) -> list[float]:
    with open(output / "log.csv", newline="") as f:
        return [float(row["loss"]) for row in csv.DictReader(f)]


def test_two_gloo_processes_match_one_process_with_the_same_global_batch(tiny_world, tmp_path):
    run(tiny_world, tmp_path / "single", nproc=1, batch_size=8)
    run(tiny_world, tmp_path / "ddp", nproc=2, batch_size=4)
    single, ddp = losses(tmp_path / "single"), losses(tmp_path / "ddp")
    assert len(single) == len(ddp) == 4
    assert all(abs(a - b) <= 1e-5 * max(1.0, abs(a)) for a, b in zip(single, ddp)), (single, ddp)
    a = load_checkpoint(tmp_path / "single" / "checkpoints" / "latest.pt")
    b = load_checkpoint(tmp_path / "ddp" / "checkpoints" / "latest.pt")
    assert b["world_size"] == 2
    for key in ("encoder", "predictor", "target_encoder"):
        for name, tensor in a[key].items():
            assert torch.allclose(tensor, b[key][name], atol=1e-5, rtol=1e-4), f"{key}.{name}"
