"""Pretraining: one loop for every objective.

A step reads like the method: sample masks, encode the context, predict the targets, compute the
loss, step the optimizer, update the EMA target. Everything random in a step (data order, crops,
masks, drop-path) is a pure function of (seed, step), so a run resumed from a checkpoint continues
with exactly the losses an uninterrupted run gets.
"""
from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Tuple

import torch
from omegaconf import MISSING
from torch.nn.parallel import DistributedDataParallel

from vjepa import distributed
from vjepa.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from vjepa.config import save_config, to_container
from vjepa.data import DataError, SkipTracker, VideoDataset, VideoTransform, batches_per_epoch, build_loader
from vjepa.masks import MaskConfig, build_mask_generator, sample_masks
from vjepa.models import Predictor, build_encoder
from vjepa.objectives import OBJECTIVES, Objective
from vjepa.optim import build_optimizer, cosine, linear, set_lr_wd, warmup_cosine
from vjepa.report import plot_training_curves
from vjepa.runlog import CSVLog, progress, setup_logging
from vjepa.submit import preemption

log = logging.getLogger("vjepa.train")


# --------------------------------------------------------------------------- config


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


@dataclass
class ModelConfig:
    name: str = "vit_large"  # vit_micro, vit_tiny, vit_small, vit_base, vit_large, vit_huge, vit_giant, vit_gigantic
    patch_size: int = 16
    tubelet_size: int = 2
    embed_dim: Optional[int] = None  # null: the named size's value
    depth: Optional[int] = None
    num_heads: Optional[int] = None
    uniform_power: bool = True
    # sincos: V-JEPA's fixed table added to the tokens (official checkpoints); rope: V-JEPA 2's 3D rotary
    # embedding in every attention of the encoder and the predictor, so features carry no absolute position
    pos_embed: str = "sincos"
    drop_path_rate: float = 0.0
    pred_depth: int = 12
    pred_embed_dim: int = 384
    pred_num_heads: Optional[int] = None  # null: the encoder's
    zero_init_mask_tokens: bool = True
    # the predictor's query for a target token starts from the context token at the same spatial position in
    # the latest earlier time slot (with the future mask: the last seen slot), so copying is its starting point
    pred_copy_context: bool = False
    # the prediction is the context token at that same source (layer-normed, as the targets) plus the predictor's
    # output, so keeping a token as it was costs the predictor nothing (not in V-JEPA; on the demo it broke the
    # rollouts, see the README)
    pred_residual: bool = False
    activation_checkpointing: bool = False


@dataclass
class OptimizationConfig:
    steps: int = 90_000
    schedule_steps: Optional[int] = None  # null: `steps`; longer stops the schedules early (V-JEPA's ipe_scale)
    warmup_steps: int = 12_000
    start_lr: float = 2.0e-4
    lr: float = 6.25e-4
    final_lr: float = 1.0e-6
    weight_decay: float = 0.04
    final_weight_decay: float = 0.4
    ema: Tuple[float, float] = (0.998, 1.0)
    clip_grad: float = 10.0  # 0 turns clipping off
    betas: Tuple[float, float] = (0.9, 0.999)


@dataclass
class LossConfig:
    """Extra loss terms; an objective uses those it lists in `options` and ignores the others."""

    # jepa: weight of a variance hinge on the context encoder's outputs, mean over channels of
    # relu(1 - std over the batch's tokens), the variance term of VICReg (Bardes et al. 2022) and of
    # V-JEPA's `reg_coeff` (there on the predictor's outputs). It keeps every channel of the context
    # features in use: without it this small model's context features fold into a few directions.
    var_reg: float = 0.0
    # jepa: the exponent p of the prediction loss mean(|pred - target|^p) / p, V-JEPA's `loss_exp`:
    # 1 is the paper's L1, 2 half the squared error. L1 pulls an uncertain prediction to the most
    # common target (the background of a mostly empty scene); L2 to the expected one.
    loss_exp: float = 1.0
    # jepa: weigh each target token by 1 + motion_weight * m / mean(m), m its pixels' change from the previous
    # time slot (see objectives/jepa.py:motion_weights); 0, the default, weighs all tokens the same as V-JEPA does
    motion_weight: float = 0.0


