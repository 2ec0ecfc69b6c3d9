"""The model's config and the builders that turn it into an encoder and a predictor.

A `ModelConfig` names the architecture; the clip it reads (frames per clip, crop size) fixes the
token grid. Training, the evaluations, the benchmarks and checkpoint loading all build their
networks here, so a checkpoint's `config` rebuilds exactly the networks that wrote it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from vjepa.config import choice
from vjepa.models.predictor import Predictor
from vjepa.models.vit import ENCODER_SIZES, POS_EMBEDS, VisionTransformer, build_encoder


@dataclass
class ModelConfig:
    name: str = choice("vit_large", ENCODER_SIZES)  # a named size: vit_micro ... vit_gigantic
    patch_size: int = 16
    tubelet_size: int = 2
    embed_dim: Optional[int] = None  # null: the named size's value
    depth: Optional[int] = None
    num_heads: Optional[int] = None
    uniform_power: bool = True
    # sincos: V-JEPA's fixed table added to the tokens; rope: a 3D rotary embedding in every attention of the
    # encoder and the predictor (features carry no absolute position); rope_vjepa2: the rotary variant the
    # released V-JEPA 2 weights were trained with (vjepa/models/rope.py), for loading them
    pos_embed: str = choice("sincos", POS_EMBEDS)
    drop_path_rate: float = 0.0
    pred_depth: int = 12
    pred_embed_dim: int = 384
    pred_num_heads: Optional[int] = None  # null: the encoder's
    zero_init_mask_tokens: bool = True
    # the predictor's query for a target token starts from the context token at the same spatial position in
    # the latest earlier time slot (with the future mask: the last seen slot), so copying is its starting point
    pred_copy_context: bool = False
    activation_checkpointing: bool = False


def token_grid(frames_per_clip: int, crop_size: int, model: ModelConfig) -> tuple[int, int, int]:
    """The (t, h, w) token grid of a clip, or an error naming the key that does not divide."""
    for key, size, unit, what in (("data.frames_per_clip", frames_per_clip, model.tubelet_size, "tubelet"),
                                  ("data.crop_size", crop_size, model.patch_size, "patch")):
        if size % unit:
            raise ValueError(f"{key}={size} is not divisible by the model's {what} size {unit}")
    n = crop_size // model.patch_size
    return frames_per_clip // model.tubelet_size, n, n


def build_encoder_from(model: ModelConfig, frames_per_clip: int, crop_size: int) -> VisionTransformer:
    """The encoder `model` describes, for clips of `frames_per_clip` frames at `crop_size` pixels."""
    token_grid(frames_per_clip, crop_size, model)
    return build_encoder(
        model.name, img_size=crop_size, num_frames=frames_per_clip, patch_size=model.patch_size,
        tubelet_size=model.tubelet_size, embed_dim=model.embed_dim, depth=model.depth, num_heads=model.num_heads,
        uniform_power=model.uniform_power, drop_path_rate=model.drop_path_rate,
        use_activation_checkpointing=model.activation_checkpointing, pos_embed=model.pos_embed,
    )


def build_networks(model: ModelConfig, frames_per_clip: int, crop_size: int,
                   num_mask_tokens: int) -> tuple[VisionTransformer, Predictor]:
    """Encoder and predictor; the predictor has one mask token per mask configuration."""
    encoder = build_encoder_from(model, frames_per_clip, crop_size)
    predictor = Predictor(
        img_size=crop_size, num_frames=frames_per_clip, patch_size=model.patch_size, tubelet_size=model.tubelet_size,
        embed_dim=encoder.embed_dim, predictor_embed_dim=model.pred_embed_dim, depth=model.pred_depth,
        num_heads=model.pred_num_heads or encoder.num_heads, uniform_power=model.uniform_power,
        drop_path_rate=model.drop_path_rate, num_mask_tokens=max(1, num_mask_tokens),
        zero_init_mask_tokens=model.zero_init_mask_tokens,
        use_activation_checkpointing=model.activation_checkpointing, pos_embed=model.pos_embed,
        copy_context=model.pred_copy_context,
    )
    return encoder, predictor
