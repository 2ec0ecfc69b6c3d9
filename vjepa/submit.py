"""Launching on SLURM through submitit: `vjepa submit COMMAND ...` runs what `vjepa COMMAND ...` runs.

    vjepa submit pretrain --config configs/pretrain/tiny_world.yaml --gpus-per-node 8 --nodes 2 --time 600
    vjepa submit probe --array checkpoint=runs/a/checkpoints/latest.pt,runs/b/checkpoints/latest.pt

The command's config is loaded here as `vjepa COMMAND` loads it and written to `<output>/config.yaml`;
the job runs the same entry point on that file, so a queued job is not changed by later edits of the
recipe. submitit's files (sbatch script, pickles, stdout/stderr logs) go to `<output>/slurm/<job id>/`.

On SLURM's timeout or preemption signal (USR2, sent `signal_delay_s` before the time limit) the job
saves the current training step, requeues itself and resumes from that step with `resume=true`: the
finished run is the one an uninterrupted run would have produced.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import itertools
import os
import re
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

import submitit
from submitit.core.utils import FailedJobError
from submitit.helpers import Checkpointable, DelayedSubmission, TorchDistributedEnvironment

from vjepa.cli import COMMANDS, load_command_config, run_command
from vjepa.config import ConfigError, load_config, save_config

NOT_SUBMITTABLE = ("demo",)  # the demo chains several commands in one process; submit them one by one


class SubmissionError(ValueError):
    """The scheduler refused a job (unknown partition, account, too many resources, ...)."""


@dataclass
class SlurmConfig:
    """What a job asks the cluster for. A cluster's defaults go in a YAML file (`--slurm-config`)."""

    cluster: Optional[str] = None  # slurm | local (processes on this machine); null: slurm where `srun` exists, else local
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


# --------------------------------------------------------------------------- preemption


class Preemption:
    """How a preempted job saves a training run between two steps.

    The training loop registers `save_now` (write `latest.pt` for the last finished step) and runs
    each step, from loading its batch on, inside `deferred()`: a SIGUSR2 or SIGTERM that arrives
    mid-step waits until the step's update, log row and step count are all done, so a checkpoint never
    holds a half-updated model, and the handler's exit never runs inside a data loader's cleanup.
    """

    SIGNALS = (signal.SIGUSR2, signal.SIGTERM)

    def __init__(self) -> None:
        self.armed = False  # True inside submitted jobs, where the signals checkpoint and requeue
        self.save_now: Optional[Callable[[], None]] = None

    def arm(self) -> None:
        """In a submitted job, once submitit's handlers are set: make them act in this process only.

        SLURM signals every process of a job step; a forked data-loader worker that ran submitit's
        handler would save its stale copy of the model and requeue the job itself.
        """
        owner = os.getpid()

        def in_owner_only(handler: Callable) -> Callable:
            def handle(signum: int, frame: Any) -> None:
                if os.getpid() == owner:
                    handler(signum, frame)
            return handle

        for s in self.SIGNALS:
            handler = signal.getsignal(s)
            if callable(handler):
                signal.signal(s, in_owner_only(handler))
        self.armed = True

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


def export_distributed_env() -> None:
    """torchrun's variables from SLURM's (or submitit's local) task layout, for `vjepa.distributed`."""
    if submitit.JobEnvironment().num_tasks > 1:
        # keep every GPU visible: vjepa.distributed picks this task's device from LOCAL_RANK
        TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)


def accepts_resume(command: str) -> bool:
    schema, _ = COMMANDS[command].load()
    return any(f.name == "resume" for f in dataclasses.fields(schema))


class SubmittedRun(Checkpointable):
    """What a job runs: `vjepa COMMAND --config CONFIG [overrides]`; requeued with `resume=true`."""

    def __init__(self, command: str, config: str, overrides: Sequence[str] = ()) -> None:
        self.command, self.config, self.overrides = command, config, list(overrides)

    def __call__(self) -> Any:
        export_distributed_env()
        preemption.arm()
        return run_command(self.command, self.config, self.overrides)

    def checkpoint(self) -> DelayedSubmission:
        """Called by submitit's USR2 handler on rank 0: save the step in progress, then requeue."""
        if preemption.save_now is not None:
            preemption.save_now()
        overrides = self.overrides
        if accepts_resume(self.command) and "resume=true" not in overrides:
            overrides = [*overrides, "resume=true"]
        return DelayedSubmission(SubmittedRun(self.command, self.config, overrides))


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


def prepare_runs(command: str, config: str | None, overrides: Sequence[str], arrays: Sequence[str]) -> tuple[Path, list[SubmittedRun]]:
    """Load, check and save each job's config; return the run folder and the callables to submit."""
    root = Path(load_command_config(command, config, overrides).output).absolute()
    runs = []
    for combo in sweep(arrays):
        extra = [*combo, f"output={root / sweep_folder(combo)}"] if combo else []
        cfg = load_command_config(command, config, [*overrides, *extra])
        saved = Path(cfg.output).absolute() / "config.yaml"
        save_config(cfg, saved)
        runs.append(SubmittedRun(command, str(saved)))
    return root, runs


def submit(command: str, config: str | None = None, overrides: Sequence[str] = (), slurm: SlurmConfig | None = None,
           arrays: Sequence[str] = ()) -> list[submitit.Job]:
    """Submit `vjepa COMMAND` as one job, or as a job array over the product of `arrays` (`key=v1,v2`)."""
    if command not in COMMANDS or command in NOT_SUBMITTABLE:
        names = ", ".join(n for n in COMMANDS if n not in NOT_SUBMITTABLE)
        raise ConfigError(f"vjepa submit: unknown command {command!r}; expected one of {names}")
    slurm = slurm or load_config(SlurmConfig)
    root, runs = prepare_runs(command, config, overrides, arrays)
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


def add_submit_parser(sub: argparse._SubParsersAction) -> None:
    """`vjepa submit COMMAND [options] [key=value ...]`: one sub-command per submittable command."""
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
    for name, command in COMMANDS.items():
        if name not in NOT_SUBMITTABLE:
            targets.add_parser(name, parents=[options], help=command.help, description=f"vjepa {name}, as a SLURM job")


def slurm_config_from_args(args: argparse.Namespace) -> SlurmConfig:
    slurm = load_config(SlurmConfig, args.slurm_config)
    for dest, *_ in FLAGS.values():
        value = getattr(args, dest)
        if value is not None:
            setattr(slurm, dest, value)
    return slurm


def main(args: argparse.Namespace) -> list[submitit.Job]:
    """`vjepa submit ...` once parsed by `vjepa.cli`."""
    return submit(args.target, args.config, args.overrides, slurm_config_from_args(args), args.array)
