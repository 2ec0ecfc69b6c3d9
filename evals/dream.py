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
baselines (copy the last context slot; extrapolate the last two linearly; each token position's
mean real feature over the evaluated clips, which knows the layout but not the clip) work on the
first checkpoint model's features and use its normaliser.

Dreams are also drawn (`decoder` in the config): a pixel decoder trained on each checkpoint
model's frozen target features (evals/decoder.py) renders real and imagined slots, and a strip per
model shows a few val clips: real frames, the decoder on the real clip's features (its ceiling),
the decoder on the imagined slots. A pixel-reconstruction model's dreams are pixels already and are
drawn as they are. Random-init models get no strip: their dreams are noise by construction and
their latent curves already make the point. The decoder's val MSE, the dream's per horizon and the
mean frame's go into metrics.json.

The run folder gets metrics.json (keyed by model, plus baselines), error_vs_horizon.png,
strip_<model>.png, report.md, config.yaml and decoders/ (the decoders, reused by a rerun).

`fixed_target` in metrics.json holds a second curve that keeps the target fixed: the clip's last slot,
imagined from h slots back for every h (a rollout from each start), for every model and baseline, and
each curve's growth from h = 1 to the longest horizon with a bootstrap interval. The main curve's
horizon h is also slot k + h, so a world whose late slots are easier (objects come to rest) can make
errors fall with horizon whatever the model; with the target fixed, only the horizon changes.

`margins` in metrics.json says whether the first model's curve is below (or above) each baseline
and each other model at each horizon: the mean per-clip difference of normalised errors with a
paired bootstrap 95% interval over the clips.
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

from evals.decoder import DecoderConfig, TrainedDecoder, load_or_train, slot_patches
from evals.features import subset_indices
from evals.stats import bootstrap_ci
from evals.worldmodel import (
    PixelWorldModel, WorldModel, WorldModelSource, build_world_models, check_same_geometry, clip_transform, slot_l1,
)
from vjepa.config import choice, save_config
from vjepa.models.config import ModelConfig
from vjepa.pretrained import ClipConfig
from vjepa.data import DataError, VideoDataset, collate_videos
from vjepa.objectives.pixel import unpatchify
from vjepa.report import margin_cell, markdown_table
from vjepa.runlog import setup_logging
from vjepa.device import DEVICES, resolve_device

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
    device: str = choice("auto", DEVICES)  # auto | cpu | cuda
    context_slots: int = 2  # real time slots (of tubelet_size frames each) the rollout starts from
    bootstrap: int = 1000  # resamples of the clips for the intervals of the first model's margins
    mask_index: Optional[int] = None  # predictor mask token; null: the checkpoint's `future` mask
    data: DreamDataConfig = field(default_factory=DreamDataConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)  # the pixel decoder and the dream strips
    models: Dict[str, WorldModelSource] = field(default_factory=dict)  # by name: jepa, random, ...
    # the architecture and clips of checkpoints without a `config` (official V-JEPA ones)
    model: ModelConfig = field(default_factory=ModelConfig)
    clip: ClipConfig = field(default_factory=ClipConfig)


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


def position_mean_errors(futures: Tensor) -> np.ndarray:
    """Per clip and horizon [M, H], the L1 error of predicting each token position's mean real feature over
    the clips [M, H, N, D]: a prediction that knows the typical layout and nothing of the clip at hand."""
    f = futures.float()
    return slot_l1(f.mean(0, keepdim=True).expand_as(f), f).numpy()


def paired_margin(errors: np.ndarray, other: np.ndarray, resamples: int, seed: int) -> dict:
    """Mean of errors - other per horizon, from per-clip errors [M, H] of the same clips, with a paired
    bootstrap 95% interval (the clips drawn with replacement, the same draw for both)."""
    diff = errors - other
    lo, hi = bootstrap_ci(diff, resamples, seed)
    return {"value": diff.mean(0).tolist(), "ci": [[float(a), float(b)] for a, b in zip(lo, hi)]}


