"""Scenes of rigid discs and boxes in a walled box, sampled at random and simulated with pymunk.

Coordinates are image pixels: x to the right, y downwards, so gravity is +y. A scene is pure
data (`Scene`); `simulate` builds a pymunk space from it and records every object's pose at each
frame in a `Trajectory`. The trajectory also carries per-frame visibility and colour, which the
renderer obeys, so a violation-of-expectation clip is an ordinary clip with one intervention:
`on_frame` edits the physical state (gravity reversed, a pass through the wall) and the caller
edits `visible` / `colour` (an object hidden or recoloured) before rendering.

A scene may hold a barrier: a thick static bar inside the box, drawn dark behind the objects, that
they bounce off as off the box's own walls (a solidity test lets an object pass through it).
"""
from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np
import pymunk

from vjepa.world.config import WorldConfig

DISC, BOX = 0, 1
WALL_TYPE, OBJECT_TYPE = 1, 2
WALL_THICKNESS = 10.0  # thick walls so a fast object cannot tunnel through in one substep
BARRIER_THICKNESS = 4.0  # px: the bar inside the box (a static segment of radius 2)
BARRIER_LENGTH = (0.3, 0.6)  # fraction of the box side
BARRIER_CATEGORY = 0b100  # the barrier's pymunk collision category, so a VoE ghost can miss it alone
BARRIER_FILTER = pymunk.ShapeFilter(categories=BARRIER_CATEGORY)
PLACEMENT_TRIES = 1000


@dataclass
class ObjectSpec:
    shape: int  # DISC or BOX
    mass: float
    size: float  # disc radius or box half-side, px
    elasticity: float
    friction: float
    colour: tuple[int, int, int]
    x0: float
    y0: float
    vx0: float
    vy0: float
    angle0: float = 0.0


@dataclass
class Scene:
    size: int  # the box is size x size px; walls lie just outside it
    gravity: float  # px/s^2, pointing down
    objects: list[ObjectSpec]
    occluder: Optional[tuple[float, float]] = None  # [x_left, x_right) of a grey band drawn in front
    barrier: Optional[tuple[float, float, float, float]] = None  # a static bar's end points (x0, y0, x1, y1)


@dataclass
class Trajectory:
    position: np.ndarray  # [T, N, 2] float, px
    angle: np.ndarray  # [T, N] float, radians
    visible: np.ndarray  # [T, N] bool
    colour: np.ndarray  # [T, N, 3] uint8
    n_collisions: int = 0  # object-object contacts begun
    n_wall_bounces: int = 0  # object-wall contacts begun


OnFrame = Callable[[int, pymunk.Space, Sequence[pymunk.Body]], None]


def distinct_colours(rng: np.random.Generator, n: int) -> list[tuple[int, int, int]]:
    """Saturated colours with hues spread around the wheel, so objects never look alike."""
    h0 = rng.uniform()
    colours = []
    for k in range(n):
        h = (h0 + k / n + rng.uniform(-0.1, 0.1) / n) % 1.0
        s, v = rng.uniform(0.75, 1.0), rng.uniform(0.65, 0.95)
        colours.append(tuple(int(round(255 * c)) for c in colorsys.hsv_to_rgb(h, s, v)))
    return colours


def bounding_radius(shape: int, size: float) -> float:
    """The radius of the circle around a disc or a box (of any rotation), px."""
    return size * (math.sqrt(2.0) if shape == BOX else 1.0)


def segment_distance(points: np.ndarray, barrier: tuple[float, float, float, float]) -> np.ndarray:
    """Distance from each point [..., 2] to the barrier's centre line (a segment), px."""
    a, b = np.array(barrier[:2]), np.array(barrier[2:])
    ab = b - a
    t = np.clip(((points - a) @ ab) / (ab @ ab), 0.0, 1.0)
    return np.linalg.norm(points - (a + t[..., None] * ab), axis=-1)


def clear_of_barrier(points: np.ndarray, radii, barrier: tuple[float, float, float, float]) -> np.ndarray:
    """Whether circles at `points` [..., 2] with `radii` keep at least 1 px from the barrier's faces."""
    return segment_distance(points, barrier) > np.asarray(radii) + BARRIER_THICKNESS / 2 + 1.0


