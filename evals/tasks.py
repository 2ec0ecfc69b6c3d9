"""What the probes predict and how they are scored.

Classification labels come from the video list (`path label`); regression targets come from a
target table (CSV: `path`, then one numeric column per target; an empty cell where a clip has no
value, e.g. a second object's mass in a one-object clip). Probes predict per clip; a video's
prediction is the mean over its clips, and the metrics are computed per video.
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Sequence

import numpy as np

from vjepa.config import choice
from vjepa.data import DataError

TASK_TYPES = ("classification", "regression")
PROBES = {"classification": ("linear", "attentive", "knn"), "regression": ("linear", "attentive")}


@dataclass
class TaskConfig:
    """One thing to predict; its name is its key under `tasks`."""

    type: str = choice("classification", TASK_TYPES)  # classification (the video list's labels) | regression (target columns)
    targets: List[str] = field(default_factory=list)  # regression: columns of the target tables
    probes: List[str] = choice(["linear"], PROBES["classification"], many=True)  # linear | attentive | knn (classification only)


def check_task(name: str, task: TaskConfig) -> None:
    """Reject a task the probes cannot run, naming the key to change."""
    if task.type not in TASK_TYPES:
        raise ValueError(f"tasks.{name}.type: {task.type!r} is not one of {', '.join(TASK_TYPES)}")
    bad = [p for p in task.probes if p not in PROBES[task.type]]
    if bad:
        raise ValueError(f"tasks.{name}.probes: {bad[0]!r} cannot run a {task.type} task; "
                         f"choose from {', '.join(PROBES[task.type])}")
    if task.type == "regression" and not task.targets:
        raise ValueError(f"tasks.{name}: a regression task needs tasks.{name}.targets=[column, ...]")


def read_targets(table: str | Path, columns: Sequence[str], paths: Sequence[str]) -> np.ndarray:
    """Targets [len(paths), len(columns)] of the listed videos, NaN where a cell is empty.

    Paths in the table are relative to its folder, as in video lists.
    """
    table = Path(table)
    if not table.is_file():
        raise DataError(f"target table {table} does not exist; give a CSV with a 'path' column and one column per target")
    with open(table, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, [])
        rows = list(reader)
    if "path" not in header:
        raise DataError(f"target table {table} has no 'path' column (header: {', '.join(header)})")
    for column in columns:
        if column not in header:
            available = ", ".join(c for c in header if c != "path")
            raise DataError(f"target column '{column}' is not in {table}; available columns: {available}")
    folder = table.absolute().parent
    at = {name: i for i, name in enumerate(header)}
    by_path = {os.path.normpath(folder / row[at["path"]]): (line, row) for line, row in enumerate(rows, start=2)}
    out = np.empty((len(paths), len(columns)))
    for i, path in enumerate(paths):
        found = by_path.get(os.path.normpath(path))
        if found is None:
            raise DataError(f"target table {table} has no row for {path}")
        line, row = found
        for j, column in enumerate(columns):
            out[i, j] = _number(row[at[column]], f"{table}:{line}, column '{column}'")
    return out


def _number(cell: str, where: str) -> float:
    if cell.strip() == "":
        return float("nan")
    try:
        return float(cell)
    except ValueError:
        raise DataError(f"{where}: {cell!r} is not a number") from None


def holdout_videos(videos: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """A per-clip mask of the held-out part of the training set, drawn by video so clips of one video stay together."""
    unique = np.unique(videos)
    if len(unique) < 2:
        raise ValueError(f"probes need at least 2 training videos to hold some out, got {len(unique)}")
    n_held = min(len(unique) - 1, max(1, round(fraction * len(unique))))
    held = np.random.default_rng(seed).choice(unique, size=n_held, replace=False)
    return np.isin(videos, held)


def video_mean(pred: np.ndarray, videos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(video ids, per-video mean of the clip predictions) for clip predictions [M, ...]."""
    unique, where = np.unique(videos, return_inverse=True)
    sums = np.zeros((len(unique), *pred.shape[1:]))
    np.add.at(sums, where, pred)
    counts = np.bincount(where, minlength=len(unique)).reshape(-1, *([1] * (pred.ndim - 1)))
    return unique, sums / counts


def class_indices(labels: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Labels as indices into `classes` (the training classes); -1 for a class training never saw."""
    idx = np.searchsorted(classes, labels).clip(0, len(classes) - 1)
    return np.where(classes[idx] == labels, idx, -1)


def classification_metrics(scores: np.ndarray, labels: np.ndarray) -> dict:
    """Top-1 accuracy, and top-5 with at least 5 classes, of class scores [V, K] against indices [V]."""
    ranked = np.argsort(-scores, axis=1)
    out = {"top1": float(np.mean(ranked[:, 0] == labels))}
    if scores.shape[1] >= 5:
        out["top5"] = float(np.mean((ranked[:, :5] == labels[:, None]).any(axis=1)))
    return out


def regression_metrics(pred: np.ndarray, target: np.ndarray) -> dict:
    """R² (1 - MSE / variance of the target) and MSE, in the target's units."""
    mse = float(np.mean((pred - target) ** 2))
    var = float(np.var(target))
    return {"r2": 1.0 - mse / var if var > 0 else float("nan"), "mse": mse}
