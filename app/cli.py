"""The `vjepa` command: one sub-command per entry point, each a config schema plus a function.

    vjepa world    [--config FILE] [key=value ...]
    vjepa pretrain [--config FILE] [key=value ...]
    vjepa probe    [--config FILE] [key=value ...]
    vjepa voe      [--config FILE] [key=value ...]
    vjepa dream    [--config FILE] [key=value ...]
    vjepa physics  [--config FILE] [key=value ...]
    vjepa compare  [--config FILE] [key=value ...]
    vjepa demo     [key=value ...]
    vjepa submit   COMMAND [--config FILE] [slurm options] [key=value ...]   # the same, as a SLURM job
    vjepa COMMAND --print-config [key=value ...]                            # the resolved config, then exit

Each entry point is a plain function taking its typed config, so the same function runs locally
here and inside a SLURM job (`vjepa.submit`). This package sits above the library (`vjepa`) and the
evaluations (`evals`): it is the one place that knows both.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from vjepa.config import ConfigError, load_config, save_config, to_yaml


@dataclass(frozen=True)
class Command:
    schema: str  # "module:Class"
    entry: str  # "module:function"
    default_config: str | None  # a shipped recipe (vjepa.config.resolve_config_path finds it from any folder)
    help: str
    submittable: bool = True

    def load(self) -> tuple[type, Callable[[Any], Any]]:
        return _import(self.schema), _import(self.entry)


def _import(spec: str):
    module, name = spec.split(":")
    return getattr(importlib.import_module(module), name)


COMMANDS: dict[str, Command] = {
    "world": Command("vjepa.world.generate:WorldConfig", "vjepa.world.generate:main",
                     "configs/world/default.yaml", "generate the synthetic physics world"),
    "pretrain": Command("vjepa.train:PretrainConfig", "vjepa.train:main",
                        "configs/pretrain/tiny_world.yaml", "pretrain an encoder (V-JEPA by default)"),
    "probe": Command("evals.probe:ProbeConfig", "evals.probe:main",
                     "configs/evals/probe_world.yaml", "frozen linear, attentive and k-NN probes of encoders"),
    "voe": Command("vjepa.world.voe:VoEConfig", "vjepa.world.voe:main", "configs/world/voe.yaml",
                   "generate violation-of-expectation clips (possible / impossible)"),
    "dream": Command("evals.dream:DreamConfig", "evals.dream:main", "configs/evals/dream_world.yaml",
                     "imagined rollouts in latent space, against copy-last and linear baselines"),
    "physics": Command("evals.physics:PhysicsConfig", "evals.physics:main", "configs/evals/physics_world.yaml",
                       "violation of expectation: surprise on possible vs impossible clips"),
    "compare": Command("evals.compare:CompareConfig", "evals.compare:main", "configs/evals/compare_world.yaml",
                       "JEPA against pixel-reconstruction, denoising, random-init and raw-pixel features, side by side"),
    # the demo chains several commands in one process; submit them one by one
    "demo": Command("app.demo:DemoConfig", "app.demo:main", None,
                    "the embedded default end to end: world, pretraining, probes, rollouts, violation of expectation, report",
                    submittable=False),
}


def load_command_config(name: str, config: str | None = None, overrides: Sequence[str] = ()) -> Any:
    """The command's typed config: its schema, the recipe (or the command's default one), the overrides."""
    command = COMMANDS[name]
    schema, _ = command.load()
    return load_config(schema, config or command.default_config, overrides)


def run_command(name: str, config: str | None = None, overrides: Sequence[str] = ()) -> Any:
    """Load the command's typed config and call its entry point (what `vjepa NAME` does)."""
    _, entry = COMMANDS[name].load()
    return entry(load_command_config(name, config, overrides))


def user_errors() -> tuple[type[BaseException], ...]:
    """Errors caused by input (config, data, checkpoints): reported in one line, no traceback."""
    from vjepa.checkpoint import CheckpointError
    from vjepa.data import DataError
    from vjepa.runlock import RunLocked
    from vjepa.train import TrainingDiverged

    return ConfigError, DataError, CheckpointError, RunLocked, TrainingDiverged, FileNotFoundError, ValueError


# --------------------------------------------------------------------------- vjepa submit


def accepts_resume(name: str) -> bool:
    schema, _ = COMMANDS[name].load()
    return any(f.name == "resume" for f in dataclasses.fields(schema))


def submit(name: str, config: str | None = None, overrides: Sequence[str] = (), slurm=None,
           arrays: Sequence[str] = ()) -> list:
    """Submit `vjepa NAME` as one SLURM job, or as a job array over the product of `arrays` (`key=v1,v2`).

    Each job's config is loaded, checked and saved here, and the job runs from that file."""
    from vjepa.submit import SlurmConfig, SubmittedRun, submit_runs, sweep, sweep_folder

    if name not in COMMANDS or not COMMANDS[name].submittable:
        names = ", ".join(n for n, c in COMMANDS.items() if c.submittable)
        raise ConfigError(f"vjepa submit: unknown command {name!r}; expected one of {names}")
    slurm = slurm or load_config(SlurmConfig)
    root = Path(load_command_config(name, config, overrides).output).absolute()
    runs = []
    for combo in sweep(arrays):
        extra = [*combo, f"output={root / sweep_folder(combo)}"] if combo else []
        cfg = load_command_config(name, config, [*overrides, *extra])
        saved = Path(cfg.output).absolute() / "config.yaml"
        save_config(cfg, saved)
        runs.append(SubmittedRun(run_command, name, str(saved), resumable=accepts_resume(name)))
    return submit_runs(name, root, runs, slurm)


# --------------------------------------------------------------------------- the command line


def build_parser() -> argparse.ArgumentParser:
    from vjepa.submit import add_submit_parser

    parser = argparse.ArgumentParser(prog="vjepa", description="JEPA-style self-supervised video world models.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, command in COMMANDS.items():
        p = sub.add_parser(name, help=command.help, description=command.help)
        p.add_argument("--config", default=None,
                       help=f"YAML recipe (default: {command.default_config or 'built-in defaults'})")
        p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
        p.add_argument("overrides", nargs="*", metavar="key=value", help="OmegaConf dot-list overrides")
    add_submit_parser(sub, {name: c.help for name, c in COMMANDS.items() if c.submittable})
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "submit":
            from vjepa.submit import slurm_config_from_args

            submit(args.target, args.config, args.overrides, slurm_config_from_args(args), args.array)
        elif args.print_config:
            print(to_yaml(load_command_config(args.command, args.config, args.overrides)), end="")
        else:
            run_command(args.command, args.config, args.overrides)
    except KeyboardInterrupt:
        print(f"vjepa {args.command}: interrupted", file=sys.stderr)
        return 130
    except user_errors() as exc:
        if os.environ.get("VJEPA_TRACEBACK"):
            raise
        print(f"vjepa {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
