"""`vjepa physics`: violation of expectation, scored by how surprised the world model is.

Surprise, after Garrido et al. (2025), "Intuitive physics understanding emerges from
self-supervised pretraining on natural videos": the predictor (with its `future` mask token)
predicts time slots from the real slots before them, and the L1 error to the target encoder's
layer-normed features of a slot is the surprise at that slot. For each k in `context_slots`, the
clip's first k slots predict every later slot at once: exactly what the `future` mask trains (the
first k slots as context, all later ones as targets), so every prediction is one the predictor has
learnt to make. Garrido et al. slide a window over a longer video, but each window is a clip of its
own whose positions start at 0: in the model's coordinates that is a prefix too.
A clip's surprise curve averages the predictions of each slot; its score is the curve's max (or
mean, `score`) from the first slot the event reaches on (twins are identical before it, so earlier
slots can only tie), or over the whole curve for clips without an `event_frame`.

Each group of a VoE table (`path,group,possible,property`, optional `event_frame` and `set`) holds
clips identical up to an event. Per property:
- pairwise accuracy: the fraction of possible / impossible pairs of a group where the possible
  clip is the less surprising (ties count one half), with a bootstrap 95% interval over pairs;
- relative accuracy, IntPhys's: the fraction of matched sets whose possible clips are less
  surprising in total than their impossible ones. Groups that share a `set` form one set (a
  balanced set of `vjepa voe`: its impossible clips are made of its possible ones' parts, the same
  frames in an order physics forbids, or for solidity one's bar with the other's motion, so a
  statistic of the parts alone cannot pass it); a group without one is its own set, where this
  equals the pairwise accuracy;
- the AUROC of the score separating impossible from possible clips.
Random-init models (several seeds) measure chance on the same clips, and the first model's margin over
each other model (accuracy minus accuracy, per property) gets a paired bootstrap interval over the
same sets and pairs: whether it is above the random-init band, answered by one interval.

The run folder gets metrics.json (keyed by model; the same metrics with the other score under
`other_scores`), surprise.csv (every clip's curve, mean and max), accuracy.png,
surprise_curves.png, surprise_maps.png (the same pairs' surprise per token, over their frames),
report.md and config.yaml.
"""
from __future__ import annotations

import csv
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch
from omegaconf import MISSING, OmegaConf

from evals.stats import bootstrap_ci
from evals.worldmodel import (
    WorldModel, WorldModelSource, build_world_models, check_same_geometry, clip_transform, read_clip_from_start,
)
from vjepa.config import choice, save_config
from vjepa.models.config import ModelConfig
from vjepa.pretrained import ClipConfig
from vjepa.data import DataError
from vjepa.report import margin_cell, markdown_table
from vjepa.runlog import progress, setup_logging
from vjepa.device import DEVICES, resolve_device

log = logging.getLogger("vjepa.physics")

REQUIRED_COLUMNS = ("path", "group", "possible", "property")
SCORES = ("max", "mean")


@dataclass
class PhysicsConfig:
    output: str = "runs/physics"
    voe: str = "runs/voe"  # what `${voe}` means in a recipe's paths
    checkpoint: str = "runs/pretrain/checkpoints/latest.pt"  # what `${checkpoint}` means in a recipe's models
    table: str = MISSING  # VoE table: CSV `path,group,possible,property[,event_frame][,set]`, paths relative to it
    seed: int = 0
    device: str = choice("auto", DEVICES)  # auto | cpu | cuda
    # the clip's first k slots predict all later ones, for each k here (what the `future` mask trains)
    context_slots: List[int] = field(default_factory=lambda: [2, 3, 4])
    score: str = choice("max", SCORES)  # max | mean of a clip's surprise curve (from the first slot the event reaches)
    bootstrap: int = 1000  # resamples of the pairs (sets) for the accuracy's confidence interval
    examples: int = 4  # twin pairs drawn in surprise_curves.png
    batch_size: int = 8
    mask_index: Optional[int] = None  # predictor mask token; null: the checkpoint's `future` mask
    models: Dict[str, WorldModelSource] = field(default_factory=dict)  # by name: jepa, random, ...
    # the architecture and clips of checkpoints without a `config` (official V-JEPA ones)
    model: ModelConfig = field(default_factory=ModelConfig)
    clip: ClipConfig = field(default_factory=ClipConfig)


# --------------------------------------------------------------------------- the VoE table


