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
import re
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import List

import torch
from torch.nn.parallel import DistributedDataParallel

from vjepa import distributed
from vjepa.checkpoint import load_newest, save_checkpoint
from vjepa.config import choice, save_config, to_container
from vjepa.data import DataConfig, DataError, SkipTracker, VideoDataset, batches_per_epoch, build_loader, train_dataset
from vjepa.device import DEVICES, DTYPES, resolve_device, resolve_dtype
from vjepa.masks import MaskConfig, build_mask_generator, sample_masks
from vjepa.models.config import ModelConfig, token_grid
from vjepa.objectives import OBJECTIVES, LossConfig, Objective
from vjepa.objectives import build_objective as build_named_objective
from vjepa.optim import OptimizationConfig, Schedules, build_optimizer, set_lr_wd
from vjepa.preemption import preemption
from vjepa.report import plot_training_curves
from vjepa.runlock import RunLock, RunLocked
from vjepa.runlog import CSVLog, progress, setup_logging

log = logging.getLogger("vjepa.train")


# --------------------------------------------------------------------------- config


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
    objective: str = choice("jepa", OBJECTIVES)  # jepa | pixel | denoise
    device: str = choice("auto", DEVICES)  # auto | cpu | cuda
    dtype: str = choice("auto", DTYPES)  # auto (bfloat16 on GPU, float32 on CPU) | float32 | bfloat16
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


def build_objective(cfg: PretrainConfig) -> Objective:
    """The recipe's objective with fresh networks: one mask token per mask configuration."""
    return build_named_objective(cfg.objective, cfg.model, cfg.data.frames_per_clip, cfg.data.crop_size,
                                 len(cfg.masks), cfg.loss)


LOADER_WORKER_DIED = re.compile(r"DataLoader worker \(pids?\b")  # torch's words for a worker killed or exited


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
        try:
            return next(self._iter)
        except (ConnectionError, EOFError) as exc:
            raise self._worker_death(exc) or exc

    def _worker_death(self, exc: Exception, wait_s: float = 5.0) -> RuntimeError | None:
        """A worker killed while it hands over a batch's shared memory breaks the handover's connection before
        torch has seen the worker die (it then says only 'Connection reset by peer'): wait a moment for the dead
        worker and name it in torch's own words, or None when every worker lives on."""
        workers = getattr(self._iter, "_workers", [])
        deadline = time.monotonic() + wait_s
        try:
            while not (dead := [w for w in workers if not w.is_alive()]) and time.monotonic() < deadline:
                time.sleep(0.05)
        except RuntimeError as sigchld:  # torch's SIGCHLD handler, in these words, can name it first
            if not LOADER_WORKER_DIED.search(str(sigchld)):
                raise
            sigchld.__cause__ = exc
            return sigchld
        if not dead:
            return None
        w = dead[0]
        how = (f"is killed by signal: {signal.strsignal(-w.exitcode)}." if w.exitcode is not None and w.exitcode < 0
               else f"exited unexpectedly with exit code {w.exitcode}")
        error = RuntimeError(f"DataLoader worker (pid {w.pid}) {how}")
        error.__cause__ = exc
        return error


# --------------------------------------------------------------------------- the step


def train_step(model, objective: Objective, optimizer, clips, masks, momentum: float, clip_grad: float, autocast,
               with_rankme: bool = False, share: float = 1.0, dist: distributed.DistInfo = distributed.DistInfo()):
    """Encode context, predict targets, loss, optimizer step, EMA update. Returns the global batch's loss (the
    same on every rank), stats and grad norm.

    `share`: this rank's clips over the mean per rank. DDP averages gradients over ranks, so a rank's loss
    weighted by its share makes the step that of the mean loss over all clips the ranks hold, however unevenly
    unreadable videos left them; a rank with none (share 0) still runs, so every rank meets every collective."""
    with autocast:
        loss, stats = model(clips, masks, with_rankme=with_rankme, stand_in=share == 0.0)
    weighted = loss * share if share != 1.0 else loss
    mean = distributed.all_reduce_mean(weighted.detach().float(), dist)
    if not torch.isfinite(mean):  # decided on the all-reduced loss, so every rank stops together
        return mean, stats, float("nan")
    optimizer.zero_grad(set_to_none=True)
    weighted.backward()
    params = [p for m in objective.trainable_modules() for p in m.parameters() if p.requires_grad]
    if clip_grad > 0:
        grad_norm = torch.nn.utils.clip_grad_norm_(params, clip_grad, foreach=True)
    else:
        grad_norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params if p.grad is not None]))
    optimizer.step()
    objective.after_step(momentum)
    return mean, stats, float(grad_norm)


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


