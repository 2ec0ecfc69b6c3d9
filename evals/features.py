"""Frozen features: the networks they come from, and their cache on disk.

A `FeatureSource` turns clips [B, C, T, H, W] into tokens [B, N, D]. Sources are built from a
`SourceConfig` by the builder registered for its `kind`: `checkpoint` (this project's, the official
V-JEPA or V-JEPA 2 layout, or another objective's: a denoising encoder is read at a fixed noise
level), `random` (the same architecture, freshly initialised, one per seed), `raw` (downsampled
pixels, the floor), `timm` (a timm image model applied to every frame, random or from a local
weights file) and `videomae` (a published VideoMAE). `register_source` adds a kind.

`load_or_extract` runs every source whose features are not cached over a video list in one pass,
so each clip is decoded once for all of them, and stores per clip the mean-pooled tokens of the
last `layers` blocks and, for attentive probes, the tokens themselves, the same blocks concatenated
along the channels.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from vjepa.checkpoint import CheckpointError, load_checkpoint
from vjepa.config import choice
from vjepa.data import IMAGENET_MEAN, IMAGENET_STD, DataError, SkipTracker, VideoDataset, VideoTransform, collate_videos
from vjepa.models.config import ModelConfig
from vjepa.models.videomae import is_videomae_folder
from vjepa.objectives.denoise import Denoising, noise_clips
from vjepa.pretrained import (
    NETWORKS, Architecture, fallback_architecture, file_identity, load_pretrained, load_videomae_pretrained,
    random_pretrained,
)
from vjepa.pretrained import architecture as checkpoint_architecture

log = logging.getLogger("vjepa.probe")


@dataclass
class SourceConfig:
    """One model to probe; its name (jepa, random, ...) is its key under `models`."""

    # checkpoint | random | raw | timm | videomae, or one added with register_source
    kind: str = choice("checkpoint", lambda: SOURCE_KINDS)
    # checkpoint: the weights (ours, official V-JEPA or V-JEPA 2); random: whose architecture to copy (null:
    # `model`); videomae: a Hugging Face VideoMAE folder or an original VideoMAE(v2) checkpoint file
    checkpoint: Optional[str] = None
    encoder: str = choice("auto", NETWORKS)  # network of a checkpoint: auto (target_encoder if present, else encoder)
    seeds: List[int] = field(default_factory=lambda: [0])  # random, timm: one model per seed, reported as mean and spread
    timm_model: Optional[str] = None  # timm: a model name (e.g. vit_large_patch14_dinov2)
    timm_weights: Optional[str] = None  # timm: a local weights file in timm's or the publisher's layout; null: random init
    timm_args: Dict[str, Any] = field(default_factory=dict)  # timm: more keywords for timm.create_model
    raw_size: int = 8  # raw: each frame average-pooled to raw_size x raw_size pixels


@dataclass
class FeatureConfig:
    frames_per_clip: int = 16
    frame_step: int = 2
    crop_size: int = 64
    clips_per_video: int = 1  # > 1: features per clip, predictions averaged over a video's clips
    layers: int = 1  # pooled features and tokens concatenate the last `layers` blocks along the channels
    # (raw pixels and timm models give their one output whatever this says)
    batch_size: int = 16
    num_workers: int = 1


class FeatureSource(ABC):
    """A frozen network from clips to tokens. `identity` is everything its features depend on."""

    def __init__(self, name: str, network: nn.Module, identity: dict):
        self.name = name
        self.network = network.eval().requires_grad_(False)
        self.identity = identity

    def to(self, device: torch.device) -> "FeatureSource":
        self.network.to(device)
        return self

    def encode(self, clips: Tensor) -> Tensor:
        """Clips [B, C, T, H, W] -> tokens [B, N, D] of the last layer."""
        return self.encode_layers(clips, 1)[-1]

    @abstractmethod
    def encode_layers(self, clips: Tensor, n: int) -> list[Tensor]:
        """Tokens [B, N, D] of the last n layers, in layer order."""


class EncoderSource(FeatureSource):
    """A V-JEPA VisionTransformer (vjepa.models.vit), normed outputs of its last blocks."""

    def encode_layers(self, clips: Tensor, n: int) -> list[Tensor]:
        if n > self.network.depth:
            raise ValueError(f"features.layers={n} but model '{self.name}' has only {self.network.depth} blocks")
        return self.network.get_intermediate_layers(clips, n)


class NoisyEncoderSource(EncoderSource):
    """A denoising model's encoder, read at one fixed noise level (vjepa/objectives/denoise.py).

    Each clip's noise is seeded by the clip itself, so its features do not depend on the batch it
    came in and can be cached.
    """

    def __init__(self, name: str, network: nn.Module, identity: dict, level: float):
        super().__init__(name, network, {**identity, "noise_level": level})
        self.level = level

    def encode_layers(self, clips: Tensor, n: int) -> list[Tensor]:
        noise = torch.stack([clip_noise(c) for c in clips.cpu()]).to(clips.device)
        return super().encode_layers(noise_clips(clips, torch.tensor(self.level), noise), n)


def clip_noise(clip: Tensor) -> Tensor:
    g = torch.Generator().manual_seed(int(hashlib.sha256(clip.float().numpy().tobytes()).hexdigest()[:15], 16))
    return torch.randn(clip.shape, generator=g)


class RawPixelSource(FeatureSource):
    """The floor every learned feature should clear: downsampled pixels, one token per frame."""

    def __init__(self, name: str, size: int):
        super().__init__(name, nn.Identity(), {"kind": "raw", "size": size})
        self.size = size

    def encode_layers(self, clips: Tensor, n: int) -> list[Tensor]:
        """The pixels, as the one layer there is, whatever n (`features.layers`) asks for."""
        b, c, t = clips.shape[:3]
        pooled = F.adaptive_avg_pool3d(clips.float(), (t, self.size, self.size))  # [B, C, T, s, s]
        return [pooled.permute(0, 2, 1, 3, 4).reshape(b, t, c * self.size * self.size)]


class FrameSource(FeatureSource):
    """An image model applied to every frame; a clip's tokens are its frames' tokens, frame-major.

    Clips come normalised with ImageNet's mean and spread; frames are renormalised to those the
    model was trained with (its timm `pretrained_cfg`: 0.5 and 0.5 for SigLIP, say)."""

    def __init__(self, name: str, network: nn.Module, identity: dict):
        cfg = getattr(network, "pretrained_cfg", None) or {}
        mean, std = tuple(cfg.get("mean", IMAGENET_MEAN)), tuple(cfg.get("std", IMAGENET_STD))
        super().__init__(name, network, {**identity, "mean": mean, "std": std})
        # x_model = (pixel - mean) / std with pixel = x * imagenet_std + imagenet_mean
        self.scale = torch.tensor(IMAGENET_STD) / torch.tensor(std)
        self.shift = (torch.tensor(IMAGENET_MEAN) - torch.tensor(mean)) / torch.tensor(std)

    def encode_layers(self, clips: Tensor, n: int) -> list[Tensor]:
        """The model's output features as its one layer, whatever n (`features.layers`) asks for."""
        b, c, t, h, w = clips.shape
        frames = clips.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)
        if c == len(self.scale):
            scale, shift = (v.to(frames.device, frames.dtype).view(1, c, 1, 1) for v in (self.scale, self.shift))
            frames = frames * scale + shift
        out = self.network.forward_features(frames)
        if out.ndim == 4:  # CNN feature map [B*T, D, h, w] -> tokens
            out = out.flatten(2).transpose(1, 2)
        else:  # ViT tokens: drop class/register tokens
            out = out[:, getattr(self.network, "num_prefix_tokens", 0):]
        return [out.reshape(b, t * out.shape[1], out.shape[2])]


