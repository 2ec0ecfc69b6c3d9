"""Pretraining objectives, by the name a config's `objective` key uses."""
from vjepa.objectives.base import Objective
from vjepa.objectives.jepa import JEPA, effective_rank

OBJECTIVES = {"jepa": JEPA}

__all__ = ["Objective", "JEPA", "OBJECTIVES", "effective_rank"]
