"""Generate the synthetic physics world: clips, video lists, target tables and a preview sheet.

Each clip draws all its randomness from `np.random.default_rng([seed, split, index])`, so the
dataset is the same whatever the number of workers, and the same seed gives byte-identical files.

Layout under `cfg.output`:
    config.yaml                      the resolved config
    videos/{train,val}/00000.mp4     the clips
    {train,val}.txt                  video lists: `videos/train/00000.mp4 N_OBJECTS`
    {train,val}_targets.csv          physical properties per clip (regression targets)
    preview.png                      a few clips as rows of frames
"""
from __future__ import annotations

import csv
import functools
import io
import multiprocessing as mp
import sys
import time
from pathlib import Path
from typing import Callable, Iterator, Sequence

import decord
import numpy as np
from omegaconf import OmegaConf
from PIL import Image
from tqdm import tqdm

from vjepa.config import save_config
from vjepa.world.config import WorldConfig, validate_world_config
from vjepa.world.physics import sample_scene, simulate
from vjepa.world.render import render_frames
from vjepa.world.video import write_video

SPLITS = {"train": 0, "val": 1}  # the split id is part of every clip's seed
OBJECT_COLUMNS = ("shape", "mass", "size", "elasticity", "x0", "y0", "vx0", "vy0")
PREVIEW_CLIPS, PREVIEW_FRAMES, PREVIEW_SCALE = 6, 8, 2


def make_clip(cfg: WorldConfig, split: str, index: int) -> dict[str, float | int | str]:
    """Simulate, render and encode one clip; return its row of the target table."""
    rng = np.random.default_rng([cfg.seed, SPLITS[split], index])
    scene = sample_scene(rng, cfg)
    trajectory = simulate(scene, cfg.frames, cfg.fps, cfg.substeps)
    relpath = f"videos/{split}/{index:05d}.mp4"
    write_video(Path(cfg.output) / relpath, render_frames(scene, trajectory, cfg.size), cfg.fps)
    row: dict[str, float | int | str] = {
        "path": relpath,
        "n_objects": len(scene.objects),
        "gravity": scene.gravity,
        "n_collisions": trajectory.n_collisions,
        "n_wall_bounces": trajectory.n_wall_bounces,
        "occluder": int(scene.occluder is not None),
        "wall": int(scene.barrier is not None),
    }
    for k, obj in enumerate(scene.objects):
        for column in OBJECT_COLUMNS:
            row[f"obj{k}_{column}"] = getattr(obj, column)
    return row


def target_columns(max_objects: int) -> list[str]:
    per_object = [f"obj{k}_{c}" for k in range(max_objects) for c in OBJECT_COLUMNS]
    return ["path", "n_objects", "gravity", "n_collisions", "n_wall_bounces", "occluder", "wall", *per_object]


def _format(value: float | int | str | None) -> str:
    if value is None:
        return ""  # the clip has no object in this slot
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def write_split_tables(output: Path, split: str, rows: list[dict], max_objects: int) -> None:
    """The video list (`path label`, label = number of objects) and the target table of a split."""
    lines = "".join(f"{row['path']} {row['n_objects']}\n" for row in rows)
    write_atomic(output / f"{split}.txt", lines)
    columns = target_columns(max_objects)
    table = io.StringIO()
    writer = csv.writer(table, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows([_format(row.get(c)) for c in columns] for row in rows)
    write_atomic(output / f"{split}_targets.csv", table.getvalue())


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def write_preview(output: Path, paths: list[str], frames: int) -> None:
    """A contact sheet: one clip per row, frames evenly spaced in time, read back from the videos."""
    steps = np.linspace(0, frames - 1, min(PREVIEW_FRAMES, frames)).round().astype(int)
    rows = []
    for relpath in paths[:PREVIEW_CLIPS]:
        clip = decord.VideoReader(str(output / relpath)).get_batch(steps.tolist()).asnumpy()
        clip = np.pad(clip, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=255)  # white gutters
        rows.append(np.concatenate(list(clip), axis=1))
    sheet = np.concatenate(rows, axis=0).repeat(PREVIEW_SCALE, axis=0).repeat(PREVIEW_SCALE, axis=1)
    tmp = output / "preview.png.tmp"
    Image.fromarray(sheet).save(tmp, format="PNG")
    tmp.replace(output / "preview.png")


def _pool_context() -> mp.context.BaseContext:
    # fork starts workers instantly and shares the imported modules; elsewhere use the default
    return mp.get_context("fork" if sys.platform.startswith("linux") else None)


def parallel_map(fn: Callable, items: Sequence, workers: int, desc: str, unit: str) -> list:
    """[fn(item) for item in items], in order, made by `workers` processes, with a progress bar."""
    progress = functools.partial(tqdm, total=len(items), desc=desc, unit=unit, mininterval=1.0)
    if workers == 1 or len(items) <= 1:
        return list(progress(map(fn, items)))
    chunksize = max(1, min(16, len(items) // (4 * workers)))
    with _pool_context().Pool(workers) as pool:
        results: Iterator = pool.imap(fn, items, chunksize=chunksize)
        return list(progress(results))


def generate_split(cfg: WorldConfig, split: str, count: int) -> list[dict]:
    """All clips of one split, in index order, made by `cfg.workers` processes."""
    return parallel_map(functools.partial(make_clip, cfg, split), range(count), cfg.workers, f"world {split}", "clip")


def generate_world(cfg: WorldConfig) -> Path:
    """Write the whole world under `cfg.output` and return that folder."""
    validate_world_config(cfg)
    output = Path(cfg.output)
    output.mkdir(parents=True, exist_ok=True)
    # workers get a plain dataclass: cheap to pickle and to read in the inner loops
    plain = OmegaConf.to_object(cfg) if OmegaConf.is_config(cfg) else cfg
    start = time.perf_counter()
    paths = {}
    for split, count in (("train", cfg.num_train), ("val", cfg.num_val)):
        rows = generate_split(plain, split, count)
        write_split_tables(output, split, rows, cfg.max_objects)
        paths[split] = [row["path"] for row in rows]
    if paths["train"] or paths["val"]:
        write_preview(output, paths["train"] or paths["val"], cfg.frames)
    # written last: a config.yaml says the world under it is complete (the demo reuses such a world)
    save_config(cfg, output / "config.yaml")
    total = len(paths["train"]) + len(paths["val"])
    elapsed = time.perf_counter() - start
    print(f"world: {total} clips in {elapsed:.1f}s ({total / max(elapsed, 1e-9):.1f} clips/s) -> {output}")
    return output


def ensure_world(cfg: WorldConfig) -> Path:
    """The world `cfg` describes: reused when `cfg.output` already holds one generated with the same config."""
    existing = Path(cfg.output) / "config.yaml"  # written last, so it marks a complete world
    if existing.is_file() and OmegaConf.to_yaml(OmegaConf.load(existing)) == OmegaConf.to_yaml(cfg):
        print(f"world: reusing {cfg.output} (same config)")
        return Path(cfg.output)
    return generate_world(cfg)


def main(cfg: WorldConfig) -> Path:
    """Entry point of `vjepa world`."""
    return generate_world(cfg)
