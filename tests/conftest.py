"""Shared fixtures: a tiny physics world generated once per test session (no downloads)."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import torch

# Two cores here: keep torch from oversubscribing them alongside data-loader workers.
torch.set_num_threads(2)
os.environ.setdefault("OMP_NUM_THREADS", "2")

REPO = Path(__file__).resolve().parent.parent


class FaultRow:
    """One row of docs/reliability.md, written by the test behind it once its assertions hold (`python -m app.faults`
    sets VJEPA_FAULT_TABLE); a plain test run records nothing."""

    def __init__(self, test: str) -> None:
        self.test = test

    def record(self, fault: str, sees: str, kept: str) -> None:
        table = os.environ.get("VJEPA_FAULT_TABLE")
        if table:
            sees = re.sub(r"/tmp/pytest-of-[^/]+/pytest-\w+/[^/ ]+?\d*/", "…/", sees.strip())  # a test's folder
            with open(table, "a") as f:
                f.write(json.dumps({"fault": fault, "sees": sees, "kept": kept, "test": self.test}) + "\n")


@pytest.fixture
def fault(request) -> FaultRow:
    return FaultRow(request.node.nodeid)


def pytest_collection_modifyitems(items):
    for item in items:  # `pytest -m fault` runs the tests behind the fault table
        if "fault" in getattr(item, "fixturenames", ()):
            item.add_marker("fault")


def pytest_configure(config):
    config.addinivalue_line("markers", "fault: a test behind a row of docs/reliability.md (it takes the `fault` fixture)")


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory) -> Path:
    """24 train / 8 val clips of 16 frames at 32x32, from the real generator."""
    from vjepa.config import load_config
    from vjepa.world.generate import WorldConfig, generate_world

    out = tmp_path_factory.mktemp("world")
    cfg = load_config(WorldConfig, REPO / "configs/world/default.yaml",
                      [f"output={out}", "num_train=24", "num_val=8", "frames=16", "size=32",
                       "object_size=[2.0,5.0]", "workers=1"])
    generate_world(cfg)
    return out


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_world, tmp_path_factory) -> Path:
    """Two steps of the demo recipe (its masks end with `{type: future}`) on the tiny world."""
    from vjepa.train import pretrain

    out = tmp_path_factory.mktemp("pretrain")
    pretrain(tiny_pretrain_config(tiny_world, out, "optimization.steps=2"))
    return out / "checkpoints" / "latest.pt"


# the demo recipe's masks with the future cut inside the 4 time slots of 8-frame test clips
TINY_MASKS = ("masks=[{type: multiblock, num_blocks: 8, spatial_scale: [0.15, 0.15]}, "
              "{type: multiblock, num_blocks: 2, spatial_scale: [0.7, 0.7]}, {type: future, context_frames_range: [1, 3]}]")


TINY_PRETRAIN = [  # a micro V-JEPA on the tiny world, as command-line overrides
    "data.frames_per_clip=8", "data.frame_step=2", "data.crop_size=32", "data.batch_size=4", "data.num_workers=0",
    "model.name=vit_micro", "model.depth=2", "model.pred_depth=1", "model.pred_embed_dim=48",
    "optimization.warmup_steps=2", "logging.progress=false", "logging.rankme_every=2", TINY_MASKS,
]


def tiny_pretrain_config(world: Path, output: Path, *overrides: str):
    """A micro V-JEPA on the tiny world: 8 frames at 32x32, patch 8, tubelet 2 -> 4x4x4 tokens."""
    from vjepa.config import load_config
    from vjepa.train import PretrainConfig

    base = [f"data.train_list={world / 'train.txt'}", f"output={output}", *TINY_PRETRAIN,
            "optimization.steps=6", "logging.checkpoint_every=100"]
    return load_config(PretrainConfig, REPO / "configs/pretrain/tiny_world.yaml", [*base, *overrides])
