"""Violation-of-expectation clips: matched twins that agree up to an event, after which one breaks physics.

Each group is one random scene (sampled as `vjepa world` samples them) simulated twice. The
possible twin is the ordinary simulation; the impossible twin is identical up to `event_frame`,
after which object 0 (the largest) violates one property:

    permanence         it vanishes (drawn invisible from the event on)
    continuity         it teleports half the box away (its body is moved at the event)
    gravity            it falls upwards (each frame a velocity kick reverses the net gravity on it)
    solidity           it passes through walls and objects (its shape stops colliding at the event)
    colour_constancy   its colour changes to the complementary one

A scene where the violation would not show (say, a vanishing object already at rest under
another) is redrawn from the group's generator, so every impossible twin differs visibly.
Every group draws from `np.random.default_rng([seed, property, group])`: the same seed gives the
same files.

Layout under `cfg.output`:
    config.yaml                                      the resolved config
    videos/gravity_0003_possible.mp4, ..._impossible.mp4
    voe.csv                                          `path,group,possible,property,event_frame`
"""
from __future__ import annotations

import csv
import io
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional, Tuple

import numpy as np
import pymunk
from omegaconf import OmegaConf
from tqdm import tqdm

from vjepa.config import ConfigError, save_config
from vjepa.world.generate import WorldConfig, validate_world_config, write_atomic
from vjepa.world.physics import BOX, OnFrame, Scene, Trajectory, sample_scene, simulate
from vjepa.world.render import render_frames
from vjepa.world.video import write_video

PROPERTIES = ("permanence", "continuity", "gravity", "solidity", "colour_constancy")
TABLE_COLUMNS = ("path", "group", "possible", "property", "event_frame")
MIN_UPWARD_GRAVITY = 100.0  # px/s^2: a barely-reversed weak gravity would hardly show in 32 frames
VISIBLE_CHANGE = 64  # a twin pair must differ by at least this much (0..255) at some pixel after the event
MAX_TRIES = 20


def _voe_world() -> WorldConfig:
    # no occluder: it could hide the very event the clip is about
    return WorldConfig(occluder_prob=0.0)


@dataclass
class VoEConfig:
    output: str = "runs/voe"
    seed: int = 0
    groups_per_property: int = 20  # twin pairs per property
    properties: List[str] = field(default_factory=lambda: list(PROPERTIES))
    event: Tuple[float, float] = (0.35, 0.6)  # event frame drawn uniformly in this fraction of the clip
    # scenes, frames, fps and size as `vjepa world` makes them; its output, num_train, num_val and workers are unused
    world: WorldConfig = field(default_factory=_voe_world)


def validate_voe_config(cfg: VoEConfig) -> None:
    validate_world_config(cfg.world)
    unknown = [p for p in cfg.properties if p not in PROPERTIES]
    if unknown or not cfg.properties:
        raise ConfigError(f"voe config key 'properties' = {list(cfg.properties)}: expected some of {', '.join(PROPERTIES)}")
    if cfg.groups_per_property < 1:
        raise ConfigError(f"voe config key 'groups_per_property' = {cfg.groups_per_property}: must be at least 1")
    lo, hi = cfg.event
    if not 0 < lo <= hi < 1:
        raise ConfigError(f"voe config key 'event' = {list(cfg.event)}: expected fractions 0 < low <= high < 1 of the clip")


# --------------------------------------------------------------------------- violations


Edit = Callable[[Trajectory], None]


def _no_edit(trajectory: Trajectory) -> None:
    pass


