"""VideoMAE tube masking: the same random spatial positions are hidden in every frame.

Hiding whole tubes stops the model from copying a token from the neighbouring frame, which in
video is nearly identical.
"""
from __future__ import annotations

from typing import Sequence

import torch

from vjepa.masks.base import MaskPair, check_grid


class RandomTube:
    def __init__(self, grid: Sequence[int], ratio: float = 0.9):
        self.grid = check_grid(grid)
        T, H, W = self.grid
        self.ratio = ratio
        self.num_masked = round(ratio * H * W)
        if not (0 < ratio < 1 and 0 < self.num_masked < H * W):
            raise ValueError(
                f"masks: ratio must lie in (0, 1) and leave at least one masked and one visible "
                f"position of the {H}x{W} grid, got ratio={ratio} ({self.num_masked} masked)"
            )

    def __call__(self, batch_size: int, generator: torch.Generator) -> MaskPair:
        T, H, W = self.grid
        order = torch.rand(batch_size, H * W, generator=generator).argsort(dim=1)
        masked = torch.zeros(batch_size, H * W, dtype=torch.bool)
        masked.scatter_(1, order[:, : self.num_masked], True)
        target = masked.repeat(1, T)  # t-major: the spatial mask repeated for every time slot
        return MaskPair(
            context=(~target).nonzero()[:, 1].view(batch_size, -1),
            target=target.nonzero()[:, 1].view(batch_size, -1),
        )

    def __repr__(self) -> str:
        return f"RandomTube(grid={self.grid}, ratio={self.ratio})"
