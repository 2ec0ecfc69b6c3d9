"""Encoder, predictor and their building blocks."""

from vjepa.models.patch_embed import PatchEmbed3D
from vjepa.models.pos_embed import get_3d_sincos_pos_embed, interpolate_pos_embed
from vjepa.models.predictor import Predictor
from vjepa.models.vit import ENCODER_SIZES, VisionTransformer, build_encoder

__all__ = [
    "VisionTransformer",
    "Predictor",
    "build_encoder",
    "ENCODER_SIZES",
    "get_3d_sincos_pos_embed",
    "interpolate_pos_embed",
    "PatchEmbed3D",
]