def violation(prop: str, scene: Scene, event: int, fps: int) -> tuple[Optional[OnFrame], Edit]:
    """What makes the impossible twin: a physics intervention from `event` on and/or a trajectory edit."""
    obj = scene.objects[0]

    if prop == "permanence":
        def vanish(trajectory: Trajectory) -> None:
            trajectory.visible[event:, 0] = False
        return None, vanish

    if prop == "colour_constancy":
        def recolour(trajectory: Trajectory) -> None:
            trajectory.colour[event:, 0] = 255 - np.array(obj.colour, dtype=np.uint8)
        return None, recolour

    if prop == "continuity":
        bound = obj.size * (math.sqrt(2.0) if obj.shape == BOX else 1.0)

        def teleport(t: int, space: pymunk.Space, bodies) -> None:
            if t == event:
                x, y = bodies[0].position
                x = x + scene.size / 2 if x < scene.size / 2 else x - scene.size / 2
                bodies[0].position = (min(max(x, bound), scene.size - bound), y)
        return teleport, _no_edit

    if prop == "gravity":
        upward = max(scene.gravity, MIN_UPWARD_GRAVITY)
        kick = (scene.gravity + upward) / fps  # cancels a frame of gravity and adds as much upwards

        def antigravity(t: int, space: pymunk.Space, bodies) -> None:
            if t >= event:
                vx, vy = bodies[0].velocity
                bodies[0].velocity = (vx, vy - kick)
        return antigravity, _no_edit

    if prop == "solidity":
        def ghost(t: int, space: pymunk.Space, bodies) -> None:
            if t == event:
                for shape in bodies[0].shapes:
                    shape.sensor = True  # sensors report contacts but push nothing and are not pushed
        return ghost, _no_edit

    raise ValueError(f"unknown property {prop!r}; expected one of {', '.join(PROPERTIES)}")


def make_twins(cfg: VoEConfig, prop: str, index: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Rendered frames [T, H, W, 3] of the possible and the impossible twin of one group, and the event frame."""
    world = cfg.world
    rng = np.random.default_rng([cfg.seed, PROPERTIES.index(prop), index])
    for _ in range(MAX_TRIES):
        scene = sample_scene(rng, world)
        event = int(rng.integers(round(cfg.event[0] * world.frames), round(cfg.event[1] * world.frames) + 1))
        on_frame, edit = violation(prop, scene, event, world.fps)
        possible = render_frames(scene, simulate(scene, world.frames, world.fps, world.substeps), world.size)
        trajectory = simulate(scene, world.frames, world.fps, world.substeps, on_frame)
        edit(trajectory)
        impossible = render_frames(scene, trajectory, world.size)
        change = np.abs(possible[event:].astype(np.int16) - impossible[event:].astype(np.int16)).max()
        if change >= VISIBLE_CHANGE:
            return possible, impossible, event
    raise RuntimeError(f"{prop} group {index}: no visible violation in {MAX_TRIES} scenes; "
                       "raise world.object_size or the voe config's event range")


# --------------------------------------------------------------------------- the data set


def write_group(cfg: VoEConfig, prop: str, index: int) -> list[dict]:
    possible, impossible, event = make_twins(cfg, prop, index)
    group = f"{prop}_{index:04d}"
    rows = []
    for is_possible, frames in ((1, possible), (0, impossible)):
        relpath = f"videos/{group}_{'possible' if is_possible else 'impossible'}.mp4"
        write_video(Path(cfg.output) / relpath, frames, cfg.world.fps)
        rows.append({"path": relpath, "group": group, "possible": is_possible, "property": prop, "event_frame": event})
    return rows


def write_table(path: Path, rows: list[dict]) -> None:
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=TABLE_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(path, table.getvalue())


def generate_voe(cfg: VoEConfig) -> Path:
    """Write every property's twin groups and the VoE table under `cfg.output`; return that folder."""
    validate_voe_config(cfg)
    output = Path(cfg.output)
    output.mkdir(parents=True, exist_ok=True)
    plain = OmegaConf.to_object(cfg) if OmegaConf.is_config(cfg) else cfg
    start = time.perf_counter()
    jobs = [(p, i) for p in plain.properties for i in range(plain.groups_per_property)]
    rows = [row for p, i in tqdm(jobs, desc="voe", unit="group", mininterval=1.0) for row in write_group(plain, p, i)]
    write_table(output / "voe.csv", rows)
    save_config(cfg, output / "config.yaml")  # written last: marks a complete set
    print(f"voe: {len(jobs)} twin groups in {time.perf_counter() - start:.1f}s -> {output}")
    return output


def main(cfg: VoEConfig) -> Path:
    """Entry point of `vjepa voe`."""
    return generate_voe(cfg)
