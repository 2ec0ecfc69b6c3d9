"""Launching on SLURM through submitit: `vjepa submit COMMAND ...` runs what `vjepa COMMAND ...` runs.

    vjepa submit pretrain --config configs/pretrain/tiny_world.yaml --gpus-per-node 8 --nodes 2 --time 600
    vjepa submit probe --array checkpoint=runs/a/checkpoints/latest.pt,runs/b/checkpoints/latest.pt

The command line (`app.cli`) loads the command's config as `vjepa COMMAND` loads it and writes it
to `<output>/config.yaml`; the job runs the same entry point on that file, so a queued job is not
changed by later edits of the recipe. This module knows nothing of the commands: a job is any
picklable `runner(command, config, overrides)`. submitit's files (sbatch script, pickles,
stdout/stderr logs) go to `<output>/slurm/<job id>/`.

On SLURM's timeout or preemption signal (USR2, sent `signal_delay_s` before the time limit; SIGTERM)
the job saves the current training step (`vjepa.preemption`), requeues itself and resumes from that
step with `resume=true`: the finished run is the one an uninterrupted run would have produced.
"""
from __future__ import annotations

import argparse
import itertools
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import submitit
from submitit.core.utils import FailedJobError
from submitit.helpers import Checkpointable, DelayedSubmission, TorchDistributedEnvironment

from vjepa.config import ConfigError, choice, load_config
from vjepa.preemption import preemption

Runner = Callable[[str, str, Sequence[str]], Any]  # (command, config file, overrides) -> the command's result


class SubmissionError(ValueError):
    """The scheduler refused a job (unknown partition, account, too many resources, ...)."""


@dataclass
class SlurmConfig:
    """What a job asks the cluster for. A cluster's defaults go in a YAML file (`--slurm-config`)."""

    cluster: Optional[str] = choice(None, ("slurm", "local"))  # local: processes on this machine; null: slurm where `srun` exists, else local
    nodes: int = 1
    gpus_per_node: int = 0
    tasks_per_node: Optional[int] = None  # null: one task per GPU (one on CPU); each task is a torch.distributed rank
    cpus_per_task: Optional[int] = None
    mem_gb: Optional[float] = None
    time_min: int = 60
    partition: Optional[str] = None
    account: Optional[str] = None
    qos: Optional[str] = None
    signal_delay_s: int = 120  # USR2 this long before the time limit: the time a job has to save and requeue
    max_timeouts: int = 3  # requeues after a time limit; preemptions requeue without limit
    array_parallelism: int = 64  # array jobs running at once
    setup: List[str] = field(default_factory=list)  # shell lines run before the job, e.g. `module load cuda/12.1`
    extra: Dict[str, Any] = field(default_factory=dict)  # any other sbatch option, e.g. {constraint: a100, exclusive: true}


def export_distributed_env() -> None:
    """torchrun's variables from SLURM's (or submitit's local) task layout, for `vjepa.distributed`."""
    if submitit.JobEnvironment().num_tasks > 1:
        # keep every GPU visible: vjepa.distributed picks this task's device from LOCAL_RANK
        TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)


class SubmittedRun(Checkpointable):
    """What a job runs: `runner(command, config, overrides)`; requeued with `resume=true` where the command resumes."""

    def __init__(self, runner: Runner, command: str, config: str, overrides: Sequence[str] = (),
                 resumable: bool = False) -> None:
        self.runner, self.command, self.config, self.overrides = runner, command, config, list(overrides)
        self.resumable = resumable

    def __call__(self) -> Any:
        export_distributed_env()
        preemption.arm()
        return self.runner(self.command, self.config, self.overrides)

    def checkpoint(self) -> DelayedSubmission:
        """Called by submitit's signal handler on rank 0: save the step in progress, then requeue."""
        if preemption.save_now is not None:
            preemption.save_now()
        overrides = self.overrides
        if self.resumable and "resume=true" not in overrides:
            overrides = [*overrides, "resume=true"]
        return DelayedSubmission(SubmittedRun(self.runner, self.command, self.config, overrides, self.resumable))


# --------------------------------------------------------------------------- submitting


def sweep(arrays: Sequence[str]) -> list[list[str]]:
    """`key=v1,v2` specs -> their cartesian product as override lists (one list, empty, without specs)."""
    axes = []
    for spec in arrays:
        key, sep, values = spec.partition("=")
        if not sep or not key or not values:
            raise ConfigError(f"--array {spec!r} is not of the form key=value1,value2,...")
        axes.append([f"{key}={v}" for v in values.split(",")])
    return [list(combo) for combo in itertools.product(*axes)]


def sweep_folder(combo: Sequence[str]) -> str:
    """The sub-folder of one array job: `lr=0.001,seed=1`; path values have their slashes flattened."""
    return ",".join(key + "=" + value.strip("/").replace("/", "_") for key, _, value in (o.partition("=") for o in combo))


def executor_parameters(slurm: SlurmConfig, name: str) -> dict[str, Any]:
    tasks = slurm.tasks_per_node or max(1, slurm.gpus_per_node)
    params: dict[str, Any] = {
        "name": name, "timeout_min": slurm.time_min, "nodes": slurm.nodes, "tasks_per_node": tasks,
        "gpus_per_node": slurm.gpus_per_node or None, "cpus_per_task": slurm.cpus_per_task, "mem_gb": slurm.mem_gb,
        "slurm_partition": slurm.partition, "slurm_account": slurm.account, "slurm_qos": slurm.qos,
        "slurm_signal_delay_s": slurm.signal_delay_s, "slurm_array_parallelism": slurm.array_parallelism,
        "slurm_setup": list(slurm.setup) or None, "slurm_additional_parameters": dict(slurm.extra) or None,
    }
    return {k: v for k, v in params.items() if v is not None}