@dataclass
class VoEClip:
    path: str
    group: str
    possible: int
    property: str
    event_frame: Optional[int]
    set: str = ""  # matched set (several groups); "" where the group is its own


def read_voe_table(path: str) -> list[VoEClip]:
    """The clips of a VoE table; paths are absolute or relative to the table's folder."""
    table = Path(path)
    if not table.is_file():
        raise DataError(f"VoE table {table} does not exist; make one with `vjepa voe` or give a CSV "
                        f"with columns {','.join(REQUIRED_COLUMNS)}")
    with open(table, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"VoE table {table}: no column {', '.join(missing)} (header: {reader.fieldnames}); "
                            f"expected {','.join(REQUIRED_COLUMNS)}[,event_frame][,set]")
        rows = list(reader)
    clips = []
    for line, row in enumerate(rows, start=2):
        if row["possible"] not in ("0", "1"):
            raise DataError(f"{table}:{line}: 'possible' must be 1 or 0, got {row['possible']!r}")
        event = row.get("event_frame") or None
        clips.append(VoEClip(str(table.absolute().parent / row["path"]), row["group"], int(row["possible"]),
                             row["property"], int(event) if event is not None else None, row.get("set") or ""))
    if not clips:
        raise DataError(f"VoE table {table} has no rows")
    absent = [c.path for c in clips if not Path(c.path).is_file()]
    if absent:
        raise DataError(f"VoE table {table}: {len(absent)} of {len(clips)} videos do not exist (first: {absent[0]})")
    return clips


def twin_pairs(clips: list[VoEClip]) -> dict[str, list[tuple[int, int]]]:
    """Per property, every (possible, impossible) pair of clip indices within a group."""
    groups: dict[str, list[int]] = {}
    for i, c in enumerate(clips):
        groups.setdefault(c.group, []).append(i)
    pairs: dict[str, list[tuple[int, int]]] = {}
    for members in groups.values():
        ok = [i for i in members if clips[i].possible]
        bad = [i for i in members if not clips[i].possible]
        for j in bad:
            pairs.setdefault(clips[j].property, []).extend((i, j) for i in ok)
    if not pairs:
        raise DataError("the VoE table has no group with both a possible and an impossible clip")
    return pairs


def matched_sets(clips: list[VoEClip]) -> dict[str, list[tuple[list[int], list[int]]]]:
    """Per property, the (possible, impossible) clip indices of each matched set: a `set`, else a group."""
    members: dict[str, list[int]] = {}
    for i, c in enumerate(clips):
        members.setdefault(c.set or c.group, []).append(i)
    sets: dict[str, list[tuple[list[int], list[int]]]] = {}
    for key, idx in members.items():
        if len({clips[i].property for i in idx}) > 1:
            raise DataError(f"VoE set {key!r} mixes properties: {sorted({clips[i].property for i in idx})}")
        ok = [i for i in idx if clips[i].possible]
        bad = [i for i in idx if not clips[i].possible]
        if ok and bad:
            sets.setdefault(clips[idx[0]].property, []).append((ok, bad))
    return sets


# --------------------------------------------------------------------------- surprise


@torch.no_grad()
def token_surprise(model: WorldModel, clips: torch.Tensor, lengths: List[int]) -> torch.Tensor:
    """[B, T, H*W] surprise per token: the L1 error of its predicted features (mean over the feature
    dimension), averaged over its predictions from the prefixes of `lengths` slots; NaN in slots none predicts."""
    num_slots = model.grid[0]
    real = model.target_slots(clips)
    total = torch.zeros(clips.size(0), num_slots, model.tokens_per_slot)
    count = torch.zeros(num_slots)
    for c in lengths:
        past, later = range(c), range(c, num_slots)
        pred = model.predict_slots(model.context_slots(clips, past), past, later)
        total[:, c:] += (pred - real[:, c:]).abs().mean(-1).cpu()
        count[c:] += 1
    return total / count.where(count > 0, torch.tensor(float("nan")))[:, None]


def surprise_curves(model: WorldModel, clips: torch.Tensor, lengths: List[int]) -> torch.Tensor:
    """[B, T] surprise per time slot: its tokens' surprise averaged (`token_surprise`); NaN where none is predicted."""
    return token_surprise(model, clips, lengths).mean(-1)


