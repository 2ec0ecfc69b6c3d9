"""`vjepa probe`: frozen encoders scored by probes on their features.

For every model (a checkpoint of this project or of the official V-JEPA release, a random
initialisation of the same architecture, a timm model, ...) the features of the train and val
lists are extracted once and cached. Each task's probes are then fitted on train, their
hyper-parameters chosen on a held-out part of train, and scored on val. The run folder gets
metrics.json (keyed by model, then task), report.md, probe.png and config.yaml.

With a `control` model (the random-init encoder in the shipped recipes), every other model's margin
over it gets a paired bootstrap interval: the val videos are drawn with replacement, the same draw
for both models, and each score (top-1, or R² per target and their mean) is recomputed on the draw
from the probes' per-video outcomes. A margin whose 95% interval excludes 0 is one the val set
resolves; the probe-fitting noise across seeds is in the ± beside it.
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

from evals.attentive import AttentiveConfig, attentive_classifier, attentive_regressor
from evals.features import (
    FeatureConfig, Features, SourceConfig, build_sources, eval_dataset, load_or_extract, subset_indices,
)
from evals.knn import KnnConfig, knn_classifier
from evals.linear import LinearConfig, linear_classifier, linear_regressor
from evals.stats import bootstrap_rows, percentile_interval
from evals.tasks import (
    TaskConfig, check_task, class_indices, classification_metrics, holdout_videos, read_targets,
    regression_metrics, video_mean,
)
from vjepa.config import choice, save_config
from vjepa.data import VideoDataset
from vjepa.report import margin_cell, markdown_table
from vjepa.runlog import setup_logging
from vjepa.device import DEVICES, resolve_device
from vjepa.models.config import ModelConfig

log = logging.getLogger("vjepa.probe")


@dataclass
class ProbeDataConfig:
    train_list: str = MISSING  # `path label` list the probes are fitted on
    val_list: str = MISSING  # ... and scored on
    train_targets: Optional[str] = None  # target tables (CSV) for regression tasks
    val_targets: Optional[str] = None
    max_train_videos: int = 0  # > 0: a seeded random subset (feature extraction dominates the run time)
    max_val_videos: int = 0


@dataclass
class ProbeConfig:
    output: str = "runs/probe"
    world: str = "runs/world"  # what `${world}` means in a recipe's data paths
    checkpoint: str = "runs/pretrain/checkpoints/latest.pt"  # what `${checkpoint}` means in a recipe's models
    seed: int = 0
    device: str = choice("auto", DEVICES)  # auto | cpu | cuda
    cache_dir: Optional[str] = None  # features cache; null: <output>/features
    holdout: float = 0.2  # fraction of training videos held out to choose each probe's hyper-parameters
    data: ProbeDataConfig = field(default_factory=ProbeDataConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    # architecture of checkpoints without a `config` (official V-JEPA ones) and of random models without a checkpoint
    model: ModelConfig = field(default_factory=ModelConfig)
    models: Dict[str, SourceConfig] = field(default_factory=dict)  # by name: jepa, random, ...
    tasks: Dict[str, TaskConfig] = field(default_factory=dict)  # by name
    linear: LinearConfig = field(default_factory=LinearConfig)
    attentive: AttentiveConfig = field(default_factory=AttentiveConfig)
    knn: KnnConfig = field(default_factory=KnnConfig)
    control: Optional[str] = None  # a model name (e.g. random): the others' margins over it, with bootstrap intervals
    bootstrap: int = 1000  # resamples of the val videos for those intervals


def check_config(cfg: ProbeConfig) -> None:
    if not cfg.models:
        raise ValueError("no models to probe; add some, e.g. models.jepa.checkpoint=PATH")
    if not cfg.tasks:
        raise ValueError("no tasks; add some, e.g. tasks.classes.type=classification")
    for name, task in cfg.tasks.items():
        check_task(name, task)
    if any(t.type == "regression" for t in cfg.tasks.values()) and not (cfg.data.train_targets and cfg.data.val_targets):
        raise ValueError("regression tasks need data.train_targets and data.val_targets (target tables)")
    if not 0 < cfg.holdout < 1:
        raise ValueError(f"holdout={cfg.holdout}: expected a fraction between 0 and 1")
    if cfg.control is not None and cfg.control not in cfg.models:
        raise ValueError(f"control={cfg.control!r} is not one of the models ({', '.join(cfg.models)})")
    if cfg.bootstrap < 1:
        raise ValueError(f"bootstrap={cfg.bootstrap}: expected a number of resamples >= 1")


# --------------------------------------------------------------------------- data


@dataclass
class Split:
    """One side of the evaluation: the videos, their labels and the regression targets of each task."""

    name: str
    dataset: VideoDataset
    indices: list  # the rows of the list that are used
    labels: np.ndarray  # [V] the list's labels, by row
    targets: dict  # task name -> [V, T], by row


def load_split(name: str, list_path: str, table: Optional[str], max_videos: int, cfg: ProbeConfig) -> Split:
    dataset = eval_dataset(list_path, cfg.features, cfg.seed)
    indices = subset_indices(len(dataset), max_videos, cfg.seed)
    labels = np.array([e.label for e in dataset.entries])
    paths = [e.path for e in dataset.entries]
    targets = {task: read_targets(table, t.targets, paths) for task, t in cfg.tasks.items() if t.type == "regression"}
    return Split(name, dataset, indices, labels, targets)


@dataclass
class Outcome:
    """A probe's score broken down per val video, so that it can be recomputed on a resample of the videos."""

    videos: np.ndarray  # [V] rows of the val list
    correct: Optional[np.ndarray] = None  # classification: [V] 1.0 where the top-1 class is right
    sq_error: Optional[np.ndarray] = None  # regression: [V, T] squared errors, NaN where a target is unknown
    truth: Optional[np.ndarray] = None  # regression: [V, T] the targets, NaN where unknown

    def score(self, rows: np.ndarray) -> float:
        """Top-1, or the mean over targets of R², on the videos at positions `rows` (repeats allowed)."""
        if self.correct is not None:
            return float(self.correct[rows].mean())
        with np.errstate(invalid="ignore", divide="ignore"):
            r2 = 1.0 - np.nanmean(self.sq_error[rows], axis=0) / np.nanvar(self.truth[rows], axis=0)
        r2 = r2[np.isfinite(r2)]
        return float(r2.mean()) if len(r2) else float("nan")


