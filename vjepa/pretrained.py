"""Networks rebuilt from any checkpoint, for evaluation: the one place every evaluation loads them.

A checkpoint of this project carries its resolved `config`, from which its architecture, clip
geometry, masks and objective are read. A checkpoint in the official V-JEPA layout
(facebookresearch/jepa: `encoder`, `predictor`, `target_encoder`, with `module.` prefixes) carries
none: its architecture is read from its tensors (a V-JEPA 2 one, without a position table, gets the
released models' RoPE), the clip settings and what shapes cannot tell (heads) come from the caller's
`fallback`, and the number of its predictor's mask tokens is read from the weights. Either way
`load_pretrained` builds the networks the checkpoint's objective trains and loads them strictly,
naming every missing or mis-shaped tensor; position tables made for another clip size are resized.
`random_pretrained` gives the same architecture at a seeded random init, the control every
evaluation measures chance with.
"""
from __future__ import annotations

import logging
import math
import os
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Optional

import torch
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from torch import nn

from vjepa.checkpoint import CheckpointError, load_checkpoint, load_module_state, strip_prefixes
from vjepa.models.config import ModelConfig, token_grid
from vjepa.models.pos_embed import interpolate_pos_embed
from vjepa.models.videomae import VideoMAEDecoder, VideoMAEEncoder, load_videomae
from vjepa.models.vit import ENCODER_SIZES
from vjepa.objectives import OBJECTIVES, build_objective

log = logging.getLogger("vjepa.pretrained")

RETIRED_TAG = "experiments-2026-11"
#: model options deleted after RETIRED_TAG, with the value that meant "off": a checkpoint that has them off
#: loads as before; one that has them on was a different network, evaluated only at that tag
RETIRED_MODEL_KEYS = {"pred_residual": False}
NETWORKS = ("auto", "target_encoder", "encoder")


@dataclass
class ClipConfig:
    """The clips a checkpoint without a `config` was trained on (official V-JEPA: 16 frames, every 4th, 224 px)."""

    frames_per_clip: int = 16
    frame_step: int = 4
    crop_size: int = 224


@dataclass
class Architecture:
    """What a checkpoint's networks are, and the clips they were trained on."""

    model: ModelConfig
    frames_per_clip: int
    frame_step: int
    crop_size: int
    objective: str = "jepa"
    masks: list = field(default_factory=list)  # mask types in the predictor's token order; [] when unknown
    num_mask_tokens: int = 1

    @property
    def grid(self) -> tuple[int, int, int]:
        return token_grid(self.frames_per_clip, self.crop_size, self.model)

    def identity(self) -> dict:
        """Everything the networks' outputs depend on (for caches)."""
        return asdict(self)


def fallback_architecture(model: ModelConfig, clip: ClipConfig | None = None, frames_per_clip: int | None = None,
                          frame_step: int | None = None, crop_size: int | None = None) -> Architecture:
    """The architecture a config-less checkpoint (or a random model without one) is built with."""
    clip = clip or ClipConfig()
    return Architecture(model=OmegaConf.to_object(model) if OmegaConf.is_config(model) else model,
                        frames_per_clip=frames_per_clip or clip.frames_per_clip,
                        frame_step=frame_step or clip.frame_step, crop_size=crop_size or clip.crop_size)


def checkpoint_model(model: dict, source: str) -> ModelConfig:
    """The `model` section of a checkpoint's config as a ModelConfig; retired options must be off."""
    model = dict(model)
    for key, off in RETIRED_MODEL_KEYS.items():
        if key in model and model.pop(key) != off:
            raise CheckpointError(
                f"{source}: trained with model.{key} on, an option retired after the git tag {RETIRED_TAG}; "
                f"evaluate it there (git checkout {RETIRED_TAG})")
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(ModelConfig), model))
    except OmegaConfBaseException as exc:
        raise CheckpointError(f"{source}: its config's 'model' does not fit this version's ModelConfig ({exc})") from exc


