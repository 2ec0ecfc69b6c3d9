"""What the world-model tests (`vjepa dream`, `vjepa physics`) share: a frozen target encoder plus
predictor, rebuilt from a checkpoint or randomly initialised, and prediction of whole time slots.

Features live in the space the predictor was trained to hit: the target encoder's outputs,
layer-normed per token. Context tokens are computed *causally*: the target encoder runs on the
context slots only (as the context encoder does in training), so no context token has seen a
frame it is asked to predict. They are layer-normed too, so that real context and the predictor's
own outputs (fed back in an imagined rollout) share one space; the predictor was trained on
encoder outputs whose final LayerNorm has its own affine weights, a small mismatch we accept.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vjepa.checkpoint import load_checkpoint
from vjepa.config import choice
from vjepa.data import VideoTransform
from vjepa.data.dataset import read_frames
from vjepa.models.config import ModelConfig
from vjepa.models.videomae import denormalise_patches_per_channel, is_videomae_folder, normalise_patches_per_channel
from vjepa.objectives.pixel import normalise_patches, patchify, unpatchify
from vjepa.pretrained import (
    Architecture, ClipConfig, fallback_architecture, load_pretrained, load_videomae_pretrained, random_pretrained,
)
from vjepa.pretrained import architecture as checkpoint_architecture

log = logging.getLogger("vjepa.worldmodel")


@dataclass
class WorldModelSource:
    """One model to test; its name (jepa, random, ...) is its key under `models`."""

    kind: str = choice("checkpoint", ("checkpoint", "random", "videomae"))
    # checkpoint: the weights (ours, official V-JEPA or V-JEPA 2); random: whose architecture to copy (null:
    # `model`); videomae: a Hugging Face VideoMAEForPreTraining folder or an original VideoMAE(v2) pretraining file
    checkpoint: Optional[str] = None
    seeds: List[int] = field(default_factory=lambda: [0])  # random: one model per seed


@dataclass
class WorldModel:
    """A frozen target encoder and predictor (JEPA), and the clip geometry they were built for.

    The three methods below are all the world-model tests ask of a model; `PixelWorldModel`
    answers them in pixel space for a model trained to reconstruct pixels.
    """

    name: str
    encoder: nn.Module  # the target encoder (the EMA one), or the encoder if a checkpoint has none
    predictor: nn.Module
    arch: Architecture
    mask_index: int  # the predictor's mask token for predicting the future
    seed: Optional[int] = None  # random models

    @property
    def grid(self) -> tuple[int, int, int]:
        return tuple(self.predictor.grid)

    @property
    def tokens_per_slot(self) -> int:
        return self.grid[1] * self.grid[2]

    def to(self, device: torch.device) -> "WorldModel":
        self.encoder.to(device)
        self.predictor.to(device)
        return self

    @torch.no_grad()
    def target_slots(self, clips: Tensor) -> Tensor:
        """What really happened: layer-normed target features of the whole clip, [B, T, H*W, D]."""
        h = layer_norm(self.encoder(clips))
        return h.view(h.size(0), self.grid[0], self.tokens_per_slot, h.size(-1))

    @torch.no_grad()
    def context_slots(self, clips: Tensor, slots: Sequence[int]) -> Tensor:
        """Layer-normed features of `slots` with the encoder seeing only those slots, [B, len(slots), H*W, D]."""
        idx = slot_indices(slots, self.tokens_per_slot, clips.size(0), clips.device)
        h = self.context_space(self.encoder(clips, masks=idx))
        return h.view(h.size(0), len(slots), self.tokens_per_slot, h.size(-1))

    def context_space(self, h: Tensor) -> Tensor:
        """Encoder outputs as the predictor takes them: layer-normed, like its own fed-back outputs."""
        return layer_norm(h)

    @torch.no_grad()
    def predict_slots(self, context: Tensor, ctx_slots: Sequence[int], tgt_slots: Sequence[int]) -> Tensor:
        """The predictor's view of `tgt_slots` [B, len(tgt), H*W, D'] from `context` [B, len(ctx), H*W, D]."""
        b, n = context.size(0), self.tokens_per_slot
        ctx_idx = slot_indices(ctx_slots, n, b, context.device)
        tgt_idx = slot_indices(tgt_slots, n, b, context.device)
        pred = self.predictor(context.flatten(1, 2), ctx_idx, tgt_idx, mask_index=self.mask_index)
        return pred.float().view(b, len(tgt_slots), n, -1)

    @torch.no_grad()
    def imagine(self, clips: Tensor, k: int) -> Tensor:
        """Roll out from the first k real slots to the clip's end, one slot a step, each prediction
        appended to the context (no pixels). Returns the imagined slots [B, T-k, H*W, D]."""
        context = self.context_slots(clips, range(k))
        imagined = []
        for t in range(k, self.grid[0]):
            pred = self.predict_slots(context, range(t), [t])
            imagined.append(pred)
            context = torch.cat([context, pred], dim=1)
        return torch.cat(imagined, dim=1)


class PixelWorldModel(WorldModel):
    """A pixel-reconstruction model (vjepa/objectives/pixel.py) asked the same questions in pixel space.

    Its targets are the per-patch normalised pixels it was trained to reconstruct; its context is
    its encoder's output on the context slots (what its decoder was trained on). An imagined slot
    is turned back into frames with the mean and spread of each patch in the slot before it (the
    normalisation throws them away) and re-encoded as context for the next step.
    """

    def patches(self, clips: Tensor) -> Tensor:
        m = self.arch.model
        return patchify(clips.float(), m.tubelet_size, m.patch_size)

    def normalise(self, patches: Tensor) -> Tensor:
        """Pixel patches as the decoder was trained to reconstruct them."""
        return normalise_patches(patches)

    def denormalise(self, pred: Tensor, like: Tensor) -> Tensor:
        """Normalised patches back to pixels with the statistics of the patches `like`."""
        std = (like.var(-1, keepdim=True, unbiased=False) + 1e-6).sqrt()
        return pred * std + like.mean(-1, keepdim=True)

    @torch.no_grad()
    def target_slots(self, clips: Tensor) -> Tensor:
        p = self.normalise(self.patches(clips))
        return p.view(p.size(0), self.grid[0], self.tokens_per_slot, p.size(-1))

    def context_space(self, h: Tensor) -> Tensor:
        return h  # the decoder was trained on raw encoder outputs

    @torch.no_grad()
    def imagine(self, clips: Tensor, k: int) -> Tensor:
        return self.dream(clips, k)[0]

    @torch.no_grad()
    def imagine_pixels(self, clips: Tensor, k: int) -> Tensor:
        """The imagined slots as the rollout turned them back into pixel patches, [B, T-k, H*W, P]."""
        return self.dream(clips, k)[1]

    def dream(self, clips: Tensor, k: int) -> tuple[Tensor, Tensor]:
        """The rollout: imagined slots, normalised (the targets' space) and un-normalised (pixels)."""
        m, n = self.arch.model, self.tokens_per_slot
        work = self.patches(clips).clone()  # [B, N, P] raw pixel patches, later slots overwritten by dreams
        imagined = []
        for t in range(k, self.grid[0]):
            frames = unpatchify(work, self.grid, m.tubelet_size, m.patch_size, clips.size(1))
            pred = self.predict_slots(self.context_slots(frames, range(t)), range(t), [t])
            imagined.append(pred)
            work[:, t * n:(t + 1) * n] = self.denormalise(pred[:, 0], work[:, (t - 1) * n:t * n])
        pixels = work.view(work.size(0), self.grid[0], n, work.size(-1))[:, k:]
        return torch.cat(imagined, dim=1), pixels


class VideoMAEWorldModel(PixelWorldModel):
    """A published VideoMAE (vjepa/models/videomae.py): its decoder reconstructs the hidden future from the
    visible past, scored against pixels normalised per patch and colour channel, as VideoMAE was trained."""

    def normalise(self, patches: Tensor) -> Tensor:
        return normalise_patches_per_channel(patches)

    def denormalise(self, pred: Tensor, like: Tensor) -> Tensor:
        return denormalise_patches_per_channel(pred, like)


def future_mask_index(arch: Architecture, where: str, override: Optional[int]) -> int:
    """The mask token the predictor learned future prediction with: the `future` entry of `masks`.

    A checkpoint without a config (official V-JEPA) does not say how its mask tokens were trained; its
    first token is used unless `mask_index` says otherwise."""
    if override is not None:
        if not 0 <= override < arch.num_mask_tokens:
            raise ValueError(f"mask_index={override}: {where}'s predictor has {arch.num_mask_tokens} mask tokens")
        return override
    if not arch.masks:
        log.info("%s: no config, so its masks are unknown; predicting with mask token 0 of %d (set mask_index=N)",
                 where, arch.num_mask_tokens)
        return 0
    if "future" not in arch.masks:
        raise ValueError(f"{where} was trained without a future mask (masks: {arch.masks}); its predictor never learned "
                         "to predict later frames. Pretrain with a `{type: future}` mask, or set mask_index=N")
    return arch.masks.index("future")


#: world-model classes by pretraining objective; objectives without a predictor of the future have none
WORLD_MODELS: dict[str, type[WorldModel]] = {"jepa": WorldModel, "pixel": PixelWorldModel,
                                             "videomae": VideoMAEWorldModel}


def world_class(arch: Architecture, source: str, name: str) -> type[WorldModel]:
    if arch.objective not in WORLD_MODELS:
        raise ValueError(f"models.{name}: {source} was trained with objective '{arch.objective}', which learns no "
                         f"predictor of the future; world-model tests take {' or '.join(WORLD_MODELS)} models")
    return WORLD_MODELS[arch.objective]


def build_world_models(name: str, spec: WorldModelSource, mask_index: Optional[int], model: ModelConfig | None = None,
                       clip: ClipConfig | None = None) -> list[WorldModel]:
    """The models of one `models` entry (several for a random model with several seeds); `model` and `clip`
    give the architecture of a checkpoint without a config (official V-JEPA) or of a random model without one."""
    fallback = fallback_architecture(model or ModelConfig(), clip)
    source = spec.checkpoint or "the config's model"
    if spec.kind in ("checkpoint", "videomae") and not spec.checkpoint:
        raise ValueError(f"models.{name}: kind {spec.kind} needs models.{name}.checkpoint=PATH")
    if spec.kind == "videomae":
        pretrained = load_videomae_pretrained(spec.checkpoint, fallback, with_predictor=True)
        return [VideoMAEWorldModel(name, pretrained.encoder, pretrained.predictor, pretrained.arch, 0)]
    if spec.kind == "checkpoint":
        arch = checkpoint_architecture(load_checkpoint(spec.checkpoint), source, fallback)
        cls = world_class(arch, source, name)
        loaded = [(load_pretrained(spec.checkpoint, fallback, with_predictor=True), None)]
    elif spec.checkpoint and is_videomae_folder(spec.checkpoint):  # a random VideoMAE of the folder's architecture
        return [VideoMAEWorldModel(name, p.encoder, p.predictor, p.arch, 0, seed) for seed in spec.seeds
                for p in [load_videomae_pretrained(spec.checkpoint, fallback, with_predictor=True, seed=seed)]]
    else:
        arch = checkpoint_architecture(load_checkpoint(spec.checkpoint) if spec.checkpoint else None, source, fallback)
        cls = world_class(arch, source, name)
        loaded = [(random_pretrained(arch, seed), seed) for seed in spec.seeds]
    index = future_mask_index(arch, source, mask_index)
    return [cls(name, p.encoder, p.predictor, p.arch, index, seed) for p, seed in loaded]


def check_same_geometry(models: Sequence[WorldModel]) -> None:
    """All models must read the same clips the same way, or their numbers are not comparable."""
    first = models[0]
    for m in models[1:]:
        if (m.grid, m.arch.frames_per_clip, m.arch.crop_size) != (first.grid, first.arch.frames_per_clip,
                                                                    first.arch.crop_size):
            raise ValueError(f"models '{first.name}' and '{m.name}' differ in clip size or token grid "
                             f"({first.grid} vs {m.grid}); compare models trained on the same clips")


# --------------------------------------------------------------------------- clips


def clip_transform(arch: Architecture) -> VideoTransform:
    return VideoTransform(crop_size=arch.crop_size, train=False)


def read_clip_from_start(path: str, frames_per_clip: int, frame_step: int, transform: VideoTransform) -> Tensor:
    """The clip [C, T, H, W] starting at frame 0 (twin videos must be compared frame for frame)."""
    import decord

    video = decord.VideoReader(path, num_threads=1, ctx=decord.cpu(0))
    indices = np.minimum(frame_step * np.arange(frames_per_clip), len(video) - 1)
    frames = torch.from_numpy(read_frames(video, indices))
    return transform(frames, np.random.default_rng(0))


# --------------------------------------------------------------------------- features and predictions


def slot_indices(slots: Sequence[int], tokens_per_slot: int, batch: int, device: torch.device) -> Tensor:
    """Token indices [batch, len(slots) * tokens_per_slot] of whole time slots (t-major order)."""
    idx = torch.cat([torch.arange(s * tokens_per_slot, (s + 1) * tokens_per_slot) for s in slots])
    return idx.to(device).expand(batch, -1)


def layer_norm(x: Tensor) -> Tensor:
    return F.layer_norm(x.float(), (x.size(-1),))


def slot_l1(pred: Tensor, target: Tensor) -> Tensor:
    """Mean absolute error per clip and slot: [B, S, N, D] pairs -> [B, S]."""
    return (pred - target).abs().mean(dim=(2, 3))