def submit_runs(command: str, root: Path, runs: Sequence[SubmittedRun], slurm: SlurmConfig) -> list[submitit.Job]:
    """Submit the runs as one job, or as one job array; their logs go under `root/slurm/`."""
    executor = submitit.AutoExecutor(folder=root / "slurm" / "%j", cluster=slurm.cluster,
                                     slurm_max_num_timeout=slurm.max_timeouts)
    executor.update_parameters(**executor_parameters(slurm, f"vjepa-{command}"))
    try:
        with executor.batch():
            jobs = [executor.submit(run) for run in runs]
    except FailedJobError as exc:
        message = " ".join(str(exc).split())
        raise SubmissionError(f"{executor.cluster} refused the job: {message}. Check the flags and --slurm-config") from exc
    describe(command, executor.cluster, root, jobs, runs)
    return jobs


def describe(command: str, cluster: str, root: Path, jobs: Sequence[submitit.Job], runs: Sequence[SubmittedRun]) -> None:
    """Tell the user what went where: job ids, run folders, logs, and how to follow them."""
    job_id = jobs[0].job_id.split("_")[0]
    if len(jobs) == 1:
        print(f"submitted vjepa {command} to {cluster} as job {job_id}")
        print(f"  run folder: {root}")
    else:
        print(f"submitted vjepa {command} to {cluster} as array job {job_id} ({len(jobs)} jobs)")
        for job, run in zip(jobs, runs):
            print(f"  {job.job_id}: {Path(run.config).parent}")
    print(f"  logs: {jobs[0].paths.stdout}")
    print(f"        {jobs[0].paths.stderr}")
    if cluster == "slurm":
        print(f"  follow: squeue -j {job_id}; sacct -j {job_id}; tail -f {jobs[0].paths.stderr}; cancel: scancel {job_id}")


# --------------------------------------------------------------------------- the command line


def parse_mem(text: str) -> float:
    """`64`, `64G`, `64GB`, `500M` -> GB."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([GgMmTt]?)[Bb]?\s*", text)
    if match is None:
        raise argparse.ArgumentTypeError(f"--mem {text!r}: expected a size such as 64G or 500M")
    scale = {"": 1.0, "g": 1.0, "m": 1 / 1024, "t": 1024.0}[match.group(2).lower()]
    return float(match.group(1)) * scale


# flag -> SlurmConfig field; a flag that is given wins over the --slurm-config file
FLAGS = {
    "--cluster": ("cluster", str, "NAME", "slurm, or local (processes on this machine); default: slurm where srun exists, else local"),
    "--nodes": ("nodes", int, "N", "nodes"),
    "--gpus-per-node": ("gpus_per_node", int, "G", "GPUs per node (one training process each)"),
    "--tasks-per-node": ("tasks_per_node", int, "T", "processes per node (default: one per GPU, 1 on CPU)"),
    "--cpus-per-task": ("cpus_per_task", int, "C", "CPUs per process"),
    "--mem": ("mem_gb", parse_mem, "SIZE", "memory per node, e.g. 64G"),
    "--time": ("time_min", int, "MIN", "time limit in minutes; the job saves and requeues itself when it is reached"),
    "--partition": ("partition", str, "P", "SLURM partition"),
    "--account": ("account", str, "A", "SLURM account"),
    "--qos": ("qos", str, "Q", "SLURM quality of service"),
}


def add_submit_parser(sub: argparse._SubParsersAction, commands: dict[str, str]) -> None:
    """`vjepa submit COMMAND [options] [key=value ...]`, one sub-command per entry of `commands` (name -> help)."""
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument("--config", default=None, help="the command's YAML recipe (default: the command's own)")
    options.add_argument("--slurm-config", default=os.environ.get("VJEPA_SLURM_CONFIG"),
                         help="YAML with the cluster's SLURM defaults, e.g. slurm/configs/example_cluster.yaml "
                              "(default: $VJEPA_SLURM_CONFIG)")
    for flag, (dest, kind, metavar, text) in FLAGS.items():
        options.add_argument(flag, dest=dest, type=kind, default=None, metavar=metavar, help=text)
    options.add_argument("--array", action="append", default=[], metavar="KEY=V1,V2",
                         help="one job per value, as a job array; repeat for the product of several keys")
    options.add_argument("overrides", nargs="*", metavar="key=value", help="OmegaConf dot-list overrides of the command's config")

    p = sub.add_parser("submit", help="run a command as a SLURM job (submitit)",
                       description="Run `vjepa COMMAND` as a SLURM job: same config, same entry point.")
    targets = p.add_subparsers(dest="target", required=True, metavar="COMMAND")
    for name, text in commands.items():
        targets.add_parser(name, parents=[options], help=text, description=f"vjepa {name}, as a SLURM job")


def slurm_config_from_args(args: argparse.Namespace) -> SlurmConfig:
    slurm = load_config(SlurmConfig, args.slurm_config)
    for dest, *_ in FLAGS.values():
        value = getattr(args, dest)
        if value is not None:
            setattr(slurm, dest, value)
    return slurm
