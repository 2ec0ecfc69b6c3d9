"""The typed mask config, the factory that turns it into a generator, and seeded sampling."""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import torch

from vjepa.config import choice
from vjepa.masks.base import MaskPair
from vjepa.masks.future import FutureMask
from vjepa.masks.multiblock import MultiBlock3D
from vjepa.masks.tube import RandomTube

MASK_TYPES = ("multiblock", "tube", "future")

@dataclass
class MaskConfig:
    type: str = choice("multiblock", MASK_TYPES)  # multiblock | tube | future
    # multiblock
    num_blocks: int = 8
    spatial_scale: Tuple[float, float] = (0.15, 0.15)
    temporal_scale: Tuple[float, float] = (1.0, 1.0)
    aspect_ratio: Tuple[float, float] = (0.75, 1.5)
    max_context_frames: Optional[int] = None
    # tube
    ratio: float = 0.9
    # future
    context_frames: Optional[int] = None  # null: half the time slots
    context_frames_range: Optional[Tuple[int, int]] = None  # [lo, hi]: the cut drawn per batch (overrides context_frames)
    target_frames: Optional[int] = None  # predict only the next N slots after the cut; null: all of them


def build_mask_generator(cfg: MaskConfig, grid: Sequence[int]):
    """The generator `cfg.type` names, for a (T, H, W) token grid; fields of other types are ignored."""
    if cfg.type == "multiblock":
        return MultiBlock3D(
            grid,
            num_blocks=cfg.num_blocks,
            spatial_scale=tuple(cfg.spatial_scale),
            temporal_scale=tuple(cfg.temporal_scale),
            aspect_ratio=tuple(cfg.aspect_ratio),
            max_context_frames=cfg.max_context_frames,
        )
    if cfg.type == "tube":
        return RandomTube(grid, ratio=cfg.ratio)
    if cfg.type == "future":
        return FutureMask(grid, context_frames=cfg.context_frames,
                          context_frames_range=None if cfg.context_frames_range is None else tuple(cfg.context_frames_range),
                          target_frames=cfg.target_frames)
    raise ValueError(f"masks: unknown mask type '{cfg.type}'; expected one of {', '.join(MASK_TYPES)}")


def mask_seed(seed: int, step: int) -> int:
    return (seed * 1_000_003 + step) % 2**63


def sample_masks(generators: Sequence, batch_size: int, seed: int, step: int) -> List[MaskPair]:
    """One MaskPair per generator, a pure function of (seed, step).

    A single torch.Generator seeded from (seed, step) feeds every generator in order. So an exactly
    resumed run needs no mask RNG state in its checkpoint, and DDP ranks draw different masks by
    passing `seed + rank`.
    """
    g = torch.Generator()
    g.manual_seed(mask_seed(seed, step))
    return [gen(batch_size, g) for gen in generators]
