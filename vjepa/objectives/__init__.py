"""Pretraining objectives, by the name a config's `objective` key uses."""
from vjepa.objectives.base import Objective
from vjepa.objectives.denoise import Denoising
from vjepa.objectives.jepa import JEPA, effective_rank
from vjepa.objectives.pixel import PixelReconstruction

OBJECTIVES = {"jepa": JEPA, "pixel": PixelReconstruction, "denoise": Denoising}

__all__ = ["Objective", "JEPA", "PixelReconstruction", "Denoising", "OBJECTIVES", "effective_rank"]