# --------------------------------------------------------------------------- sources from configs

SourceBuilder = Callable[[str, SourceConfig, ModelConfig, FeatureConfig], List[FeatureSource]]
SOURCE_KINDS: dict[str, SourceBuilder] = {}


def register_source(kind: str) -> Callable[[SourceBuilder], SourceBuilder]:
    """Make `SourceConfig(kind=kind)` build its sources with the decorated function."""
    def register(builder: SourceBuilder) -> SourceBuilder:
        SOURCE_KINDS[kind] = builder
        return builder
    return register


def build_sources(name: str, spec: SourceConfig, model: ModelConfig, features: FeatureConfig) -> list[FeatureSource]:
    """The sources of model `name` (several for several seeds); `model` is the architecture where a checkpoint has none."""
    if spec.kind not in SOURCE_KINDS:
        raise ValueError(f"models.{name}.kind: unknown kind {spec.kind!r}; expected one of {', '.join(SOURCE_KINDS)}")
    return SOURCE_KINDS[spec.kind](name, spec, model, features)


def fallback(model: ModelConfig, features: FeatureConfig) -> Architecture:
    """The architecture of a checkpoint without a `config` (official V-JEPA): `model` at the probe's clip size."""
    if features is None:
        return fallback_architecture(model)
    return fallback_architecture(model, frames_per_clip=features.frames_per_clip, frame_step=features.frame_step,
                                 crop_size=features.crop_size)