@dataclass
class LoggingConfig:
    log_every: int = 1  # CSV row every n steps
    checkpoint_every: int = 500  # overwrite checkpoints/latest.pt every n steps (and at the end)
    snapshot_every: int = 0  # also keep checkpoints/step_XXXXXXX.pt every n steps; 0: never
    rankme_every: int = 50  # effective rank of target features every n steps (an SVD)
    progress: bool = True


def _default_masks() -> list:
    # The V-JEPA recipe: two mask configurations per batch, short-range and long-range.
    return [
        MaskConfig(type="multiblock", num_blocks=8, spatial_scale=(0.15, 0.15)),
        MaskConfig(type="multiblock", num_blocks=2, spatial_scale=(0.7, 0.7)),
    ]


@dataclass
class PretrainConfig:
    output: str = "runs/pretrain"
    seed: int = 0
    resume: bool = False  # continue from <output>/checkpoints/latest.pt if it exists
    objective: str = "jepa"
    device: str = "auto"  # auto | cpu | cuda
    dtype: str = "auto"  # auto (bfloat16 on GPU, float32 on CPU) | float32 | bfloat16
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    masks: List[MaskConfig] = field(default_factory=_default_masks)
    optimization: OptimizationConfig = field(default_factory=OptimizationConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is left untouched."""


LOG_FIELDS = [
    "step", "epoch", "loss", "lr", "wd", "momentum", "grad_norm", "target_std", "pred_std", "rankme",
    "clips_per_s", "step_time", "data_time", "skipped_videos", "elapsed",
]


# --------------------------------------------------------------------------- building blocks


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device=cuda but no CUDA device is visible; use device=cpu or device=auto")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"device: expected auto, cpu or cuda, got {name!r}")
    return torch.device(name)


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        # bf16 autocast is the fast path on GPUs; on CPUs without AMX it is ~20x slower than fp32
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    table = {"float32": torch.float32, "bfloat16": torch.bfloat16}
    if name not in table:
        raise ValueError(f"dtype: expected auto, float32 or bfloat16, got {name!r}")
    return table[name]


def token_grid(data: DataConfig, model: ModelConfig) -> tuple[int, int, int]:
    for key, size, unit in (
        ("data.frames_per_clip", data.frames_per_clip, model.tubelet_size),
        ("data.crop_size", data.crop_size, model.patch_size),
    ):
        if size % unit:
            raise ValueError(f"{key}={size} is not divisible by the model's {'tubelet' if unit == model.tubelet_size else 'patch'} size {unit}")
    n = data.crop_size // model.patch_size
    return data.frames_per_clip // model.tubelet_size, n, n


def build_networks(cfg: PretrainConfig) -> tuple[torch.nn.Module, torch.nn.Module]:
    """Encoder and predictor as the config describes them."""
    m, d = cfg.model, cfg.data
    encoder = build_encoder(
        m.name, img_size=d.crop_size, num_frames=d.frames_per_clip, patch_size=m.patch_size,
        tubelet_size=m.tubelet_size, embed_dim=m.embed_dim, depth=m.depth, num_heads=m.num_heads,
        uniform_power=m.uniform_power, drop_path_rate=m.drop_path_rate,
        use_activation_checkpointing=m.activation_checkpointing, pos_embed=m.pos_embed,
    )
    predictor = Predictor(
        img_size=d.crop_size, num_frames=d.frames_per_clip, patch_size=m.patch_size, tubelet_size=m.tubelet_size,
        embed_dim=encoder.embed_dim, predictor_embed_dim=m.pred_embed_dim, depth=m.pred_depth,
        num_heads=m.pred_num_heads or encoder.num_heads, uniform_power=m.uniform_power,
        drop_path_rate=m.drop_path_rate, num_mask_tokens=max(1, len(cfg.masks)),
        zero_init_mask_tokens=m.zero_init_mask_tokens, use_activation_checkpointing=m.activation_checkpointing,
        pos_embed=m.pos_embed, copy_context=m.pred_copy_context,
        residual=m.pred_residual,
    )
    return encoder, predictor


def build_objective(cfg: PretrainConfig) -> Objective:
    if cfg.objective not in OBJECTIVES:
        raise ValueError(f"objective: unknown {cfg.objective!r}; expected one of {', '.join(OBJECTIVES)}")
    objective = OBJECTIVES[cfg.objective]
    defaults = LossConfig()
    for key in vars(defaults):
        if key not in objective.options and getattr(cfg.loss, key) != getattr(defaults, key):
            # one recipe serves every objective (vjepa compare), so a term another objective owns is not an error
            log.info("loss.%s: not a term of objective %r; ignored", key, cfg.objective)
    encoder, predictor = build_networks(cfg)
    return objective(encoder, predictor, **{k: getattr(cfg.loss, k) for k in objective.options})


def build_dataset(cfg: PretrainConfig) -> VideoDataset:
    d = cfg.data
    transform = VideoTransform(
        crop_size=d.crop_size, random_resize_scale=tuple(d.random_resize_scale),
        random_resize_aspect_ratio=tuple(d.random_resize_aspect_ratio), horizontal_flip=d.horizontal_flip, train=True,
    )
    return VideoDataset(
        d.train_list, frames_per_clip=d.frames_per_clip, frame_step=d.frame_step,
        clips_per_video=d.clips_per_video, transform=transform, seed=cfg.seed,
    )


@dataclass
class Schedules:
    """lr, weight decay and EMA momentum as functions of the step (V-JEPA's schedules)."""

    opt: OptimizationConfig

    @property
    def length(self) -> int:
        return self.opt.schedule_steps or self.opt.steps

    def __call__(self, step: int) -> tuple[float, float, float]:
        o = self.opt
        lr = warmup_cosine(step, o.warmup_steps, self.length, o.start_lr, o.lr, o.final_lr)
        wd = cosine(step, self.length, o.weight_decay, o.final_weight_decay)
        momentum = linear(step, self.length, o.ema[0], o.ema[1])
        return lr, wd, momentum


class BatchStream:
    """Batches indexed by step: step s is batch (s mod batches_per_epoch) of epoch (s div it)."""

    def __init__(self, dataset: VideoDataset, cfg: PretrainConfig, dist: distributed.DistInfo):
        self.dataset, self.cfg, self.dist = dataset, cfg, dist
        self.per_epoch = batches_per_epoch(len(dataset), cfg.data.batch_size, dist.world_size)
        if self.per_epoch == 0:
            raise DataError(
                f"{cfg.data.train_list}: {len(dataset)} videos give no full batch of data.batch_size="
                f"{cfg.data.batch_size} on {dist.world_size} process(es); lower data.batch_size"
            )
        self._iter, self._next_step = None, None

    def _open(self, step: int):
        epoch, start = divmod(step, self.per_epoch)
        loader = build_loader(
            self.dataset, self.cfg.data.batch_size, num_workers=self.cfg.data.num_workers, seed=self.cfg.seed,
            epoch=epoch, start_batch=start, rank=self.dist.rank, world_size=self.dist.world_size,
            pin_memory=torch.cuda.is_available(),
        )
        self._iter = iter(loader)

    def get(self, step: int) -> dict:
        if self._next_step != step or step % self.per_epoch == 0:
            self._open(step)
        self._next_step = step + 1
        return next(self._iter)


# --------------------------------------------------------------------------- the step


def train_step(model, objective: Objective, optimizer, clips, masks, momentum: float, clip_grad: float, autocast,
               with_rankme: bool = False):
    """Encode context, predict targets, L1 loss, optimizer step, EMA update. Returns loss and stats."""
    with autocast:
        loss, stats = model(clips, masks, with_rankme=with_rankme)
    if not torch.isfinite(loss):
        return loss, stats, float("nan")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    params = [p for m in objective.trainable_modules() for p in m.parameters() if p.requires_grad]
    if clip_grad > 0:
        grad_norm = torch.nn.utils.clip_grad_norm_(params, clip_grad, foreach=True)
    else:
        grad_norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params if p.grad is not None]))
    optimizer.step()
    objective.after_step(momentum)
    return loss.detach(), stats, float(grad_norm)


