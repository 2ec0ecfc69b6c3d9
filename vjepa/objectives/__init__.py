"""Pretraining objectives, by the name a config's `objective` key uses."""
from __future__ import annotations

import logging

from vjepa.models.config import ModelConfig, build_networks
from vjepa.objectives.base import LossConfig, Objective
from vjepa.objectives.denoise import Denoising
from vjepa.objectives.jepa import JEPA, effective_rank
from vjepa.objectives.pixel import PixelReconstruction

OBJECTIVES: dict[str, type[Objective]] = {"jepa": JEPA, "pixel": PixelReconstruction, "denoise": Denoising}

log = logging.getLogger("vjepa.objectives")


def build_objective(name: str, model: ModelConfig, frames_per_clip: int, crop_size: int, num_masks: int,
                    loss: LossConfig | None = None) -> Objective:
    """The objective `name` with freshly initialised networks of `model`, and the loss terms it takes."""
    if name not in OBJECTIVES:
        raise ValueError(f"objective: unknown {name!r}; expected one of {', '.join(OBJECTIVES)}")
    objective = OBJECTIVES[name]
    loss = loss or LossConfig()
    defaults = LossConfig()
    for key in vars(defaults):
        if key not in objective.options and getattr(loss, key) != getattr(defaults, key):
            # one recipe serves every objective (vjepa compare), so a term another objective owns is not an error
            log.info("loss.%s: not a term of objective %r; ignored", key, name)
    encoder, predictor = build_networks(model, frames_per_clip, crop_size, num_masks)
    return objective(encoder, predictor, **{k: getattr(loss, k) for k in objective.options})


__all__ = ["Objective", "LossConfig", "JEPA", "PixelReconstruction", "Denoising", "OBJECTIVES", "build_objective",
           "effective_rank"]