def mask_tokens_in(state: dict | None) -> int:
    """How many mask tokens a predictor's state dict holds (0 without one)."""
    if not state:
        return 0
    found = {int(m.group(1)) for k in strip_prefixes(state) if (m := re.fullmatch(r"mask_tokens\.(\d+)", k))}
    return max(found) + 1 if found else 0


#: attention heads of the published encoders whose width alone does not give them (V-JEPA 2's ViT-g: 22 heads of
#: 64 channels, where vit_giant has 16), by (width, pos_embed); and V-JEPA 2's predictors (384 wide, 12 heads)
PUBLISHED_HEADS = {(1408, "rope_vjepa2"): 22}
PUBLISHED_PREDICTOR_HEADS = {"rope_vjepa2": 12}


def blocks_in(state: dict, prefix: str) -> int:
    """How many transformer blocks `prefix`.N.* a state dict holds."""
    found = {int(m.group(1)) for k in state if (m := re.match(rf"{re.escape(prefix)}\.(\d+)\.", k))}
    return max(found) + 1 if found else 0


def model_from_tensors(ckpt: dict, source: str, given: ModelConfig) -> ModelConfig:
    """The architecture of a checkpoint without a `config` (official V-JEPA, V-JEPA 2), read from its tensors:
    width, patch and tubelet from the patch embedding, depth from the blocks, the position scheme from whether
    a position table is there (none: V-JEPA 2's released RoPE), the predictor's width and depth likewise.
    Attention heads are not in the shapes: `given` (the evaluation config's `model`) or the published value."""
    _, encoder = encoder_state(ckpt, "auto", source)
    proj = encoder.get("patch_embed.proj.weight")
    if proj is None or proj.ndim != 5:
        raise CheckpointError(f"{source}: no 3D patch embedding (patch_embed.proj.weight [D, C, t, p, p]) in its "
                              f"encoder, so its architecture cannot be read; is it a video encoder?")
    width, _, tubelet, patch, _ = proj.shape
    pos_embed = "sincos" if "pos_embed" in encoder else "rope_vjepa2"
    named = [n for n, size in ENCODER_SIZES.items() if size["embed_dim"] == width]
    name = given.name if given.name in named else (named[0] if named else given.name)
    heads = given.num_heads or PUBLISHED_HEADS.get((width, pos_embed)) or (
        ENCODER_SIZES[name]["num_heads"] if named else None)
    if heads is None or width % heads:
        raise CheckpointError(f"{source}: a {width}-wide encoder; its number of attention heads is not in the file: "
                              f"set model.num_heads")
    model = replace(given, name=name, embed_dim=width, depth=blocks_in(encoder, "blocks"), num_heads=heads,
                    patch_size=patch, tubelet_size=tubelet, pos_embed=pos_embed)
    predictor = strip_prefixes(ckpt.get("predictor") or {})
    if "predictor_embed.weight" in predictor:
        model = replace(model, pred_embed_dim=predictor["predictor_embed.weight"].shape[0],
                        pred_depth=blocks_in(predictor, "predictor_blocks"),
                        pred_num_heads=given.pred_num_heads or PUBLISHED_PREDICTOR_HEADS.get(pos_embed))
    log.info("%s: no config; read from its tensors: %s %d wide, %d blocks, %d heads, patch %d, tubelet %d, %s",
             source, name, width, model.depth, heads, patch, tubelet, pos_embed)
    return model


