"""Pixel reconstruction (VideoMAE, Tong et al. 2022): the generative baseline.

The same encoder sees the same clips with most tubes hidden (random tube masking, 90% by
default); a light decoder (the predictor network, its output layer resized to pixels) fills the
hidden tubes, and the loss is the mean squared error on per-patch normalised pixels (VideoMAE's
`norm_pix_loss`). Everything else (data, masks, optimizer, schedules, checkpoints) is the shared
training loop's. There is no target encoder: evaluations read the `encoder`.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vjepa.masks import MaskConfig, MaskPair
from vjepa.models.vit import gather_tokens
from vjepa.objectives.base import Objective
from vjepa.objectives.jepa import effective_rank


def patchify(clips: Tensor, tubelet: int, patch: int) -> Tensor:
    """Clips [B, C, T, H, W] -> tubelet patches [B, N, tubelet*patch*patch*C], tokens t-major."""
    b, c, t, h, w = clips.shape
    x = clips.reshape(b, c, t // tubelet, tubelet, h // patch, patch, w // patch, patch)
    x = x.permute(0, 2, 4, 6, 3, 5, 7, 1)  # [B, t, h, w, tubelet, patch, patch, C]
    return x.reshape(b, (t // tubelet) * (h // patch) * (w // patch), tubelet * patch * patch * c)


def unpatchify(patches: Tensor, grid: Sequence[int], tubelet: int, patch: int, channels: int = 3) -> Tensor:
    """The inverse of `patchify`: [B, N, tubelet*patch*patch*C] -> [B, C, T, H, W]."""
    t, h, w = grid
    x = patches.reshape(patches.size(0), t, h, w, tubelet, patch, patch, channels)
    x = x.permute(0, 7, 1, 4, 2, 5, 3, 6)
    return x.reshape(patches.size(0), channels, t * tubelet, h * patch, w * patch)


def normalise_patches(patches: Tensor, eps: float = 1e-6) -> Tensor:
    """Each patch to zero mean and unit variance: the loss then weighs texture, not brightness."""
    mean = patches.mean(-1, keepdim=True)
    var = patches.var(-1, keepdim=True, unbiased=False)
    return (patches - mean) / (var + eps).sqrt()


class PixelReconstruction(Objective):
    checkpoint_keys = ("encoder", "predictor")
    #: VideoMAE's masking: 90% of tubes hidden (benchmarks and recipes start from this)
    default_masks = (MaskConfig(type="tube", ratio=0.9),)

    def __init__(self, encoder: nn.Module, predictor: nn.Module):
        super().__init__()
        self.encoder = encoder
        self.predictor = predictor
        self.tubelet, self.patch = encoder.tubelet_size, encoder.patch_size
        pixels = self.tubelet * self.patch * self.patch * encoder.patch_embed.proj.in_channels
        # the decoder is the predictor network with its last layer mapping to pixels instead of features
        predictor.predictor_proj = nn.Linear(predictor.predictor_embed_dim, pixels)
        nn.init.xavier_uniform_(predictor.predictor_proj.weight)
        nn.init.zeros_(predictor.predictor_proj.bias)

    def trainable_modules(self) -> list[nn.Module]:
        return [self.encoder, self.predictor]

    def pixel_targets(self, clips: Tensor) -> Tensor:
        """Per-patch normalised tubelet pixels [B, N, tubelet*patch*patch*C]."""
        return normalise_patches(patchify(clips.float(), self.tubelet, self.patch))

    def forward(self, clips, masks: Sequence[MaskPair], with_rankme: bool = False, stand_in: bool = False):
        targets = self.pixel_targets(clips)
        losses, contexts = [], []
        for i, (ctx_idx, tgt_idx) in enumerate(masks):
            ctx = self.encoder(clips, masks=ctx_idx)
            pred = self.predictor(ctx, ctx_idx, tgt_idx, mask_index=i)
            losses.append(F.mse_loss(pred.float(), gather_tokens(targets, tgt_idx)))
            contexts.append(ctx.detach())
        loss = torch.stack(losses).mean()
        # the spread of the encoder's context features (there is no target encoder to watch)
        stats = {"target_std": torch.cat([c.flatten(0, 1) for c in contexts]).float().std(0).mean()}
        if with_rankme:
            stats["rankme"] = effective_rank(contexts[0])
        return loss, stats
