"""`vjepa demo`: the embedded default end to end, on this machine, with no downloads.

world (the synthetic physics world) -> pretrain (a small V-JEPA) -> probe (frozen probes of the
pretrained and of random-init encoders) -> dream (imagined rollouts) -> voe + physics
(violation-of-expectation clips and the surprise test) -> report.md gathering the figures and
plots. Each stage writes an ordinary run folder under `output`, so any stage can be rerun or
inspected alone. Re-running the demo reuses a world generated with the same config and resumes
an interrupted pretraining. Between stages the demo says where it is and about how long is left.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List

from app.results import demote, headline_table
from vjepa.config import load_config, save_config
from vjepa.report import loss_summary, markdown_table
from vjepa.runlog import read_log, setup_logging

log = logging.getLogger("vjepa.demo")


@dataclass
class DemoConfig:
    output: str = "runs/demo"
    world_config: str = "configs/world/default.yaml"
    pretrain_config: str = "configs/pretrain/tiny_world.yaml"
    probe_config: str = "configs/evals/probe_world.yaml"
    voe_config: str = "configs/world/voe.yaml"
    dream_config: str = "configs/evals/dream_world.yaml"
    physics_config: str = "configs/evals/physics_world.yaml"
    world: List[str] = field(default_factory=list)  # extra key=value overrides for the world
    pretrain: List[str] = field(default_factory=list)  # extra key=value overrides for pretraining
    probe: List[str] = field(default_factory=list)  # extra key=value overrides for the probes
    dream: List[str] = field(default_factory=list)  # ... for the imagined rollouts
    voe: List[str] = field(default_factory=list)  # ... for the violation-of-expectation clips
    physics: List[str] = field(default_factory=list)  # ... for the violation-of-expectation test


def run_world(cfg: DemoConfig, out: Path):
    from vjepa.world.generate import WorldConfig, ensure_world

    world_cfg = load_config(WorldConfig, cfg.world_config, [*cfg.world, f"output={out / 'world'}"])
    ensure_world(world_cfg)
    return world_cfg


def run_pretrain(cfg: DemoConfig, out: Path):
    from vjepa.train import PretrainConfig, pretrain

    overrides = [f"data.train_list={out / 'world' / 'train.txt'}", f"output={out / 'pretrain'}", "resume=true",
                 *cfg.pretrain]
    pre_cfg = load_config(PretrainConfig, cfg.pretrain_config, overrides)
    pretrain(pre_cfg)
    return pre_cfg


def checkpoint_overrides(out: Path, stage: str) -> list[str]:
    return [f"checkpoint={out / 'pretrain' / 'checkpoints' / 'latest.pt'}", f"output={out / stage}"]


def run_probe(cfg: DemoConfig, out: Path) -> Path:
    from evals.probe import ProbeConfig, main as probe

    probe(load_config(ProbeConfig, cfg.probe_config, [*checkpoint_overrides(out, "probe"), f"world={out / 'world'}",
                                                      *cfg.probe]))
    return out / "probe"


def run_dream(cfg: DemoConfig, out: Path) -> Path:
    from evals.dream import DreamConfig, main as dream

    dream(load_config(DreamConfig, cfg.dream_config, [*checkpoint_overrides(out, "dream"), f"world={out / 'world'}",
                                                      *cfg.dream]))
    return out / "dream"


def run_physics(cfg: DemoConfig, out: Path) -> Path:
    from evals.physics import PhysicsConfig, main as physics
    from vjepa.world.voe import VoEConfig, main as generate_voe

    generate_voe(load_config(VoEConfig, cfg.voe_config, [f"output={out / 'voe'}", *cfg.voe]))
    physics(load_config(PhysicsConfig, cfg.physics_config, [*checkpoint_overrides(out, "physics"),
                                                            f"voe={out / 'voe'}", *cfg.physics]))
    return out / "physics"


#: the stages in order, with their share of the demo's time on the machine the recipe was sized on
#: (seconds of the reference run): the ETA scales what is left by how fast the finished stages went
STAGES: list[tuple[str, Callable, float]] = [
    ("world", run_world, 24.0),
    ("pretrain", run_pretrain, 430.0),
    ("probe", run_probe, 124.0),
    ("dream", run_dream, 33.0),
    ("voe + physics", run_physics, 58.0),
]


def eta_s(done: dict[str, float], left: list[str]) -> float:
    """Seconds left: the reference time of the stages left, times how much slower the finished ones ran.

    A stage done in under a quarter of its reference time was reused (a world already there, a
    pretraining already finished) and says nothing about the machine's pace.
    """
    reference = {name: seconds for name, _, seconds in STAGES}
    ran = {name: t for name, t in done.items() if t >= 0.25 * reference[name]}
    pace = sum(ran.values()) / sum(reference[name] for name in ran) if ran else 1.0
    return pace * sum(reference[name] for name in left)


def clock(seconds: float) -> str:
    minutes, s = divmod(int(round(seconds)), 60)
    return f"{minutes}:{s:02d}"


def write_report(out: Path, world_cfg, pre_cfg, timings: dict[str, float]) -> Path:
    rows = read_log(out / "pretrain" / "log.csv")
    s = loss_summary(rows)
    m = pre_cfg.model
    lines = [
        "# vjepa demo report",
        "",
        f"Synthetic physics world: {world_cfg.num_train} train / {world_cfg.num_val} val clips, "
        f"{world_cfg.frames} frames at {world_cfg.size}x{world_cfg.size} (seed {world_cfg.seed}).",
        "",
        "![world preview](world/preview.png)",
        "",
        "## Headline",
        "",
        "The pretrained encoder against its controls; the sections below give every figure and its protocol.",
        "",
        headline_table(out),
        "",
        "## Pretraining",
        "",
        f"Objective `{pre_cfg.objective}`, encoder `{m.name}` (depth {m.depth or 'default'}, "
        f"patch {m.patch_size}, tubelet {m.tubelet_size}), predictor {m.pred_embed_dim} wide x {m.pred_depth} deep, "
        f"{len(pre_cfg.masks)} mask configurations ({', '.join(mc.type for mc in pre_cfg.masks)}), "
        f"batch {pre_cfg.data.batch_size}, {pre_cfg.optimization.steps} steps.",
        "",
        markdown_table(
            ["steps", "loss (first 100)", "loss (last 100)", "last/first", "target std", "RankMe (final)",
             "clips/s (median)"],
            [[s["steps"], s["first_100_mean_loss"], s["last_100_mean_loss"], s["loss_ratio"],
              s["final_target_std"], s["final_rankme"], s["clips_per_s"]]],
        ),
        "",
        "![training curves](pretrain/curves.png)",
        "",
        "## Frozen probes",
        "",
        _section(out / "probe"),
        "",
        "## Imagined rollouts",
        "",
        _section(out / "dream"),
        "",
        "## Violation of expectation",
        "",
        _section(out / "physics"),
        "",
        "## Time",
        "",
        markdown_table(["stage", "seconds"], [[k, round(v, 1)] for k, v in timings.items()]),
        "",
    ]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path


def _section(run_dir: Path) -> str:
    """An evaluation's own report.md one level down, its images re-pointed into its run folder."""
    return "\n".join(demote((run_dir / "report.md").read_text(), lambda rel: f"{run_dir.name}/{rel}")).strip()


def main(cfg: DemoConfig) -> Path:
    """Entry point of `vjepa demo`."""
    setup_logging()
    out = Path(cfg.output)
    save_config(cfg, out / "config.yaml")
    timings: dict[str, float] = {}
    results = {}
    start = time.perf_counter()
    for i, (name, run, _) in enumerate(STAGES, start=1):
        left = [n for n, _, _ in STAGES[i - 1:]]
        log.info("demo [%d/%d] %s: %s elapsed, about %s left", i, len(STAGES), name,
                 clock(time.perf_counter() - start), clock(eta_s(timings, left)))
        t = time.perf_counter()
        results[name] = run(cfg, out)
        timings[name] = time.perf_counter() - t
    (out / "timings.json").write_text(json.dumps({name: round(t, 1) for name, t in timings.items()}, indent=1))
    report = write_report(out, results["world"], results["pretrain"], timings)
    log.info("demo finished in %s: %s", clock(time.perf_counter() - start), report)
    return report
