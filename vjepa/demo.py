"""`vjepa demo`: the embedded default end to end, on this machine, with no downloads.

world (the synthetic physics world) -> pretrain (a small V-JEPA) -> probe (frozen probes of the
pretrained and of random-init encoders) -> dream (imagined rollouts) -> voe + physics
(violation-of-expectation twins and the surprise test) -> report.md gathering the figures and
plots. Each step writes an ordinary run folder under `output`, so any step can be rerun or
inspected alone. Re-running the demo reuses a world generated with the same config and
resumes an interrupted pretraining.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import List

from omegaconf import OmegaConf

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
    physics: List[str] = field(default_factory=list)  # ... for the violation-of-expectation test


def ensure_world(config: str, overrides: List[str], output: Path):
    """Generate the world `config` + `overrides` describe into `output`, unless it is already there."""
    from vjepa.world.generate import WorldConfig, generate_world

    world_cfg = load_config(WorldConfig, config, [*overrides, f"output={output}"])
    existing = output / "config.yaml"  # written last, so it marks a complete world
    if existing.is_file() and OmegaConf.to_yaml(OmegaConf.load(existing)) == OmegaConf.to_yaml(world_cfg):
        log.info("world: reusing %s (same config)", output)
        return world_cfg
    generate_world(world_cfg)
    return world_cfg


def run_world(cfg: DemoConfig, out: Path):
    return ensure_world(cfg.world_config, cfg.world, out / "world")


def run_pretrain(cfg: DemoConfig, out: Path):
    from vjepa.train import PretrainConfig, pretrain

    overrides = [f"data.train_list={out / 'world' / 'train.txt'}", f"output={out / 'pretrain'}", "resume=true",
                 *cfg.pretrain]
    pre_cfg = load_config(PretrainConfig, cfg.pretrain_config, overrides)
    pretrain(pre_cfg)
    return pre_cfg


def run_probe(cfg: DemoConfig, out: Path) -> Path:
    from evals.probe import ProbeConfig, main as probe

    overrides = [f"checkpoint={out / 'pretrain' / 'checkpoints' / 'latest.pt'}", f"world={out / 'world'}",
                 f"output={out / 'probe'}", *cfg.probe]
    probe(load_config(ProbeConfig, cfg.probe_config, overrides))
    return out / "probe"


def run_dream(cfg: DemoConfig, out: Path) -> Path:
    from evals.dream import DreamConfig, main as dream

    overrides = [f"checkpoint={out / 'pretrain' / 'checkpoints' / 'latest.pt'}", f"world={out / 'world'}",
                 f"output={out / 'dream'}", *cfg.dream]
    dream(load_config(DreamConfig, cfg.dream_config, overrides))
    return out / "dream"


def run_physics(cfg: DemoConfig, out: Path) -> Path:
    from evals.physics import PhysicsConfig, main as physics
    from vjepa.world.voe import VoEConfig, main as generate_voe

    generate_voe(load_config(VoEConfig, cfg.voe_config, [f"output={out / 'voe'}"]))
    overrides = [f"checkpoint={out / 'pretrain' / 'checkpoints' / 'latest.pt'}", f"voe={out / 'voe'}",
                 f"output={out / 'physics'}", *cfg.physics]
    physics(load_config(PhysicsConfig, cfg.physics_config, overrides))
    return out / "physics"


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
        markdown_table(["step", "seconds"], [[k, round(v, 1)] for k, v in timings.items()]),
        "",
    ]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path


def _section(run_dir: Path) -> str:
    """An evaluation's own report.md minus its title, images re-pointed into its run folder, its
    sections (the dream strips, ...) one level down."""
    report = (run_dir / "report.md").read_text().splitlines()
    body = ["#" + line if line.startswith("## ") else line for line in report if not line.startswith("# ")]
    body = [line.replace("](", f"]({run_dir.name}/") if line.startswith("![") else line for line in body]
    return "\n".join(body).strip()


def main(cfg: DemoConfig) -> Path:
    """Entry point of `vjepa demo`."""
    setup_logging()
    out = Path(cfg.output)
    save_config(cfg, out / "config.yaml")
    timings = {}
    t = time.perf_counter()
    world_cfg = run_world(cfg, out)
    timings["world"] = time.perf_counter() - t
    t = time.perf_counter()
    pre_cfg = run_pretrain(cfg, out)
    timings["pretrain"] = time.perf_counter() - t
    t = time.perf_counter()
    run_probe(cfg, out)
    timings["probe"] = time.perf_counter() - t
    t = time.perf_counter()
    run_dream(cfg, out)
    timings["dream"] = time.perf_counter() - t
    t = time.perf_counter()
    run_physics(cfg, out)
    timings["voe + physics"] = time.perf_counter() - t
    report = write_report(out, world_cfg, pre_cfg, timings)
    log.info("demo finished: %s", report)
    return report