def architecture(ckpt: dict | None, source: str, fallback: Architecture) -> Architecture:
    """A checkpoint's architecture: from its own `config` (ours), else from its tensors (official V-JEPA,
    V-JEPA 2), else `fallback` (random init without a checkpoint)."""
    if ckpt is None or "config" not in ckpt:
        tokens = mask_tokens_in(ckpt.get("predictor")) if ckpt else 0
        model = model_from_tensors(ckpt, source, fallback.model) if ckpt else fallback.model
        return Architecture(model=model, frames_per_clip=fallback.frames_per_clip,
                            frame_step=fallback.frame_step, crop_size=fallback.crop_size, objective="jepa",
                            masks=[], num_mask_tokens=tokens or fallback.num_mask_tokens)
    config = ckpt["config"]
    try:
        data, masks = config["data"], [m["type"] for m in config.get("masks", [])]
        arch = Architecture(model=checkpoint_model(config["model"], source), frames_per_clip=int(data["frames_per_clip"]),
                            frame_step=int(data["frame_step"]), crop_size=int(data["crop_size"]),
                            objective=config.get("objective", "jepa"), masks=masks, num_mask_tokens=max(1, len(masks)))
    except (KeyError, TypeError) as exc:
        raise CheckpointError(f"{source}: its 'config' has no {exc} (keys: {', '.join(sorted(config))})") from exc
    if arch.objective not in OBJECTIVES:
        raise CheckpointError(f"{source}: trained with objective {arch.objective!r}, which this version does not know "
                              f"({', '.join(OBJECTIVES)})")
    return arch


# --------------------------------------------------------------------------- networks


@dataclass
class Pretrained:
    """Frozen networks of one checkpoint (or one random init) and their architecture."""

    encoder: nn.Module  # the target encoder where the checkpoint has one (see `network`)
    predictor: Optional[nn.Module]  # None unless asked for, and for objectives without one (denoising)
    arch: Architecture
    network: str  # which of the checkpoint's networks `encoder` is: target_encoder | encoder | random
    source: str  # the checkpoint file, or "random init, seed N"


def build(arch: Architecture) -> nn.Module:
    """The objective `arch` names with fresh networks (a pixel model's predictor decodes pixels)."""
    return build_objective(arch.objective, arch.model, arch.frames_per_clip, arch.crop_size, arch.num_mask_tokens)


def frozen(module: Optional[nn.Module]) -> Optional[nn.Module]:
    return None if module is None else module.eval().requires_grad_(False)


def random_pretrained(arch: Architecture, seed: int) -> Pretrained:
    """The architecture at random init: a function of the seed, so its features can be cached."""
    torch.manual_seed(seed)
    objective = build(arch)
    return Pretrained(frozen(objective.encoder), frozen(getattr(objective, "predictor", None)), arch, "random",
                      f"random init, seed {seed}")


def encoder_state(ckpt: dict, network: str, source: str) -> tuple[str, dict]:
    """The state dict of the checkpoint's `network` ('auto': target_encoder if present, else encoder)."""
    if network not in NETWORKS:
        raise ValueError(f"network {network!r}: expected one of {', '.join(NETWORKS)}")
    if network == "auto":
        network = "target_encoder" if "target_encoder" in ckpt else "encoder"
    if network not in ckpt:
        hint = " (an original VideoMAE checkpoint? those are read with kind: videomae)" if "model" in ckpt else ""
        raise CheckpointError(f"{source}: no '{network}' in the checkpoint (keys: {', '.join(sorted(ckpt))}){hint}")
    return network, strip_prefixes(ckpt[network])


def load_pretrained(path: str | Path, fallback: Architecture, network: str = "auto",
                    with_predictor: bool = False) -> Pretrained:
    """The encoder (and, with `with_predictor`, the predictor) of a checkpoint, ours or official, frozen."""
    source = str(path)
    ckpt = load_checkpoint(path)
    arch = architecture(ckpt, source, fallback)
    objective = build(arch)
    which, state = encoder_state(ckpt, network, source)
    load_module_state(objective.encoder, fit_pos_embed(state, "pos_embed", objective.encoder, source), which, source)
    predictor = None
    if with_predictor:
        predictor = getattr(objective, "predictor", None)
        if predictor is None:
            raise ValueError(f"{source}: trained with objective '{arch.objective}', which learns no predictor")
        if "predictor" not in ckpt:
            raise CheckpointError(f"{source}: no 'predictor' in the checkpoint (keys: {', '.join(sorted(ckpt))})")
        state = strip_prefixes(ckpt["predictor"])
        load_module_state(predictor, fit_pos_embed(state, "predictor_pos_embed", predictor, source), "predictor", source)
    return Pretrained(frozen(objective.encoder), frozen(predictor), arch, which, source)


