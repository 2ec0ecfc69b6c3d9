"""`vjepa submit` against a real single-node SLURM (slurm/local_cluster.sh): jobs, preemption and requeue, arrays.

The cluster is installed (apt-get) and started when it is not running, and stopped at the end if
this module started it. Tests that need it are skipped only where it cannot be installed.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import submitit
import torch
from omegaconf import OmegaConf

from conftest import REPO, TINY_MASKS, tiny_pretrain_config
from vjepa.checkpoint import load_checkpoint
from app.cli import build_parser, main
from vjepa.preemption import preemption
from vjepa.submit import SlurmConfig, slurm_config_from_args, sweep, sweep_folder
from vjepa import train as train_module
from vjepa.train import pretrain

CLUSTER = REPO / "slurm" / "local_cluster.sh"
STATE = Path(os.environ.get("VJEPA_SLURM_DIR", "/tmp/vjepa-slurm"))
FINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE"}
TINY = [
    "device=cpu", "data.frames_per_clip=8", "data.frame_step=2", "data.crop_size=32", "data.batch_size=4",
    "data.num_workers=0", "model.name=vit_micro", "model.depth=2", "model.pred_depth=1", "model.pred_embed_dim=48",
    "optimization.warmup_steps=2", "logging.progress=false", "logging.rankme_every=2", TINY_MASKS,
]
JOB = ["--cpus-per-task", "1"]  # one of the node's two CPUs: an array's two jobs run side by side


# --------------------------------------------------------------------------- the cluster


@pytest.fixture(scope="module")
def slurm_cluster():
    """SLURM_CONF pointing at the local cluster, started (and installed) here if it is not running."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("SLURM_CONF", str(STATE / "slurm.conf"))
        env.setenv("VJEPA_SLURM_DIR", str(STATE))
        started = False
        if subprocess.run([CLUSTER, "status"], capture_output=True).returncode != 0:
            installed = all(shutil.which(d) for d in ("slurmctld", "slurmd", "munged"))
            if os.geteuid() != 0 or not (installed or shutil.which("apt-get")):
                pytest.skip("no SLURM cluster running and none can be started here: slurm/local_cluster.sh needs "
                            "root, and apt-get where slurm-wlm and munge are not installed")
            result = subprocess.run([CLUSTER, "start"], capture_output=True, text=True, timeout=600)
            assert result.returncode == 0, f"slurm/local_cluster.sh start failed:\n{result.stderr}"
            started = True
        yield
        if started:
            subprocess.run([CLUSTER, "stop"], capture_output=True, timeout=60)


def submit_cli(*args: str) -> str:
    """`vjepa submit ...` through the real command line; returns the (array) job id it prints."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["submit", *args]) == 0
    match = re.search(r"as (?:array )?job (\d+)", out.getvalue())
    assert match, out.getvalue()
    return match.group(1)


def jobs(job_id: str) -> list[dict[str, str]]:
    """`scontrol show job` fields of a job, or of every task of an array job."""
    out = subprocess.run(["scontrol", "show", "job", "--oneliner", job_id], capture_output=True, text=True, check=True).stdout
    return [dict(f.split("=", 1) for f in line.split() if "=" in f) for line in out.splitlines() if line.strip()]


def job_logs(run: Path) -> str:
    return "\n".join(p.read_text()[-2000:] for p in sorted(run.glob("slurm/*/*_log.err")))


def wait_until_completed(job_id: str, run: Path, timeout: float = 150) -> list[dict[str, str]]:
    """Poll `scontrol` until the job (every task of an array) is over; fail with its logs unless COMPLETED."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        info = jobs(job_id)
        if info and all(j["JobState"] in FINAL_STATES for j in info):
            assert all(j["JobState"] == "COMPLETED" for j in info), f"{info}\n{job_logs(run)}"
            return info
        time.sleep(1)
    subprocess.run(["scancel", job_id])
    pytest.fail(f"job {job_id} did not finish within {timeout:.0f} s: {jobs(job_id)}\n{job_logs(run)}")


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# --------------------------------------------------------------------------- without a cluster


def test_array_specs_expand_to_the_product_of_their_values_with_one_folder_each():
    combos = sweep(["checkpoint=/runs/a/latest.pt,/runs/b/latest.pt", "seed=0,1"])
    assert combos == [
        ["checkpoint=/runs/a/latest.pt", "seed=0"], ["checkpoint=/runs/a/latest.pt", "seed=1"],
        ["checkpoint=/runs/b/latest.pt", "seed=0"], ["checkpoint=/runs/b/latest.pt", "seed=1"],
    ]
    assert sweep_folder(combos[1]) == "checkpoint=runs_a_latest.pt,seed=1"
    assert sweep([]) == [[]]


