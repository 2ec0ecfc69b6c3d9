"""Linear probes on pooled features (scikit-learn): logistic regression for classes, ridge for targets.

Features (and regression targets) are standardised with the training statistics. The
regularisation strength is chosen on the held-out training videos; the probe is then refitted on
all training videos with it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List

import numpy as np
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.preprocessing import StandardScaler


@dataclass
class LinearConfig:
    Cs: List[float] = field(default_factory=lambda: [0.001, 0.01, 0.1, 1.0, 10.0])  # logistic regression: inverse strength
    # up to strengths that shrink the fit to the mean, so features without signal score R² ≈ 0, not below
    alphas: List[float] = field(default_factory=lambda: [0.1, 1.0, 10.0, 100.0, 1e3, 1e4, 1e5])  # ridge strength
    max_iter: int = 1000


def standardise(x: np.ndarray, x_val: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scaler = StandardScaler().fit(x)
    return scaler.transform(x), scaler.transform(x_val)


def linear_classifier(x: np.ndarray, y: np.ndarray, held_out: np.ndarray, x_val: np.ndarray,
                      cfg: LinearConfig) -> tuple[np.ndarray, dict]:
    """Class probabilities [M_val, K] for class indices y in 0..K-1, and the chosen C."""
    x, x_val = standardise(x, x_val)

    def fit(C: float, rows: np.ndarray) -> LogisticRegression:
        return LogisticRegression(C=C, max_iter=cfg.max_iter).fit(x[rows], y[rows])

    scores = [fit(C, ~held_out).score(x[held_out], y[held_out]) for C in cfg.Cs]
    best = int(np.argmax(scores))
    model = fit(cfg.Cs[best], np.ones(len(y), dtype=bool))
    proba = np.zeros((len(x_val), int(y.max()) + 1))
    proba[:, model.classes_] = model.predict_proba(x_val)
    return proba, {"C": cfg.Cs[best], "holdout_top1": float(scores[best])}


def linear_regressor(x: np.ndarray, y: np.ndarray, held_out: np.ndarray, x_val: np.ndarray,
                     cfg: LinearConfig) -> tuple[np.ndarray, dict]:
    """Predictions [M_val] of target y (no NaN), and the chosen alpha."""
    x, x_val = standardise(x, x_val)
    mean, std = float(y.mean()), float(y.std()) or 1.0
    z = (y - mean) / std

    def fit(alpha: float, rows: np.ndarray) -> Ridge:
        return Ridge(alpha=alpha).fit(x[rows], z[rows])

    scores = [fit(a, ~held_out).score(x[held_out], z[held_out]) for a in cfg.alphas]  # R²
    best = int(np.argmax(scores))
    model = fit(cfg.alphas[best], np.ones(len(y), dtype=bool))
    return model.predict(x_val) * std + mean, {"alpha": cfg.alphas[best], "holdout_r2": float(scores[best])}
