"""Violation-of-expectation clips: matched twins that agree up to an event, after which one breaks physics.

Each group is one random scene (sampled as `vjepa world` samples them) simulated twice. The
possible twin is the ordinary simulation; the impossible twin is identical up to `event_frame`,
after which object 0 (the largest) violates one property:

    permanence         it vanishes (drawn invisible from the event on)
    continuity         it teleports half the box away (its body is moved at the event)
    gravity            it falls upwards (each frame a velocity kick reverses the net gravity on it)
    solidity           it passes through a wall: a barrier is placed across its path just after the event,
                       and from the event on object 0 stops colliding with it
    colour_constancy   its colour changes to the complementary one

Balanced sets (IntPhys's minimal sets; Riochet et al. 2018). Twins alone are biased:
a vanished object leaves an emptier, easier frame, so a model that predicts only the scene's
layout finds every impossible permanence twin the *less* surprising. For the properties whose
violation is a swap of what is drawn (permanence, continuity, colour_constancy), a set holds two
possible clips of one scene that differ only in object 0 (A: as drawn; B: invisible, mirrored
left-right, or in the complementary colour) and the two impossible splices A-then-B and
B-then-A at the event. The impossible clips then show exactly the frames of the possible ones,
only in an order physics forbids, and any frame-by-frame statistic cancels within the set. The
set is written as two twin groups (A with A-then-B, B with B-then-A) that share the `set` column.
Object 0 must not touch another object in A or B (else hiding or moving it would change how the
others move), and a scene where it does is redrawn.

Solidity through a wall has the same bias the other way round: the possible twin bounces, a turn
a predictor of straight-line motion misses, while the impossible twin glides on as if nothing
were there, so the twin pair favours a model that knows inertia but not walls. Its balanced set
crosses the bar (drawn or not) with the motion (bouncing off it or going straight on): possible
are the bar with the bounce (A) and no bar with the straight run (B); impossible are the bar with
the straight run (passing through it) and no bar with the bounce (turning at nothing). Each
impossible clip has one possible clip's bar and the other's motion, so a statistic of the motion
alone, or of the bar alone, cancels within the set. The scene is redrawn if another object meets
the bar (else the straight run with and without the bar would differ in more than the bar).
Gravity changes the motion itself and stays a single twin pair.

A scene where the violation would not show (say, a vanishing object already at rest under
another) is redrawn from the group's generator, so every impossible twin differs visibly.
Every set draws from `np.random.default_rng([seed, property, index])`: the same seed gives the
same files.

Layout under `cfg.output`:
    config.yaml                                      the resolved config
    videos/gravity_0003_possible.mp4, ..._impossible.mp4
    videos/permanence_0003a_possible.mp4, ..._impossible.mp4, permanence_0003b_...   (a balanced set)
    videos/solidity_0003a_...  (with the bar: bounce / through), solidity_0003b_...  (without: straight / turn)
    voe.csv                                          `path,group,possible,property,event_frame,set`
"""
from __future__ import annotations

import csv
import functools
import io
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
import pymunk
from omegaconf import OmegaConf

from vjepa.config import ConfigError, save_config
from vjepa.world.generate import WorldConfig, parallel_map, validate_world_config, write_atomic
from vjepa.world.physics import (
    BARRIER_CATEGORY, BARRIER_LENGTH, OnFrame, Scene, Trajectory, bar_across, bounding_radius, clear_of_barrier,
    sample_scene, segment_distance, simulate,
)
from vjepa.world.render import render_frames
from vjepa.world.video import write_video

PROPERTIES = ("permanence", "continuity", "gravity", "solidity", "colour_constancy")
BALANCED = ("permanence", "continuity", "colour_constancy")  # violations that swap what is drawn: balanced by splices
TABLE_COLUMNS = ("path", "group", "possible", "property", "event_frame", "set")
MIN_UPWARD_GRAVITY = 100.0  # px/s^2: a barely-reversed weak gravity would hardly show in 32 frames
VISIBLE_CHANGE = 64  # a twin pair must differ by at least this much (0..255) at some pixel after the event
UNTOUCHED = 0.05  # px: the other objects of a balanced set move the same with and without object 0
MAX_TRIES = 200  # scenes drawn per set before giving up (solidity: 13 a set on average in configs/world/voe.yaml)
DEEP = 0.5  # solidity: object 0's centre passes within this fraction of its size of the barrier
# the solidity violation's collision filter: pymunk lets two shapes collide when each one's mask has a bit of
# the other's categories, so object 0 misses the barrier and still meets the box's walls and the other objects
WALL_GHOST = pymunk.ShapeFilter(categories=0b10, mask=pymunk.ShapeFilter.ALL_MASKS() ^ BARRIER_CATEGORY)
HIT_AFTER_EVENT = (2, 6)  # solidity through a wall: object 0 reaches the barrier this many frames after the event


