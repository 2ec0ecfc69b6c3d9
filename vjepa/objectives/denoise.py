"""Denoising (diffusion-style): a minimal third family of objectives, generative but not masked.

The encoder sees the whole clip with Gaussian noise added at a random level per clip (a cosine
schedule over levels, as in improved DDPM) and a linear head on each token predicts the clean pixels
of its tubelet (MSE). Predicting the clean clip rather than the noise follows Chen et al. 2024
("Deconstructing denoising diffusion models for self-supervised learning"): a token far narrower
than its tubelet's pixels cannot carry white noise through, but can carry the smooth clean
signal. The network is not told the noise level (a "blind" denoiser): the point is a feature
learner of the diffusion family, not a video generator. Its
features are probed at one fixed, small noise level (`probe_level`), as diffusion features are.
The loop's masks are not used.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vjepa.masks import MaskPair
from vjepa.objectives.base import Objective
from vjepa.objectives.jepa import effective_rank
from vjepa.objectives.pixel import patchify


def noise_clips(clips: Tensor, level: Tensor, noise: Tensor) -> Tensor:
    """x_u = cos(u pi/2) x + sin(u pi/2) eps for levels u in [0, 1] ([B] or a scalar): 0 clean, 1 pure noise."""
    level = level.to(clips.dtype).reshape(-1, *([1] * (clips.ndim - 1)))
    return torch.cos(level * math.pi / 2) * clips + torch.sin(level * math.pi / 2) * noise


class Denoising(Objective):
    checkpoint_keys = ("encoder", "head")
    #: the noise level (in [0, 1]) at which evaluations read the encoder's features
    probe_level = 0.1

    def __init__(self, encoder: nn.Module, predictor: nn.Module | None = None):
        super().__init__()
        del predictor  # the decoder is a linear head: denoising needs no mask tokens
        self.encoder = encoder
        self.tubelet, self.patch = encoder.tubelet_size, encoder.patch_size
        channels = encoder.patch_embed.proj.in_channels
        self.head = nn.Linear(encoder.embed_dim, self.tubelet * self.patch * self.patch * channels)

    def trainable_modules(self) -> list[nn.Module]:
        return [self.encoder, self.head]

    def forward(self, clips, masks: Sequence[MaskPair] = (), with_rankme: bool = False, stand_in: bool = False):
        # drawn from torch's global RNG, which the loop seeds from (seed, step): exact resumption holds
        level = torch.rand(clips.size(0), device=clips.device)
        noise = torch.randn_like(clips)
        tokens = self.encoder(noise_clips(clips, level, noise))
        pred = self.head(tokens)
        loss = F.mse_loss(pred.float(), patchify(clips.float(), self.tubelet, self.patch))
        stats = {"target_std": tokens.detach().float().flatten(0, 1).std(0).mean()}
        if with_rankme:
            stats["rankme"] = effective_rank(tokens.detach())
        return loss, stats