def event_slot(event_frame: Optional[int], frame_step: int, tubelet_size: int, num_slots: int) -> int:
    """The first time slot holding a frame at or after `event_frame` (0 without one).

    Slot s holds the clip frames s*tubelet .. s*tubelet + tubelet - 1, i.e. video frames
    frame_step * (s*tubelet + j); slots before this one saw only frames from before the event.
    """
    if event_frame is None:
        return 0
    per_slot = frame_step * tubelet_size
    last_in_slot = frame_step * (tubelet_size - 1)  # offset of a slot's last frame from its first
    return int(min(max(0, -(-(event_frame - last_in_slot) // per_slot)), num_slots - 1))


def clip_scores(curves: np.ndarray, score: str, starts: Optional[np.ndarray] = None) -> np.ndarray:
    """A score per clip from its surprise curve [V, T], over slots >= starts[v] (all slots without starts)."""
    if starts is not None:
        curves = np.where(np.arange(curves.shape[1])[None, :] >= np.asarray(starts)[:, None], curves, np.nan)
    return np.nanmax(curves, axis=1) if score == "max" else np.nanmean(curves, axis=1)


# --------------------------------------------------------------------------- metrics


def pair_outcomes(scores: np.ndarray, pairs: list[tuple[int, int]]) -> np.ndarray:
    """1 where the possible clip of a pair is the less surprising, 0.5 on a tie, else 0."""
    possible, impossible = scores[[p for p, _ in pairs]], scores[[q for _, q in pairs]]
    return (possible < impossible) + 0.5 * (possible == impossible)


def set_outcomes(scores: np.ndarray, sets: list[tuple[list[int], list[int]]]) -> np.ndarray:
    """1 where a set's possible clips are less surprising on average than its impossible ones, 0.5 on a tie, else 0."""
    possible = np.array([scores[ok].mean() for ok, _ in sets])
    impossible = np.array([scores[bad].mean() for _, bad in sets])
    return (possible < impossible) + 0.5 * (possible == impossible)


def auroc(possible: np.ndarray, impossible: np.ndarray) -> float:
    """P(an impossible clip scores above a possible one), ties one half (Mann-Whitney)."""
    diff = impossible[:, None] - possible[None, :]
    return float((diff > 0).mean() + 0.5 * (diff == 0).mean())


def property_metrics(scores_by_seed: np.ndarray, clips: list[VoEClip], pairs: dict[str, list], cfg: PhysicsConfig,
                     sets: Optional[dict[str, list]] = None) -> dict:
    """metrics of one model: scores_by_seed [S, V] (S = 1 for a checkpoint). Seeds are averaged per pair (set)."""
    sets = matched_sets(clips) if sets is None else sets
    props = {}
    for prop, prop_pairs in pairs.items():
        outcomes = np.stack([pair_outcomes(s, prop_pairs) for s in scores_by_seed])  # [S, P]
        relative = np.stack([set_outcomes(s, sets[prop]) for s in scores_by_seed])  # [S, sets]
        members = sorted({i for pair in prop_pairs for i in pair})
        possible = [i for i in members if clips[i].possible]
        impossible = [i for i in members if not clips[i].possible]
        aurocs = [auroc(s[possible], s[impossible]) for s in scores_by_seed]
        entry = {"accuracy": float(outcomes.mean()), "ci": list(bootstrap_ci(outcomes.mean(0), cfg.bootstrap, cfg.seed)),
                 "relative_accuracy": float(relative.mean()),
                 "relative_ci": list(bootstrap_ci(relative.mean(0), cfg.bootstrap, cfg.seed)),
                 "auroc": float(np.mean(aurocs)), "pairs": len(prop_pairs), "sets": len(sets[prop])}
        if len(scores_by_seed) > 1:
            entry["seed_accuracy"] = outcomes.mean(1).tolist()
            entry["seed_relative_accuracy"] = relative.mean(1).tolist()
        props[prop] = entry
    return {"properties": props, "mean_accuracy": float(np.mean([e["accuracy"] for e in props.values()])),
            "mean_relative_accuracy": float(np.mean([e["relative_accuracy"] for e in props.values()])),
            "seeds": len(scores_by_seed)}


def property_margins(first: np.ndarray, other: np.ndarray, pairs: dict[str, list], sets: dict[str, list],
                     cfg: PhysicsConfig) -> dict:
    """Per property, one model's accuracies minus another's on the same sets and pairs: scores [S, V] each
    (seeds averaged per set, as in `property_metrics`), with a paired bootstrap 95% interval (the sets, or
    pairs, drawn with replacement, the same draw for both models). Where the interval excludes 0, the two
    differ on these clips by more than the draw of clips explains."""
    out = {}
    for prop, prop_pairs in pairs.items():
        entry = {}
        for key, outcomes, items in (("relative_accuracy", set_outcomes, sets[prop]),
                                     ("accuracy", pair_outcomes, prop_pairs)):
            diff = (np.mean([outcomes(s, items) for s in first], axis=0)
                    - np.mean([outcomes(s, items) for s in other], axis=0))
            entry[key] = {"value": float(diff.mean()), "ci": list(bootstrap_ci(diff, cfg.bootstrap, cfg.seed))}
        out[prop] = entry
    return out


# --------------------------------------------------------------------------- outputs


def write_surprises(path: Path, models: list[WorldModel], curves: list[np.ndarray], clips: list[VoEClip], score: str) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["model", "seed", "path", "group", "possible", "property", "mean", "max", "curve"])
        for model, c in zip(models, curves):
            for clip, curve in zip(clips, c):
                writer.writerow([model.name, "" if model.seed is None else model.seed, clip.path, clip.group,
                                 clip.possible, clip.property, f"{np.nanmean(curve):.6g}", f"{np.nanmax(curve):.6g}",
                                 " ".join("" if np.isnan(v) else f"{v:.6g}" for v in curve)])


def plot_accuracy(path: Path, metrics: dict) -> None:
    """Bars per property and model (relative, then pairwise accuracy), bootstrap intervals as error bars;
    multi-seed (random) models also as a band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = metrics["models"]
    props = list(next(iter(models.values()))["properties"])
    width = 0.8 / len(models)
    fig, axes = plt.subplots(1, 2, figsize=(2.4 * (1.6 + 1.3 * len(props)) / 1.6, 3.8), sharey=True)
    x = np.arange(len(props))
    panels = (("relative_accuracy", "relative_ci", "relative accuracy (matched sets)"),
              ("accuracy", "ci", "pairwise accuracy (twin pairs)"))
    for ax, (key, ci, title) in zip(axes, panels):
        for i, (name, m) in enumerate(models.items()):
            entries = [m["properties"][p] for p in props]
            acc = np.array([e[key] for e in entries])
            err = np.abs(np.array([e[ci] for e in entries]).T - acc)
            xs = x + (i - (len(models) - 1) / 2) * width
            ax.bar(xs, acc, width=width, yerr=err, capsize=2, color=f"C{i}", label=name)
            if m["seeds"] > 1:
                for p, e in enumerate(entries):
                    ax.fill_between([p - 0.45, p + 0.45], *e[ci], color=f"C{i}", alpha=0.12, lw=0)
        ax.axhline(0.5, color="0.3", lw=0.8, ls="--")
        ax.set_xticks(x, props, rotation=15)
        ax.set(ylim=(0, 1), title=title)
    axes[0].set_ylabel("possible less surprising")
    axes[1].legend(frameon=False, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_examples(path: Path, curves: np.ndarray, clips: list[VoEClip], pairs: dict, examples: int,
                  frames_per_slot: int, name: str) -> None:
    """Surprise over time of a few twin pairs (the first of each property), the event marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chosen = example_pairs(pairs, examples)
    fig, axes = plt.subplots(1, len(chosen), figsize=(3.2 * len(chosen), 2.8), squeeze=False)
    for ax, (p, q) in zip(axes[0], chosen):
        slots = np.arange(curves.shape[1])
        ax.plot(slots, curves[p], marker="o", ms=3, label="possible")
        ax.plot(slots, curves[q], marker="o", ms=3, label="impossible")
        if clips[q].event_frame is not None:
            ax.axvline(clips[q].event_frame / frames_per_slot, color="0.4", ls="--", lw=0.8, label="event")
        ax.set(title=f"{clips[q].property}: {clips[q].group}", xlabel="time slot")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(f"surprise ({name})")
    axes[0][0].legend(frameon=False, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def example_pairs(pairs: dict, examples: int) -> list[tuple[int, int]]:
    """The twin pairs the plots show: the first of each property, `examples` at most."""
    return [prop_pairs[0] for prop_pairs in pairs.values()][:examples]


def to_pictures(frames: torch.Tensor, transform) -> torch.Tensor:
    """Normalised clips [B, C, F, H, W] back to pictures [B, F, H, W, C] in [0, 1]."""
    return (frames * transform.std + transform.mean).clamp(0, 1).permute(0, 2, 3, 4, 1)


@torch.no_grad()
def example_maps(model: WorldModel, clips: list[VoEClip], chosen: list[tuple[int, int]], cfg: PhysicsConfig,
                 device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """The example pairs' frames as pictures [E, 2, F, H, W, 3] in [0, 1] and their token surprise
    [E, 2, T, h, w] (possible first, then impossible)."""
    arch = model.arch
    transform = clip_transform(arch)
    paths = [clips[i].path for pair in chosen for i in pair]
    frames = torch.stack([read_clip_from_start(path, arch.frames_per_clip, arch.frame_step, transform)
                          for path in paths])  # [2E, C, F, H, W], normalised
    maps = token_surprise(model, frames.to(device), list(cfg.context_slots))
    pictures = to_pictures(frames, transform)
    t, h, w = model.grid
    return (pictures.numpy().reshape(len(chosen), 2, *pictures.shape[1:]),
            maps.numpy().reshape(len(chosen), 2, t, h, w))


def plot_maps(path: Path, pictures: np.ndarray, maps: np.ndarray, chosen: list[tuple[int, int]],
              clips: list[VoEClip], starts: np.ndarray) -> None:
    """Where the model is surprised: per example pair, each slot from the event on (or from the first predicted
    slot) as its last frame, under its tokens' surprise (possible, impossible; one colour scale a pair) and
    under the impossible clip's surprise minus the possible one's."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    num_slots, frames = maps.shape[2], pictures.shape[2]
    per_slot = frames // num_slots
    first = [max(int(starts[q]), int(np.argmax(~np.isnan(maps[e, 1].reshape(num_slots, -1)).all(1))))
             for e, (_, q) in enumerate(chosen)]
    cols = max(num_slots - f for f in first)
    fig, axes = plt.subplots(3 * len(chosen), cols, figsize=(1.25 * cols + 1.6, 1.3 * 3 * len(chosen)), squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    size = pictures.shape[3]
    extent = (-0.5, pictures.shape[4] - 0.5, size - 0.5, -0.5)
    for e, (p, q) in enumerate(chosen):
        shown = maps[e, :, first[e]:]
        top = float(np.nanmax(shown)) if np.isfinite(shown).any() else 1.0
        diff = shown[1] - shown[0]
        spread = float(np.nanmax(np.abs(diff))) if np.isfinite(diff).any() else 1.0
        rows = ((0, maps[e, 0], "viridis", 0.0, top, f"possible\n(0 to {top:.2f})"),
                (1, maps[e, 1], "viridis", 0.0, top, "impossible"),
                (1, maps[e, 1] - maps[e, 0], "coolwarm", -spread, spread, f"impossible −\npossible (±{spread:.2f})"))
        for r, (clip, values, cmap, lo, hi, label) in enumerate(rows):
            row = axes[3 * e + r]
            for c, slot in enumerate(range(first[e], num_slots)):
                ax = row[c]
                ax.imshow(pictures[e, clip, slot * per_slot + per_slot - 1], extent=extent)
                ax.imshow(values[slot], cmap=cmap, vmin=lo, vmax=hi, alpha=0.55, extent=extent, interpolation="nearest")
                if r == 0:
                    ax.set_title(f"slot {slot}" + (" (event)" if slot == starts[q] and clips[q].event_frame is not None
                                                    else ""), fontsize=8)
            row[0].text(-0.08, 0.5, (f"{clips[q].property}\n" if r == 0 else "") + label, transform=row[0].transAxes,
                        ha="right", va="center", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_report(path: Path, metrics: dict, cfg: PhysicsConfig) -> None:
    models = metrics["models"]
    first = next(iter(models.values()))["properties"]
    props = list(first)

    def cell(e: dict, key: str, ci: str) -> str:
        return f"{e[key]:.2f} [{e[ci][0]:.2f}, {e[ci][1]:.2f}]"

    relative = [[p, first[p]["sets"], *[cell(m["properties"][p], "relative_accuracy", "relative_ci")
                                        for m in models.values()]] for p in props]
    relative.append(["mean", "", *[f"{m['mean_relative_accuracy']:.2f}" for m in models.values()]])
    pairwise = [[p, first[p]["pairs"], *[f"{cell(m['properties'][p], 'accuracy', 'ci')} / {m['properties'][p]['auroc']:.2f}"
                                         for m in models.values()]] for p in props]
    pairwise.append(["mean", "", *[f"{m['mean_accuracy']:.2f}" for m in models.values()]])
    lines = [
        "# Violation of expectation",
        "",
        f"{metrics['videos']} clips of `{cfg.table}`. Surprise: the predictor's L1 error on each time slot "
        f"predicted from the clip's first {', '.join(map(str, cfg.context_slots))} slots (each prefix predicts every "
        f"later slot at once, as the `future` mask trains it), averaged; a clip scores its {cfg.score} surprise from "
        "the first slot the event reaches on (twins are identical before it). "
        "Models with several seeds (random init) show the mean over seeds: chance as this test measures it.",
        "",
        "Relative accuracy (IntPhys): the matched sets whose possible clips are less surprising in total than their "
        "impossible ones [bootstrap 95% interval]. A balanced set's impossible clips are made of its possible ones' "
        "parts (the same frames in an order physics forbids; for `vjepa voe`'s solidity, one's bar with the other's "
        "motion); a twin pair is a set of two.",
        "",
        markdown_table(["property", "sets", *models], relative),
        "",
        "Pairwise accuracy: the twin pairs (identical up to the event) whose possible clip is the less surprising "
        "[bootstrap 95% interval] / AUROC of the score over all clips.",
        "",
        markdown_table(["property", "pairs", *models], pairwise),
        "",
        *margins_section(metrics, cfg),
        *other_scores_section(metrics),
        "![accuracy per property](accuracy.png)",
        "",
        "![surprise curves](surprise_curves.png)",
        "",
        f"Where in the frame `{next(iter(models))}`'s surprise lies, for the same pairs: each time slot from the "
        "event on as its last frame, under its tokens' surprise, and the impossible clip's surprise minus the "
        "possible one's (red: the impossible clip surprises more there).",
        "",
        "![surprise per token](surprise_maps.png)",
        "",
        f"Surprise {metrics['timing']['surprise_s']:.0f} s.",
        "",
    ]
    path.write_text("\n".join(lines))


def margins_section(metrics: dict, cfg: PhysicsConfig) -> list[str]:
    """The first model's accuracies minus each other model's, per property, with paired intervals."""
    margins = metrics.get("margins", {})
    if not margins:
        return []
    name, versus = next(iter(margins.items()))
    props = list(metrics["models"][name]["properties"])
    header = ["property", *[f"{name} − {other}, {kind}" for other in versus for kind in ("relative", "pairwise")]]
    rows = [[p, *[margin_cell(m[p][key]["value"], *m[p][key]["ci"]) for m in versus.values()
                  for key in ("relative_accuracy", "accuracy")]] for p in props]
    return [
        f"`{name}`'s accuracy minus each other model's on the same clips, with a paired bootstrap 95% interval "
        f"(the sets or pairs drawn with replacement, {cfg.bootstrap} resamples; in bold where it excludes 0). "
        f"Positive and bold: {name} tells the possible clip from the impossible one better than that model, by more "
        "than the draw of clips explains.",
        "",
        markdown_table(header, rows),
        "",
    ]


def other_scores_section(metrics: dict) -> list[str]:
    """Relative accuracies and the first model's margins when clips score by the other statistic of their curve."""
    lines = []
    for score, other in metrics.get("other_scores", {}).items():
        models = other["models"]
        props = list(next(iter(models.values()))["properties"])
        name, versus = next(iter(other["margins"].items())) if other["margins"] else (None, {})
        header = ["property", *models, *[f"{name} − {o}" for o in versus]]
        rows = [[p, *[f"{m['properties'][p]['relative_accuracy']:.2f}" for m in models.values()],
                 *[margin_cell(v[p]["relative_accuracy"]["value"], *v[p]["relative_accuracy"]["ci"])
                   for v in versus.values()]] for p in props]
        lines += [f"The same clips scored by the {score} of their surprise curve instead (`score={score}`), relative "
                  "accuracy and margin [paired bootstrap 95%]. The max asks whether the impossible clip holds the "
                  "most surprising moment, the mean whether it is the more surprising from the event on.", "",
                  markdown_table(header, rows), ""]
    return lines


# --------------------------------------------------------------------------- entry point


def check_config(cfg: PhysicsConfig, num_slots: int) -> None:
    if not cfg.context_slots or not all(1 <= c < num_slots for c in cfg.context_slots):
        raise ValueError(f"context_slots={list(cfg.context_slots)}: each must lie in [1, {num_slots - 1}] for clips of "
                         f"{num_slots} time slots")


def score_metrics(names: list[str], models: list[WorldModel], curves: list[np.ndarray], score: str, starts: np.ndarray,
                  clips: list[VoEClip], pairs: dict, sets: dict, cfg: PhysicsConfig) -> dict:
    """`models` (per name, its seeds' scores) and `margins` (the first name against each other one, the
    random-init controls) for clips scored by `score` of their surprise curves."""
    scores = {name: np.stack([clip_scores(c, score, starts) for m, c in zip(models, curves) if m.name == name])
              for name in names}
    first, *others = names
    return {"models": {name: property_metrics(s, clips, pairs, cfg, sets) for name, s in scores.items()},
            "margins": {first: {name: property_margins(scores[first], scores[name], pairs, sets, cfg)
                                for name in others}} if others else {}}


@torch.no_grad()
def clip_surprises(models: list[WorldModel], clips: list[VoEClip], cfg: PhysicsConfig, device: torch.device) -> list[np.ndarray]:
    """[V, T] surprise curves per model; each clip is decoded once for all models."""
    arch = models[0].arch
    transform = clip_transform(arch)
    out: list[list] = [[] for _ in models]
    bar = progress(len(clips), desc="surprise")
    for start in range(0, len(clips), cfg.batch_size):
        batch = clips[start:start + cfg.batch_size]
        frames = torch.stack([read_clip_from_start(c.path, arch.frames_per_clip, arch.frame_step, transform)
                              for c in batch]).to(device)
        for model, curves in zip(models, out):
            curves.append(surprise_curves(model, frames, list(cfg.context_slots)).numpy())
        bar.update(len(batch))
    bar.close()
    return [np.concatenate(c) for c in out]


def main(cfg: PhysicsConfig) -> dict:
    """Entry point of `vjepa physics`."""
    setup_logging()
    if OmegaConf.is_config(cfg):
        OmegaConf.resolve(cfg)
    if not cfg.models:
        raise ValueError("no models to test; add some, e.g. models.jepa.checkpoint=PATH")
    out = Path(cfg.output)
    clips = read_voe_table(cfg.table)
    pairs, sets = twin_pairs(clips), matched_sets(clips)
    models = [m for name, spec in cfg.models.items() for m in build_world_models(name, spec, cfg.mask_index, cfg.model, cfg.clip)]
    check_same_geometry(models)
    check_config(cfg, models[0].grid[0])
    save_config(cfg, out / "config.yaml")
    device = resolve_device(cfg.device)
    for m in models:
        m.to(device)

    t0 = time.perf_counter()
    curves = clip_surprises(models, clips, cfg, device)
    elapsed = time.perf_counter() - t0
    arch = models[0].arch
    num_slots = models[0].grid[0]
    starts = np.array([event_slot(c.event_frame, arch.frame_step, arch.model.tubelet_size, num_slots) for c in clips])
    names = list(cfg.models)
    metrics: dict = score_metrics(names, models, curves, cfg.score, starts, clips, pairs, sets, cfg)
    metrics["other_scores"] = {score: score_metrics(names, models, curves, score, starts, clips, pairs, sets, cfg)
                               for score in SCORES if score != cfg.score}
    metrics.update(score=cfg.score, context_slots=list(cfg.context_slots), videos=len(clips),
                   timing={"surprise_s": elapsed})
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    write_surprises(out / "surprise.csv", models, curves, clips, cfg.score)
    plot_accuracy(out / "accuracy.png", metrics)
    plot_examples(out / "surprise_curves.png", curves[0], clips, pairs, cfg.examples,
                  arch.frame_step * arch.model.tubelet_size, models[0].name)
    chosen = example_pairs(pairs, cfg.examples)
    if chosen:
        plot_maps(out / "surprise_maps.png", *example_maps(models[0], clips, chosen, cfg, device), chosen, clips, starts)
    write_report(out / "report.md", metrics, cfg)
    log.info("physics: %d clips, %d models in %.1fs; results in %s", len(clips), len(models), elapsed, out / "report.md")
    return metrics