# --------------------------------------------------------------------------- probes


def classify(name: str, task: TaskConfig, probe: str, train: Features, val: Features, tr: Split, va: Split,
             cfg: ProbeConfig, device: torch.device) -> dict[str, dict]:
    """Top-1 (and top-5) of one probe on one classification task."""
    train_video, val_video = train.video.numpy(), val.video.numpy()
    classes = np.unique(tr.labels[train_video])
    y = class_indices(tr.labels[train_video], classes)
    held = holdout_videos(train_video, cfg.holdout, cfg.seed)
    if probe == "linear":
        scores, info = linear_classifier(train.pooled.numpy(), y, held, val.pooled.numpy(), cfg.linear)
    elif probe == "knn":
        scores, info = knn_classifier(train.pooled.numpy(), y, val.pooled.numpy(), cfg.knn), {"k": cfg.knn.k}
    else:
        scores, info = attentive_classifier(train.tokens, y, held, val.tokens, cfg.attentive, device, cfg.seed)
    videos, per_video = video_mean(scores, val_video)
    truth = class_indices(va.labels[videos], classes)
    metrics = classification_metrics(per_video, truth)
    entry = {"metric": "top1", "value": metrics.pop("top1"), **metrics, "hparams": info,
             "classes": len(classes), "n_train": len(np.unique(train_video)), "n_val": len(videos),
             "outcome": Outcome(videos, correct=(per_video.argmax(1) == truth).astype(float))}
    return {f"{name}/{probe}": entry}


def regress(name: str, task: TaskConfig, probe: str, train: Features, val: Features, tr: Split, va: Split,
            cfg: ProbeConfig, device: torch.device) -> dict[str, dict]:
    """R² and MSE of one probe per target of a regression task, and their mean R²."""
    train_video, val_video = train.video.numpy(), val.video.numpy()
    y = tr.targets[name][train_video]  # [M, T], NaN where a clip has no value
    if probe == "linear":
        preds, infos = np.empty((len(val_video), y.shape[1])), []
        for t in range(y.shape[1]):
            rows = np.isfinite(y[:, t])  # rows with an empty cell are dropped for this target only
            held = holdout_videos(train_video[rows], cfg.holdout, cfg.seed)
            preds[:, t], info = linear_regressor(train.pooled.numpy()[rows], y[rows, t], held, val.pooled.numpy(),
                                                 cfg.linear)
            infos.append(info)
    else:
        held = holdout_videos(train_video, cfg.holdout, cfg.seed)
        preds, infos = attentive_regressor(train.tokens, y, held, val.tokens, cfg.attentive, device, cfg.seed)
    videos, per_video = video_mean(preds, val_video)
    truth = va.targets[name][videos]
    sq_error = (per_video - truth) ** 2  # NaN where the target is unknown
    out = {}
    for t, target in enumerate(task.targets):
        known = np.isfinite(truth[:, t])
        m = regression_metrics(per_video[known, t], truth[known, t])
        out[f"{target}/{probe}"] = {"metric": "r2", "value": m["r2"], "mse": m["mse"], "hparams": infos[t],
                                    "n_train": len(np.unique(train_video[np.isfinite(y[:, t])])), "n_val": int(known.sum()),
                                    "outcome": Outcome(videos, sq_error=sq_error[:, [t]], truth=truth[:, [t]])}
    out[f"{name}/{probe}"] = {"metric": "r2", "value": float(np.nanmean([e["value"] for e in out.values()])),
                              "mean_of": list(task.targets), "outcome": Outcome(videos, sq_error=sq_error, truth=truth)}
    return out


