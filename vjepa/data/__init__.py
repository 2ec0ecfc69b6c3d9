"""Video data: `path label` lists, clip transforms, the decord dataset and its loader."""
from .dataset import (
    Skipped,
    SkipTracker,
    VideoDataset,
    batches_per_epoch,
    build_loader,
    collate_videos,
    sample_clip_indices,
)
from .config import DataConfig, train_dataset
from .transforms import IMAGENET_MEAN, IMAGENET_STD, VideoTransform, sample_crop_box, to_unit_clip
from .video_list import DataError, VideoEntry, read_video_list

__all__ = [
    "DataConfig",
    "DataError",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "SkipTracker",
    "Skipped",
    "VideoDataset",
    "VideoEntry",
    "VideoTransform",
    "batches_per_epoch",
    "build_loader",
    "collate_videos",
    "read_video_list",
    "sample_clip_indices",
    "sample_crop_box",
    "to_unit_clip",
    "train_dataset",
]
