"""What a pretraining objective is: the only piece that differs between JEPA and its baselines.

The training loop (vjepa/train.py) owns data, masks, optimizer, schedules, logging and
checkpoints; an objective owns its networks and turns a batch of clips plus masks into a loss.
A second objective (pixel reconstruction, denoising) is one small subclass registered in
`vjepa/objectives/__init__.py`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import torch
from torch import nn

from vjepa.checkpoint import load_module_state
from vjepa.masks import MaskPair


@dataclass
class LossConfig:
    """Extra loss terms; an objective uses those it lists in `options` and ignores the others."""

    # jepa: weight of a variance hinge on the context encoder's outputs, mean over channels of
    # relu(1 - std over the batch's tokens), the variance term of VICReg (Bardes et al. 2022) and of
    # V-JEPA's `reg_coeff` (there on the predictor's outputs). It keeps every channel of the context
    # features in use: without it a small model's context features can fold into a few directions.
    var_reg: float = 0.0
    # jepa: the exponent p of the prediction loss mean(|pred - target|^p) / p, V-JEPA's `loss_exp`:
    # 1 is the paper's L1, 2 half the squared error. L1 pulls an uncertain prediction to the most
    # common target (the background of a mostly empty scene); L2 to the expected one.
    loss_exp: float = 1.0


class Objective(nn.Module):
    """Networks plus a loss. Subclasses name their networks in `checkpoint_keys`."""

    #: attribute names of the networks saved in a checkpoint, under the same keys
    checkpoint_keys: tuple[str, ...] = ()
    #: keys of the config's `loss` section this objective takes as constructor keywords
    options: tuple[str, ...] = ()

    def forward(self, clips: torch.Tensor, masks: Sequence[MaskPair], with_rankme: bool = False,
                stand_in: bool = False) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Return the loss and detached statistics worth logging (RankMe, an SVD, only when asked).

        `stand_in`: the clips hold no data, only let a DDP rank without a readable video take part in
        the step (its loss is weighted 0); a statistic shared across ranks must leave them out."""
        raise NotImplementedError

    def trainable_modules(self) -> list[nn.Module]:
        """The networks the optimizer updates."""
        raise NotImplementedError

    @torch.no_grad()
    def after_step(self, momentum: float) -> None:
        """Called after each optimizer step (e.g. the EMA update of a target encoder)."""

    def checkpoint_state(self) -> dict[str, dict]:
        return {key: getattr(self, key).state_dict() for key in self.checkpoint_keys}

    def load_checkpoint_state(self, ckpt: Mapping, source: str) -> None:
        for key in self.checkpoint_keys:
            if key not in ckpt:
                raise KeyError(f"{source}: checkpoint has no '{key}' (keys: {', '.join(sorted(ckpt))})")
            load_module_state(getattr(self, key), ckpt[key], key, source)