def rank_masks(generators, cfg: PretrainConfig, dist: distributed.DistInfo, step: int, rows: int, device):
    """This rank's rows of the masks of the whole global batch.

    Sampling for the global batch (the same on every rank) and slicing keeps token counts equal
    across ranks and makes a DDP run see the masks one process with the global batch would.
    """
    local = cfg.data.batch_size * cfg.data.clips_per_video
    pairs = sample_masks(generators, local * dist.world_size, cfg.seed, step)
    first = dist.rank * local
    return [tuple(t[first : first + rows].to(device, non_blocking=True) for t in pair) for pair in pairs]


def flatten_clips(clips: torch.Tensor) -> torch.Tensor:
    """[B, clips, C, T, H, W] -> [B*clips, C, T, H, W]; several clips of a video are separate samples."""
    return clips.flatten(0, 1) if clips.ndim == 6 else clips


# --------------------------------------------------------------------------- the run


def check_finite_weights(objective: Objective, step: int, ckpt: Path) -> None:
    """A finite loss can still be followed by an update that blows the weights up: never save those."""
    params = [p.detach() for m in objective.trainable_modules() for p in m.parameters()]
    if not torch.isfinite(torch.stack(torch._foreach_norm(params))).all():
        raise TrainingDiverged(
            f"weights became non-finite at step {step}; stopped without saving. The last good checkpoint "
            f"(if any) is {ckpt}; lower optimization.lr or raise optimization.warmup_steps."
        )