def baseline_past(model: WorldModel, clips: Tensor, real: Tensor, slots: int,
                  context: Optional[Tensor] = None) -> Tensor:
    """The first `slots` slots as the baselines copy and extrapolate them, in the model's target space: a pixel
    model's targets are pixels, not its encoder's outputs, so its baselines work on the real pixel slots.
    `context`: the model's context features of those slots where already computed."""
    if isinstance(model, PixelWorldModel):
        return real[:, :slots]
    return context if context is not None else model.context_slots(clips, range(slots))


def last_slot_errors(model: WorldModel, clips: Tensor, real: Tensor, k: int, imagined: Tensor,
                     baselines: bool) -> tuple[Tensor, dict[str, Tensor]]:
    """L1 errors [B, H] on the clip's last slot imagined from h = 1 .. T - k slots back (rolled out from the
    first T - h real slots), and the baselines' from the same pasts when `baselines`. `imagined` is the rollout
    from the first k slots, whose last slot is the longest horizon's. The target is the same slot at every
    horizon, so the curve shows what the horizon costs apart from how hard the clip's late slots are."""
    num_slots = real.size(1)
    last = real[:, -1:]
    errors, base = [], {b: [] for b in BASELINES} if baselines else {}
    for start in range(num_slots - 1, k - 1, -1):  # horizon num_slots - start = 1, 2, ...
        dream = imagined if start == k else model.imagine(clips, start)
        errors.append(slot_l1(dream[:, -1:], last))
        if baselines:
            past = baseline_past(model, clips, real, start)
            horizon = num_slots - start
            base["copy_last"].append(slot_l1(copy_last(past, horizon)[:, -1:], last))
            base["linear"].append(slot_l1(linear_extrapolation(past, horizon)[:, -1:], last))
    return torch.cat(errors, dim=1), {b: torch.cat(v, dim=1) for b, v in base.items()}


def growth(errors: np.ndarray, resamples: int, seed: int) -> dict:
    """Error at the longest horizon minus at the first, per clip [M, H] -> mean with a bootstrap 95% interval."""
    diff = errors[:, -1:] - errors[:, :1]
    lo, hi = bootstrap_ci(diff, resamples, seed)
    return {"value": float(diff.mean()), "ci": [float(lo[0]), float(hi[0])]}


def swap_changes(model: WorldModel, context: Tensor, first: Tensor, real: Tensor, k: int) -> tuple[float, float]:
    """Summed L1 change of the first imagined slot `first` [B, 1, N, D] when each clip gets the next clip's
    k context slots `context` as its past, and summed L1 difference of those clips' real slot k: the
    parts of `Curves.context_use`."""
    swapped = model.predict_slots(context.roll(1, dims=0), range(k), [k])
    truth = real[:, k:k + 1].float()
    return float((first - swapped).abs().sum()), float((truth - truth.roll(1, dims=0)).abs().sum())


def slot_mse(pred: Tensor, target: Tensor) -> Tensor:
    """Mean squared pixel error per clip and slot: [B, S, N, P] pairs -> [B, S]."""
    return ((pred - target) ** 2).mean(dim=(-2, -1))


# --------------------------------------------------------------------------- the run