def _voe_world() -> WorldConfig:
    # no occluder: it could hide the very event the clip is about; no barrier but the one solidity places
    return WorldConfig(occluder_prob=0.0, wall_prob=0.0)


@dataclass
class VoEConfig:
    output: str = "runs/voe"
    seed: int = 0
    groups_per_property: int = 50  # sets per property: a balanced set of four clips, or for gravity a twin pair
    properties: List[str] = field(default_factory=lambda: list(PROPERTIES))
    event: Tuple[float, float] = (0.35, 0.6)  # event frame drawn uniformly in this fraction of the clip
    # scenes, frames, fps and size as `vjepa world` makes them, in `workers` processes; output, num_train, num_val unused
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


def violation(prop: str, scene: Scene, event: int, fps: int) -> OnFrame:
    """The physics intervention that makes an impossible clip from `event` on: gravity or solidity, the two
    violations that change the motion itself (the others are splices of possible clips)."""
    if prop == "gravity":
        upward = max(scene.gravity, MIN_UPWARD_GRAVITY)
        kick = (scene.gravity + upward) / fps  # cancels a frame of gravity and adds as much upwards

        def antigravity(t: int, space: pymunk.Space, bodies) -> None:
            if t >= event:
                vx, vy = bodies[0].velocity
                bodies[0].velocity = (vx, vy - kick)
        return antigravity

    if prop == "solidity":
        # through the barrier alone; never through the box's own walls: leaving the frame would look like leaving the view
        def ghost(t: int, space: pymunk.Space, bodies) -> None:
            if t == event:
                for shape in bodies[0].shapes:
                    shape.filter = WALL_GHOST
        return ghost

    raise ValueError(f"{prop!r} is not a violation of the motion; those are gravity and solidity")


def _set_rng(cfg: VoEConfig, prop: str, index: int) -> np.random.Generator:
    return np.random.default_rng([cfg.seed, PROPERTIES.index(prop), index])


def _draw(rng: np.random.Generator, cfg: VoEConfig) -> tuple[Scene, int]:
    """A scene as `vjepa world` samples them and its event frame."""
    world = cfg.world
    scene = sample_scene(rng, world)
    return scene, int(rng.integers(round(cfg.event[0] * world.frames), round(cfg.event[1] * world.frames) + 1))


def _shows(first: np.ndarray, second: np.ndarray, event: int) -> bool:
    """Whether two renders differ visibly somewhere from the event on."""
    return bool(np.abs(first[event:].astype(np.int16) - second[event:].astype(np.int16)).max() >= VISIBLE_CHANGE)


