"""Bootstrap intervals shared by the evaluations: rows drawn with replacement, percentile bounds."""
from __future__ import annotations

import numpy as np


def bootstrap_rows(n: int, resamples: int, seed: int) -> np.ndarray:
    """Row indices [resamples, n]: each resample draws n of the n rows with replacement (seeded)."""
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def percentile_interval(samples: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """The central `level` interval of resampled statistics [resamples, ...] along the first axis (NaNs skipped)."""
    lo, hi = np.nanquantile(samples, [(1 - level) / 2, (1 + level) / 2], axis=0)
    return lo, hi


def bootstrap_ci(outcomes: np.ndarray, resamples: int, seed: int, level: float = 0.95):
    """Percentile interval of the mean of outcomes [n, ...] over their rows drawn with replacement:
    floats for 1-D outcomes, arrays over the trailing axes otherwise."""
    lo, hi = percentile_interval(outcomes[bootstrap_rows(len(outcomes), resamples, seed)].mean(1), level)
    return (float(lo), float(hi)) if np.ndim(lo) == 0 else (lo, hi)
