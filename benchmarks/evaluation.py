"""Evaluation benchmark: feature extraction clips/s, and the time to fit the linear and attentive probes.

Features are those `vjepa probe` extracts (evals/features.py) from a random encoder of the demo's
architecture, on the benchmark's world; the probes classify the number of objects in each clip.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from evals.attentive import AttentiveConfig, attentive_classifier
from evals.features import FeatureConfig, SourceConfig, build_sources, eval_dataset, extract
from evals.linear import LinearConfig, linear_classifier
from evals.tasks import class_indices, holdout_videos
from vjepa.models.config import ModelConfig

REPO = Path(__file__).resolve().parent.parent


def run(world: Path, frames: int, crop: int, batch: int, workers: int, attentive_epochs: int,
        device: torch.device) -> dict:
    recipe = OmegaConf.load(REPO / "configs/pretrain/tiny_world.yaml")  # the demo's architecture
    model = OmegaConf.merge(OmegaConf.structured(ModelConfig), recipe.model)
    features = FeatureConfig(frames_per_clip=frames, frame_step=2, crop_size=crop, batch_size=batch,
                             num_workers=workers)
    dataset = eval_dataset(str(world / "train.txt"), features, seed=0)
    indices = list(range(len(dataset)))
    sources = build_sources("random", SourceConfig(kind="random"), model, features)

    start = time.perf_counter()
    feats = extract(sources, dataset, indices, features, True, device, "benchmark features")[0]
    extract_s = time.perf_counter() - start

    labels = np.array([dataset.entries[i].label for i in feats.video.tolist()])
    y = class_indices(labels, np.unique(labels))
    held = holdout_videos(feats.video.numpy(), 0.2, 0)
    pooled = feats.pooled.numpy()
    start = time.perf_counter()
    linear_classifier(pooled, y, held, pooled, LinearConfig())
    linear_s = time.perf_counter() - start
    cfg = AttentiveConfig(epochs=attentive_epochs)
    start = time.perf_counter()
    attentive_classifier(feats.tokens, y, held, feats.tokens, cfg, device, 0)
    attentive_s = time.perf_counter() - start
    return {
        "encoder": model.name, "depth": model.depth, "clips": len(indices), "frames": frames, "crop": crop,
        "tokens": int(feats.tokens.shape[1]), "workers": workers,
        "extract_clips_per_s": len(indices) / extract_s,
        "linear_fit_s": linear_s, "linear_fits": len(LinearConfig().Cs) + 1,
        "attentive_fit_s": attentive_s, "attentive_probes": len(cfg.lrs) * len(cfg.weight_decays),
        "attentive_epochs": attentive_epochs,
    }
