"""3D rotary position embedding (RoPE), as in V-JEPA 2: position enters attention, not the tokens.

Each head's channels are split in three parts, rotated by the token's time slot, row and column
(channel pairs left over when the head width is not a multiple of 6 are not rotated). Queries and
keys are rotated alike, so attention scores depend on where tokens are relative to each other, and
a token's features carry no absolute position: the same object looks the same wherever it is.
"""

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import Block
from torch import Tensor

Rope = tuple[Tensor, Tensor]  # cos, sin [B, 1, N, head_dim // 2]


def rope_angles(idx: Tensor, grid: tuple[int, int, int], head_dim: int, base: float = 10000.0) -> Rope:
    """cos and sin of the rotation angles of tokens idx [B, N] (flat indices into a (t, h, w) grid)."""
    _, h, w = grid
    coords = torch.stack([idx // (h * w), (idx // w) % h, idx % w], dim=-1).float()  # [B, N, 3]
    per_axis = head_dim // 6  # channel pairs per axis
    freqs = base ** (-torch.arange(per_axis, device=idx.device, dtype=torch.float32) / max(per_axis, 1))
    angles = (coords[..., None] * freqs).flatten(-2)  # [B, N, 3 * per_axis]
    angles = F.pad(angles, (0, head_dim // 2 - angles.shape[-1]))  # leftover pairs: angle 0
    return angles.cos()[:, None], angles.sin()[:, None]


def apply_rope(x: Tensor, rope: Rope) -> Tensor:
    """Rotate consecutive channel pairs of x [B, heads, N, head_dim]."""
    cos, sin = rope
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).flatten(-2)


class RopeBlock(Block):
    """A timm Block (same parameters and names) whose attention rotates queries and keys by `rope`."""

    def forward(self, x: Tensor, rope: Rope | None = None) -> Tensor:
        x = x + self.drop_path1(self.ls1(self.attend(self.norm1(x), rope)))
        return x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))

    def attend(self, x: Tensor, rope: Rope | None) -> Tensor:
        attn = self.attn
        batch, tokens, _ = x.shape
        q, k, v = attn.qkv(x).reshape(batch, tokens, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        q, k = attn.q_norm(q), attn.k_norm(k)
        if rope is not None:
            q, k = apply_rope(q, rope), apply_rope(k, rope)
        x = F.scaled_dot_product_attention(q, k, v, dropout_p=attn.attn_drop.p if self.training else 0.0)
        return attn.proj_drop(attn.proj(attn.norm(x.transpose(1, 2).reshape(batch, tokens, -1))))
