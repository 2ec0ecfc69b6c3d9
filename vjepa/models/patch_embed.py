"""Tubelet embedding: a clip [B, C, T, H, W] becomes tokens [B, t*h*w, D], t-major."""

import torch.nn as nn
from torch import Tensor


class PatchEmbed3D(nn.Module):
    """One Conv3d whose kernel and stride are a tubelet of tubelet_size frames x patch_size^2 pixels."""

    def __init__(
        self, patch_size: int = 16, tubelet_size: int = 2, in_chans: int = 3, embed_dim: int = 768
    ) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.tubelet_size = tubelet_size
        size = (tubelet_size, patch_size, patch_size)
        self.proj = nn.Conv3d(in_chans, embed_dim, kernel_size=size, stride=size)

    def token_grid(self, x: Tensor) -> tuple[int, int, int]:
        """The (t, h, w) token grid of a clip [B, C, T, H, W]; raises if it does not tile exactly."""
        if x.ndim != 5:
            raise ValueError(f"expected a clip [B, C, T, H, W], got a tensor of shape {tuple(x.shape)}.")
        sizes = {"T (frames)": self.tubelet_size, "H (height)": self.patch_size, "W (width)": self.patch_size}
        for (name, step), length in zip(sizes.items(), x.shape[2:]):
            if length % step:
                raise ValueError(
                    f"input {name} = {length} is not divisible by {step}; "
                    "resize or crop the clip to a multiple of the tubelet/patch size."
                )
        _, _, T, H, W = x.shape
        return T // self.tubelet_size, H // self.patch_size, W // self.patch_size

    def forward(self, x: Tensor) -> Tensor:
        self.token_grid(x)
        return self.proj(x).flatten(2).transpose(1, 2)
