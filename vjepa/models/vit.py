"""The V-JEPA video encoder: tubelet embedding, fixed sin-cos positions, timm ViT blocks.

Parameter names match the official V-JEPA encoder (facebookresearch/jepa), so its checkpoints
load here and ours load there. `pos_embed="rope"` (or `"rope_vjepa2"`, the released V-JEPA 2 models'
variant) swaps the added sin-cos table for a 3D rotary embedding inside attention
(vjepa/models/rope.py); such an encoder has no `pos_embed`.
"""

import math
from collections.abc import Sequence
from functools import partial

import torch
import torch.nn as nn
import torch.utils.checkpoint
from timm.layers import trunc_normal_
from timm.models.vision_transformer import Block
from torch import Tensor

from vjepa.models.patch_embed import PatchEmbed3D
from vjepa.models.pos_embed import get_3d_sincos_pos_embed, interpolate_pos_embed
from vjepa.models.rope import ROPE_VARIANTS, Rope, RopeBlock, rope_angles

norm_layer = partial(nn.LayerNorm, eps=1e-6)

ENCODER_SIZES: dict[str, dict] = {
    "vit_micro": dict(embed_dim=96, depth=4, num_heads=3, mlp_ratio=4.0),
    "vit_tiny": dict(embed_dim=192, depth=12, num_heads=3, mlp_ratio=4.0),
    "vit_small": dict(embed_dim=384, depth=12, num_heads=6, mlp_ratio=4.0),
    "vit_base": dict(embed_dim=768, depth=12, num_heads=12, mlp_ratio=4.0),
    "vit_large": dict(embed_dim=1024, depth=24, num_heads=16, mlp_ratio=4.0),
    "vit_huge": dict(embed_dim=1280, depth=32, num_heads=16, mlp_ratio=4.0),
    "vit_giant": dict(embed_dim=1408, depth=40, num_heads=16, mlp_ratio=48 / 11),
    "vit_gigantic": dict(embed_dim=1664, depth=48, num_heads=16, mlp_ratio=64 / 13),
}


POS_EMBEDS = ("sincos", *ROPE_VARIANTS)


def build_blocks(
    dim: int, depth: int, num_heads: int, mlp_ratio: float, qkv_bias: bool, drop_path_rate: float,
    rope: bool = False,
) -> nn.ModuleList:
    """`depth` pre-norm timm Blocks (SDPA attention; RoPE blocks with `rope`); stochastic depth grows
    linearly to drop_path_rate."""
    rates = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
    block = RopeBlock if rope else Block
    return nn.ModuleList(
        block(dim, num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, drop_path=rate, norm_layer=norm_layer)
        for rate in rates
    )


def check_pos_embed(pos_embed: str) -> str | None:
    """The RoPE variant (None for the sin-cos table); a clear error for an unknown kind."""
    if pos_embed not in POS_EMBEDS:
        raise ValueError(f"model.pos_embed={pos_embed!r}: expected one of {', '.join(POS_EMBEDS)}")
    return None if pos_embed == "sincos" else pos_embed


def init_weights(module: nn.Module) -> None:
    """V-JEPA init: truncated normal (std 0.02) Linear/Conv3d weights, zero biases, unit LayerNorms."""
    if isinstance(module, (nn.Linear, nn.Conv3d)):
        trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


@torch.no_grad()
def rescale_residual_projections(blocks: nn.ModuleList) -> None:
    """Divide each block's residual-branch output weights by sqrt(2 * layer_id).

    Deeper blocks then start with smaller updates, keeping the residual stream's scale steady.
    """
    for layer_id, block in enumerate(blocks, start=1):
        block.attn.proj.weight.div_(math.sqrt(2.0 * layer_id))
        block.mlp.fc2.weight.div_(math.sqrt(2.0 * layer_id))


