"""Future masking: see the first frames, predict all the later ones.

Training the predictor on this mask is what lets it roll the world forward in latent space
(imagined rollouts): the target is always the future of the context, never its surroundings.
With `context_frames_range` the cut moves: each batch draws how many time slots it sees, so the
predictor learns to predict from short and long pasts alike, as rollouts and surprise tests ask
it to (they start from 2 slots and grow the context one slot at a time). With `target_frames`
the target is only the next few slots after the cut (1: next-slot prediction, the step an
imagined rollout and the surprise test repeat) instead of the whole rest of the clip.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch

from vjepa.masks.base import MaskPair, check_grid


class FutureMask:
    def __init__(self, grid: Sequence[int], context_frames: Optional[int] = None,
                 context_frames_range: Optional[Tuple[int, int]] = None, target_frames: Optional[int] = None):
        self.grid = check_grid(grid)
        T, H, W = self.grid
        if target_frames is not None and not 1 <= target_frames < T:
            raise ValueError(f"masks: target_frames must lie in [1, {T - 1}] for a grid with T={T} time slots "
                             f"(null: every slot after the context), got {target_frames}")
        self.target_frames = target_frames
        self.context_frames = T // 2 if context_frames is None else context_frames
        self.context_frames_range = None if context_frames_range is None else tuple(context_frames_range)
        for name, value in (("context_frames", self.context_frames), *(
                (f"context_frames_range[{i}]", v) for i, v in enumerate(self.context_frames_range or ()))):
            if not 0 < value < T:
                raise ValueError(
                    f"masks: {name} must lie in [1, {T - 1}] for a grid with T={T} time slots "
                    f"(so both context and target are non-empty), got {value}"
                )
        if self.context_frames_range is not None:
            if len(self.context_frames_range) != 2 or self.context_frames_range[0] > self.context_frames_range[1]:
                raise ValueError(f"masks: context_frames_range must be [lo, hi] with lo <= hi, "
                                 f"got {list(self.context_frames_range)}")

    def __call__(self, batch_size: int, generator: torch.Generator) -> MaskPair:
        T, H, W = self.grid
        cut = self.context_frames
        if self.context_frames_range is not None:  # one cut for the batch: equal token counts per row
            lo, hi = self.context_frames_range
            cut = int(torch.randint(lo, hi + 1, (1,), generator=generator))
        split = cut * H * W
        end = T if self.target_frames is None else min(T, cut + self.target_frames)
        return MaskPair(
            context=torch.arange(split).expand(batch_size, -1).clone(),
            target=torch.arange(split, end * H * W).expand(batch_size, -1).clone(),
        )

    def __repr__(self) -> str:
        cut = self.context_frames if self.context_frames_range is None else list(self.context_frames_range)
        return f"FutureMask(grid={self.grid}, context_frames={cut}, target_frames={self.target_frames})"
