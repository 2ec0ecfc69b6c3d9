"""`vjepa dream`: imagined rollouts in latent space, scored against what really happened.

From the first `context_slots` time slots of a clip, the predictor imagines the next slot (with
the mask token it learned the `future` mask with), the imagined slot is appended to the context,
and so on to the end of the clip: an autoregressive rollout with no pixels. Context tokens are
the target encoder's layer-normed features of the real first slots, computed with the encoder
seeing only those slots; imagined slots are the predictor's outputs, which live in that same
layer-normed space (see evals/worldmodel.py).

Each imagined slot h steps ahead is compared with the layer-normed target features of the real
clip: the mean absolute error, divided by the mean absolute distance of that model's real
features from their mean feature vector. So 1.0 means "no better than always predicting the
average feature", whatever the model's feature scale, and models can share one plot. The
baselines (copy the last context slot; extrapolate the last two linearly) work on the first
checkpoint model's context features and use its normaliser.

The run folder gets metrics.json (keyed by model, plus baselines), error_vs_horizon.png,
report.md and config.yaml.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional

import numpy as np
import torch
from omegaconf import MISSING, OmegaConf
from torch import Tensor
from torch.utils.data import DataLoader, Subset

from evals.features import subset_indices
from evals.worldmodel import (
    WorldModel, WorldModelSource, build_world_models, check_same_geometry, clip_transform, slot_l1,
)
from vjepa.config import save_config
from vjepa.data import DataError, VideoDataset, collate_videos
from vjepa.report import markdown_table
from vjepa.runlog import setup_logging
from vjepa.train import resolve_device

log = logging.getLogger("vjepa.dream")

BASELINES = ("copy_last", "linear")


@dataclass
class DreamDataConfig:
    list: str = MISSING  # `path label` video list of the clips to roll out
    max_videos: int = 0  # > 0: a seeded random subset
    batch_size: int = 8
    num_workers: int = 1


@dataclass
class DreamConfig:
    output: str = "runs/dream"
    world: str = "runs/world"  # what `${world}` means in a recipe's data paths
    checkpoint: str = "runs/pretrain/checkpoints/latest.pt"  # what `${checkpoint}` means in a recipe's models
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    context_slots: int = 2  # real time slots (of tubelet_size frames each) the rollout starts from
    mask_index: Optional[int] = None  # predictor mask token; null: the checkpoint's `future` mask
    data: DreamDataConfig = field(default_factory=DreamDataConfig)
    models: Dict[str, WorldModelSource] = field(default_factory=dict)  # by name: jepa, random, ...


# --------------------------------------------------------------------------- rollouts and baselines


def copy_last(context: Tensor, horizon: int) -> Tensor:
    """The last context slot, repeated: [B, k, N, D] -> [B, horizon, N, D]."""
    return context[:, -1:].expand(-1, horizon, -1, -1)


def linear_extrapolation(context: Tensor, horizon: int) -> Tensor:
    """Continue the change between the last two context slots: last + h * (last - previous)."""
    last, step = context[:, -1:], context[:, -1:] - context[:, -2:-1]
    h = torch.arange(1, horizon + 1, dtype=context.dtype, device=context.device).view(1, -1, 1, 1)
    return last + h * step


def mean_abs_deviation(features: Tensor) -> float:
    """Mean L1 distance of feature vectors [..., D] from their mean vector: the error normaliser."""
    flat = features.reshape(-1, features.size(-1)).float()
    return float((flat - flat.mean(0)).abs().mean())


# --------------------------------------------------------------------------- the run


@dataclass
class Curves:
    """Summed L1 errors per horizon step and the real future features seen, for one model."""

    errors: list = field(default_factory=list)  # [B, H] per batch
    futures: list = field(default_factory=list)  # real future features, half precision, for the normaliser
    baselines: dict = field(default_factory=lambda: {b: [] for b in BASELINES})

    def result(self) -> tuple[np.ndarray, float, dict[str, np.ndarray]]:
        scale = mean_abs_deviation(torch.cat(self.futures))
        raw = torch.cat(self.errors).mean(0).numpy()
        base = {b: torch.cat(v).mean(0).numpy() / scale for b, v in self.baselines.items() if v}
        return raw / scale, scale, base


@torch.no_grad()
def roll_out(models: list[WorldModel], loader: DataLoader, k: int, device: torch.device) -> list[Curves]:
    curves = [Curves() for _ in models]
    for batch in loader:
        if not len(batch["indices"]):
            continue
        clips = batch["clips"].to(device)
        for i, (model, curve) in enumerate(zip(models, curves)):
            real = model.target_slots(clips)
            future = real[:, k:]
            curve.errors.append(slot_l1(model.imagine(clips, k), future).cpu())
            curve.futures.append(future.half().cpu())
            if i == 0:  # baselines in the first model's feature space
                context, horizon = model.context_slots(clips, range(k)), future.size(1)
                curve.baselines["copy_last"].append(slot_l1(copy_last(context, horizon), future).cpu())
                curve.baselines["linear"].append(slot_l1(linear_extrapolation(context, horizon), future).cpu())
    return curves


def summarise(models: list[WorldModel], curves: list[Curves], k: int) -> dict:
    """metrics.json: per model name the mean curve over its seeds (with their spread), and the baselines."""
    out: dict = {"models": {}, "baselines": {}}
    per_name: dict[str, list] = {}
    for model, curve in zip(models, curves):
        error, scale, base = curve.result()
        per_name.setdefault(model.name, []).append((error, scale))
        for b, values in base.items():
            out["baselines"][b] = {"horizon": list(range(1, len(values) + 1)), "error": values.tolist(),
                                   "space": model.name}
    for name, runs in per_name.items():
        errors = np.stack([e for e, _ in runs])
        entry = {"horizon": list(range(1, errors.shape[1] + 1)), "error": errors.mean(0).tolist(),
                 "scale": [s for _, s in runs]}
        if len(runs) > 1:
            entry.update(std=errors.std(0).tolist(), seeds=len(runs))
        out["models"][name] = entry
    out["context_slots"] = k
    out["frames_per_slot"] = models[0].arch.model.tubelet_size * models[0].arch.data.frame_step
    return out


def plot_curves(path: Path, metrics: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for i, (name, e) in enumerate(metrics["models"].items()):
        h, err = np.array(e["horizon"]), np.array(e["error"])
        ax.plot(h, err, marker="o", color=f"C{i}", label=name)
        if "std" in e:
            ax.fill_between(h, err - np.array(e["std"]), err + np.array(e["std"]), color=f"C{i}", alpha=0.2)
    for j, (name, e) in enumerate(metrics["baselines"].items()):
        ax.plot(e["horizon"], e["error"], ls="--", color=f"0.{3 + 3 * j}", label=f"{name} (baseline)")
    ax.axhline(1.0, color="0.7", lw=0.8)  # as bad as predicting the mean feature
    ax.set(xlabel=f"horizon (time slots of {metrics['frames_per_slot']} frames)",
           ylabel="L1 error / mean |feature - mean feature|", title="imagined rollouts")
    ax.grid(alpha=0.3)
    ax.legend(frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(path: Path, metrics: dict, cfg: DreamConfig) -> None:
    columns = {**metrics["models"], **{f"{b} (baseline)": e for b, e in metrics["baselines"].items()}}
    horizon = next(iter(metrics["models"].values()))["horizon"]
    rows = [[h, *[e["error"][i] for e in columns.values()]] for i, h in enumerate(horizon)]
    lines = [
        "# Imagined rollouts",
        "",
        f"{metrics['videos']} clips of `{cfg.data.list}`. From the first {metrics['context_slots']} time slots "
        "the predictor imagines one slot at a time, feeding each imagined slot back as context. Error: L1 to the "
        "target encoder's (layer-normed) features of the real clip, divided by their mean L1 distance to the mean "
        "feature (1.0 = no better than the mean). Baselines work in the space of "
        f"`{next(iter(metrics['baselines'].values()))['space']}`.",
        "",
        markdown_table(["horizon", *columns], rows),
        "",
        "![error vs horizon](error_vs_horizon.png)",
        "",
        f"Rollouts {metrics['timing']['rollout_s']:.0f} s.",
        "",
    ]
    path.write_text("\n".join(lines))


def main(cfg: DreamConfig) -> dict:
    """Entry point of `vjepa dream`."""
    setup_logging()
    if OmegaConf.is_config(cfg):
        OmegaConf.resolve(cfg)
    if not cfg.models:
        raise ValueError("no models to roll out; add some, e.g. models.jepa.checkpoint=PATH")
    out = Path(cfg.output)
    save_config(cfg, out / "config.yaml")
    device = resolve_device(cfg.device)
    models = [m for name, spec in cfg.models.items() for m in build_world_models(name, spec, cfg.mask_index)]
    check_same_geometry(models)
    arch, num_slots = models[0].arch, models[0].grid[0]
    k = cfg.context_slots
    if not 2 <= k < num_slots:
        raise ValueError(f"context_slots={k}: expected 2 (linear extrapolation needs two) to {num_slots - 1} "
                         f"for clips of {num_slots} time slots")

    dataset = VideoDataset(cfg.data.list, frames_per_clip=arch.data.frames_per_clip, frame_step=arch.data.frame_step,
                           transform=clip_transform(arch), seed=cfg.seed)
    indices = subset_indices(len(dataset), cfg.data.max_videos, cfg.seed)
    loader = DataLoader(Subset(dataset, indices), batch_size=cfg.data.batch_size, shuffle=False,
                        num_workers=cfg.data.num_workers, collate_fn=collate_videos)
    for m in models:
        m.to(device)
    t0 = time.perf_counter()
    curves = roll_out(models, loader, k, device)
    if not curves[0].errors:
        raise DataError(f"{cfg.data.list}: none of the {len(indices)} videos could be read")
    metrics = summarise(models, curves, k)
    metrics["videos"] = sum(len(e) for e in curves[0].errors)
    metrics["timing"] = {"rollout_s": time.perf_counter() - t0}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    plot_curves(out / "error_vs_horizon.png", metrics)
    write_report(out / "report.md", metrics, cfg)
    log.info("dream: %d clips, %d models in %.1fs; results in %s", metrics["videos"], len(models),
             metrics["timing"]["rollout_s"], out / "report.md")
    return metrics