def _place(rng: np.random.Generator, size: int, radius: float, placed: list[tuple[float, float, float]],
           barrier: Optional[tuple[float, float, float, float]] = None):
    """A centre inside the walls whose bounding circle overlaps none already placed, nor the barrier."""
    for _ in range(PLACEMENT_TRIES):
        x, y = rng.uniform(radius, size - radius, size=2)
        if barrier is not None and not clear_of_barrier(np.array([x, y]), radius, barrier):
            continue
        if all((x - px) ** 2 + (y - py) ** 2 > (radius + pr + 1.0) ** 2 for px, py, pr in placed):
            return float(x), float(y)
    raise ValueError(
        f"cannot place {len(placed) + 1} non-overlapping objects in a {size}px box; "
        "lower world config keys 'max_objects' or 'object_size', or raise 'size'"
    )


def sample_barrier(rng: np.random.Generator, size: int) -> tuple[float, float, float, float]:
    """A vertical or horizontal bar of random length, away from the box's edges."""
    length = rng.uniform(*BARRIER_LENGTH) * size
    along = rng.uniform(0.0, size - length)
    across = rng.uniform(0.25 * size, 0.75 * size)
    if rng.uniform() < 0.5:
        return (float(across), float(along), float(across), float(along + length))  # vertical
    return (float(along), float(across), float(along + length), float(across))  # horizontal


def bar_across(point, step, length: float, size: int) -> tuple[float, float, float, float]:
    """A bar of `length` px centred on `point`, square to the motion `step` (vertical if it is mostly sideways),
    cut to the box."""
    (x, y), (vx, vy), half = point, step, 0.5 * length
    if abs(vx) >= abs(vy):
        return (float(x), float(max(y - half, 0.0)), float(x), float(min(y + half, size)))
    return (float(max(x - half, 0.0)), float(y), float(min(x + half, size)), float(y))


def sample_scene(rng: np.random.Generator, cfg: WorldConfig) -> Scene:
    """A random scene: object count, shapes, masses, sizes, materials, poses, velocities, gravity.

    Objects are listed largest first.
    """
    n = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
    gravity = float(rng.uniform(*cfg.gravity))
    # drawn first, so objects are placed clear of it; drawn whatever the chance, so that the scene's other
    # draws do not depend on wall_prob
    barrier = sample_barrier(rng, cfg.size)
    if not rng.uniform() < cfg.wall_prob:
        barrier = None
    colours = distinct_colours(rng, n)
    objects, placed = [], []
    for k in range(n):
        shape = BOX if rng.uniform() < cfg.box_prob else DISC
        size = float(rng.uniform(*cfg.object_size))
        bound = bounding_radius(shape, size)
        x, y = _place(rng, cfg.size, bound, placed, barrier)
        placed.append((x, y, bound))
        speed, heading = rng.uniform(*cfg.speed), rng.uniform(0.0, 2.0 * math.pi)
        objects.append(ObjectSpec(
            shape=shape,
            mass=float(rng.uniform(*cfg.mass)),
            size=size,
            elasticity=float(rng.uniform(*cfg.elasticity)),
            friction=float(rng.uniform(*cfg.friction)),
            colour=colours[k],
            x0=x, y0=y,
            vx0=float(speed * math.cos(heading)), vy0=float(speed * math.sin(heading)),
            angle0=float(rng.uniform(0.0, 0.5 * math.pi)) if shape == BOX else 0.0,
        ))
    # largest first: "object 0" (obj0_* in the target table, the object a VoE twin acts on) is then
    # one a viewer can pick out, not whichever happened to be drawn first
    objects.sort(key=lambda o: -o.size)
    occluder = None
    if rng.uniform() < cfg.occluder_prob:
        width = rng.uniform(cfg.size / 8, cfg.size / 5)
        left = rng.uniform(0.0, cfg.size - width)
        occluder = (float(left), float(left + width))
    return Scene(size=cfg.size, gravity=gravity, objects=objects, occluder=occluder, barrier=barrier)