class Run:
    """What a pretraining run holds between steps: data, networks, optimizer, schedules, log, checkpoints."""

    def __init__(self, cfg: PretrainConfig):
        self.cfg = cfg
        device = resolve_device(cfg.device)
        self.dtype = resolve_dtype(cfg.dtype, device)
        self.dist = distributed.init_distributed(device.type)
        self.device = torch.device("cuda", self.dist.local_rank) if device.type == "cuda" else device
        self.out = Path(cfg.output)
        self.ckpt = self.out / "checkpoints" / "latest.pt"
        self.lock = self.lock_output()
        try:
            self.build(cfg)
        except BaseException:
            self.lock.release()
            raise

    def build(self, cfg: PretrainConfig) -> None:
        self.grid = token_grid(cfg.data.frames_per_clip, cfg.data.crop_size, cfg.model)
        self.generators = [build_mask_generator(m, self.grid) for m in cfg.masks]
        self.dataset = train_dataset(cfg.data, cfg.seed)
        self.stream = BatchStream(self.dataset, cfg, self.dist)

        torch.manual_seed(cfg.seed)
        self.objective = build_objective(cfg).to(self.device)
        o = cfg.optimization
        self.optimizer = build_optimizer(self.objective.trainable_modules(), o.lr, o.weight_decay, o.betas)
        self.skips = SkipTracker()
        self.saved: tuple[Path, int] | None = None  # the newest checkpoint on disk and its step
        self.start_step = self.resume()
        self.model = self.objective
        if self.dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = DistributedDataParallel(self.objective, device_ids=ids)

        self.schedules = Schedules(o)
        self.autocast = (torch.autocast(self.device.type, dtype=self.dtype) if self.dtype != torch.float32
                         else contextlib.nullcontext())
        self.csv_log = None
        if self.dist.is_main:
            save_config(cfg, self.out / "config.yaml")
            resumed = self.start_step if self.start_step else None
            self.csv_log = CSVLog(self.out / "log.csv", LOG_FIELDS, resume_from_step=resumed)
            self.describe()
        self.bar = progress(o.steps, self.start_step, desc=cfg.objective, enabled=cfg.logging.progress and self.dist.is_main)
        self.t_run = time.perf_counter()
        self.last_loss = float("nan")
        self.completed = self.start_step

    def lock_output(self) -> RunLock:
        """The main process holds the output folder's lock; every rank hears when it could not, so none waits in a
        collective for a partner that has stopped."""
        lock, refused = RunLock(self.out), ""
        if self.dist.is_main:
            try:
                lock.acquire()
            except RunLocked as exc:
                refused = str(exc)
        refused = distributed.all_gather_lists([refused], self.dist)[0]
        if refused:
            raise RunLocked(refused)
        return lock

    def resume(self) -> int:
        """Load the newest readable checkpoint when asked to resume; return the step to start from."""
        newest = load_newest(self.ckpt.parent) if self.cfg.resume else None
        if newest is None:
            if self.ckpt.exists() and self.dist.is_main:
                log.warning("%s exists and resume=false: starting over and overwriting it", self.ckpt)
            return 0
        found, ckpt = newest
        self.saved = found, int(ckpt["step"])
        self.objective.load_checkpoint_state(ckpt, str(found))
        self.optimizer.load_state_dict(ckpt["opt"])
        self.skips.reasons.update(ckpt.get("skipped_videos", {}))  # a resumed run neither recounts nor re-warns
        log.info("resumed from %s at step %d", found, int(ckpt["step"]))
        return int(ckpt["step"])

    def describe(self) -> None:
        params = sum(p.numel() for m in self.objective.trainable_modules() for p in m.parameters() if p.requires_grad)
        log.info("%s: %d videos, token grid %s, %.2fM trainable parameters, %s on %s, %d steps",
                 self.cfg.objective, len(self.dataset), self.grid, params / 1e6, str(self.dtype).replace("torch.", ""),
                 self.device, self.cfg.optimization.steps)

    def train(self, step: int) -> None:
        """One step of the method on batch `step`: masks, forward, loss, update, EMA; then log and checkpoint."""
        cfg = self.cfg
        t0 = time.perf_counter()
        batch = self.stream.get(step)
        data_time = time.perf_counter() - t0
        clips = flatten_clips(batch["clips"]).to(self.device, non_blocking=True)
        own, total = clips.size(0), self.count_skips(clips.size(0), batch["skipped"])
        logged = self.dist.is_main and (step % cfg.logging.log_every == 0 or step + 1 == cfg.optimization.steps)
        # a step none of the ranks has a readable video for trains nothing, on all of them together; the step
        # still counts, so the step -> batch map (and with it exact resumption) is unchanged
        if total > 0:
            if own == 0:  # this rank's videos were all unreadable: it takes part with weight 0
                clips = self.placeholder_clip()
            torch.manual_seed(cfg.seed * 1_000_003 + step)  # drop-path and anything else on torch's global RNG
            masks = rank_masks(self.generators, cfg, self.dist, step, clips.size(0), self.device)
            lr, wd, momentum = self.schedules(step)
            set_lr_wd(self.optimizer, lr, wd)
            with_rankme = logged and cfg.logging.rankme_every > 0 and step % cfg.logging.rankme_every == 0
            loss, stats, grad_norm = train_step(self.model, self.objective, self.optimizer, clips, masks, momentum,
                                                cfg.optimization.clip_grad, self.autocast, with_rankme,
                                                share=own * self.dist.world_size / total, dist=self.dist)
            stats = stats if own else {}  # a placeholder's statistics describe nothing
            self.last_loss = float(loss)
            if not math.isfinite(self.last_loss):
                raise TrainingDiverged(
                    f"loss is {self.last_loss} at step {step}; stopped without saving. The last good checkpoint "
                    f"(if any) is {self.ckpt}; lower optimization.lr or raise optimization.warmup_steps.")
            if logged:
                step_time = time.perf_counter() - t0
                self.csv_log.write({
                    "step": step, "epoch": step // self.stream.per_epoch, "loss": self.last_loss, "lr": lr, "wd": wd,
                    "momentum": momentum, "grad_norm": grad_norm,
                    **{k: float(stats.get(k, float("nan"))) for k in ("target_std", "pred_std", "rankme")},
                    "clips_per_s": total / step_time, "step_time": step_time,
                    "data_time": data_time, "skipped_videos": self.skips.count, "elapsed": time.perf_counter() - self.t_run,
                })
                self.bar.set_postfix(loss=f"{self.last_loss:.4f}", lr=f"{lr:.2e}", skipped=self.skips.count, refresh=False)
        self.bar.update(1)
        self.checkpoint_if_due(step + 1)
        self.completed = step + 1

    def count_skips(self, own: int, skipped: list) -> int:
        """The readable clips of this step on all ranks; the main process hears of every unreadable file (one
        line each, once). Every rank calls this every step: its collectives must meet."""
        counts = distributed.all_reduce_sum(torch.tensor([own, len(skipped)], dtype=torch.long), self.dist)
        if counts[1] > 0:
            every = distributed.all_gather_lists(skipped, self.dist)
            if self.dist.is_main:
                self.skips.update(every)
        return int(counts[0])

    def placeholder_clip(self) -> torch.Tensor:
        data = self.cfg.data
        return torch.zeros(1, 3, data.frames_per_clip, data.crop_size, data.crop_size, device=self.device)

    def checkpoint_if_due(self, done: int) -> None:
        every, last = self.cfg.logging.checkpoint_every, self.cfg.optimization.steps
        if done % every and done != last:
            return
        if not self.dist.is_main:
            self.saved = self.ckpt, done
            return
        self.check_finite_weights(done - 1)
        state = self.state(done)
        save_checkpoint(state, self.ckpt)
        if self.cfg.logging.snapshot_every and done % self.cfg.logging.snapshot_every == 0:
            save_checkpoint(state, self.ckpt.parent / f"step_{done:07d}.pt")
        self.saved = self.ckpt, done

    def loader_worker_died(self, step: int, exc: RuntimeError) -> DataError:
        """torch raises a dead worker's RuntimeError wherever the main process is (even mid-forward): say what it
        most likely was and what is kept. Nothing is saved after it: the model may be half-way through a step."""
        kept = (f"{self.saved[0]} (step {self.saved[1]}) is kept: rerun with resume=true to go on from it"
                if self.saved else "no checkpoint had been written yet")
        return DataError(
            f"a data-loader worker died during step {step} ({str(exc).strip()}). A worker killed by signal 9 is most "
            f"often the kernel's out-of-memory killer: lower data.num_workers or data.batch_size, or ask for more "
            f"memory. {kept}")

    def check_finite_weights(self, step: int) -> None:
        """A finite loss can still be followed by an update that blows the weights up: never save those."""
        params = [p.detach() for m in self.objective.trainable_modules() for p in m.parameters()]
        if not torch.isfinite(torch.stack(torch._foreach_norm(params))).all():
            raise TrainingDiverged(
                f"weights became non-finite at step {step}; stopped without saving. The last good checkpoint "
                f"(if any) is {self.ckpt}; lower optimization.lr or raise optimization.warmup_steps.")

    def state(self, done: int) -> dict:
        cfg = self.cfg
        return {
            **self.objective.checkpoint_state(),
            "opt": self.optimizer.state_dict(),
            "epoch": max(done - 1, 0) // self.stream.per_epoch,
            "step": done,
            "loss": self.last_loss,
            "batch_size": cfg.data.batch_size,
            "world_size": self.dist.world_size,
            "objective": cfg.objective,
            "config": to_container(cfg),
            "skipped_videos": dict(self.skips.reasons),
        }

    def save_now(self) -> None:
        """Write latest.pt for the last finished step (a preempted SLURM job calls this, then requeues)."""
        save_checkpoint(self.state(self.completed), self.ckpt)
        self.saved = self.ckpt, self.completed
        log.info("preempted: saved step %d to %s", self.completed, self.ckpt)

    def close(self) -> None:
        self.bar.close()
        if self.csv_log is not None:
            self.csv_log.close()
        self.lock.release()

    def summary(self) -> dict:
        return {"output": str(self.out), "steps": self.cfg.optimization.steps, "final_loss": self.last_loss,
                "skipped_videos": self.skips.count, "checkpoint": str(self.ckpt)}


