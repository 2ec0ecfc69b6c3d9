"""Clip transforms: one random-resized crop and flip per clip, the same for every frame.

Sampling the box once per clip (not per frame) keeps motion coherent: an object that moves one
pixel between frames still moves one pixel after the crop. The whole clip is resized in a single
`F.interpolate` call, on the uint8 frames (torch's fast path), before the one conversion to float.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def to_unit_clip(frames: torch.Tensor) -> torch.Tensor:
    """uint8 frames [T, H, W, C] -> float clip [C, T, H, W] in [0, 1]."""
    return frames.permute(3, 0, 1, 2).float().div_(255.0)


def sample_crop_box(
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    rng: np.random.Generator,
) -> tuple[int, int, int, int]:
    """A random-resized-crop box (top, left, h, w), sampled as torchvision's RandomResizedCrop does."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = round(math.sqrt(target_area * aspect))
        h = round(math.sqrt(target_area / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return top, left, h, w
    # no sampled box fits (extreme aspect ratios): fall back to the largest central box in range
    frame_ratio = width / height
    if frame_ratio < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif frame_ratio > ratio[1]:
        h, w = height, round(height * ratio[1])
    else:
        h, w = height, width
    return (height - h) // 2, (width - w) // 2, h, w


class VideoTransform:
    """uint8 frames [T, H, W, C] -> normalised float clip [C, T, crop_size, crop_size].

    Train mode: a random-resized crop and a horizontal flip, sampled once per clip from `rng`.
    Eval mode: the central square, resized to crop_size (the same as resizing the short side to
    crop_size and cropping the centre), no flip; `rng` is not used.
    """

    def __init__(
        self,
        crop_size: int = 224,
        random_resize_scale: tuple[float, float] = (0.3, 1.0),
        random_resize_aspect_ratio: tuple[float, float] = (0.75, 1.35),
        horizontal_flip: bool = True,
        mean: tuple[float, ...] = IMAGENET_MEAN,
        std: tuple[float, ...] = IMAGENET_STD,
        train: bool = True,
    ):
        self.crop_size = crop_size
        self.scale = tuple(random_resize_scale)
        self.ratio = tuple(random_resize_aspect_ratio)
        self.horizontal_flip = horizontal_flip
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1, 1)
        self.scale_ = 1.0 / (255.0 * self.std)  # uint8 -> normalised in one multiply-add
        self.shift_ = -self.mean / self.std
        self.train = train

    def __call__(self, frames: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        _, height, width, channels = frames.shape
        if self.train:
            top, left, h, w = sample_crop_box(height, width, self.scale, self.ratio, rng)
            flip = self.horizontal_flip and rng.random() < 0.5
        else:
            side = min(height, width)
            top, left, h, w = (height - side) // 2, (width - side) // 2, side, side
            flip = False
        # [T, C, h, w] as a view: channels-last in memory, the layout of torch's fast uint8 resize
        images = self._resize(frames[:, top : top + h, left : left + w].permute(0, 3, 1, 2))
        if flip:
            images = images.flip(-1)
        # one pass from uint8 to the normalised float clip [C, T, H, W]: (x / 255 - mean) / std
        clip = torch.empty((channels, images.shape[0], self.crop_size, self.crop_size), dtype=torch.float32)
        clip.copy_(images.permute(1, 0, 2, 3))
        return clip.mul_(self.scale_).add_(self.shift_)

    def _resize(self, images: torch.Tensor) -> torch.Tensor:
        """Frames [T, C, h, w] to crop_size, every frame the same way, in one call.

        uint8 frames are resized as uint8 (antialiased bilinear, rounded): several times faster
        than in float, and within one grey level of it.
        """
        size = (self.crop_size, self.crop_size)
        if images.shape[-2:] == size:
            return images
        return F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=True)