@dataclass
class Curves:
    """Summed L1 errors per horizon step and the real future features seen, for one model."""

    errors: list = field(default_factory=list)  # [B, H] per batch
    futures: list = field(default_factory=list)  # real future features, half precision, for the normaliser
    baselines: dict = field(default_factory=lambda: {b: [] for b in BASELINES})
    pixels: dict = field(default_factory=lambda: {"decoded": [], "mean_frame": [], "dream": []})  # [B, S] per batch
    swap: list = field(default_factory=list)  # per batch: (prediction change, truth change) when clips swap pasts
    fixed: list = field(default_factory=list)  # [B, H] per batch: the last slot imagined from h slots back
    fixed_baselines: dict = field(default_factory=lambda: {b: [] for b in BASELINES})

    def context_use(self) -> Optional[float]:
        """How far the first imagined slot moves when the predictor is given another clip's past, over how
        far the real slot differs between those clips: 0 for a predictor that ignores its context."""
        if not self.swap:
            return None
        change, truth = np.sum(self.swap, axis=0)
        return float(change / max(truth, 1e-12))

    def result(self) -> tuple[np.ndarray, float, dict[str, np.ndarray]]:
        """Normalised errors per clip and horizon [M, H], the normaliser, and the baselines' (first model only)."""
        futures = torch.cat(self.futures)
        scale = mean_abs_deviation(futures)
        raw = torch.cat(self.errors).numpy()
        base = {b: torch.cat(v).numpy() / scale for b, v in self.baselines.items() if v}
        if base:  # the first model's curve carries the baselines; this one needs every clip's future
            base["position_mean"] = position_mean_errors(futures) / scale
        return raw / scale, scale, base

    def fixed_result(self, scale: float) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Normalised last-slot errors per clip and horizon [M, H], and the baselines' (first model only)."""
        fixed = torch.cat(self.fixed).numpy() / scale
        base = {b: torch.cat(v).numpy() / scale for b, v in self.fixed_baselines.items() if v}
        if base:  # the layout's error on the last slot: the same at every horizon
            last = torch.cat(self.futures)[:, -1:]
            base["position_mean"] = np.repeat(position_mean_errors(last) / scale, fixed.shape[1], axis=1)
        return fixed, base

    def pixel_result(self) -> Optional[dict]:
        """Pixel MSEs on the val clips: the decoder on real features, the mean frame, the decoded dream per horizon."""
        if not self.pixels["decoded"]:
            return None
        mse = {name: torch.cat(v).mean(0) for name, v in self.pixels.items()}
        return {"val_mse": float(mse["decoded"].mean()), "mean_frame_mse": float(mse["mean_frame"].mean()),
                "dream_mse": mse["dream"].tolist()}


@torch.no_grad()
def roll_out(models: list[WorldModel], loader: DataLoader, k: int, device: torch.device,
             decoders: dict[str, TrainedDecoder]) -> list[Curves]:
    curves = [Curves() for _ in models]
    for batch in loader:
        if not len(batch["indices"]):
            continue
        clips = batch["clips"].to(device)
        for i, (model, curve) in enumerate(zip(models, curves)):
            real = model.target_slots(clips)
            future = real[:, k:]
            imagined = model.imagine(clips, k)
            context = model.context_slots(clips, range(k))
            curve.errors.append(slot_l1(imagined, future).cpu())
            fixed, fixed_base = last_slot_errors(model, clips, real, k, imagined, baselines=i == 0)
            curve.fixed.append(fixed.cpu())
            for b, v in fixed_base.items():
                curve.fixed_baselines[b].append(v.cpu())
            if clips.size(0) > 1:
                curve.swap.append(swap_changes(model, context, imagined[:, :1], real, k))
            curve.futures.append(future.half().cpu())
            if model.name in decoders:
                decoder, pixels = decoders[model.name], slot_patches(model, clips)
                curve.pixels["decoded"].append(slot_mse(decoder.render(real), pixels).cpu())
                curve.pixels["mean_frame"].append(slot_mse(decoder.mean_patch.expand_as(pixels), pixels).cpu())
                curve.pixels["dream"].append(slot_mse(decoder.render(imagined), pixels[:, k:]).cpu())
            if i == 0:  # baselines in the first model's feature space
                past = baseline_past(model, clips, real, k, context)
                horizon = future.size(1)
                curve.baselines["copy_last"].append(slot_l1(copy_last(past, horizon), future).cpu())
                curve.baselines["linear"].append(slot_l1(linear_extrapolation(past, horizon), future).cpu())
    return curves


