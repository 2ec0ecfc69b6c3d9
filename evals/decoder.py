"""A pixel decoder on frozen features: what `vjepa dream` draws its dreams with.

A small network learns to render each token's tubelet of pixels from the target encoder's
layer-normed features of one time slot: the space the world model's targets and the predictor's
imagined slots live in (evals/worldmodel.py), so one decoder turns real and imagined slots into
frames. It is a probe: the encoder stays frozen. Its reconstruction error on val clips, next to
that of always predicting the mean frame, says how much of the picture the features keep, the
ceiling of any dream drawn with it.

Features of a seeded subset of train clips are extracted once, the decoder is trained for a few
epochs over them, and the result is cached on disk, keyed by the checkpoint file, the clips and
the settings, so a rerun reuses it.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Subset

from evals.features import data_identity, file_identity, subset_indices
from evals.worldmodel import WorldModel, clip_transform
from vjepa.checkpoint import load_checkpoint, save_checkpoint
from vjepa.data import DataError, VideoDataset, collate_videos
from vjepa.objectives.pixel import patchify
from vjepa.runlog import progress

log = logging.getLogger("vjepa.decoder")


@dataclass
class DecoderConfig:
    enabled: bool = True  # false: no decoder and no strips, latent metrics only
    train_list: str = "${world}/train.txt"  # the clips the decoder learns to render
    max_videos: int = 300  # > 0: a seeded random subset of train_list
    epochs: int = 8  # passes over the cached features
    batch_size: int = 32  # time slots per step
    lr: float = 3e-3  # AdamW, cosine-decayed to 0
    weight_decay: float = 0.01
    width: int = 96  # channels of the decoder's blocks
    depth: int = 2  # residual blocks, each a 3x3 convolution over the slot's token grid and a per-token MLP
    strip_clips: int = 4  # val clips drawn as dream strips: the first of the dream's subset; 0: none


# --------------------------------------------------------------------------- the network


class Block(nn.Module):
    """ConvNeXt-style: a depthwise 3x3 convolution over the token grid (where an object's edge
    crosses into a neighbour's patch), then a per-token MLP; both residual."""

    def __init__(self, width: int):
        super().__init__()
        self.spatial = nn.Conv2d(width, width, 3, padding=1, groups=width)
        self.norm = nn.GroupNorm(1, width)
        self.mlp = nn.Sequential(nn.Conv2d(width, 2 * width, 1), nn.GELU(), nn.Conv2d(2 * width, width, 1))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.spatial(x)
        return x + self.mlp(self.norm(x))


class PixelDecoder(nn.Module):
    """Features of whole time slots [..., H*W, D] -> each token's tubelet pixels [..., H*W, P]."""

    def __init__(self, embed_dim: int, grid: tuple[int, int], pixels: int, width: int = 96, depth: int = 2):
        super().__init__()
        self.grid = tuple(grid)
        self.embed = nn.Conv2d(embed_dim, width, 1)
        self.blocks = nn.Sequential(*[Block(width) for _ in range(depth)])
        self.head = nn.Conv2d(width, pixels, 1)

    def forward(self, tokens: Tensor) -> Tensor:
        lead, (n, d), (h, w) = tokens.shape[:-2], tokens.shape[-2:], self.grid
        x = tokens.reshape(-1, h, w, d).permute(0, 3, 1, 2)
        x = self.head(self.blocks(self.embed(x)))
        return x.permute(0, 2, 3, 1).reshape(*lead, n, -1)


@dataclass
class TrainedDecoder:
    """A decoder for one model's features, the baseline it is measured against, and how it learned."""

    decoder: PixelDecoder
    mean_patch: Tensor  # [H*W, P]: each token position's mean pixels over the train clips (the mean frame)
    epoch_loss: list  # mean train MSE per epoch
    clips: int  # train clips it learned from

    @torch.no_grad()
    def render(self, slots: Tensor) -> Tensor:
        """Slots [B, S, H*W, D] -> pixel patches [B, S, H*W, P] (in the clips' normalised space)."""
        return self.decoder(slots.float())


def slot_patches(model: WorldModel, clips: Tensor) -> Tensor:
    """The clips' pixels as the decoder renders them: [B, T, H*W, tubelet*patch*patch*C], tokens t-major."""
    m = model.arch.model
    p = patchify(clips.float(), m.tubelet_size, m.patch_size)
    return p.view(p.size(0), model.grid[0], model.tokens_per_slot, p.size(-1))


# --------------------------------------------------------------------------- training and cache


def load_or_train(model: WorldModel, checkpoint: str, cfg: DecoderConfig, seed: int, batch_size: int,
                  num_workers: int, cache_dir: Path, device: torch.device) -> TrainedDecoder:
    """`model`'s decoder: from `cache_dir` if one was trained with the same checkpoint file, clips
    and settings, else trained on its frozen target features and cached there."""
    arch = model.arch
    dataset = VideoDataset(cfg.train_list, frames_per_clip=arch.frames_per_clip,
                           frame_step=arch.frame_step, transform=clip_transform(arch), seed=seed)
    indices = subset_indices(len(dataset), cfg.max_videos, seed)
    settings = {k: getattr(cfg, k) for k in ("max_videos", "epochs", "batch_size", "lr", "weight_decay", "width", "depth")}
    key = json.dumps({"checkpoint": file_identity(checkpoint), "data": data_identity(dataset, indices),
                      "seed": seed, "settings": settings}, sort_keys=True)
    path = cache_dir / f"{model.name}-{hashlib.sha256(key.encode()).hexdigest()[:20]}.pt"
    torch.manual_seed(seed)
    decoder = new_decoder(model, cfg)
    if path.is_file():
        cached = load_checkpoint(path)
        decoder.load_state_dict(cached["decoder"])
        log.info("decoder %s: cached in %s", model.name, path)
        return TrainedDecoder(decoder.to(device).eval(), cached["mean_patch"].to(device), cached["epoch_loss"],
                              cached["clips"])
    loader = DataLoader(Subset(dataset, indices), batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        collate_fn=collate_videos)
    features, pixels = extract_slots(model, loader, device, f"decoder {model.name} features")
    if not len(features):
        raise DataError(f"{cfg.train_list}: none of the {len(indices)} videos could be read to train the decoder")
    trained = train(decoder.to(device), features, pixels, cfg, seed, f"decoder {model.name}")
    save_checkpoint({"decoder": trained.decoder.state_dict(), "mean_patch": trained.mean_patch.cpu(),
                     "epoch_loss": trained.epoch_loss, "clips": trained.clips, "key": key}, path)
    return trained


def new_decoder(model: WorldModel, cfg: DecoderConfig) -> PixelDecoder:
    m = model.arch.model
    pixels = m.tubelet_size * m.patch_size ** 2 * 3
    return PixelDecoder(model.encoder.embed_dim, model.grid[1:], pixels, cfg.width, cfg.depth)


@torch.no_grad()
def extract_slots(model: WorldModel, loader: DataLoader, device: torch.device, desc: str) -> tuple[Tensor, Tensor]:
    """Target features [M, T, H*W, D] and pixels [M, T, H*W, P] of every readable clip, half precision on the CPU
    (the pixels are the largest thing kept)."""
    features, pixels = [], []
    with progress(len(loader.dataset), desc=desc) as bar:
        for batch in loader:
            clips = batch["clips"].to(device)
            if len(clips):
                features.append(model.target_slots(clips).half().cpu())
                pixels.append(slot_patches(model, clips).half().cpu())
            bar.update(len(batch["indices"]) + len(batch["skipped"]))
    if not features:
        return torch.empty(0), torch.empty(0)
    return torch.cat(features), torch.cat(pixels)


def train(decoder: PixelDecoder, features: Tensor, pixels: Tensor, cfg: DecoderConfig, seed: int,
          desc: str) -> TrainedDecoder:
    """AdamW on the MSE of every time slot's pixels; each slot is a sample."""
    device = next(decoder.parameters()).device
    slots, targets = features.flatten(0, 1), pixels.flatten(0, 1)  # [M*T, H*W, D], [M*T, H*W, P]
    mean_patch = (sum(chunk.float().sum(0) for chunk in targets.split(1024)) / len(targets)).to(device)
    steps_per_epoch = -(-len(slots) // cfg.batch_size)
    opt = torch.optim.AdamW(decoder.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, cfg.epochs * steps_per_epoch))
    order = torch.Generator().manual_seed(seed)
    decoder.train()
    epoch_loss = []
    with progress(cfg.epochs * steps_per_epoch, desc=desc) as bar:
        for _ in range(cfg.epochs):
            total = 0.0
            for batch in torch.randperm(len(slots), generator=order).split(cfg.batch_size):
                loss = F.mse_loss(decoder(slots[batch].to(device).float()), targets[batch].to(device).float())
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                schedule.step()
                total += loss.item() * len(batch)
                bar.update()
            epoch_loss.append(total / len(slots))
            bar.set_postfix(loss=f"{epoch_loss[-1]:.4f}")
    log.info("%s: train MSE %.4f -> %.4f over %d epochs", desc, epoch_loss[0], epoch_loss[-1], cfg.epochs)
    return TrainedDecoder(decoder.eval(), mean_patch, epoch_loss, len(features))
