"""The pretraining data section of a recipe, and the dataset it describes."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

from omegaconf import MISSING

from .dataset import VideoDataset
from .transforms import VideoTransform


@dataclass
class DataConfig:
    train_list: str = MISSING  # video list: `path label` per line
    frames_per_clip: int = 16
    frame_step: int = 4  # take every n-th frame of the video
    clips_per_video: int = 1
    crop_size: int = 224
    random_resize_scale: Tuple[float, float] = (0.3, 1.0)
    random_resize_aspect_ratio: Tuple[float, float] = (0.75, 1.35)
    horizontal_flip: bool = True
    batch_size: int = 24  # per process
    num_workers: int = 4


def train_dataset(data: DataConfig, seed: int) -> VideoDataset:
    """The training clips: random-resized crops and flips, drawn from (seed, epoch, index)."""
    transform = VideoTransform(
        crop_size=data.crop_size, random_resize_scale=tuple(data.random_resize_scale),
        random_resize_aspect_ratio=tuple(data.random_resize_aspect_ratio), horizontal_flip=data.horizontal_flip,
        train=True,
    )
    return VideoDataset(data.train_list, frames_per_clip=data.frames_per_clip, frame_step=data.frame_step,
                        clips_per_video=data.clips_per_video, transform=transform, seed=seed)