def summarise(models: list[WorldModel], curves: list[Curves], k: int, resamples: int = 1000, seed: int = 0) -> dict:
    """metrics.json: per model name the mean curve over its seeds (with their spread), the baselines, and the
    first model's margins over the baselines and the other models."""
    out: dict = {"models": {}, "baselines": {}, "margins": {}}
    per_name: dict[str, list] = {}
    per_clip: dict[str, list] = {}  # normalised errors [M, H] per seed
    fixed_clip: dict[str, list] = {}  # normalised last-slot errors [M, H] per seed
    baselines: dict[str, np.ndarray] = {}
    fixed_baselines: dict[str, np.ndarray] = {}
    decoded: dict[str, dict] = {}
    for model, curve in zip(models, curves):
        clip_errors, scale, base = curve.result()
        fixed, fixed_base = curve.fixed_result(scale)
        fixed_clip.setdefault(model.name, []).append(fixed)
        fixed_baselines.update(fixed_base)
        per_name.setdefault(model.name, []).append((clip_errors.mean(0), scale))
        per_clip.setdefault(model.name, []).append(clip_errors)
        pixels = curve.pixel_result()
        if pixels is not None:
            decoded[model.name] = pixels
        for b, values in base.items():
            baselines[b] = values
            out["baselines"][b] = {"horizon": list(range(1, values.shape[1] + 1)), "error": values.mean(0).tolist(),
                                   "space": model.name}
    first = models[0].name
    mine = np.mean(per_clip[first], axis=0)
    others = {**baselines, **{name: np.mean(runs, axis=0) for name, runs in per_clip.items() if name != first}}
    out["margins"][first] = {name: paired_margin(mine, other, resamples, seed) for name, other in others.items()}
    for name, runs in per_name.items():
        errors = np.stack([e for e, _ in runs])
        entry = {"horizon": list(range(1, errors.shape[1] + 1)), "error": errors.mean(0).tolist(),
                 "scale": [s for _, s in runs]}
        if len(runs) > 1:
            entry.update(std=errors.std(0).tolist(), seeds=len(runs))
        if name in decoded:
            entry["decoder"] = decoded[name]
        uses = [c.context_use() for m, c in zip(models, curves) if m.name == name]
        if all(u is not None for u in uses):
            entry["context_use"] = float(np.mean(uses))
        out["models"][name] = entry
    fixed_curves = {**{name: np.mean(runs, axis=0) for name, runs in fixed_clip.items()}, **fixed_baselines}
    out["fixed_target"] = {
        "slot": models[0].grid[0] - 1,
        "horizon": list(range(1, models[0].grid[0] - k + 1)),
        "error": {name: e.mean(0).tolist() for name, e in fixed_curves.items()},
        "growth": {name: growth(e, resamples, seed) for name, e in fixed_curves.items() if name != "position_mean"},
    }
    out["context_slots"] = k
    out["frames_per_slot"] = models[0].arch.model.tubelet_size * models[0].arch.frame_step
    return out


def baseline_style(metrics: dict, name: str) -> dict:
    """Grey dashed lines, told apart by shade and dash pattern."""
    j = list(metrics["baselines"]).index(name)
    return dict(color=f"{0.15 + 0.25 * (j % 3):.2f}", ls=("--", ":", "-.")[j % 3])