def checkpoint_dict(objective: Objective, optimizer, cfg, step: int, epoch: int, loss: float, dist) -> dict:
    return {
        **objective.checkpoint_state(),
        "opt": optimizer.state_dict(),
        "epoch": epoch,
        "step": step,
        "loss": loss,
        "batch_size": cfg.data.batch_size,
        "world_size": dist.world_size,
        "objective": cfg.objective,
        "config": to_container(cfg),
    }


def pretrain(cfg: PretrainConfig) -> dict:
    """Pretrain as `cfg` says; return a summary (final step, loss, run folder)."""
    setup_logging()
    device = resolve_device(cfg.device)
    dtype = resolve_dtype(cfg.dtype, device)
    dist = distributed.init_distributed(device.type)
    if device.type == "cuda":
        device = torch.device("cuda", dist.local_rank)
    out = Path(cfg.output)
    ckpt_dir = out / "checkpoints"

    grid = token_grid(cfg.data, cfg.model)
    generators = [build_mask_generator(m, grid) for m in cfg.masks]
    dataset = build_dataset(cfg)
    stream = BatchStream(dataset, cfg, dist)

    torch.manual_seed(cfg.seed)
    objective = build_objective(cfg).to(device)
    optimizer = build_optimizer(objective.trainable_modules(), cfg.optimization.lr, cfg.optimization.weight_decay, cfg.optimization.betas)

    start_step = 0
    resume_from = latest_checkpoint(ckpt_dir) if cfg.resume else None
    if resume_from is not None:
        ckpt = load_checkpoint(resume_from)
        objective.load_checkpoint_state(ckpt, str(resume_from))
        optimizer.load_state_dict(ckpt["opt"])
        start_step = int(ckpt["step"])
        log.info("resumed from %s at step %d", resume_from, start_step)
    elif (ckpt_dir / "latest.pt").exists() and dist.is_main:
        log.warning("%s exists and resume=false: starting over and overwriting it", ckpt_dir / "latest.pt")

    model = objective
    if dist.enabled:
        model = DistributedDataParallel(objective, device_ids=[device.index] if device.type == "cuda" else None)

    if dist.is_main:
        save_config(cfg, out / "config.yaml")
        csv_log = CSVLog(out / "log.csv", LOG_FIELDS, resume_from_step=start_step if resume_from else None)
        n_params = sum(p.numel() for m in objective.trainable_modules() for p in m.parameters() if p.requires_grad)
        log.info("%s: %d videos, token grid %s, %.2fM trainable parameters, %s on %s, %d steps",
                 cfg.objective, len(dataset), grid, n_params / 1e6, str(dtype).replace("torch.", ""), device,
                 cfg.optimization.steps)

    autocast = torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else contextlib.nullcontext()
    schedules = Schedules(cfg.optimization)
    skips = SkipTracker()
    bar = progress(cfg.optimization.steps, start_step, desc=cfg.objective, enabled=cfg.logging.progress and dist.is_main)
    t_run = time.perf_counter()
    last_loss = float("nan")
    step = completed = start_step

    def save_now() -> None:
        """Write latest.pt for the last finished step (a preempted SLURM job calls this, then requeues)."""
        epoch = max(completed - 1, 0) // stream.per_epoch
        save_checkpoint(checkpoint_dict(objective, optimizer, cfg, completed, epoch, last_loss, dist), ckpt_dir / "latest.pt")
        log.info("preempted: saved step %d to %s", completed, ckpt_dir / "latest.pt")

    preemption.save_now = save_now if dist.is_main else None
    try:
        for step in range(start_step, cfg.optimization.steps):
            # a preemption signal waits until this step's batch is loaded and the step trained, logged and
            # saved. Loading is inside too: at an epoch's end the last loader is shut down in its __del__, and
            # Python ignores the SystemExit of a handler that runs there, so the job would train on, requeued
            with preemption.deferred():
                t0 = time.perf_counter()
                batch = stream.get(step)
                skips.update(batch["skipped"])
                data_time = time.perf_counter() - t0
                clips = flatten_clips(batch["clips"]).to(device, non_blocking=True)
                done = step + 1
                logged = dist.is_main and (step % cfg.logging.log_every == 0 or done == cfg.optimization.steps)
                # a batch whose videos were all unreadable trains nothing; the step still counts, so the
                # step -> batch map (and with it exact resumption) is unchanged
                if clips.size(0) > 0:
                    # drop-path and anything else drawing from torch's global RNG: a function of (seed, step)
                    torch.manual_seed(cfg.seed * 1_000_003 + step)
                    masks = rank_masks(generators, cfg, dist, step, clips.size(0), device)
                    lr, wd, momentum = schedules(step)
                    set_lr_wd(optimizer, lr, wd)
                    with_rankme = logged and cfg.logging.rankme_every > 0 and step % cfg.logging.rankme_every == 0
                    loss, stats, grad_norm = train_step(model, objective, optimizer, clips, masks, momentum,
                                                        cfg.optimization.clip_grad, autocast, with_rankme)
                    last_loss = float(distributed.all_reduce_mean(loss.detach().float(), dist))
                    if not math.isfinite(last_loss):
                        raise TrainingDiverged(
                            f"loss is {last_loss} at step {step}; stopped without saving. The last good checkpoint "
                            f"(if any) is {ckpt_dir / 'latest.pt'}; lower optimization.lr or raise optimization.warmup_steps."
                        )
                    step_time = time.perf_counter() - t0
                    if logged:
                        csv_log.write({
                            "step": step, "epoch": step // stream.per_epoch, "loss": last_loss, "lr": lr, "wd": wd,
                            "momentum": momentum, "grad_norm": grad_norm,
                            **{k: float(stats.get(k, float("nan"))) for k in ("target_std", "pred_std", "rankme")},
                            "clips_per_s": clips.size(0) * dist.world_size / step_time, "step_time": step_time,
                            "data_time": data_time, "skipped_videos": skips.count, "elapsed": time.perf_counter() - t_run,
                        })
                        bar.set_postfix(loss=f"{last_loss:.4f}", lr=f"{lr:.2e}", skipped=skips.count, refresh=False)
                bar.update(1)

                if dist.is_main and (done % cfg.logging.checkpoint_every == 0 or done == cfg.optimization.steps):
                    check_finite_weights(objective, step, ckpt_dir / "latest.pt")
                    state = checkpoint_dict(objective, optimizer, cfg, done, step // stream.per_epoch, last_loss, dist)
                    save_checkpoint(state, ckpt_dir / "latest.pt")
                    if cfg.logging.snapshot_every and done % cfg.logging.snapshot_every == 0:
                        save_checkpoint(state, ckpt_dir / f"step_{done:07d}.pt")
                completed = done
            distributed.barrier(dist)
    finally:
        preemption.save_now = None
        bar.close()
        if dist.is_main:
            csv_log.close()
    summary = {"output": str(out), "steps": cfg.optimization.steps, "final_loss": last_loss,
               "skipped_videos": skips.count, "checkpoint": str(ckpt_dir / "latest.pt")}
    if dist.is_main:
        plot_training_curves(out / "log.csv", out / "curves.png")
        log.info("done: %d steps, final loss %.4f, %d unreadable videos skipped; checkpoint %s",
                 cfg.optimization.steps, last_loss, skips.count, ckpt_dir / "latest.pt")
    distributed.cleanup(dist)
    return summary


def main(cfg: PretrainConfig) -> dict:
    """Entry point of `vjepa pretrain` (and of `vjepa submit pretrain`)."""
    return pretrain(cfg)
