"""`vjepa compare`: JEPA against generative objectives and floors, at an equal budget, side by side.

Every objective in `models` (jepa, pixel, denoise, ...) is pretrained from the same recipe (same
data, backbone, batch and steps; only the objective and its masks differ) for each seed in
`seeds`, or loaded from a given checkpoint. Then the same frozen probes run on all of them plus
random-init encoders and raw pixels, and the same world-model tests (imagined rollouts and
violation of expectation) on those with a predictor of the future (jepa, pixel; denoising learns
none). Each step is an ordinary run folder under `output` (pretrain/NAME_sSEED, probe, dream,
voe, physics), so a rerun resumes training and reuses cached features.

`report.md` holds one table (rows: models; columns: probe metrics, rollout error at fixed
horizons, violation-of-expectation accuracy per property with its interval), each model's seed
count and training time, and `compare.png`; `metrics.json` holds the raw numbers.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
from omegaconf import OmegaConf

from vjepa.config import load_config, save_config
from vjepa.report import markdown_table
from vjepa.runlog import read_log, setup_logging

log = logging.getLogger("vjepa.compare")


@dataclass
class CompareModel:
    """One pretraining objective to compare; its name (jepa, pixel, ...) is its key under `models`."""

    objective: str = "jepa"
    overrides: List[str] = field(default_factory=list)  # key=value on top of the shared recipe (e.g. its masks)
    checkpoint: Optional[str] = None  # load instead of training; `{seed}` in the path is replaced


@dataclass
class CompareConfig:
    output: str = "runs/compare"
    world: Optional[str] = None  # an existing world folder; null: generate one from world_config under output
    world_config: str = "configs/world/default.yaml"
    world_overrides: List[str] = field(default_factory=list)
    pretrain_config: str = "configs/pretrain/tiny_world.yaml"  # the shared recipe: data, backbone, batch, steps
    pretrain: List[str] = field(default_factory=list)  # key=value for every model's pretraining
    seeds: List[int] = field(default_factory=lambda: [0])  # pretraining seeds: each model is trained once per seed
    models: Dict[str, CompareModel] = field(default_factory=dict)
    random_seeds: List[int] = field(default_factory=lambda: [0, 1])  # random-init encoders of the same architecture
    raw_pixels: bool = True  # the floor: downsampled pixels through the same probes
    timm_model: Optional[str] = None  # also probe a timm image model per frame (random init: nothing is downloaded)
    probe_config: str = "configs/evals/probe_world.yaml"
    dream_config: str = "configs/evals/dream_world.yaml"
    voe_config: str = "configs/world/voe.yaml"
    physics_config: str = "configs/evals/physics_world.yaml"
    probe: List[str] = field(default_factory=list)  # key=value for the probes
    dream: List[str] = field(default_factory=list)
    physics: List[str] = field(default_factory=list)
    voe: List[str] = field(default_factory=list)
    table_tasks: List[str] = field(default_factory=lambda: ["n_objects/attentive", "latents/linear", "latents/attentive"])
    horizons: List[int] = field(default_factory=lambda: [1, 3, 6])  # rollout error columns


@dataclass
class Trained:
    name: str  # the objective's name in `models`
    seed: int
    checkpoint: Path
    objective: str
    train_s: Optional[float]  # summed step times of its log (None when loaded, not trained here)
    steps: Optional[int]

    @property
    def run_name(self) -> str:
        return f"{self.name}_s{self.seed}"


# --------------------------------------------------------------------------- steps


def pretrain_all(cfg: CompareConfig, world: Path, out: Path) -> list[Trained]:
    """Train (or resume, or load) every objective for every seed with the same recipe."""
    from vjepa.train import PretrainConfig, pretrain

    runs = []
    for name, spec in cfg.models.items():
        for seed in cfg.seeds:
            if spec.checkpoint:
                path = Path(spec.checkpoint.replace("{seed}", str(seed)))
                if not path.is_file():
                    raise FileNotFoundError(f"models.{name}.checkpoint: {path} does not exist")
                runs.append(Trained(name, seed, path, spec.objective, None, None))
                continue
            run_dir = out / "pretrain" / f"{name}_s{seed}"
            overrides = [f"data.train_list={world / 'train.txt'}", f"output={run_dir}", "resume=true",
                         f"objective={spec.objective}", f"seed={seed}", *cfg.pretrain, *spec.overrides]
            pre_cfg = load_config(PretrainConfig, cfg.pretrain_config, overrides)
            pretrain(pre_cfg)
            rows = read_log(run_dir / "log.csv")
            runs.append(Trained(name, seed, run_dir / "checkpoints" / "latest.pt", spec.objective,
                                float(sum(r["step_time"] for r in rows)), pre_cfg.optimization.steps))
    return runs


def run_probe(cfg: CompareConfig, world: Path, out: Path, runs: list[Trained]) -> dict:
    from evals.features import SourceConfig
    from evals.probe import ProbeConfig, main as probe

    probe_cfg = load_config(ProbeConfig, cfg.probe_config, [f"world={world}", f"output={out / 'probe'}", *cfg.probe])
    models = {r.run_name: SourceConfig(kind="checkpoint", checkpoint=str(r.checkpoint)) for r in runs}
    models["random"] = SourceConfig(kind="random", checkpoint=str(runs[0].checkpoint), seeds=list(cfg.random_seeds))
    if cfg.raw_pixels:
        models["raw"] = SourceConfig(kind="raw")
    if cfg.timm_model:
        models["timm"] = SourceConfig(kind="timm", timm_model=cfg.timm_model)
    probe_cfg.models = models
    if probe_cfg.control not in models:  # the recipe's control names a model this comparison does not have
        probe_cfg.control = None
    return probe(probe_cfg)


def world_model_sources(runs: list[Trained], cfg: CompareConfig) -> dict:
    from evals.worldmodel import WORLD_MODELS, WorldModelSource

    models = {r.run_name: WorldModelSource(kind="checkpoint", checkpoint=str(r.checkpoint))
              for r in runs if r.objective in WORLD_MODELS}
    first = next((r for r in runs if r.objective in WORLD_MODELS), None)
    if first is not None:
        models["random"] = WorldModelSource(kind="random", checkpoint=str(first.checkpoint), seeds=list(cfg.random_seeds))
    return models


def run_dream(cfg: CompareConfig, world: Path, out: Path, runs: list[Trained]) -> Optional[dict]:
    from evals.dream import DreamConfig, main as dream

    models = world_model_sources(runs, cfg)
    if not models:
        return None
    dream_cfg = load_config(DreamConfig, cfg.dream_config, [f"world={world}", f"output={out / 'dream'}", *cfg.dream])
    dream_cfg.models = models
    return dream(dream_cfg)


def run_physics(cfg: CompareConfig, out: Path, runs: list[Trained]) -> Optional[dict]:
    from evals.physics import PhysicsConfig, main as physics
    from vjepa.world.voe import VoEConfig, main as generate_voe

    models = world_model_sources(runs, cfg)
    if not models:
        return None
    if not (out / "voe" / "voe.csv").is_file():
        generate_voe(load_config(VoEConfig, cfg.voe_config, [f"output={out / 'voe'}", *cfg.voe]))
    physics_cfg = load_config(PhysicsConfig, cfg.physics_config,
                              [f"voe={out / 'voe'}", f"output={out / 'physics'}", *cfg.physics])
    physics_cfg.models = models
    return physics(physics_cfg)


# --------------------------------------------------------------------------- the table


def mean_std(values: list[float]) -> dict:
    return {"value": float(np.mean(values)), "std": float(np.std(values)), "seeds": len(values)}


def by_model(runs: list[Trained], probe: dict, dream: Optional[dict], physics: Optional[dict],
             cfg: CompareConfig) -> dict:
    """Per model name (seeds pooled): probe metrics, rollout errors and VoE accuracies, each with its seed count."""
    names = [*dict.fromkeys(r.name for r in runs), "random", *(["raw"] if cfg.raw_pixels else []),
             *(["timm"] if cfg.timm_model else [])]
    out: dict = {}
    for name in names:
        members = [r.run_name for r in runs if r.name == name] or [name]
        entry: dict = {"seeds": sum(probe["models"][m].get("seeds", 1) for m in members),
                       "probe": {}, "rollout": {}, "voe": {}}
        trained = [r for r in runs if r.name == name]
        if trained:
            entry["objective"] = trained[0].objective
            times = [r.train_s for r in trained if r.train_s is not None]
            if times:
                entry["train_s"] = mean_std(times)
                entry["steps"] = trained[0].steps
        for task in probe["models"][members[0]]["tasks"]:
            values = [v for m in members for v in probe["models"][m]["tasks"][task].get("values", [
                probe["models"][m]["tasks"][task]["value"]])]
            entry["probe"][task] = {**mean_std(values), "metric": probe["models"][members[0]]["tasks"][task]["metric"]}
        if dream and all(m in dream["models"] for m in members):
            curves = np.array([dream["models"][m]["error"] for m in members])
            seeds = sum(dream["models"][m].get("seeds", 1) for m in members)
            entry["rollout"] = {"horizon": dream["models"][members[0]]["horizon"], "error": curves.mean(0).tolist(),
                                "seeds": seeds}
        if physics and all(m in physics["models"] for m in members):
            props = physics["models"][members[0]]["properties"]
            for prop in props:
                accs = [physics["models"][m]["properties"][prop]["relative_accuracy"] for m in members]
                cis = np.array([physics["models"][m]["properties"][prop]["relative_ci"] for m in members])
                # several trained seeds: the union of their intervals, so no seed's uncertainty is hidden
                entry["voe"][prop] = {**mean_std(accs), "ci": [float(cis[:, 0].min()), float(cis[:, 1].max())],
                                      "seeds": sum(physics["models"][m].get("seeds", 1) for m in members)}
            entry["voe"]["mean"] = mean_std([physics["models"][m]["mean_relative_accuracy"] for m in members])
        out[name] = entry
    return out


def fmt(entry: Optional[dict], digits: int = 3) -> str:
    if not entry:
        return "—"
    text = f"{entry['value']:.{digits}f}"
    return text + (f" ± {entry['std']:.{digits}f}" if entry.get("seeds", 1) > 1 else "")


def table(models: dict, cfg: CompareConfig) -> str:
    props = next((list(e["voe"]) for e in models.values() if e["voe"]), [])
    header = ["model", "seeds", "train time (s)", *[f"probe {t}" for t in cfg.table_tasks],
              *[f"rollout h={h}" for h in cfg.horizons], *[f"VoE {p}" for p in props]]
    rows = []
    for name, e in models.items():
        rollout = []
        for h in cfg.horizons:
            r = e["rollout"]
            rollout.append(f"{r['error'][r['horizon'].index(h)]:.3f}" if r and h in r["horizon"] else "—")
        voe = []
        for p in props:
            v = e["voe"].get(p)
            voe.append("—" if not v else fmt(v, 2) + ("" if p == "mean" else f" [{v['ci'][0]:.2f}, {v['ci'][1]:.2f}]"))
        rows.append([name + (f" ({e['objective']})" if e.get("objective") and e["objective"] != name else ""),
                     e["seeds"], fmt(e.get("train_s"), 0), *[fmt(e["probe"].get(t)) for t in cfg.table_tasks],
                     *rollout, *voe])
    return markdown_table(header, rows)


def plot(path: Path, models: dict, cfg: CompareConfig) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(models)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    ax = axes[0]
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        vals = [models[name]["probe"].get(t, {}).get("value", np.nan) for t in cfg.table_tasks]
        errs = [models[name]["probe"].get(t, {}).get("std", 0.0) for t in cfg.table_tasks]
        ax.bar(np.arange(len(cfg.table_tasks)) + i * width, vals, width, yerr=errs, label=name, color=f"C{i}")
    ax.set_xticks(np.arange(len(cfg.table_tasks)) + 0.4 - width / 2, cfg.table_tasks, rotation=15)
    ax.set(title="frozen probes (val; R² or top-1)")
    ax.legend(frameon=False, fontsize=8)
    ax = axes[1]
    for i, name in enumerate(names):
        r = models[name]["rollout"]
        if r:
            ax.plot(r["horizon"], r["error"], marker="o", color=f"C{i}", label=name)
    ax.axhline(1.0, color="0.7", lw=0.8)
    ax.set(title="imagined rollouts", xlabel="horizon (time slots)", ylabel="normalised L1 error")
    ax.legend(frameon=False, fontsize=8)
    ax = axes[2]
    props = next((list(e["voe"]) for e in models.values() if e["voe"]), [])
    for i, name in enumerate(names):
        v = models[name]["voe"]
        if v:
            ax.bar(np.arange(len(props)) + i * width, [v[p]["value"] for p in props], width, color=f"C{i}", label=name)
    ax.axhline(0.5, color="0.5", ls="--", lw=0.8)
    ax.set_xticks(np.arange(len(props)) + 0.4 - width / 2, props, rotation=15)
    ax.set(title="violation of expectation (relative accuracy)", ylim=(0, 1))
    for a in axes:
        a.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(path: Path, models: dict, cfg: CompareConfig, timings: dict) -> None:
    lines = [
        "# JEPA against generative features",
        "",
        f"Every objective pretrained from `{cfg.pretrain_config}` (overrides: {', '.join(cfg.pretrain) or 'none'}) "
        f"with seeds {list(cfg.seeds)}: the same data, backbone, batch and steps; train time is the summed step "
        "time on this machine. `random`: the same architecture at random init "
        f"(seeds {list(cfg.random_seeds)}); `raw`: downsampled pixels. Probes are on the val split (R² or top-1); "
        "rollout errors are normalised per model (1.0 = no better than the mean of its own targets; pixel models "
        "are scored on per-patch normalised pixels); VoE is the relative accuracy (a matched set's possible clips "
        "less surprising than its impossible ones; `physics/report.md` has the pairwise accuracy too) with a 95% "
        "bootstrap interval (over seeds: the union of theirs). A ± is the spread over seeds; — means the model has no "
        "predictor of the future (denoising, raw pixels) or the column does not apply.",
        "",
        table(models, cfg),
        "",
        "![comparison](compare.png)",
        "",
        "Per-step details: [probes](probe/report.md), [rollouts](dream/report.md), "
        "[violation of expectation](physics/report.md).",
        "",
        markdown_table(["step", "seconds"], [[k, round(v, 1)] for k, v in timings.items()]),
        "",
    ]
    path.write_text("\n".join(lines))


def main(cfg: CompareConfig) -> dict:
    """Entry point of `vjepa compare`."""
    from vjepa.world.generate import WorldConfig, ensure_world

    setup_logging()
    if OmegaConf.is_config(cfg):
        OmegaConf.resolve(cfg)
    if not cfg.models:
        raise ValueError("no models to compare; add some, e.g. models.jepa.objective=jepa")
    out = Path(cfg.output)
    save_config(cfg, out / "config.yaml")
    timings: dict[str, float] = {}
    t = time.perf_counter()
    world = Path(cfg.world) if cfg.world else out / "world"
    if not cfg.world:
        ensure_world(load_config(WorldConfig, cfg.world_config, [*cfg.world_overrides, f"output={world}"]))
    elif not (world / "train.txt").is_file():
        raise FileNotFoundError(f"world={world}: no train.txt there; generate it with `vjepa world output={world}`")
    timings["world"] = time.perf_counter() - t
    t = time.perf_counter()
    runs = pretrain_all(cfg, world, out)
    timings["pretrain"] = time.perf_counter() - t
    t = time.perf_counter()
    probe = run_probe(cfg, world, out, runs)
    timings["probe"] = time.perf_counter() - t
    t = time.perf_counter()
    dream = run_dream(cfg, world, out, runs)
    timings["dream"] = time.perf_counter() - t
    t = time.perf_counter()
    physics = run_physics(cfg, out, runs)
    timings["voe + physics"] = time.perf_counter() - t

    models = by_model(runs, probe, dream, physics, cfg)
    metrics = {"models": models, "timing": timings,
               "checkpoints": {r.run_name: str(r.checkpoint) for r in runs}}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    plot(out / "compare.png", models, cfg)
    write_report(out / "report.md", models, cfg, timings)
    log.info("compare: %d models in %.0fs; results in %s", len(models), sum(timings.values()), out / "report.md")
    return metrics