def plot_curves(path: Path, metrics: dict) -> None:
    """Left: the rollouts from the first context slots, error per horizon. Right: the clip's last slot imagined
    from h slots back (the same target at every horizon)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

    fixed = metrics.get("fixed_target")
    fig, axes = plt.subplots(1, 2 if fixed else 1, figsize=(11 if fixed else 6, 4), squeeze=False)
    ax = axes[0, 0]
    for i, (name, e) in enumerate(metrics["models"].items()):
        h, err = np.array(e["horizon"]), np.array(e["error"])
        ax.plot(h, err, marker="o", color=f"C{i}", label=name)
        if "std" in e:
            ax.fill_between(h, err - np.array(e["std"]), err + np.array(e["std"]), color=f"C{i}", alpha=0.2)
    for name, e in metrics["baselines"].items():
        ax.plot(e["horizon"], e["error"], label=f"{name} (baseline)", **baseline_style(metrics, name))
    ax.set(title=f"rollouts from the first {metrics['context_slots']} slots")
    if fixed:
        ax = axes[0, 1]
        names = list(metrics["models"])
        for name, err in fixed["error"].items():
            style = dict(marker="o", color=f"C{names.index(name)}") if name in names else baseline_style(metrics, name)
            ax.plot(fixed["horizon"], err, label=name, **style)
        ax.set(title=f"the last slot ({fixed['slot']}) imagined from h slots back")
    for ax in axes[0]:
        ax.axhline(1.0, color="0.7", lw=0.8)  # as bad as predicting the mean feature
        ax.set_yscale("log")  # random init sits an order of magnitude above the rest
        ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set(xlabel=f"horizon (time slots of {metrics['frames_per_slot']} frames)",
               ylabel="L1 error / mean |feature - mean feature|")
        ax.grid(alpha=0.3)
    axes[0, 0].legend(frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------- dream strips

CONTEXT, DREAM, PLAIN = (0.12, 0.47, 0.71), (1.0, 0.5, 0.05), (0.82, 0.82, 0.82)  # frame borders
BORDER, SLOT_GAP, CLIP_GAP, LABELS, HEADER = 2, 4, 10, 56, 14  # strip geometry, in pixels of the frames
ZOOM = 2  # the PNG's pixels per frame pixel


@torch.no_grad()
def strip_rows(model: WorldModel, decoder: Optional[TrainedDecoder], clips: Tensor, k: int) -> dict[str, Tensor]:
    """A strip's rows by label: frames [B, C, T, H, W] in [0, 1]. The dreamed row starts from the
    context slots as the rollout saw them (decoded, for a decoded model)."""
    real = slot_patches(model, clips)
    if isinstance(model, PixelWorldModel):  # its dreams are pixels already: nothing to decode
        rows = {"real": real, "dreamed": torch.cat([real[:, :k], model.imagine_pixels(clips, k)], 1)}
    else:
        decoded = decoder.render(model.target_slots(clips))
        dreamed = torch.cat([decoded[:, :k], decoder.render(model.imagine(clips, k))], 1)
        rows = {"real": real, "decoded": decoded, "dreamed": dreamed}
    m, transform = model.arch.model, clip_transform(model.arch)
    mean, std = transform.mean.to(clips.device), transform.std.to(clips.device)
    return {label: (unpatchify(p.flatten(1, 2), model.grid, m.tubelet_size, m.patch_size) * std + mean).clamp(0, 1).cpu()
            for label, p in rows.items()}


def strip_size(clips: int, rows: int, frames: int, frame_size: int, frames_per_slot: int) -> tuple[int, int]:
    """(height, width) of a strip PNG in pixels."""
    cell = frame_size + 2 * BORDER
    height = HEADER + clips * rows * cell + (clips - 1) * CLIP_GAP
    width = LABELS + frames * cell + (frames // frames_per_slot - 1) * SLOT_GAP
    return height * ZOOM, width * ZOOM


def draw_strip(path: Path, title: str, rows: dict[str, Tensor], context_frames: int, frames_per_slot: int) -> None:
    """One block of rows per clip, one column per frame; context frames bordered blue, dreamed ones
    orange; columns labelled by horizon (time slots after the context)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    clips, _, frames, size, _ = next(iter(rows.values())).shape
    cell = size + 2 * BORDER
    height, width = (n // ZOOM for n in strip_size(clips, len(rows), frames, size, frames_per_slot))
    canvas = np.ones((height, width, 3))

    def left(f: int) -> int:
        return LABELS + f * cell + f // frames_per_slot * SLOT_GAP

    def top(clip: int, row: int) -> int:
        return HEADER + clip * (len(rows) * cell + CLIP_GAP) + row * cell

    for c in range(clips):
        for r, (label, video) in enumerate(rows.items()):
            for f in range(frames):
                y, x = top(c, r), left(f)
                canvas[y:y + cell, x:x + cell] = CONTEXT if f < context_frames else DREAM if label == "dreamed" else PLAIN
                canvas[y + BORDER:y + BORDER + size, x + BORDER:x + BORDER + size] = video[c, :, f].permute(1, 2, 0).numpy()

    fig = plt.figure(figsize=(width * ZOOM / 100, height * ZOOM / 100), dpi=100)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(canvas, interpolation="nearest")
    ax.set_axis_off()
    text = dict(fontsize=7, va="center")
    ax.text(2, HEADER / 2, title, fontweight="bold", **text)
    ax.text((left(0) + left(context_frames) - SLOT_GAP) / 2, HEADER / 2, "context", ha="center", color=CONTEXT, **text)
    for h, f in enumerate(range(context_frames, frames, frames_per_slot), start=1):
        ax.text((left(f) + left(f + frames_per_slot) - SLOT_GAP) / 2, HEADER / 2, f"+{h}", ha="center", **text)
    for c in range(clips):
        for r, label in enumerate(rows):
            ax.text(LABELS - 4, top(c, r) + cell / 2, label, ha="right", **text)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def draw_strips(out: Path, models: list[WorldModel], decoders: dict[str, TrainedDecoder], clips: Tensor,
                k: int) -> dict[str, str]:
    """A strip PNG per model (each decoded, or a pixel model); returns their file names by model name."""
    files = {}
    for model in models:
        frames_per_slot = model.arch.model.tubelet_size
        rows = strip_rows(model, decoders.get(model.name), clips, k)
        files[model.name] = f"strip_{model.name}.png"
        draw_strip(out / files[model.name], model.name, rows, k * frames_per_slot, frames_per_slot)
    return files


# --------------------------------------------------------------------------- report


def write_report(path: Path, metrics: dict, cfg: DreamConfig) -> None:
    columns = {**metrics["models"], **{f"{b} (baseline)": e for b, e in metrics["baselines"].items()}}
    horizon = next(iter(metrics["models"].values()))["horizon"]
    rows = [[h, *[e["error"][i] for e in columns.values()]] for i, h in enumerate(horizon)]
    lines = [
        "# Imagined rollouts",
        "",
        f"{metrics['videos']} clips of `{cfg.data.list}`. From the first {metrics['context_slots']} time slots "
        "the predictor imagines one slot at a time, feeding each imagined slot back as context. Error: L1 to the "
        "real clip in each model's own target space (a JEPA's: its target encoder's layer-normed features; a pixel "
        "model's: the normalised pixel patches its decoder reconstructs), divided by their mean L1 distance to the "
        "mean target (1.0 = no better than the mean). Baselines work in the space of "
        f"`{next(iter(metrics['baselines'].values()))['space']}`: copy the last context slot, extrapolate the last "
        "two linearly, and `position_mean`, each token position's average real feature over these clips (it knows "
        "the typical layout and nothing of the clip: a model no better than it predicts no clip-specific content).",
        "",
        markdown_table(["horizon", *columns], rows),
        "",
        *margins_section(metrics, cfg),
        *fixed_target_section(metrics, cfg),
        *context_use_section(metrics),
        "![error vs horizon](error_vs_horizon.png)",
        "",
        *dream_section(metrics, cfg),
        f"Rollouts {metrics['timing']['rollout_s']:.0f} s, decoders {metrics['timing']['decoder_s']:.0f} s, "
        f"strips {metrics['timing']['strips_s']:.0f} s.",
        "",
    ]
    path.write_text("\n".join(lines))


def margins_section(metrics: dict, cfg: DreamConfig) -> list[str]:
    """The first model's error minus each baseline's and other model's, per horizon, with intervals."""
    margins = metrics.get("margins", {})
    if not margins:
        return []
    name, versus = next(iter(margins.items()))
    horizon = metrics["models"][name]["horizon"]
    return [
        f"`{name}`'s error minus each other curve's, per horizon, with a paired bootstrap 95% interval over the "
        f"clips ({cfg.bootstrap} resamples; in bold where it excludes 0). Negative: {name} is closer to what "
        "really happened.",
        "",
        markdown_table(["horizon", *[f"{name} − {other}" for other in versus]],
                       [[h, *[margin_cell(m["value"][i], *m["ci"][i]) for m in versus.values()]]
                        for i, h in enumerate(horizon)]),
        "",
    ]


def fixed_target_section(metrics: dict, cfg: DreamConfig) -> list[str]:
    """The clip's last slot imagined from h slots back, and how much the error grows from h = 1 to the longest."""
    fixed = metrics.get("fixed_target")
    if not fixed:
        return []
    names = list(fixed["error"])
    rows = [[h, *[fixed["error"][n][i] for n in names]] for i, h in enumerate(fixed["horizon"])]
    rows.append([f"growth, +{fixed['horizon'][-1]} − +1",
                 *[margin_cell(g["value"], *g["ci"]) if (g := fixed["growth"].get(n)) else "0 (by construction)"
                   for n in names]])
    return [
        f"The same target at every horizon: slot {fixed['slot']}, the clip's last, imagined from h slots back "
        f"(a rollout from the first {fixed['slot'] + 1} − h real slots). Above, a longer horizon also means a "
        "later slot, which may be easier or harder in itself (objects settle, or fly off); here only the horizon "
        "changes. Growth: the error at the longest horizon minus at +1, with a bootstrap 95% interval over the "
        f"clips ({cfg.bootstrap} resamples; in bold where it excludes 0). A model that reads its context gets "
        "worse the further back its last real slot is; one that predicts the layout does not.",
        "",
        markdown_table(["horizon", *names], rows),
        "",
    ]


def context_use_section(metrics: dict) -> list[str]:
    uses = {name: e["context_use"] for name, e in metrics["models"].items() if "context_use" in e}
    if not uses:
        return []
    return [
        "Context use: give each clip the next clip's past and see how far the first imagined slot moves, over how "
        "far the real next slots of those two clips differ (L1). 0: the prediction ignores the past; a predictor "
        "that follows the clip moves about as much as the truth does. "
        + ", ".join(f"{name} {u:.3f}" for name, u in uses.items()) + ".",
        "",
    ]


def dream_section(metrics: dict, cfg: DreamConfig) -> list[str]:
    """The decoders' table and the strips, if any were made."""
    decoded = {name: e["decoder"] for name, e in metrics["models"].items() if "decoder" in e}
    strips = metrics.get("strips", {})
    if not decoded and not strips:
        return []
    lines = ["## Dreams", ""]
    if decoded:
        horizon = len(next(iter(decoded.values()))["dream_mse"])
        lines += [
            "A pixel decoder trained on each model's frozen target features (a small probe: "
            f"{cfg.decoder.epochs} epochs on up to {cfg.decoder.max_videos} clips of `{cfg.decoder.train_list}`) "
            "renders real and imagined slots. Mean squared error on the val clips, in normalised pixels: the "
            "decoder on the real clip's features (its ceiling), always predicting the train clips' mean frame, and "
            "the decoded dream at the first and last horizon.",
            "",
            markdown_table(["model", "decoder", "mean frame", "dream +1", f"dream +{horizon}"],
                           [[name, d["val_mse"], d["mean_frame_mse"], d["dream_mse"][0], d["dream_mse"][-1]]
                            for name, d in decoded.items()]),
            "",
        ]
    if strips:
        lines += [
            f"Rows: real frames; the decoder on their target features; the decoder on the imagined slots (a pixel "
            f"model's dreams are drawn as they are). Blue: the {metrics['context_slots']} context slots the rollout "
            f"starts from; orange: imagined, labelled by horizon in time slots as in the plot above.",
            "",
            *[f"![dream strip {name}]({file})\n" for name, file in strips.items()],
        ]
    return lines


def train_decoders(models: list[WorldModel], cfg: DreamConfig, out: Path, device: torch.device) -> dict[str, TrainedDecoder]:
    """A pixel decoder for each model whose dreams are features (a pixel model's are pixels already)."""
    return {model.name: load_or_train(model, cfg.models[model.name].checkpoint, cfg.decoder, cfg.seed,
                                      cfg.data.batch_size, cfg.data.num_workers, out / "decoders", device)
            for model in models if not isinstance(model, PixelWorldModel)}


def main(cfg: DreamConfig) -> dict:
    """Entry point of `vjepa dream`."""
    setup_logging()
    if OmegaConf.is_config(cfg):
        OmegaConf.resolve(cfg)
    if not cfg.models:
        raise ValueError("no models to roll out; add some, e.g. models.jepa.checkpoint=PATH")
    if cfg.bootstrap < 1:
        raise ValueError(f"bootstrap={cfg.bootstrap}: expected a number of resamples >= 1")
    out = Path(cfg.output)
    save_config(cfg, out / "config.yaml")
    device = resolve_device(cfg.device)
    models = [m for name, spec in cfg.models.items() for m in build_world_models(name, spec, cfg.mask_index, cfg.model, cfg.clip)]
    check_same_geometry(models)
    arch, num_slots = models[0].arch, models[0].grid[0]
    k = cfg.context_slots
    if not 2 <= k < num_slots:
        raise ValueError(f"context_slots={k}: expected 2 (linear extrapolation needs two) to {num_slots - 1} "
                         f"for clips of {num_slots} time slots")

    dataset = VideoDataset(cfg.data.list, frames_per_clip=arch.frames_per_clip, frame_step=arch.frame_step,
                           transform=clip_transform(arch), seed=cfg.seed)
    indices = subset_indices(len(dataset), cfg.data.max_videos, cfg.seed)
    loader = DataLoader(Subset(dataset, indices), batch_size=cfg.data.batch_size, shuffle=False,
                        num_workers=cfg.data.num_workers, collate_fn=collate_videos)
    for m in models:
        m.to(device)
    drawn = [m for m in models if cfg.models[m.name].kind != "random"] if cfg.decoder.enabled else []
    t0 = time.perf_counter()
    decoders = train_decoders(drawn, cfg, out, device)  # random init gets none: its dreams are noise by construction
    timing = {"decoder_s": time.perf_counter() - t0, "strips_s": 0.0}
    t0 = time.perf_counter()
    curves = roll_out(models, loader, k, device, decoders)
    if not curves[0].errors:
        raise DataError(f"{cfg.data.list}: none of the {len(indices)} videos could be read")
    metrics = summarise(models, curves, k, cfg.bootstrap, cfg.seed)
    metrics["videos"] = sum(len(e) for e in curves[0].errors)
    timing["rollout_s"] = time.perf_counter() - t0
    for name, d in decoders.items():
        metrics["models"][name]["decoder"].update(train_clips=d.clips, epoch_loss=d.epoch_loss)
    if drawn and cfg.decoder.strip_clips > 0:
        t0 = time.perf_counter()
        examples = collate_videos([dataset[i] for i in indices[:cfg.decoder.strip_clips]])["clips"].to(device)
        metrics["strips"] = draw_strips(out, drawn, decoders, examples, k) if len(examples) else {}
        timing["strips_s"] = time.perf_counter() - t0
    metrics["timing"] = timing
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    plot_curves(out / "error_vs_horizon.png", metrics)
    write_report(out / "report.md", metrics, cfg)
    log.info("dream: %d clips, %d models in %.1fs; results in %s", metrics["videos"], len(models),
             metrics["timing"]["rollout_s"], out / "report.md")
    return metrics
