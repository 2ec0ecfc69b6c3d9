"""Attentive probes (the V-JEPA protocol): a learnable query cross-attends to all tokens, then a linear head.

One pass over the features trains a probe for every (lr, weight decay) pair side by side, with
AdamW and a cosine schedule; the probe that does best on the held-out training videos is the one
reported (per target, for regression).

With a single query the attention is cheap to compute in token space: q·(W_k x) = (W_kᵀ q)·x, so
one learnable vector per head stands for query and key projection together, and the value and
output projections, being linear after the pooling, fold into the linear head. The cost per clip
is then O(N·D·heads) instead of O(N·D²) for projecting every token.

Tokens are standardised per channel with the training clips' statistics, but never one by one: a
key on standardised tokens, k·(x - m)/s, is the key k/s on the raw tokens less a constant that the
softmax over tokens ignores, and the weighted mean of standardised tokens is the standardised
weighted mean. So each probe attends over the raw tokens and standardises what it pools, exactly
the same probe at a fraction of the memory traffic (the cost of a pass was moving the tokens).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import product
from typing import List

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vjepa.optim import cosine, param_groups


@dataclass
class AttentiveConfig:
    epochs: int = 20
    batch_size: int = 64
    lrs: List[float] = field(default_factory=lambda: [1e-3, 3e-3, 1e-2])
    weight_decays: List[float] = field(default_factory=lambda: [0.01, 0.1])
    num_heads: int = 4


class AttentiveProbe(nn.Module):
    """A learnable query per head (folded into a key vector) and a linear head on the pooled tokens."""

    def __init__(self, dim: int, num_heads: int, out_dim: int):
        super().__init__()
        self.keys = nn.Parameter(torch.randn(num_heads, dim) * 0.02)  # near-uniform attention at the start: mean pooling
        self.norm = nn.LayerNorm(num_heads * dim)
        self.head = nn.Linear(num_heads * dim, out_dim)


class AttentiveProbes(nn.Module):
    """Several attentive probes on the same tokens; one matrix product attends for all of them."""

    def __init__(self, n_probes: int, dim: int, num_heads: int, out_dim: int, mean: Tensor, std: Tensor):
        super().__init__()
        self.probes = nn.ModuleList(AttentiveProbe(dim, num_heads, out_dim) for _ in range(n_probes))
        self.register_buffer("mean", mean)  # per-channel statistics of the training tokens
        self.register_buffer("std", std)

    def forward(self, tokens: Tensor) -> Tensor:
        """Raw tokens [B, N, D] -> outputs [P, B, out_dim] of probes on the standardised tokens."""
        keys = torch.cat([p.keys for p in self.probes])  # [P*H, D], keys of standardised tokens
        # no 1/sqrt(D): the key vectors are learned directly, and their norm is the attention's temperature
        attn = (tokens @ (keys / self.std).T).softmax(dim=1)  # [B, N, P*H], a distribution over tokens per probe and head
        pooled = (attn.transpose(1, 2) @ tokens - self.mean) / self.std  # [B, P*H, D]: the standardised weighted mean
        pooled = pooled.unflatten(1, (len(self.probes), -1)).flatten(2)  # [B, P, H*D]
        return torch.stack([p.head(p.norm(pooled[:, i])) for i, p in enumerate(self.probes)])


def token_stats(tokens: Tensor, chunk: int = 256) -> tuple[Tensor, Tensor]:
    """Per-channel mean and std of tokens [M, N, D] (summed in chunks, in float64)."""
    total = torch.zeros(tokens.shape[-1], dtype=torch.float64)
    square = torch.zeros_like(total)
    for start in range(0, len(tokens), chunk):
        part = tokens[start:start + chunk].float()
        total += part.sum((0, 1)).double()
        square += (part * part).sum((0, 1)).double()
    count = len(tokens) * tokens.shape[1]
    mean = total / count
    return mean.float(), (square / count - mean ** 2).clamp_min(1e-12).sqrt().float()


def probe_losses(outputs: Tensor, y: Tensor, classification: bool) -> Tensor:
    """Loss of each probe [P] from outputs [P, B, out]; regression skips missing (NaN) targets."""
    if classification:
        return torch.stack([F.cross_entropy(o, y) for o in outputs])
    known = ~torch.isnan(y)
    err = (outputs - torch.nan_to_num(y)) ** 2 * known
    return err.sum(dim=(1, 2)) / known.sum().clamp_min(1)


@torch.no_grad()
def predict(probes: AttentiveProbes, tokens: Tensor, batch_size: int, device: torch.device) -> Tensor:
    """Outputs [P, M, out] of every probe."""
    probes.eval()
    return torch.cat([probes(tokens[i:i + batch_size].to(device).float()).cpu()
                      for i in range(0, len(tokens), batch_size)], dim=1)


def train_probes(tokens: Tensor, y: Tensor, classification: bool, out_dim: int, cfg: AttentiveConfig,
                 device: torch.device, seed: int) -> tuple[AttentiveProbes, list[tuple[float, float]]]:
    """Train one probe per (lr, wd) on tokens [M, N, D] in a single pass; returns the probes and their (lr, wd)."""
    torch.manual_seed(seed)
    grid = list(product(cfg.lrs, cfg.weight_decays))
    dim = tokens.shape[-1]
    probes = AttentiveProbes(len(grid), dim, cfg.num_heads, out_dim, *token_stats(tokens)).to(device)
    tokens = tokens.to(device).float()  # once: every epoch reads them again
    groups = []
    for probe, (lr, wd) in zip(probes.probes, grid):
        for group in param_groups([probe], wd):
            groups.append({**group, "peak_lr": lr})
    optimizer = torch.optim.AdamW(groups, lr=cfg.lrs[0])
    steps_per_epoch = math.ceil(len(tokens) / cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    generator = torch.Generator().manual_seed(seed)
    step = 0
    probes.train()
    for _ in range(cfg.epochs):
        order = torch.randperm(len(tokens), generator=generator)
        for start in range(0, len(tokens), cfg.batch_size):
            rows = order[start:start + cfg.batch_size]
            x, target = tokens[rows], y[rows].to(device)
            for group in optimizer.param_groups:
                group["lr"] = cosine(step, total, group["peak_lr"], 0.0)
            loss = probe_losses(probes(x), target, classification).sum()  # probes share no parameters
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
    return probes, grid


def attentive_classifier(tokens: Tensor, y: np.ndarray, held_out: np.ndarray, tokens_val: Tensor,
                         cfg: AttentiveConfig, device: torch.device, seed: int) -> tuple[np.ndarray, dict]:
    """Class probabilities [M_val, K] for class indices y in 0..K-1, from the probe best on the held-out clips."""
    fit = torch.from_numpy(~held_out)
    n_classes = int(y.max()) + 1
    probes, grid = train_probes(tokens[fit], torch.from_numpy(y[~held_out]).long(), True, n_classes, cfg, device, seed)
    held = predict(probes, tokens[~fit], cfg.batch_size, device)
    accuracy = (held.argmax(-1) == torch.from_numpy(y[held_out])).float().mean(1)
    best = int(accuracy.argmax())
    val = predict(probes, tokens_val, cfg.batch_size, device)[best]
    lr, wd = grid[best]
    return val.softmax(-1).numpy(), {"lr": lr, "weight_decay": wd, "holdout_top1": float(accuracy[best])}


def attentive_regressor(tokens: Tensor, y: np.ndarray, held_out: np.ndarray, tokens_val: Tensor,
                        cfg: AttentiveConfig, device: torch.device, seed: int) -> tuple[np.ndarray, list[dict]]:
    """Predictions [M_val, T] of targets y [M, T] (NaN: missing), each from the probe best on it on the held-out clips."""
    fit = ~held_out
    mean, std = np.nanmean(y[fit], axis=0), np.nanstd(y[fit], axis=0)
    std = np.where(std > 0, std, 1.0)
    z = torch.from_numpy((y - mean) / std).float()
    probes, grid = train_probes(tokens[torch.from_numpy(fit)], z[fit], False, y.shape[1], cfg, device, seed)
    held = predict(probes, tokens[torch.from_numpy(held_out)], cfg.batch_size, device)  # [P, M_held, T]
    z_held = z[held_out]
    known = ~torch.isnan(z_held)
    count = known.sum(0).clamp_min(1)
    mse = (((held - torch.nan_to_num(z_held)) ** 2) * known).sum(1) / count  # [P, T]
    mean_held = torch.nan_to_num(z_held).sum(0) / count
    var_held = (((torch.nan_to_num(z_held) - mean_held) ** 2) * known).sum(0) / count
    best = mse.argmin(0)  # [T]
    val = predict(probes, tokens_val, cfg.batch_size, device)  # [P, M_val, T]
    chosen = val[best, :, torch.arange(y.shape[1])].T.numpy()  # [M_val, T]
    info = [{"lr": grid[b][0], "weight_decay": grid[b][1], "holdout_r2": float(1 - mse[b, t] / var_held[t])}
            for t, b in enumerate(best.tolist())]
    return chosen * std + mean, info
