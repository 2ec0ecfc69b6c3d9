"""Future masking: see the first frames, predict all the later ones.

Training the predictor on this mask is what lets it roll the world forward in latent space
(imagined rollouts): the target is always the future of the context, never its surroundings.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch

from vjepa.masks.base import MaskPair, check_grid


class FutureMask:
    def __init__(self, grid: Sequence[int], context_frames: Optional[int] = None):
        self.grid = check_grid(grid)
        T, H, W = self.grid
        self.context_frames = T // 2 if context_frames is None else context_frames
        if not 0 < self.context_frames < T:
            raise ValueError(
                f"masks: context_frames must lie in [1, {T - 1}] for a grid with T={T} time slots "
                f"(so both context and target are non-empty), got {self.context_frames}"
            )
        split = self.context_frames * H * W
        self._context = torch.arange(split)
        self._target = torch.arange(split, T * H * W)

    def __call__(self, batch_size: int, generator: torch.Generator) -> MaskPair:
        # deterministic: the generator is accepted for the shared contract and left untouched
        return MaskPair(
            context=self._context.expand(batch_size, -1).clone(),
            target=self._target.expand(batch_size, -1).clone(),
        )

    def __repr__(self) -> str:
        return f"FutureMask(grid={self.grid}, context_frames={self.context_frames})"
