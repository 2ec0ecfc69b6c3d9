"""V-JEPA multiblock masking: hide the union of several large spatiotemporal blocks.

Per call (one batch) one block size is drawn from the scale and aspect-ratio ranges; per sample,
`num_blocks` blocks of that size are placed at random. The target is their union and the context
is everything else. Large, contiguous targets force the predictor to reason about content rather
than interpolate from neighbouring tokens.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor

from vjepa.masks.base import MaskPair, check_grid, pair_from_bool_masks

MAX_REDRAWS = 20  # redraws of a sample whose blocks left no context, before giving up


def _check_range(name: str, value: Sequence[float], low: float, high: float) -> Tuple[float, float]:
    """A (min, max) pair with low < min <= max <= high, or an error naming the field."""
    lo, hi = (float(v) for v in value) if len(value) == 2 else (math.nan, math.nan)
    if not low < lo <= hi <= high:
        raise ValueError(f"masks: {name} must be a pair (min, max) with {low} < min <= max <= {high}, got {tuple(value)}")
    return lo, hi


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + torch.rand(1, generator=generator).item() * (high - low)


class MultiBlock3D:
    def __init__(
        self,
        grid: Sequence[int],
        num_blocks: int = 8,
        spatial_scale: Tuple[float, float] = (0.15, 0.15),
        temporal_scale: Tuple[float, float] = (1.0, 1.0),
        aspect_ratio: Tuple[float, float] = (0.75, 1.5),
        max_context_frames: Optional[int] = None,
    ):
        self.grid = check_grid(grid)
        T = self.grid[0]
        if num_blocks < 1:
            raise ValueError(f"masks: num_blocks must be at least 1, got {num_blocks}")
        if max_context_frames is not None and not 1 <= max_context_frames <= T:
            raise ValueError(f"masks: max_context_frames must lie in [1, {T}] for a grid with T={T}, got {max_context_frames}")
        self.num_blocks = num_blocks
        self.spatial_scale = _check_range("spatial_scale", spatial_scale, 0.0, 1.0)
        self.temporal_scale = _check_range("temporal_scale", temporal_scale, 0.0, 1.0)
        self.aspect_ratio = _check_range("aspect_ratio", aspect_ratio, 0.0, math.inf)
        self.max_context_frames = max_context_frames

    def sample_block_size(self, generator: torch.Generator) -> Tuple[int, int, int]:
        """One (t, h, w) block size in tokens, as in V-JEPA's `_sample_block_size`."""
        T, H, W = self.grid
        t = max(1, int(T * _uniform(generator, *self.temporal_scale)))
        keep = int(H * W * _uniform(generator, *self.spatial_scale))
        ar = _uniform(generator, *self.aspect_ratio)
        h = min(max(round(math.sqrt(keep * ar)), 1), H)
        w = min(max(round(math.sqrt(keep / ar)), 1), W)
        return t, h, w

    def place_blocks(self, n: int, size: Tuple[int, int, int], generator: torch.Generator) -> Tensor:
        """Boolean [n, T, H, W]: the union of `num_blocks` randomly placed blocks per sample."""
        (T, H, W), (t, h, w) = self.grid, size
        shape = (n, self.num_blocks, 1)
        start = torch.randint(0, T - t + 1, shape, generator=generator)
        top = torch.randint(0, H - h + 1, shape, generator=generator)
        left = torch.randint(0, W - w + 1, shape, generator=generator)
        in_t = (torch.arange(T) >= start) & (torch.arange(T) < start + t)  # [n, blocks, T]
        in_y = (torch.arange(H) >= top) & (torch.arange(H) < top + h)
        in_x = (torch.arange(W) >= left) & (torch.arange(W) < left + w)
        blocks = in_t[..., :, None, None] & in_y[..., None, :, None] & in_x[..., None, None, :]
        return blocks.any(dim=1)

    def __call__(self, batch_size: int, generator: torch.Generator) -> MaskPair:
        T, H, W = self.grid
        # one block size per batch keeps the per-sample token counts close, so equalizing the
        # counts afterwards drops few tokens
        size = self.sample_block_size(generator)
        if size == self.grid:
            self._raise_no_context(size, "one block covers the whole grid")
        visible = torch.ones(T, H, W, dtype=torch.bool)
        if self.max_context_frames is not None:
            visible[self.max_context_frames :] = False
        covered = self.place_blocks(batch_size, size, generator)
        for _ in range(MAX_REDRAWS):
            empty = ~(visible & ~covered).flatten(1).any(dim=1)
            if not empty.any():
                break
            covered[empty] = self.place_blocks(int(empty.sum()), size, generator)
        else:
            self._raise_no_context(size, f"no placement left any context in {MAX_REDRAWS} tries")
        context = (visible & ~covered).flatten(1)
        # as in V-JEPA, tokens outside the context window are predicted too
        return pair_from_bool_masks(context, ~context, generator)

    def _raise_no_context(self, size: Tuple[int, int, int], why: str) -> None:
        t, h, w = size
        T, H, W = self.grid
        raise ValueError(
            f"masks: {self.num_blocks} block(s) of {t}x{h}x{w} tokens on a {T}x{H}x{W} grid leave no context "
            f"({why}); lower spatial_scale={self.spatial_scale}, temporal_scale={self.temporal_scale} or num_blocks"
        )

    def __repr__(self) -> str:
        return (
            f"MultiBlock3D(grid={self.grid}, num_blocks={self.num_blocks}, spatial_scale={self.spatial_scale}, "
            f"temporal_scale={self.temporal_scale}, aspect_ratio={self.aspect_ratio}, "
            f"max_context_frames={self.max_context_frames})"
        )