def pretrain(cfg: PretrainConfig) -> dict:
    """Pretrain as `cfg` says; return a summary (final step, loss, run folder)."""
    setup_logging()
    run = Run(cfg)
    preemption.save_now = run.save_now if run.dist.is_main else None
    try:
        for step in range(run.start_step, cfg.optimization.steps):
            # a preemption signal waits until this step's batch is loaded and the step trained, logged and
            # saved. Loading is inside too: at an epoch's end the last loader is shut down in its __del__, and
            # Python ignores the SystemExit of a handler that runs there, so the job would train on, requeued
            with preemption.deferred():
                try:
                    run.train(step)
                except RuntimeError as exc:
                    if not LOADER_WORKER_DIED.search(str(exc)):
                        raise
                    raise run.loader_worker_died(step, exc) from None
            distributed.barrier(run.dist)
    finally:
        preemption.save_now = None
        run.close()
    if run.dist.is_main:
        plot_training_curves(run.out / "log.csv", run.out / "curves.png")
        log.info("done: %d steps, final loss %.4f, %d unreadable videos skipped; checkpoint %s",
                 cfg.optimization.steps, run.last_loss, run.skips.count, run.ckpt)
    distributed.cleanup(run.dist)
    return run.summary()


def main(cfg: PretrainConfig) -> dict:
    """Entry point of `vjepa pretrain` (and of `vjepa submit pretrain`)."""
    return pretrain(cfg)
