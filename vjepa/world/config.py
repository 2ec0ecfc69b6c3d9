"""The world's config: what `vjepa world` simulates and how much of it, checked before any clip is made."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Tuple

from vjepa.config import ConfigError


@dataclass
class WorldConfig:
    output: str = "runs/world"
    seed: int = 0
    num_train: int = 2000
    num_val: int = 500
    frames: int = 32
    fps: int = 15
    size: int = 64  # frame height and width, px (even)
    substeps: int = 8  # physics steps per frame
    min_objects: int = 1
    max_objects: int = 3
    mass: Tuple[float, float] = (0.5, 3.0)
    object_size: Tuple[float, float] = (3.0, 7.0)  # disc radius or box half-side, px
    elasticity: Tuple[float, float] = (0.5, 0.95)
    friction: Tuple[float, float] = (0.0, 0.3)
    speed: Tuple[float, float] = (15.0, 60.0)  # initial speed, px/s
    gravity: Tuple[float, float] = (10.0, 150.0)  # px/s^2, pointing down
    box_prob: float = 0.5
    occluder_prob: float = 0.25
    wall_prob: float = 0.5  # chance of a barrier: a dark static bar inside the box that objects bounce off
    workers: int = 2


def validate_world_config(cfg: WorldConfig) -> None:
    """Reject settings that cannot make a sensible world, naming the key to change."""
    def check(ok: bool, key: str, why: str) -> None:
        if not ok:
            raise ConfigError(f"world config key '{key}' = {getattr(cfg, key)}: {why}")

    for key in ("frames", "fps", "substeps", "workers", "min_objects"):
        check(getattr(cfg, key) >= 1, key, "must be at least 1")
    for key in ("num_train", "num_val"):
        check(getattr(cfg, key) >= 0, key, "must not be negative")
    check(cfg.max_objects >= cfg.min_objects, "min_objects", f"must not exceed max_objects = {cfg.max_objects}")
    check(cfg.size >= 16 and cfg.size % 2 == 0, "size", "must be an even number of pixels, at least 16")
    for key in ("mass", "object_size", "elasticity", "friction", "speed", "gravity"):
        lo, hi = getattr(cfg, key)
        check(0 <= lo <= hi, key, "must be a range [low, high] with 0 <= low <= high")
    for key in ("mass", "object_size"):
        check(getattr(cfg, key)[0] > 0, key, "must be positive")
    check(cfg.elasticity[1] <= 1, "elasticity", "above 1 would add energy at every bounce")
    for key in ("box_prob", "occluder_prob", "wall_prob"):
        check(0 <= getattr(cfg, key) <= 1, key, "is a probability, between 0 and 1")
    # a rotated box needs its diagonal's room; an object must fit between the walls
    check(2 * math.sqrt(2) * cfg.object_size[1] < cfg.size, "object_size", f"the largest object must fit in a {cfg.size}px box")