@register_source("checkpoint")
def checkpoint_sources(name: str, spec: SourceConfig, model: ModelConfig, features: FeatureConfig) -> list[FeatureSource]:
    if not spec.checkpoint:
        raise ValueError(f"models.{name}: kind checkpoint needs models.{name}.checkpoint=PATH")
    loaded = load_pretrained(spec.checkpoint, fallback(model, features), network=spec.encoder)
    identity = {"kind": "checkpoint", "file": file_identity(spec.checkpoint), "encoder": loaded.network,
                "architecture": loaded.arch.identity()}
    if loaded.arch.objective == "denoise":  # trained on noisy clips: read at the level its objective names
        return [NoisyEncoderSource(name, loaded.encoder, identity, Denoising.probe_level)]
    return [EncoderSource(name, loaded.encoder, identity)]


@register_source("random")
def random_sources(name: str, spec: SourceConfig, model: ModelConfig, features: FeatureConfig) -> list[FeatureSource]:
    if spec.checkpoint and is_videomae_folder(spec.checkpoint):  # a random VideoMAE of the folder's architecture
        return [EncoderSource(name, p.encoder, {"kind": "random", "seed": seed, "architecture": p.arch.identity()})
                for seed in spec.seeds
                for p in [load_videomae_pretrained(spec.checkpoint, fallback(model, features), seed=seed)]]
    ckpt = load_checkpoint(spec.checkpoint) if spec.checkpoint else None
    arch = checkpoint_architecture(ckpt, spec.checkpoint or "model", fallback(model, features))
    return [EncoderSource(name, random_pretrained(arch, seed).encoder, {"kind": "random", "seed": seed,
                                                                         "architecture": arch.identity()})
            for seed in spec.seeds]


@register_source("raw")
def raw_sources(name: str, spec: SourceConfig, model: ModelConfig, features: FeatureConfig) -> list[FeatureSource]:
    if spec.raw_size < 1 or spec.raw_size > features.crop_size:
        raise ValueError(f"models.{name}.raw_size={spec.raw_size}: expected 1 to features.crop_size={features.crop_size}")
    return [RawPixelSource(name, spec.raw_size)]


@register_source("timm")
def timm_sources(name: str, spec: SourceConfig, model: ModelConfig, features: FeatureConfig) -> list[FeatureSource]:
    if not spec.timm_model:
        raise ValueError(f"models.{name}: kind timm needs models.{name}.timm_model=NAME")
    fetching = sorted(set(spec.timm_args) & {"pretrained", "pretrained_cfg", "pretrained_cfg_overlay"})
    if fetching:  # these would let timm fetch weights from the hub, or replace the local file
        raise ValueError(f"models.{name}.timm_args.{fetching[0]}: weights come only from "
                         f"models.{name}.timm_weights=FILE here; drop it")
    if spec.timm_weights:
        return [timm_pretrained(name, spec, features)]
    sources = []
    for seed in spec.seeds:
        torch.manual_seed(seed)
        network, identity = create_timm(spec, features.crop_size)
        sources.append(FrameSource(name, network, {**identity, "seed": seed}))
    return sources


