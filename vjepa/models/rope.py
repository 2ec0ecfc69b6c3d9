"""3D rotary position embedding (RoPE), as in V-JEPA 2: position enters attention, not the tokens.

Each head's channels are split in three parts, rotated by the token's time slot, row and column
(channel pairs left over when the head width is not a multiple of 6 are not rotated). Queries and
keys are rotated alike, so attention scores depend on where tokens are relative to each other, and
a token's features carry no absolute position: the same object looks the same wherever it is.

Two variants (`model.pos_embed`):
- `rope`: the textbook rotation: both channels of pair i turn by the pair's frequency f_i, for
  training new models.
- `rope_vjepa2`: the rotation the released V-JEPA 2 models were trained with. Its per-channel
  frequencies are the axis' list f_0..f_{P-1} written twice (channel c of an axis' 2P channels
  uses f_{c mod P}), so the two channels of a pair turn by different angles. The V-JEPA 2 code
  keeps it for compatibility with its weights (its `rotate_queries_or_keys`, PR #15); loading those
  weights with the textbook rotation gives other features, so checkpoints in its layout load with
  this one.
"""

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import Block
from torch import Tensor

Rope = tuple[Tensor, Tensor]  # cos, sin of each channel's angle [B, 1, N, head_dim]
ROPE_VARIANTS = ("rope", "rope_vjepa2")


def rope_angles(idx: Tensor, grid: tuple[int, int, int], head_dim: int, variant: str = "rope",
                base: float = 10000.0) -> Rope:
    """cos and sin of each channel's rotation angle for tokens idx [B, N] (flat indices into a (t, h, w) grid)."""
    if variant not in ROPE_VARIANTS:
        raise ValueError(f"RoPE variant {variant!r}: expected one of {', '.join(ROPE_VARIANTS)}")
    _, h, w = grid
    coords = torch.stack([idx // (h * w), (idx // w) % h, idx % w], dim=-1).float()  # [B, N, 3]
    pairs = head_dim // 6  # channel pairs per axis
    freqs = base ** (-torch.arange(pairs, device=idx.device, dtype=torch.float32) / max(pairs, 1))
    # rope: f_0 f_0 f_1 f_1 ... (a pair turns as one); rope_vjepa2: f_0 f_1 ... f_0 f_1 ... (the released weights')
    per_channel = freqs.repeat_interleave(2) if variant == "rope" else freqs.repeat(2)
    angles = (coords[..., None] * per_channel).flatten(-2)  # [B, N, 3 * 2 * pairs]
    angles = F.pad(angles, (0, head_dim - angles.shape[-1]))  # leftover channels: angle 0
    return angles.cos()[:, None], angles.sin()[:, None]


def apply_rope(x: Tensor, rope: Rope) -> Tensor:
    """Rotate consecutive channel pairs of x [B, heads, N, head_dim]: (a, b) -> (a cos - b sin, b cos + a sin)."""
    cos, sin = rope
    turned = torch.stack([-x[..., 1::2], x[..., 0::2]], dim=-1).flatten(-2)  # each pair (a, b) -> (-b, a)
    return x * cos + turned * sin


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