def make_twins(cfg: VoEConfig, index: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Rendered frames [T, H, W, 3] of a gravity twin pair (possible, impossible), and the event frame."""
    world = cfg.world
    rng = _set_rng(cfg, "gravity", index)
    for _ in range(MAX_TRIES):
        scene, event = _draw(rng, cfg)
        trajectory = simulate(scene, world.frames, world.fps, world.substeps, violation("gravity", scene, event, world.fps))
        possible = render_frames(scene, simulate(scene, world.frames, world.fps, world.substeps), world.size)
        impossible = render_frames(scene, trajectory, world.size)
        if _shows(possible, impossible, event):
            return possible, impossible, event
    raise RuntimeError(f"gravity group {index}: no visible violation in {MAX_TRIES} scenes; raise world.object_size or "
                       "world.speed, or the voe config's event range")


def barrier_across(rng: np.random.Generator, scene: Scene, world: WorldConfig, event: int) -> Optional[Scene]:
    """The scene with a barrier across object 0's path a few frames after the event, or None where it does not fit.

    The bar stands square to object 0's main direction of motion there (vertical if it moves mostly sideways),
    where its centre will be; the scene is refused if the bar would cover an object at the start or object 0
    would reach it before the event."""
    hit = event + int(rng.integers(HIT_AFTER_EVENT[0], HIT_AFTER_EVENT[1] + 1))
    free = simulate(scene, min(hit + 2, world.frames), world.fps, world.substeps).position[:, 0]  # [T, 2]
    if hit + 1 >= len(free):
        return None
    barrier = bar_across(free[hit], free[hit + 1] - free[hit - 1], rng.uniform(*BARRIER_LENGTH) * scene.size, scene.size)
    bounds = np.array([bounding_radius(obj.shape, obj.size) for obj in scene.objects])
    starts = np.array([[obj.x0, obj.y0] for obj in scene.objects])
    if not clear_of_barrier(starts, bounds, barrier).all():
        return None
    if not clear_of_barrier(free[: event + 1], bounds[0], barrier).all():
        return None  # object 0 would meet the bar before the event (the twins must agree until then)
    return replace(scene, barrier=barrier)


def _passes_through(scene: Scene, trajectory: Trajectory, event: int) -> bool:
    """Whether object 0's centre comes deep inside the barrier after the event (a graze would hardly show)."""
    gap = segment_distance(trajectory.position[event:, 0], scene.barrier)
    return bool((gap < DEEP * scene.objects[0].size).any())


def _copy(trajectory: Trajectory) -> Trajectory:
    return replace(trajectory, position=trajectory.position.copy(), angle=trajectory.angle.copy(),
                   visible=trajectory.visible.copy(), colour=trajectory.colour.copy())


def _touches_others(scene: Scene, trajectory: Trajectory, world: WorldConfig) -> bool:
    """Whether object 0 changes how the other objects move (it hits one, or one hits it)."""
    if len(scene.objects) == 1:
        return False
    alone = simulate(replace(scene, objects=scene.objects[1:]), world.frames, world.fps, world.substeps)
    return bool(np.abs(alone.position - trajectory.position[:, 1:]).max() > UNTOUCHED)


def second_possible(prop: str, scene: Scene, trajectory: Trajectory, world: WorldConfig) -> Optional[Trajectory]:
    """Clip B of a balanced set: the scene with object 0 hidden, mirrored left-right, or recoloured throughout.

    None where B is not a possible clip that differs from A in object 0 alone (object 0 touches another)."""
    obj = scene.objects[0]
    if prop == "colour_constancy":
        other = _copy(trajectory)
        other.colour[:, 0] = 255 - np.array(obj.colour, dtype=np.uint8)
        return other
    if _touches_others(scene, trajectory, world):
        return None
    if prop == "permanence":
        other = _copy(trajectory)
        other.visible[:, 0] = False
        return other
    if prop == "continuity":
        mirrored = replace(obj, x0=scene.size - obj.x0, vx0=-obj.vx0, angle0=-obj.angle0)
        other = simulate(replace(scene, objects=[mirrored, *scene.objects[1:]]), world.frames, world.fps,
                         world.substeps)
        # A's others move as if object 0 were absent (checked above): B's must move as A's do
        moved = np.abs(other.position[:, 1:] - trajectory.position[:, 1:])
        return None if moved.size and moved.max() > UNTOUCHED else other
    raise ValueError(f"{prop!r} has no balanced set; those that do: {', '.join(BALANCED)}")


def make_balanced_set(cfg: VoEConfig, prop: str, index: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Frames [T, H, W, 3] of a balanced set's two possible clips A and B, and the event frame.

    The set's impossible clips are the splices A[:event] + B[event:] and B[:event] + A[event:]."""
    world = cfg.world
    rng = _set_rng(cfg, prop, index)
    for _ in range(MAX_TRIES):
        scene, event = _draw(rng, cfg)
        first = simulate(scene, world.frames, world.fps, world.substeps)
        second = second_possible(prop, scene, first, world)
        if second is None:
            continue
        if prop == "continuity":  # a jump, not a nudge: the two places of object 0 do not overlap at the event
            bound = bounding_radius(scene.objects[0].shape, scene.objects[0].size)
            if np.linalg.norm(first.position[event, 0] - second.position[event, 0]) < 2 * bound + 2:
                continue
        a, b = render_frames(scene, first, world.size), render_frames(scene, second, world.size)
        if _shows(a, b, event):
            return a, b, event
    raise RuntimeError(f"{prop} set {index}: no scene in {MAX_TRIES} where object 0 moves alone and its change shows; "
                       "lower world.max_objects or raise world.size")


def make_wall_set(cfg: VoEConfig, index: int) -> tuple[list[tuple[np.ndarray, np.ndarray]], int]:
    """A balanced solidity set, as twin pairs (possible, impossible) of frames [T, H, W, 3], and the event frame.

    A: the bar drawn; object 0 bounces off it (possible) or passes through it (impossible).
    B: no bar; object 0 goes straight on (possible) or turns where the bar would be (impossible)."""
    world = cfg.world
    rng = _set_rng(cfg, "solidity", index)
    for _ in range(MAX_TRIES):
        scene, event = _draw(rng, cfg)
        scene = barrier_across(rng, replace(scene, barrier=None), world, event)
        if scene is None:
            continue
        through = simulate(scene, world.frames, world.fps, world.substeps, violation("solidity", scene, event, world.fps))
        if not _passes_through(scene, through, event):
            continue
        open_scene = replace(scene, barrier=None)
        straight = simulate(open_scene, world.frames, world.fps, world.substeps)
        if np.abs(straight.position - through.position).max() > UNTOUCHED:
            continue  # another object meets the bar: without it, more than the bar would change
        bounce = simulate(scene, world.frames, world.fps, world.substeps)  # `through` until the event, exactly
        # B's straight run is drawn from `through`, which it matches (checked above): the set's two motions are then
        # the same trajectories with and without the bar, and B's twins agree exactly up to the event, as A's do
        barred = render_frames(scene, bounce, world.size), render_frames(scene, through, world.size)
        unbarred = render_frames(open_scene, through, world.size), render_frames(open_scene, bounce, world.size)
        if _shows(*barred, event) and _shows(*unbarred, event):
            return [barred, unbarred], event
    raise RuntimeError(f"solidity set {index}: no scene in {MAX_TRIES} where object 0 alone meets the bar and passes "
                       "through it visibly; lower world.max_objects or raise world.speed")


# --------------------------------------------------------------------------- the data set


def write_group(cfg: VoEConfig, prop: str, index: int) -> list[dict]:
    """Write one balanced set of two twin pairs (for gravity, one twin pair); return their table rows."""
    name = f"{prop}_{index:04d}"
    if prop == "gravity":
        possible, impossible, event = make_twins(cfg, index)
        twins, matched = [(name, possible, impossible)], ""
    elif prop == "solidity":
        (barred, unbarred), event = make_wall_set(cfg, index)
        twins, matched = [(f"{name}a", *barred), (f"{name}b", *unbarred)], name
    else:
        a, b, event = make_balanced_set(cfg, prop, index)
        twins = [(f"{name}a", a, np.concatenate([a[:event], b[event:]])),
                 (f"{name}b", b, np.concatenate([b[:event], a[event:]]))]
        matched = name
    rows = []
    for group, possible, impossible in twins:
        for is_possible, frames in ((1, possible), (0, impossible)):
            relpath = f"videos/{group}_{'possible' if is_possible else 'impossible'}.mp4"
            write_video(Path(cfg.output) / relpath, frames, cfg.world.fps)
            rows.append({"path": relpath, "group": group, "possible": is_possible, "property": prop,
                         "event_frame": event, "set": matched})
    return rows


def _write_job(cfg: VoEConfig, job: tuple[str, int]) -> list[dict]:
    return write_group(cfg, *job)


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
    sets = parallel_map(functools.partial(_write_job, plain), jobs, plain.world.workers, "voe", "set")
    rows = [row for group_rows in sets for row in group_rows]
    write_table(output / "voe.csv", rows)
    save_config(cfg, output / "config.yaml")  # written last: marks a complete set
    print(f"voe: {len(jobs)} sets ({len(rows) // 2} twin pairs) in {time.perf_counter() - start:.1f}s -> {output}")
    return output


def main(cfg: VoEConfig) -> Path:
    """Entry point of `vjepa voe`."""
    return generate_voe(cfg)
