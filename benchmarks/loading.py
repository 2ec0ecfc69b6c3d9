"""Data benchmark: clips/s of the training loader (decord, crops, batching) against raw decoding.

The videos come from the embedded physics world, generated into a temporary folder. The raw rate
is decord alone decoding the very frames the dataset picks, in one process; the loader's overhead
is how much longer it takes per clip with 0, 1 or 2 workers, over a whole epoch (worker start-up
included, as a training run pays it once per epoch) and after the first batch (the steady state).
"""
from __future__ import annotations

import time
from pathlib import Path

import decord
import numpy as np
import torch

from vjepa.config import load_config
from vjepa.data import VideoDataset, build_loader, sample_clip_indices, train_dataset
from vjepa.train import PretrainConfig
from vjepa.world.generate import WorldConfig, generate_world

REPO = Path(__file__).resolve().parent.parent
RECIPE = REPO / "configs/pretrain/tiny_world.yaml"  # the demo's pretraining recipe: its clips and crops


def make_world(folder: Path, clips: int, frames: int, size: int) -> Path:
    """A world of `clips` training videos of `frames` frames of `size` x `size` pixels."""
    cfg = load_config(WorldConfig, REPO / "configs/world/default.yaml",
                      [f"output={folder}", f"num_train={clips}", "num_val=0", f"frames={frames}", f"size={size}",
                       "workers=2", f"object_size=[2.0,{min(7.0, size / 8)}]"])
    return generate_world(cfg)


def recipe(world: Path, frames: int, crop: int, batch: int) -> PretrainConfig:
    return load_config(PretrainConfig, RECIPE, [
        f"data.train_list={world / 'train.txt'}", f"data.frames_per_clip={frames}", f"data.crop_size={crop}",
        f"data.batch_size={batch}",
    ])


def clip_frames(dataset: VideoDataset, index: int, num_frames: int) -> list[int]:
    """The frame indices the dataset decodes for sample `index`: its first draws from the sample's generator."""
    rng = np.random.default_rng([dataset.seed, dataset.epoch, index])
    indices = sample_clip_indices(num_frames, dataset.frames_per_clip, dataset.frame_step, dataset.clips_per_video, rng)
    return np.unique(indices).tolist()


def raw_decode_rate(dataset: VideoDataset, repeats: int) -> float:
    """Clips/s of decord alone decoding the frames the dataset would, one video after another."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for index, entry in enumerate(dataset.entries):
            video = decord.VideoReader(entry.path, num_threads=1, ctx=decord.cpu(0))
            video.get_batch(clip_frames(dataset, index, len(video))).asnumpy()
        best = min(best, time.perf_counter() - start)
    return len(dataset) / best


def loader_rate(dataset: VideoDataset, batch: int, workers: int, repeats: int) -> dict:
    """Clips/s of the training loader over one epoch, with and without its start-up (the first batch)."""
    best = {"epoch": float("inf"), "after_first_batch": float("inf")}
    clips = first_clips = 0
    for _ in range(repeats):
        start = time.perf_counter()
        loader = iter(build_loader(dataset, batch, num_workers=workers, seed=0, epoch=0))
        first_clips = len(next(loader)["clips"])
        first = time.perf_counter()
        clips = first_clips + sum(len(b["clips"]) for b in loader)
        end = time.perf_counter()
        best = {"epoch": min(best["epoch"], end - start), "after_first_batch": min(best["after_first_batch"], end - first)}
    return {"epoch": clips / best["epoch"], "after_first_batch": (clips - first_clips) / best["after_first_batch"]}


def run(world: Path, frames: int, crop: int, batch: int, repeats: int) -> dict:
    cfg = recipe(world, frames, crop, batch)
    dataset = train_dataset(cfg.data, cfg.seed)
    raw = raw_decode_rate(dataset, repeats)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a worker; during training the main process is busy with the step
    try:
        loaders = {str(workers): loader_rate(dataset, batch, workers, repeats) for workers in (0, 1, 2)}
    finally:
        torch.set_num_threads(threads)
    return {
        "videos": len(dataset), "frames": frames, "frame_step": dataset.frame_step, "crop": crop, "batch": batch,
        "raw_decode_clips_per_s": raw, "loader_clips_per_s": loaders,
        # the loader's time per clip over that of decoding the same frames alone, minus one
        "loader_overhead": {w: {k: raw / rate - 1 for k, rate in r.items()} for w, r in loaders.items()},
    }