def load_videomae_pretrained(path: str | Path, fallback: Architecture, with_predictor: bool = False,
                             seed: Optional[int] = None) -> Pretrained:
    """A published VideoMAE (a Hugging Face folder or an original checkpoint file, vjepa/models/videomae.py) as
    frozen networks with this project's interfaces; its decoder is the predictor. Clip length and size come
    from a folder's config.json, from `fallback` for a file; the frame step from `fallback` (neither says).
    With `seed`: its architecture at a seeded random init (the chance control)."""
    model, pretraining = load_videomae(path, fallback.frames_per_clip, fallback.crop_size, with_predictor, seed,
                                       (fallback.model.num_heads, fallback.model.pred_num_heads))
    encoder = VideoMAEEncoder(model)
    cfg = model.config
    named = [n for n, size in ENCODER_SIZES.items() if size["embed_dim"] == encoder.embed_dim]
    arch_model = ModelConfig(name=named[0] if named else fallback.model.name, patch_size=encoder.patch_size,
                             tubelet_size=encoder.tubelet_size, embed_dim=encoder.embed_dim, depth=encoder.depth,
                             num_heads=encoder.num_heads)
    arch = Architecture(model=arch_model, frames_per_clip=cfg.num_frames, frame_step=fallback.frame_step,
                        crop_size=cfg.image_size, objective="videomae", masks=["tube"])
    predictor = VideoMAEDecoder(pretraining, encoder.grid) if with_predictor else None
    log.info("%s: VideoMAE, %d wide, %d blocks, patch %d, tubelet %d, %d frames at %d px%s", path, encoder.embed_dim,
             encoder.depth, encoder.patch_size, encoder.tubelet_size, cfg.num_frames, cfg.image_size,
             ", with its decoder" if predictor is not None else "")
    if seed is not None:
        log.info("%s: its architecture at random init, seed %d", path, seed)
    which, source = ("encoder", str(path)) if seed is None else ("random", f"random init of {path}, seed {seed}")
    return Pretrained(frozen(encoder), frozen(predictor), arch, which, source)


def file_identity(path: str | Path) -> dict:
    """A checkpoint file (or a model folder, file by file) as it is now (for caches): a rewritten checkpoint is
    another model."""
    path = Path(path)
    if path.is_dir():
        return {"path": str(path.resolve()), "files": {f.name: file_identity(f) for f in sorted(path.iterdir())
                                                       if f.is_file()}}
    st = os.stat(path)
    return {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


# --------------------------------------------------------------------------- position tables


def infer_grid(num_tokens: int, grid: tuple[int, int, int]) -> tuple[int, int, int]:
    """The (t, h, w) grid of a position table of num_tokens: the model's frame grid with more or fewer
    time slots if it fits, else the model's time slots with square frames of another size."""
    t, h, w = grid
    if num_tokens % (h * w) == 0:
        return num_tokens // (h * w), h, w
    side = math.isqrt(num_tokens // t)
    if t * side * side == num_tokens:
        return t, side, side
    raise ValueError(f"cannot read {num_tokens} tokens as a grid with {h}x{w} frames or {t} time slots")


def fit_pos_embed(state: dict, key: str, network: nn.Module, source: str) -> dict:
    """Resize the table `key` of a state dict made for another clip size to the network's grid (same width only)."""
    table, own = state.get(key), getattr(network, key, None)
    if table is None or own is None or table.shape == own.shape or table.ndim != 3 or table.shape[-1] != own.shape[-1]:
        return state  # identical, or a mismatch load_module_state reports by name
    try:
        old_grid = infer_grid(table.shape[1], network.grid)
    except ValueError as exc:
        raise CheckpointError(f"{source}: {key} {tuple(table.shape)}: {exc}") from exc
    log.info("%s: %s resized from grid %s to %s", source, key, old_grid, network.grid)
    return {**state, key: interpolate_pos_embed(table.float(), old_grid, network.grid)}
