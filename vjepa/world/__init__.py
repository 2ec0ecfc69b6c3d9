"""The embedded synthetic physics world: pymunk scenes, rendered frames, mp4 clips, lists and targets."""
from .generate import WorldConfig, ensure_world, generate_world, main, target_columns, validate_world_config
from .physics import BOX, DISC, ObjectSpec, Scene, Trajectory, sample_scene, simulate
from .render import render_frames
from .video import write_video

__all__ = [
    "BOX",
    "DISC",
    "ObjectSpec",
    "Scene",
    "Trajectory",
    "WorldConfig",
    "ensure_world",
    "generate_world",
    "main",
    "render_frames",
    "sample_scene",
    "simulate",
    "target_columns",
    "validate_world_config",
    "write_video",
]
