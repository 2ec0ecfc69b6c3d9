"""Draw a simulated scene as RGB frames: flat objects on a light background, a barrier behind them, occluder in front.

Frames are drawn at twice the resolution and each 2x2 block averaged, a cheap anti-aliasing that
keeps sub-pixel motion visible. Everything is vectorised over frames and pixels; the only Python
loop is over the (few) objects, drawn in scene order so later objects lie on top.
"""
from __future__ import annotations

import numpy as np

from vjepa.world.physics import BARRIER_THICKNESS, DISC, Scene, Trajectory, segment_distance

BACKGROUND = (236, 234, 226)
OCCLUDER = (128, 128, 128)
BARRIER = (64, 60, 56)  # dark: the bar is solid, drawn behind the objects (one passing through it shows on top)
SUPERSAMPLE = 2  # fixed: downsample_2x averages 2x2 blocks


def _object_masks(kind: int, size: float, position: np.ndarray, angle: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """[T, S, S] coverage of one object at every frame; `grid` holds pixel-centre coordinates."""
    dx = grid[None, None, :] - position[:, 0, None, None]  # [T, 1, S] along x
    dy = grid[None, :, None] - position[:, 1, None, None]  # [T, S, 1] along y
    if kind == DISC:
        return dx * dx + dy * dy <= size * size
    cos, sin = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
    u = dx * cos + dy * sin  # coordinates in the box's own frame
    v = dy * cos - dx * sin
    return (np.abs(u) <= size) & (np.abs(v) <= size)


def render_frames(scene: Scene, trajectory: Trajectory, size: int) -> np.ndarray:
    """uint8 frames [T, size, size, 3] of a trajectory, honouring its per-frame visibility and colour."""
    frames = trajectory.position.shape[0]
    big = size * SUPERSAMPLE
    scale = big / scene.size
    grid = (np.arange(big) + 0.5) / scale  # pixel centres in scene coordinates
    # one contiguous plane per colour channel: masked copies into planes are far faster than into RGB pixels
    planes = np.empty((3, frames, big, big), dtype=np.uint8)
    planes[...] = np.array(BACKGROUND, dtype=np.uint8)[:, None, None, None]
    if scene.barrier is not None:
        centres = np.stack(np.meshgrid(grid, grid, indexing="xy"), axis=-1)  # [S, S, (x, y)]
        bar = segment_distance(centres, scene.barrier) <= BARRIER_THICKNESS / 2
        for c in range(3):
            planes[c][:, bar] = BARRIER[c]
    for k, obj in enumerate(scene.objects):
        mask = _object_masks(obj.shape, obj.size, trajectory.position[:, k], trajectory.angle[:, k], grid)
        mask &= trajectory.visible[:, k, None, None]
        for c in range(3):
            np.copyto(planes[c], trajectory.colour[:, k, c, None, None], where=mask)
    if scene.occluder is not None:
        left, right = (int(round(x * scale)) for x in scene.occluder)
        planes[..., left:right] = np.array(OCCLUDER, dtype=np.uint8)[:, None, None, None]
    return np.ascontiguousarray(downsample_2x(planes).transpose(1, 2, 3, 0))


def downsample_2x(planes: np.ndarray) -> np.ndarray:
    """Average 2x2 pixel blocks over the last two axes of a uint8 array, rounding to nearest."""
    *lead, h2, w2 = planes.shape
    # adding row pairs then column pairs is several times faster than .sum over a 6-d view
    rows = planes.reshape(-1, h2 // 2, 2, w2).astype(np.uint16)
    rows = (rows[:, :, 0] + rows[:, :, 1]).reshape(-1, h2 // 2, w2 // 2, 2)
    blocks = rows[..., 0] + rows[..., 1]
    return ((blocks + 2) // 4).astype(np.uint8).reshape(*lead, h2 // 2, w2 // 2)
