"""k-nearest-neighbour classification on pooled features (cosine similarity, DINO-style weighted vote)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from evals.linear import standardise


@dataclass
class KnnConfig:
    k: int = 20
    temperature: float = 0.07  # neighbour weight exp(similarity / temperature)


@torch.no_grad()
def knn_classifier(x: np.ndarray, y: np.ndarray, x_val: np.ndarray, cfg: KnnConfig, chunk: int = 1024) -> np.ndarray:
    """Class scores [M_val, K] (summing to 1) for class indices y in 0..K-1."""
    # standardised first: a few high-variance channels would otherwise decide every cosine
    x, x_val = standardise(x, x_val)
    train = F.normalize(torch.from_numpy(x).float(), dim=1)
    labels = torch.from_numpy(y).long()
    n_classes = int(y.max()) + 1
    k = min(cfg.k, len(train))
    out = []
    for start in range(0, len(x_val), chunk):
        query = F.normalize(torch.from_numpy(x_val[start:start + chunk]).float(), dim=1)
        sims, idx = (query @ train.T).topk(k, dim=1)
        votes = torch.zeros(len(query), n_classes).scatter_add_(1, labels[idx], (sims / cfg.temperature).exp())
        out.append(votes / votes.sum(1, keepdim=True))
    return torch.cat(out).numpy()
