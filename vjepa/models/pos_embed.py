"""Fixed 3D sine-cosine position embeddings for video token grids, and their resizing.

The table follows the official V-JEPA formula (facebookresearch/jepa,
`src/models/utils/pos_embs.py`), so a model built here starts from the same embedding as theirs.
Rows are in the repo-wide token order: t-major, index = t*h*w + y*w + x.
"""

import math

import numpy as np
import torch.nn.functional as F
from torch import Tensor


def get_1d_sincos_pos_embed(embed_dim: int, positions: np.ndarray) -> np.ndarray:
    """Standard 1D embedding [M, embed_dim]: sin in the first half, cos in the second.

    Frequencies are omega_i = 1 / 10000^(2i / embed_dim) for i < embed_dim / 2.
    """
    if embed_dim % 2:
        raise ValueError(f"a 1D sin-cos embedding needs an even size, got {embed_dim}.")
    omega = 1.0 / 10000 ** (np.arange(embed_dim // 2, dtype=np.float64) / (embed_dim / 2))
    angles = np.outer(positions.reshape(-1), omega)
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)


def get_3d_sincos_pos_embed(
    embed_dim: int, grid_t: int, grid_h: int, grid_w: int, uniform_power: bool = False
) -> np.ndarray:
    """Sin-cos table [grid_t*grid_h*grid_w, embed_dim], columns laid out as [time | height | width].

    Split of the channels, as in official V-JEPA:
      - uniform_power=False: time gets embed_dim/2, height and width embed_dim/4 each (each part
        rounded down to an even size; channels left over when embed_dim % 8 != 0 are zero).
      - uniform_power=True: each axis gets 2*ceil(embed_dim/6) channels and the concatenation is
        cut to embed_dim, so the width part loses its last few cos channels when 6 does not
        divide embed_dim.
    """
    t, h, w = np.meshgrid(
        np.arange(grid_t, dtype=np.float64),
        np.arange(grid_h, dtype=np.float64),
        np.arange(grid_w, dtype=np.float64),
        indexing="ij",
    )
    if uniform_power:
        t_dim = h_dim = w_dim = 2 * math.ceil(embed_dim / 6)
    else:
        t_dim = 2 * (embed_dim // 4)
        h_dim = w_dim = 2 * (embed_dim // 8)
    table = np.concatenate(
        [
            get_1d_sincos_pos_embed(t_dim, t),
            get_1d_sincos_pos_embed(h_dim, h),
            get_1d_sincos_pos_embed(w_dim, w),
        ],
        axis=1,
    )[:, :embed_dim]
    padding = np.zeros((table.shape[0], embed_dim - table.shape[1]))
    return np.concatenate([table, padding], axis=1)


def interpolate_pos_embed(
    pos_embed: Tensor, old_grid: tuple[int, int, int], new_grid: tuple[int, int, int]
) -> Tensor:
    """Resize a [1, t*h*w, D] table from old_grid to new_grid (t, h, w) by trilinear interpolation."""
    old_grid, new_grid = tuple(old_grid), tuple(new_grid)
    if old_grid == new_grid:
        return pos_embed
    _, num_tokens, dim = pos_embed.shape
    if num_tokens != math.prod(old_grid):
        raise ValueError(
            f"pos_embed has {num_tokens} tokens but old_grid {old_grid} holds {math.prod(old_grid)}; "
            "pass the grid the table was built for."
        )
    volume = pos_embed.reshape(1, *old_grid, dim).permute(0, 4, 1, 2, 3)
    volume = F.interpolate(volume, size=new_grid, mode="trilinear", align_corners=False)
    return volume.permute(0, 2, 3, 4, 1).reshape(1, -1, dim)