def _add_walls(space: pymunk.Space, size: int) -> None:
    r, s = WALL_THICKNESS, float(size)
    # segment centre lines sit r outside the box, so the wall faces are exactly its edges
    ends = [((-r, s + r), (s + r, s + r)), ((-r, -r), (s + r, -r)), ((-r, -r), (-r, s + r)), ((s + r, -r), (s + r, s + r))]
    for a, b in ends:
        wall = pymunk.Segment(space.static_body, a, b, r)
        wall.elasticity = 1.0  # pymunk multiplies elasticities, so the object's own value decides
        wall.friction = 1.0
        wall.collision_type = WALL_TYPE
        space.add(wall)


def _add_barrier(space: pymunk.Space, barrier: tuple[float, float, float, float]) -> None:
    bar = pymunk.Segment(space.static_body, barrier[:2], barrier[2:], BARRIER_THICKNESS / 2)
    bar.elasticity, bar.friction = 1.0, 1.0
    bar.collision_type = WALL_TYPE
    bar.filter = BARRIER_FILTER
    space.add(bar)


def _add_object(space: pymunk.Space, obj: ObjectSpec) -> pymunk.Body:
    if obj.shape == DISC:
        body = pymunk.Body(obj.mass, pymunk.moment_for_circle(obj.mass, 0.0, obj.size))
        shape = pymunk.Circle(body, obj.size)
    else:
        side = 2.0 * obj.size
        body = pymunk.Body(obj.mass, pymunk.moment_for_box(obj.mass, (side, side)))
        shape = pymunk.Poly.create_box(body, (side, side))
    body.position = (obj.x0, obj.y0)
    body.velocity = (obj.vx0, obj.vy0)
    body.angle = obj.angle0
    shape.elasticity = obj.elasticity
    shape.friction = obj.friction
    shape.collision_type = OBJECT_TYPE
    space.add(body, shape)
    return body


def build_space(scene: Scene) -> tuple[pymunk.Space, list[pymunk.Body], dict[str, int]]:
    """The pymunk space of a scene, its object bodies in scene order, and live contact counters."""
    space = pymunk.Space()
    space.gravity = (0.0, scene.gravity)
    _add_walls(space, scene.size)
    if scene.barrier is not None:
        _add_barrier(space, scene.barrier)
    bodies = [_add_object(space, obj) for obj in scene.objects]
    counts = {"collisions": 0, "wall_bounces": 0}

    def count(key: str):
        def begin(arbiter: pymunk.Arbiter, space: pymunk.Space, data) -> None:
            counts[key] += 1
        return begin

    space.on_collision(OBJECT_TYPE, OBJECT_TYPE, begin=count("collisions"))
    space.on_collision(WALL_TYPE, OBJECT_TYPE, begin=count("wall_bounces"))
    return space, bodies, counts


def simulate(scene: Scene, frames: int, fps: int, substeps: int, on_frame: Optional[OnFrame] = None) -> Trajectory:
    """Step the scene at `fps * substeps` Hz and record each object's pose at every frame.

    `on_frame(t, space, bodies)` runs just before frame t is recorded and may change the state;
    frame 0 is the initial state.
    """
    space, bodies, counts = build_space(scene)
    n = len(bodies)
    position = np.zeros((frames, n, 2), dtype=np.float64)
    angle = np.zeros((frames, n), dtype=np.float64)
    dt = 1.0 / (fps * substeps)
    for t in range(frames):
        if t > 0:
            for _ in range(substeps):
                space.step(dt)
        if on_frame is not None:
            on_frame(t, space, bodies)
        for k, body in enumerate(bodies):
            position[t, k] = body.position
            angle[t, k] = body.angle
    colour = np.array([obj.colour for obj in scene.objects], dtype=np.uint8).reshape(1, n, 3)
    return Trajectory(
        position=position,
        angle=angle,
        visible=np.ones((frames, n), dtype=bool),
        colour=np.repeat(colour, frames, axis=0),
        n_collisions=counts["collisions"],
        n_wall_bounces=counts["wall_bounces"],
    )