def run_probes(train: Features, val: Features, tr: Split, va: Split, cfg: ProbeConfig,
               device: torch.device) -> dict[str, dict]:
    """Every task's every probe on one source's features."""
    results = {}
    for name, task in cfg.tasks.items():
        run = classify if task.type == "classification" else regress
        by_probe = [run(name, task, probe, train, val, tr, va, cfg, device) for probe in task.probes]
        for rows in zip(*(r.items() for r in by_probe)):  # a target's probes side by side in the report
            results.update(rows)
    return results


def merge_seeds(per_seed: list[dict[str, dict]]) -> dict[str, dict]:
    """One entry per task: values averaged over seeds, with their spread when there are several."""
    if len(per_seed) == 1:
        return per_seed[0]
    merged = {}
    for key, first in per_seed[0].items():
        entries = [r[key] for r in per_seed]
        values = [e["value"] for e in entries]
        entry = {k: v for k, v in first.items() if k != "hparams"}
        for k, v in first.items():
            if isinstance(v, float):
                entry[k] = float(np.mean([e[k] for e in entries]))
        entry.update(std=float(np.std(values)), values=values)
        if "hparams" in first:
            entry["hparams"] = [e["hparams"] for e in entries]
        merged[key] = entry
    return merged


def margins(outcomes: dict[str, dict[str, list[Outcome]]], control: str, resamples: int, seed: int) -> dict:
    """Each model's margin over `control` per task: {"value", "ci"} from a paired bootstrap over the val videos.

    `outcomes` holds per model and task one Outcome per seed; a model's score on a resample is its mean
    over seeds. Models whose val videos differ from the control's (a source that skipped other files)
    get no margin rather than a wrong one."""
    base = outcomes[control]
    videos = next(iter(base.values()))[0].videos
    draws = bootstrap_rows(len(videos), resamples, seed)
    every = np.arange(len(videos))
    out: dict = {}
    control_scores: dict[str, np.ndarray] = {}
    for model, tasks in outcomes.items():
        if model == control:
            continue
        if any(not np.array_equal(o.videos, videos) for runs in tasks.values() for o in runs):
            log.warning("%s: its val videos differ from %s's; no margins over it", model, control)
            continue
        out[model] = {}
        for task, runs in tasks.items():
            if task not in control_scores:  # the control's score on every draw, computed once per task
                control_scores[task] = seed_mean(base[task], [every, *draws])
            diffs = seed_mean(runs, [every, *draws]) - control_scores[task]
            lo, hi = percentile_interval(diffs[1:])
            out[model][task] = {"value": float(diffs[0]), "ci": [float(lo), float(hi)]}
    return out


def seed_mean(runs: list[Outcome], draws: list[np.ndarray]) -> np.ndarray:
    """Per draw of val-video positions, the score averaged over a model's seeds."""
    return np.array([np.mean([o.score(rows) for o in runs]) for rows in draws])


# --------------------------------------------------------------------------- outputs


def cell(entry: dict) -> str:
    if "std" in entry:
        return f"{entry['value']:.3f} ± {entry['std']:.3f}"
    return f"{entry['value']:.3f}"


