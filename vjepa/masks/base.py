"""What every mask generator returns, and the helpers they share.

A generator is called as `gen(batch_size, generator) -> MaskPair`. Both index tensors hold token
indices into the t-major flattened grid (index = t*H*W + y*W + x). The contract:

- every row is sorted ascending;
- context and target are disjoint in each row;
- every row of the batch has the same number of context (Nc) and target (Nt) tokens, so the
  indices can gather from a [B, N, D] tensor without padding;
- all randomness comes from `generator`, never the global RNG.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence, Tuple

import torch
from torch import Tensor

Grid = Tuple[int, int, int]  # (T, H, W) in tokens


class MaskPair(NamedTuple):
    context: Tensor  # LongTensor [B, Nc]: tokens the context encoder sees
    target: Tensor  # LongTensor [B, Nt]: tokens the predictor must predict


def check_grid(grid: Sequence[int]) -> Grid:
    if len(grid) != 3 or any(int(n) < 1 for n in grid):
        raise ValueError(f"masks: grid must be three positive token counts (T, H, W), got {tuple(grid)}")
    return tuple(int(n) for n in grid)  # type: ignore[return-value]


def equalize_counts(masks: Sequence[Tensor], generator: torch.Generator) -> Tensor:
    """Stack 1-D index tensors into a [B, k] LongTensor, k the shortest row's length.

    Longer rows keep a random k of their indices (then sorted); V-JEPA keeps the first k instead,
    which drops late tokens more often than early ones.
    """
    k = min(len(m) for m in masks)
    rows = [m if len(m) == k else m[torch.randperm(len(m), generator=generator)[:k]] for m in masks]
    return torch.stack([row.sort().values for row in rows])


def pair_from_bool_masks(context: Tensor, target: Tensor, generator: torch.Generator) -> MaskPair:
    """Turn boolean [B, N] context and target masks into a MaskPair with equal counts per row."""
    return MaskPair(
        context=equalize_counts([row.nonzero().squeeze(1) for row in context], generator),
        target=equalize_counts([row.nonzero().squeeze(1) for row in target], generator),
    )