def test_command_line_flags_win_over_the_cluster_config_file():
    args = build_parser().parse_args(["submit", "pretrain", "--slurm-config", str(REPO / "slurm/configs/example_cluster.yaml"),
                                      "--nodes", "4", "--mem", "64G", "--partition", "dev", "optimization.lr=1e-3"])
    slurm = slurm_config_from_args(args)
    assert (slurm.nodes, slurm.mem_gb, slurm.partition) == (4, 64.0, "dev")  # flags
    assert (slurm.gpus_per_node, slurm.time_min, slurm.extra["constraint"]) == (8, 4320, "volta32gb")  # the file
    assert args.overrides == ["optimization.lr=1e-3"] and SlurmConfig().time_min == 60


@contextlib.contextmanager
def armed(handler):
    """`handler` as submitit's USR2 handler, armed as in a submitted job; the process's own handlers after."""
    previous = {s: signal.getsignal(s) for s in preemption.SIGNALS}
    signal.signal(signal.SIGUSR2, handler)
    preemption.arm()
    try:
        yield
    finally:
        preemption.armed = False
        for s, h in previous.items():
            signal.signal(s, h)


@pytest.mark.parametrize("signum", [signal.SIGUSR2, signal.SIGTERM], ids=["USR2", "TERM"])
def test_a_preemption_signal_during_a_step_is_handled_after_the_step(signum):
    order = []
    with armed(lambda s, _: order.append(f"handler {signal.Signals(s).name}")):
        with preemption.deferred():
            os.kill(os.getpid(), signum)
            time.sleep(0.05)  # a Python handler would run here, mid-step, if it were not deferred
            order.append("step done")
        order.append("next step")
    assert order == ["step done", f"handler {signum.name}", "next step"]


def test_only_the_first_preemption_signal_saves_and_requeues():
    # SLURM sends SIGTERM to the old processes of a job that has just requeued itself
    calls = []
    with armed(lambda s, _: calls.append(signal.Signals(s).name)):
        for signum in (signal.SIGUSR2, signal.SIGTERM, signal.SIGTERM):
            os.kill(os.getpid(), signum)
            time.sleep(0.05)
    assert calls == ["SIGUSR2"]


def test_a_preemption_signal_while_a_batch_loads_waits_until_that_step_is_done(tiny_world, tmp_path, monkeypatch):
    # a handler that runs mid-load can land in a data loader's __del__, where Python ignores its SystemExit
    out = tmp_path / "run"

    def handler(signum, frame):  # what submitit's does: save the last finished step, then exit
        preemption.save_now()
        raise SystemExit(-1)

    get = train_module.BatchStream.get

    def get_with_signal(self, step):
        if step == 2:
            os.kill(os.getpid(), signal.SIGUSR2)  # SLURM's signal arrives while step 2's batch loads
        return get(self, step)

    monkeypatch.setattr(train_module.BatchStream, "get", get_with_signal)
    with armed(handler), pytest.raises(SystemExit):
        pretrain(tiny_pretrain_config(tiny_world, out, *TINY, "optimization.steps=6", "logging.checkpoint_every=1000"))
    assert load_checkpoint(out / "checkpoints" / "latest.pt")["step"] == 3  # step 2 was trained, then the run stopped
    assert [int(r["step"]) for r in read_rows(out / "log.csv")] == [0, 1, 2]


# --------------------------------------------------------------------------- through SLURM


@pytest.fixture(scope="module")
def submitted_pretrain(slurm_cluster, tiny_world, tmp_path_factory) -> tuple[Path, dict[str, str]]:
    run = tmp_path_factory.mktemp("submitted") / "pretrain"
    job_id = submit_cli("pretrain", *JOB, f"output={run}", f"data.train_list={tiny_world / 'train.txt'}",
                        *TINY, "optimization.steps=6",
                        "logging.checkpoint_every=3", "logging.snapshot_every=3")
    [info] = wait_until_completed(job_id, run)
    return run, info


def test_submitted_pretrain_completes_with_its_config_logs_and_checkpoint(submitted_pretrain):
    run, info = submitted_pretrain
    assert info["Restarts"] == "0"
    assert OmegaConf.load(run / "config.yaml").optimization.steps == 6
    assert [int(r["step"]) for r in read_rows(run / "log.csv")] == list(range(6))
    logs = run / "slurm" / info["JobId"]
    assert "Job completed successfully" in (logs / f"{info['JobId']}_0_log.err").read_text()
    ckpt = load_checkpoint(run / "checkpoints" / "latest.pt")
    assert ckpt["step"] == 6 and ckpt["config"]["output"] == str(run)
    assert load_checkpoint(run / "checkpoints" / "step_0000003.pt")["step"] == 3


INTERRUPTIONS = {
    # what SLURM sends `signal_delay_s` before the time limit (`--signal=USR2@...`), to every process of the job
    "time limit (USR2)": lambda job_id, run: submitit.SlurmJob(folder=run / "slurm" / "%j", job_id=job_id)._interrupt(timeout=True),
    # what SLURM preempts with, and what a user's `scancel --signal=TERM` sends: submitit alone only logs it
    "preemption (TERM)": lambda job_id, run: subprocess.run(["scancel", "--signal=TERM", job_id], check=True),
}


