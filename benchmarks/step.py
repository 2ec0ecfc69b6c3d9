"""Training-step benchmarks: throughput, memory and MFU per model size and objective, and token scaling.

A step is built through the real code (`build_objective`, `build_optimizer`, `train_step`) on
random clips, with masks from the objective's own recipe sampled once, so every timed step does the
same work. Mask sampling and data loading are not part of the step (see loading.py for the data).
"""
from __future__ import annotations

import contextlib
import gc
import statistics
import time
from dataclasses import dataclass

import torch
from omegaconf import OmegaConf

from benchmarks import flops
from benchmarks.hardware import Memory, synchronize
from vjepa.masks import build_mask_generator, sample_masks
from vjepa.objectives import OBJECTIVES
from vjepa.optim import build_optimizer
from vjepa.models.config import token_grid
from vjepa.train import PretrainConfig, _default_masks, build_objective, train_step


@dataclass(frozen=True)
class Size:
    encoder: str  # a name of vjepa.models.ENCODER_SIZES
    pred_dim: int
    pred_depth: int
    pred_heads: int


# micro and tiny are the reference's sizes; large has the official V-JEPA ViT-L predictor
SIZES = {
    "micro": Size("vit_micro", 64, 2, 2),
    "tiny": Size("vit_tiny", 96, 6, 3),
    "small": Size("vit_small", 192, 6, 6),
    "base": Size("vit_base", 384, 6, 12),
    "large": Size("vit_large", 384, 12, 16),
}


@dataclass(frozen=True)
class Shape:
    batch: int = 8
    frames: int = 16
    crop: int = 64
    patch: int = 8
    tubelet: int = 2


def objective_masks(objective: str) -> list:
    """An objective's own mask recipe (its `default_masks`), else V-JEPA's two multiblock masks."""
    return list(getattr(OBJECTIVES[objective], "default_masks", None) or _default_masks())


def step_config(size: str, objective: str, shape: Shape) -> PretrainConfig:
    s = SIZES[size]
    cfg = OmegaConf.structured(PretrainConfig)
    cfg.objective = objective
    cfg.masks = objective_masks(objective)
    cfg.data.merge_with({"train_list": "", "batch_size": shape.batch, "frames_per_clip": shape.frames,
                         "crop_size": shape.crop})
    cfg.model.merge_with({"name": s.encoder, "patch_size": shape.patch, "tubelet_size": shape.tubelet,
                          "pred_embed_dim": s.pred_dim, "pred_depth": s.pred_depth, "pred_num_heads": s.pred_heads})
    return cfg


def autocast_for(device: torch.device, dtype: torch.dtype):
    return torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else contextlib.nullcontext()


class StepRunner:
    """One objective, its optimizer, a batch of random clips and fixed masks: `run()` is one training step."""

    def __init__(self, cfg: PretrainConfig, device: torch.device, dtype: torch.dtype):
        torch.manual_seed(0)
        self.objective = build_objective(cfg).to(device)
        self.optimizer = build_optimizer(self.objective.trainable_modules(), 1e-4, 0.04)
        d = cfg.data
        self.clips = torch.randn(d.batch_size, 3, d.frames_per_clip, d.crop_size, d.crop_size, device=device)
        generators = [build_mask_generator(m, token_grid(cfg.data.frames_per_clip, cfg.data.crop_size, cfg.model)) for m in cfg.masks]
        self.masks = [tuple(t.to(device) for t in pair) for pair in sample_masks(generators, d.batch_size, 0, 0)]
        self.autocast = autocast_for(device, dtype)
        self.device = device

    def run(self) -> float:
        loss, _, _ = train_step(self.objective, self.objective, self.optimizer, self.clips, self.masks, 0.999, 10.0,
                                self.autocast)
        if not torch.isfinite(loss):
            raise RuntimeError("benchmark step gave a non-finite loss; the timings would not be of a full step")
        return float(loss)

    def encoder_tokens(self) -> list[int]:
        """Tokens per sample entering the trained encoder's blocks, per call, during one step."""
        seen = []
        hook = self.objective.encoder.blocks[0].register_forward_pre_hook(lambda _, args: seen.append(args[0].size(1)))
        try:
            self.run()
        finally:
            hook.remove()
        return seen

    def flops(self, objective: str) -> dict[str, int]:
        """Analytic FLOPs of one step (FlopCounterMode's count for an objective without a counter)."""
        if objective in flops.STEP_FLOPS:
            return flops.STEP_FLOPS[objective](self.objective, self.masks, self.clips)
        counted = flops.count_step(self.run)
        return {"linear": counted["linear"], "attention": counted["attention"], "recompute": 0}

    def timed(self, steps: int, warmup: int) -> list[float]:
        for _ in range(warmup):
            self.run()
        times = []
        for _ in range(steps):
            synchronize(self.device)
            start = time.perf_counter()
            self.run()
            synchronize(self.device)
            times.append(time.perf_counter() - start)
        return times


def measure(cfg: PretrainConfig, steps: int, warmup: int, device: torch.device, dtype: torch.dtype) -> dict:
    """Times, throughput, FLOPs and peak memory of `steps` training steps after `warmup` ones."""
    memory = Memory(device)
    runner = StepRunner(cfg, device, dtype)
    encoder_tokens = runner.encoder_tokens()  # the optimizer's state exists from the first step on
    memory.start()
    times = runner.timed(steps, max(warmup - 1, 0))
    peak_mb = memory.peak_mb()
    counted = runner.flops(cfg.objective)
    step_flops = counted["linear"] + counted["attention"]
    grid = token_grid(cfg.data.frames_per_clip, cfg.data.crop_size, cfg.model)
    tokens = grid[0] * grid[1] * grid[2]
    median = statistics.median(times)
    result = {
        "objective": cfg.objective, "batch": cfg.data.batch_size, "frames": cfg.data.frames_per_clip,
        "crop": cfg.data.crop_size, "tokens": tokens,
        "encoder_tokens": encoder_tokens, "masks": [[m[0].size(1), m[1].size(1)] for m in runner.masks],
        "params_m": round(sum(p.numel() for m in runner.objective.trainable_modules() for p in m.parameters()) / 1e6, 2),
        "steps": steps, "step_s": median, "step_s_min": min(times), "times": times,
        "clips_per_s": cfg.data.batch_size / median, "tokens_per_s": cfg.data.batch_size * tokens / median,
        "gflops": step_flops / 1e9, "attention_share": counted["attention"] / step_flops,
        "achieved_gflops_per_s": step_flops / median / 1e9,
        "peak_memory_mb": peak_mb,
    }
    del runner
    gc.collect()
    return result
