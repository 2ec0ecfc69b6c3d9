"""Mask generators: which tokens the context encoder sees and which the predictor must predict."""
from vjepa.masks.base import MaskPair, equalize_counts
from vjepa.masks.config import MaskConfig, build_mask_generator, sample_masks
from vjepa.masks.future import FutureMask
from vjepa.masks.multiblock import MultiBlock3D
from vjepa.masks.tube import RandomTube

__all__ = [
    "MaskPair",
    "MaskConfig",
    "MultiBlock3D",
    "RandomTube",
    "FutureMask",
    "build_mask_generator",
    "sample_masks",
    "equalize_counts",
]