def gather_tokens(x: Tensor, idx: Tensor) -> Tensor:
    """Pick tokens x[b, idx[b, k]] from x [B, N, D] (or [1, N, D], shared) with idx [B, K] -> [B, K, D]."""
    x = x.expand(idx.shape[0], -1, -1)
    return torch.gather(x, 1, idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def run_blocks(blocks: nn.ModuleList, x: Tensor, checkpointing: bool, rope: Rope | None = None) -> Tensor:
    """Apply the blocks in order; with checkpointing, activations are recomputed in backward to save memory."""
    args = () if rope is None else (rope,)
    for block in blocks:
        x = torch.utils.checkpoint.checkpoint(block, x, *args, use_reentrant=False) if checkpointing else block(x, *args)
    return x


class VisionTransformer(nn.Module):
    """Video ViT; `forward(x, masks)` encodes only the kept tokens, so masked tubes never reach the blocks."""

    def __init__(
        self,
        img_size: int = 224,
        num_frames: int = 16,
        patch_size: int = 16,
        tubelet_size: int = 2,
        in_chans: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path_rate: float = 0.0,
        uniform_power: bool = False,
        use_activation_checkpointing: bool = False,
        pos_embed: str = "sincos",
    ) -> None:
        super().__init__()
        self.rope = check_pos_embed(pos_embed)
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.depth = depth
        self.patch_size = patch_size
        self.tubelet_size = tubelet_size
        self.use_activation_checkpointing = use_activation_checkpointing
        self.grid = (num_frames // tubelet_size, img_size // patch_size, img_size // patch_size)
        self.num_patches = math.prod(self.grid)

        self.patch_embed = PatchEmbed3D(patch_size, tubelet_size, in_chans, embed_dim)
        if self.rope:
            self.pos_embed = None
        else:
            table = get_3d_sincos_pos_embed(embed_dim, *self.grid, uniform_power=uniform_power)
            # A frozen Parameter rather than a buffer: the same state-dict entry as official checkpoints.
            self.pos_embed = nn.Parameter(torch.from_numpy(table).float().unsqueeze(0), requires_grad=False)
        self.blocks = build_blocks(embed_dim, depth, num_heads, mlp_ratio, qkv_bias, drop_path_rate, self.rope is not None)
        self.norm = norm_layer(embed_dim)

        self.apply(init_weights)
        rescale_residual_projections(self.blocks)

    def token_grid(self, x: Tensor) -> tuple[int, int, int]:
        """The (t, h, w) token grid of a clip [B, C, T, H, W]."""
        return self.patch_embed.token_grid(x)

    def embed(self, x: Tensor, masks: Tensor | None = None) -> Tensor:
        """Tokens with positions added (none with RoPE), [B, N, D], or only the kept ones [B, K, D] when masks
        is given."""
        grid = self.token_grid(x)
        x = self.patch_embed(x)
        if not self.rope:
            x = x + interpolate_pos_embed(self.pos_embed, self.grid, grid)
        return x if masks is None else gather_tokens(x, masks)

    def forward(self, x: Tensor, masks: Tensor | None = None) -> Tensor:
        """Encode a clip [B, C, T, H, W]; masks [B, K] are token indices to keep. Returns [B, K or N, D]."""
        return self.forward_tokens(self.embed(x, masks), masks, self.token_grid(x))

    def token_rope(self, x: Tensor, idx: Tensor | None, grid: tuple[int, int, int] | None) -> Rope | None:
        """RoPE angles for tokens x [B, K, D] at grid indices idx (None: the whole grid); None for sin-cos."""
        if not self.rope:
            return None
        if idx is None:
            idx = torch.arange(x.shape[1], device=x.device).expand(x.shape[0], -1)
        return rope_angles(idx, grid or self.grid, self.embed_dim // self.num_heads, self.rope)

    def forward_tokens(self, x: Tensor, idx: Tensor | None = None, grid: tuple[int, int, int] | None = None) -> Tensor:
        """The blocks and final norm on tokens from `embed` [B, K, D] (several masks can share one embedding);
        idx [B, K] are their grid indices (None: the whole grid), which RoPE needs."""
        rope = self.token_rope(x, idx, grid)
        x = run_blocks(self.blocks, x, self.use_activation_checkpointing and self.training, rope)
        return self.norm(x)

    def get_intermediate_layers(
        self, x: Tensor, n: int | Sequence[int] = 1, masks: Tensor | None = None
    ) -> list[Tensor]:
        """Normed outputs of the last n blocks (n an int) or of the blocks indexed by n, in block order."""
        wanted = set(range(self.depth - n, self.depth)) if isinstance(n, int) else {i % self.depth for i in n}
        grid = self.token_grid(x)
        x = self.embed(x, masks)
        args = () if not self.rope else (self.token_rope(x, masks, grid),)
        outputs = []
        # Blocks after the last wanted one cannot change the result, so they are skipped.
        for i, block in enumerate(self.blocks[: max(wanted, default=-1) + 1]):
            x = block(x, *args)
            if i in wanted:
                outputs.append(self.norm(x))
        return outputs


def build_encoder(name: str, **kwargs) -> VisionTransformer:
    """An encoder of a named size; kwargs override the size's defaults unless they are None."""
    if name not in ENCODER_SIZES:
        raise ValueError(f"unknown encoder {name!r}; choose one of {', '.join(ENCODER_SIZES)}.")
    overrides = {key: value for key, value in kwargs.items() if value is not None}
    return VisionTransformer(**{**ENCODER_SIZES[name], **overrides})
