"""The V-JEPA predictor: a narrow ViT that fills mask tokens at target positions from context tokens.

Parameter names match the official V-JEPA predictor (facebookresearch/jepa).
"""

import math

import torch
import torch.nn as nn
from timm.layers import trunc_normal_
from torch import Tensor

from vjepa.models.pos_embed import get_3d_sincos_pos_embed, interpolate_pos_embed
from vjepa.models.rope import rope_angles
from vjepa.models.vit import (
    build_blocks,
    check_pos_embed,
    gather_tokens,
    init_weights,
    norm_layer,
    rescale_residual_projections,
    run_blocks,
)


class Predictor(nn.Module):
    """Maps encoder context tokens [B, Nc, D] to predictions of the target tokens [B, Nt, D]."""

    def __init__(
        self,
        img_size: int = 224,
        num_frames: int = 16,
        patch_size: int = 16,
        tubelet_size: int = 2,
        embed_dim: int = 768,
        predictor_embed_dim: int = 384,
        depth: int = 6,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path_rate: float = 0.0,
        uniform_power: bool = False,
        num_mask_tokens: int = 1,
        zero_init_mask_tokens: bool = True,
        use_activation_checkpointing: bool = False,
        pos_embed: str = "sincos",
        copy_context: bool = False,
    ) -> None:
        super().__init__()
        self.rope = check_pos_embed(pos_embed)
        self.num_heads = num_heads
        self.embed_dim = embed_dim
        self.predictor_embed_dim = predictor_embed_dim
        self.depth = depth
        self.use_activation_checkpointing = use_activation_checkpointing
        self.copy_context = copy_context
        self.grid = (num_frames // tubelet_size, img_size // patch_size, img_size // patch_size)
        self.num_patches = math.prod(self.grid)

        self.predictor_embed = nn.Linear(embed_dim, predictor_embed_dim)
        # One learned token per mask configuration (e.g. short- and long-range blocks), as in V-JEPA.
        self.mask_tokens = nn.ParameterList(
            nn.Parameter(torch.zeros(1, 1, predictor_embed_dim)) for _ in range(num_mask_tokens)
        )
        if self.rope:
            self.predictor_pos_embed = None
        else:
            table = get_3d_sincos_pos_embed(predictor_embed_dim, *self.grid, uniform_power=uniform_power)
            self.predictor_pos_embed = nn.Parameter(
                torch.from_numpy(table).float().unsqueeze(0), requires_grad=False
            )
        self.predictor_blocks = build_blocks(
            predictor_embed_dim, depth, num_heads, mlp_ratio, qkv_bias, drop_path_rate, self.rope is not None
        )
        self.predictor_norm = norm_layer(predictor_embed_dim)
        self.predictor_proj = nn.Linear(predictor_embed_dim, embed_dim)

        if not zero_init_mask_tokens:
            for token in self.mask_tokens:
                trunc_normal_(token, std=0.02)
        self.apply(init_weights)
        rescale_residual_projections(self.predictor_blocks)

    def forward(
        self,
        ctx: Tensor,
        ctx_idx: Tensor,
        tgt_idx: Tensor,
        mask_index: int = 0,
        grid: tuple[int, int, int] | None = None,
    ) -> Tensor:
        """Predict target tokens.

        ctx [B, Nc, D] are encoder outputs at token indices ctx_idx [B, Nc]; tgt_idx [B, Nt] are the
        token indices to predict; mask_index picks the mask token; grid (t, h, w) is the clip's token
        grid when it differs from the configured one. Returns [B, Nt, D].
        """
        x = self.predictor_embed(ctx)
        batch, num_targets = tgt_idx.shape
        targets = self.mask_tokens[mask_index].expand(batch, num_targets, -1)
        if self.copy_context:
            src, found = latest_context_source(ctx_idx, tgt_idx, grid or self.grid)
            targets = targets + gather_tokens(x, src) * found.unsqueeze(-1).to(x.dtype)
        rope = None
        if self.rope:
            rope = rope_angles(torch.cat([ctx_idx, tgt_idx], dim=1), grid or self.grid,
                               self.predictor_embed_dim // self.num_heads, self.rope)
        else:
            pos_embed = interpolate_pos_embed(self.predictor_pos_embed, self.grid, grid or self.grid)
            x = x + gather_tokens(pos_embed, ctx_idx)
            targets = targets + gather_tokens(pos_embed, tgt_idx)
        x = torch.cat([x, targets], dim=1)
        x = run_blocks(self.predictor_blocks, x, self.use_activation_checkpointing and self.training, rope)
        x = self.predictor_norm(x[:, -num_targets:])
        return self.predictor_proj(x)


def latest_context_source(ctx_idx: Tensor, tgt_idx: Tensor, grid: tuple[int, int, int]) -> tuple[Tensor, Tensor]:
    """For each target token, the context token at the same spatial position in the latest earlier time slot.

    Indices are flat over the grid (t, h, w). Returns (src [B, Nt], positions in the context list, and
    found [B, Nt], True where such a token exists and False where not: a target in the first slot, or one whose
    spatial position is hidden in every earlier slot, as in a multiblock tube).
    """
    t, h, w = grid
    batch, num_ctx = ctx_idx.shape
    hw = h * w
    # where[b, t, s]: position in the context list of token (t, s), or -1 when it is not context
    where = torch.full((batch, t * hw), -1, dtype=torch.long, device=ctx_idx.device)
    where.scatter_(1, ctx_idx, torch.arange(num_ctx, device=ctx_idx.device).expand(batch, -1))
    where = where.view(batch, t, hw)
    slots = torch.arange(t, device=ctx_idx.device).view(1, t, 1)
    latest = torch.where(where >= 0, slots, -1).cummax(dim=1).values  # latest context slot <= t, or -1
    latest = torch.cat([latest.new_full((batch, 1, hw), -1), latest[:, :-1]], dim=1)  # strictly before t
    source = torch.gather(where, 1, latest.clamp_min(0)).view(batch, t * hw)
    found = latest.view(batch, t * hw) >= 0
    src = torch.gather(source, 1, tgt_idx)
    ok = torch.gather(found, 1, tgt_idx)
    return src.clamp_min(0), ok