def create_timm(spec: SourceConfig, crop_size: int, **kwargs) -> tuple[nn.Module, dict]:
    """timm.create_model, built for the probe's frames where the model takes an image size (ViTs do, CNNs need not)."""
    import timm

    args = {"num_classes": 0, **kwargs, **spec.timm_args}
    try:
        network = timm.create_model(spec.timm_model, **{"img_size": crop_size, **args})
    except TypeError:  # the model takes no img_size
        network = timm.create_model(spec.timm_model, **args)
    return network, {"kind": "timm", "timm_model": spec.timm_model, "timm": timm.__version__, "timm_args": spec.timm_args}


def timm_pretrained(name: str, spec: SourceConfig, features: FeatureConfig) -> FeatureSource:
    """A timm model with the weights of a local file, through timm's own loader: it reads the publisher's layouts
    (DINOv2's, SigLIP's, ...) and resizes a position table to the probe's frame size."""
    path = Path(spec.timm_weights)
    if not path.is_file():
        raise FileNotFoundError(f"models.{name}.timm_weights: no file {path}")
    if ":" in spec.timm_model:  # hf-hub:... would be fetched from the hub, whatever the file says
        raise ValueError(f"models.{name}.timm_model={spec.timm_model!r}: with timm_weights, name an architecture "
                         f"(e.g. vit_small_patch14_dinov2), not a hub location")
    try:
        network, identity = create_timm(spec, features.crop_size, pretrained=True,
                                        pretrained_cfg_overlay={"file": str(path)})
    except (RuntimeError, KeyError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: does not load into timm model {spec.timm_model} ({first})") from exc
    log.info("models.%s: timm %s with the weights of %s", name, spec.timm_model, path)
    return FrameSource(name, network, {**identity, "file": file_identity(path)})


@register_source("videomae")
def videomae_sources(name: str, spec: SourceConfig, model: ModelConfig, features: FeatureConfig) -> list[FeatureSource]:
    if not spec.checkpoint:
        raise ValueError(f"models.{name}: kind videomae needs models.{name}.checkpoint=PATH (a Hugging Face folder "
                         f"or an original VideoMAE checkpoint file)")
    loaded = load_videomae_pretrained(spec.checkpoint, fallback(model, features))
    arch = loaded.arch
    if (arch.frames_per_clip, arch.crop_size) != (features.frames_per_clip, features.crop_size):
        raise ValueError(f"models.{name}: {spec.checkpoint} takes clips of {arch.frames_per_clip} frames at "
                         f"{arch.crop_size} px (its position table is fixed); set "
                         f"features.frames_per_clip={arch.frames_per_clip} features.crop_size={arch.crop_size}")
    identity = {"kind": "videomae", "file": file_identity(spec.checkpoint), "architecture": arch.identity()}
    return [EncoderSource(name, loaded.encoder, identity)]


# --------------------------------------------------------------------------- extraction and cache


@dataclass
class Features:
    """What a source made of one split: pooled [M, layers*D], tokens [M, N, D] (or None), video [M]."""

    pooled: Tensor
    tokens: Optional[Tensor]
    video: Tensor  # the row of the video list each clip comes from
    skipped: list  # (path, reason) of files that could not be read


def subset_indices(num_videos: int, max_videos: int, seed: int) -> list[int]:
    """All videos, or a seeded random `max_videos` of them in list order (lists may be sorted by class)."""
    if max_videos <= 0 or max_videos >= num_videos:
        return list(range(num_videos))
    rng = np.random.default_rng(seed)
    return sorted(rng.choice(num_videos, size=max_videos, replace=False).tolist())


def data_identity(dataset: VideoDataset, indices: Sequence[int]) -> str:
    """A hash of the listed files as they are now: path, size and mtime of each (a regenerated world changes it)."""
    digest = hashlib.sha256()
    for i in indices:
        entry = dataset.entries[i]
        try:
            st = os.stat(entry.path)
            digest.update(f"{entry.path}\0{entry.label}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            digest.update(f"{entry.path}\0{entry.label}\0missing\n".encode())
    return digest.hexdigest()


def cache_file(cache_dir: Path, source: FeatureSource, data_key: str, features: FeatureConfig, tokens: bool) -> Path:
    # batch size and workers do not change the features, so they are not part of the key
    clip = {k: getattr(features, k) for k in ("frames_per_clip", "frame_step", "crop_size", "clips_per_video", "layers")}
    key = json.dumps({"source": source.identity, "data": data_key, "clip": clip, "tokens": tokens},
                     sort_keys=True, default=str)
    return cache_dir / f"{source.name}-{hashlib.sha256(key.encode()).hexdigest()[:20]}.pt"


@torch.no_grad()
def extract(sources: Sequence[FeatureSource], dataset: VideoDataset, indices: Sequence[int], features: FeatureConfig,
            tokens: bool, device: torch.device, desc: str) -> list[Features]:
    """Encode every clip once per source; clips are decoded once for all sources."""
    loader = DataLoader(Subset(dataset, list(indices)), batch_size=features.batch_size, shuffle=False,
                        num_workers=features.num_workers, collate_fn=collate_videos)
    parts: list[dict[str, list]] = [{"pooled": [], "tokens": [], "video": []} for _ in sources]
    skips = SkipTracker()
    for source in sources:
        source.to(device)
    with tqdm(total=len(indices), desc=desc, unit="video", dynamic_ncols=True, mininterval=1.0) as bar:
        for batch in loader:
            skips.update(batch["skipped"])
            bar.update(len(batch["indices"]) + len(batch["skipped"]))
            if not len(batch["indices"]):
                continue
            clips = batch["clips"]
            video = batch["indices"]
            if clips.ndim == 6:  # [B, clips_per_video, C, T, H, W]: every clip is a sample of its video
                video = video.repeat_interleave(clips.shape[1])
                clips = clips.flatten(0, 1)
            clips = clips.to(device)
            for source, part in zip(sources, parts):
                layers = source.encode_layers(clips, features.layers)
                part["pooled"].append(torch.cat([t.mean(1) for t in layers], dim=-1).float().cpu())
                if tokens:  # half precision: the token cache is the largest thing a probe run keeps
                    part["tokens"].append(torch.cat(layers, dim=-1).half().cpu())
                part["video"].append(video)
    for source in sources:
        source.to(torch.device("cpu"))
    skipped = sorted(skips.reasons.items())
    if len(skipped) == len(indices):
        first_path, reason = skipped[0]
        raise DataError(f"{dataset.list_path}: none of the {len(indices)} videos could be read (first: {first_path}: {reason})")
    return [Features(torch.cat(p["pooled"]), torch.cat(p["tokens"]) if tokens else None, torch.cat(p["video"]), skipped)
            for p in parts]


def save_features(path: Path, feats: Features) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save({"pooled": feats.pooled, "tokens": feats.tokens, "video": feats.video, "skipped": feats.skipped}, tmp)
    os.replace(tmp, path)


def read_features(path: Path) -> Features:
    d = torch.load(path, map_location="cpu", weights_only=True)
    return Features(d["pooled"], d["tokens"], d["video"], [tuple(s) for s in d["skipped"]])


def load_or_extract(sources: Sequence[FeatureSource], dataset: VideoDataset, indices: Sequence[int],
                    features: FeatureConfig, tokens: bool, cache_dir: Path, device: torch.device,
                    split: str) -> list[Features]:
    """Features of each source on `indices` of `dataset`: from the cache, else extracted and cached."""
    data_key = data_identity(dataset, indices) + json.dumps([dataset.seed, list(indices)])
    files = [cache_file(cache_dir, s, data_key, features, tokens) for s in sources]
    out: list[Optional[Features]] = [None] * len(sources)
    for i, f in enumerate(files):
        if f.is_file():
            log.info("%s %s features: cached in %s", sources[i].name, split, f)
            out[i] = read_features(f)
    todo = [i for i, feats in enumerate(out) if feats is None]
    if todo:
        names = ", ".join(sorted({sources[i].name for i in todo}))
        made = extract([sources[i] for i in todo], dataset, indices, features, tokens, device, f"features {split} ({names})")
        for i, feats in zip(todo, made):
            save_features(files[i], feats)
            out[i] = feats
    return out


def eval_dataset(list_path: str, features: FeatureConfig, seed: int) -> VideoDataset:
    """A video list read with the eval transform (central crop, no flip)."""
    transform = VideoTransform(crop_size=features.crop_size, train=False)
    return VideoDataset(list_path, frames_per_clip=features.frames_per_clip, frame_step=features.frame_step,
                        clips_per_video=features.clips_per_video, transform=transform, seed=seed)