def write_report(path: Path, metrics: dict, cfg: ProbeConfig) -> None:
    models = list(metrics["models"])
    tasks = list(metrics["models"][models[0]]["tasks"])
    over = metrics.get("margins", {})
    rows = [[task, metrics["models"][models[0]]["tasks"][task]["metric"],
             *[cell(metrics["models"][m]["tasks"][task]) for m in models],
             *[margin_cell(over[m][task]["value"], *over[m][task]["ci"]) if task in over[m] else "—" for m in over]]
            for task in tasks]
    header = ["task", "metric", *models, *[f"{m} − {cfg.control}" for m in over]]
    margin_note = "" if not over else (
        f" A `MODEL − {cfg.control}` column is that model's margin over the control, with a paired bootstrap 95% "
        f"interval over the val videos ({cfg.bootstrap} resamples; in bold where it excludes 0).")
    data = metrics["data"]
    lines = [
        "# Frozen probes",
        "",
        f"Fitted on {data['train']['videos']} videos of `{cfg.data.train_list}`, scored on "
        f"{data['val']['videos']} videos of `{cfg.data.val_list}`; hyper-parameters chosen on "
        f"{cfg.holdout:.0%} of the training videos held out. Rows are `task/probe`; R² for regression "
        "targets, top-1 accuracy for classes; a model with several seeds shows mean ± std over them." + margin_note,
        "",
        markdown_table(header, rows),
        "",
        "![probe results](probe.png)",
        "",
        f"Features {metrics['timing']['features_s']:.0f} s, probes {metrics['timing']['probes_s']:.0f} s.",
        "",
    ]
    path.write_text("\n".join(lines))


def plot_metrics(path: Path, metrics: dict) -> None:
    """Grouped horizontal bars: one group per task, one bar per model, seed spread as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(metrics["models"])
    tasks = list(metrics["models"][models[0]]["tasks"])
    height = 0.8 / len(models)
    fig, ax = plt.subplots(figsize=(7, 0.9 + 0.28 * len(tasks) * max(1, len(models) / 2)))
    for i, model in enumerate(models):
        entries = [metrics["models"][model]["tasks"][t] for t in tasks]
        ys = np.arange(len(tasks)) + (i - (len(models) - 1) / 2) * height
        ax.barh(ys, [e["value"] for e in entries], height=height, xerr=[e.get("std", 0.0) for e in entries],
                label=model, color=f"C{i}")
    ax.set_yticks(np.arange(len(tasks)), [f"{t} ({metrics['models'][models[0]]['tasks'][t]['metric']})" for t in tasks])
    ax.invert_yaxis()
    ax.axvline(0, color="0.3", lw=0.8)
    ax.set_xlim(min(-0.1, ax.get_xlim()[0]), 1.0)  # R² can be far below 0; what matters is 0..1
    ax.set(xlabel="R² (regression) / accuracy (classification), on val")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(frameon=False, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------- entry point


def main(cfg: ProbeConfig) -> dict:
    """Entry point of `vjepa probe`: extract (or reuse) features, run the probes, write the run folder."""
    setup_logging()
    if OmegaConf.is_config(cfg):
        OmegaConf.resolve(cfg)  # config.yaml then records the paths used, not `${world}`
    check_config(cfg)
    out = Path(cfg.output)
    save_config(cfg, out / "config.yaml")
    device = resolve_device(cfg.device)
    cache_dir = Path(cfg.cache_dir) if cfg.cache_dir else out / "features"
    needs_tokens = any("attentive" in t.probes for t in cfg.tasks.values())

    # everything that can be wrong with the input is checked before the long extraction
    tr = load_split("train", cfg.data.train_list, cfg.data.train_targets, cfg.data.max_train_videos, cfg)
    va = load_split("val", cfg.data.val_list, cfg.data.val_targets, cfg.data.max_val_videos, cfg)
    sources = [s for name, spec in cfg.models.items() for s in build_sources(name, spec, cfg.model, cfg.features)]

    t0 = time.perf_counter()
    feats = {split.name: load_or_extract(sources, split.dataset, split.indices, cfg.features, needs_tokens,
                                         cache_dir, device, split.name) for split in (tr, va)}
    t1 = time.perf_counter()
    per_source = [run_probes(train, val, tr, va, cfg, device) for train, val in zip(feats["train"], feats["val"])]
    t2 = time.perf_counter()

    models, outcomes = {}, {}
    for name in cfg.models:
        mine = [r for s, r in zip(sources, per_source) if s.name == name]
        outcomes[name] = {task: [r[task].pop("outcome") for r in mine] for task in mine[0] if "outcome" in mine[0][task]}
        models[name] = {"tasks": merge_seeds(mine), "seeds": len(mine)}
    metrics = {
        "models": models,
        "data": {split.name: {"list": split.dataset.list_path, "videos": len(split.indices),
                              "clips": len(feats[split.name][0].video),
                              "skipped": [list(s) for s in feats[split.name][0].skipped]} for split in (tr, va)},
        "timing": {"features_s": t1 - t0, "probes_s": t2 - t1},
    }
    if cfg.control is not None:
        metrics["margins"] = margins(outcomes, cfg.control, cfg.bootstrap, cfg.seed)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    write_report(out / "report.md", metrics, cfg)
    plot_metrics(out / "probe.png", metrics)
    log.info("probe: features %.1fs, probes %.1fs; results in %s", t1 - t0, t2 - t1, out / "report.md")
    return metrics