@pytest.mark.parametrize("interrupt", INTERRUPTIONS.values(), ids=INTERRUPTIONS.keys())
def test_interrupted_pretrain_requeues_itself_and_ends_exactly_like_an_uninterrupted_run(slurm_cluster, tiny_world, tmp_path,
                                                                                         interrupt, request, fault):
    # no periodic checkpoint to fall back on; a data-loader worker, which SLURM signals too
    steps = ["optimization.steps=16", "logging.checkpoint_every=1000", "data.num_workers=1"]
    run = tmp_path / "preempted"
    job_id = submit_cli("pretrain", *JOB, f"output={run}", f"data.train_list={tiny_world / 'train.txt'}", *TINY, *steps)
    deadline = time.time() + 60
    while not ((run / "log.csv").is_file() and len(read_rows(run / "log.csv")) >= 3):
        assert time.time() < deadline and jobs(job_id)[0]["JobState"] not in FINAL_STATES, jobs(job_id)
        time.sleep(0.2)
    interrupt(job_id, run)
    # the uninterrupted run, in this process, while the requeued job waits to start again
    pretrain(tiny_pretrain_config(tiny_world, tmp_path / "uninterrupted", *TINY, *steps))
    [info] = wait_until_completed(job_id, run)

    assert int(info["Restarts"]) >= 1
    log = (run / "slurm" / job_id / f"{job_id}_0_log.err").read_text()
    assert re.search(r"Caught signal SIG(USR2|TERM)", log)  # submitit's handler, which called SubmittedRun.checkpoint
    assert log.count("Calling checkpoint method") == 1  # once, though SLURM signals the requeued job's processes again
    [saved] = map(int, re.findall(r"preempted: saved step (\d+)", log))  # by the training process only
    assert 3 <= saved < 16 and f"resumed from {run / 'checkpoints' / 'latest.pt'} at step {saved}" in log
    rows, reference = read_rows(run / "log.csv"), read_rows(tmp_path / "uninterrupted" / "log.csv")
    assert [int(r["step"]) for r in rows] == list(range(16))  # every step once: nothing lost, nothing redone twice
    for a, b in zip(rows, reference):
        assert float(a["loss"]) == pytest.approx(float(b["loss"]), rel=1e-5), a["step"]
    a = load_checkpoint(run / "checkpoints" / "latest.pt")
    b = load_checkpoint(tmp_path / "uninterrupted" / "checkpoints" / "latest.pt")
    assert a["step"] == b["step"] == 16
    for key in ("encoder", "predictor", "target_encoder"):
        for name, tensor in b[key].items():
            assert torch.allclose(a[key][name], tensor, rtol=0, atol=1e-5), f"{key}.{name}"
    signal_line = re.search(r"WARNING submitit: (Caught signal .*)", log).group(1)
    fault.record(f"a submitted run interrupted by SLURM's {request.node.callspec.id}",
                 f"{signal_line}\npreempted: saved step {saved} ...\nresumed from latest.pt at step {saved}",
                 "every step once; losses and weights equal an uninterrupted run")


def test_probe_array_evaluates_each_checkpoint_in_its_own_job(submitted_pretrain, tiny_world, tmp_path):
    recipe = {
        "world": str(tiny_world), "device": "cpu",
        "data": {"train_list": "${world}/train.txt", "val_list": "${world}/val.txt"},
        "features": {"frames_per_clip": 8, "frame_step": 2, "crop_size": 32, "batch_size": 8, "num_workers": 0},
        "models": {"jepa": {"kind": "checkpoint", "checkpoint": "${checkpoint}", "encoder": "auto"}},
        "tasks": {"n_objects": {"type": "classification", "probes": ["linear"]}},
    }
    OmegaConf.save(recipe, tmp_path / "probe.yaml")
    checkpoints = [submitted_pretrain[0] / "checkpoints" / name for name in ("step_0000003.pt", "latest.pt")]
    sweep_root = tmp_path / "sweep"
    job_id = submit_cli("probe", "--config", str(tmp_path / "probe.yaml"), *JOB, f"output={sweep_root}",
                        "--array", "checkpoint=" + ",".join(map(str, checkpoints)))
    info = wait_until_completed(job_id, sweep_root)

    assert sorted(j["ArrayTaskId"] for j in info) == ["0", "1"]
    for checkpoint in checkpoints:
        folder = sweep_root / sweep_folder([f"checkpoint={checkpoint}"])
        assert OmegaConf.load(folder / "config.yaml").checkpoint == str(checkpoint)
        result = json.loads((folder / "metrics.json").read_text())["models"]["jepa"]["tasks"]["n_objects/linear"]
        assert result["metric"] == "top1" and 0 <= result["value"] <= 1
