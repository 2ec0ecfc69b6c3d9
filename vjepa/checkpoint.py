"""Reading and writing checkpoints: the one module every entry point uses.

A checkpoint is a `torch.save` dict with the keys of the official V-JEPA checkpoints (`encoder`,
`predictor`, `target_encoder`, `opt`, `epoch`) plus `step` and the resolved `config`, so that
checkpoints from either code base can be evaluated here. Files are written to a temporary name
and renamed, so a crash never leaves a half-written checkpoint behind.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

LATEST = "latest.pt"
STRIPPED_PREFIXES = ("module.", "backbone.", "_orig_mod.")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or does not fit the model."""


def save_checkpoint(state: Mapping[str, Any], path: str | Path) -> Path:
    """Write `state` atomically: temp file in the same folder, fsync, rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        torch.save(dict(state), f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path}: a folder, not a checkpoint file (a Hugging Face VideoMAE folder is read "
                              f"with kind: videomae)")
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        # weights_only=False: our checkpoints carry the config dict and optimizer state
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from exc


def latest_checkpoint(folder: str | Path) -> Path | None:
    """The checkpoint a resumed run continues from, if any."""
    path = Path(folder) / LATEST
    return path if path.is_file() else None


def strip_prefixes(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop DDP (`module.`), wrapper (`backbone.`) and torch.compile prefixes from every key."""
    out = {}
    for key, value in state_dict.items():
        changed = True
        while changed:
            changed = False
            for prefix in STRIPPED_PREFIXES:
                if key.startswith(prefix):
                    key, changed = key[len(prefix):], True
        out[key] = value
    return out


def load_module_state(module: nn.Module, state_dict: Mapping[str, torch.Tensor], what: str, source: str | Path) -> None:
    """Load a state dict strictly; on mismatch name every missing, unexpected or mis-shaped tensor.

    A silent partial load would evaluate a half-random model, so any difference is an error.
    """
    state_dict = strip_prefixes(state_dict)
    own = module.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [
        f"{k} (checkpoint {tuple(state_dict[k].shape)}, model {tuple(own[k].shape)})"
        for k in own
        if k in state_dict and tuple(state_dict[k].shape) != tuple(own[k].shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing: {', '.join(missing)}")
    if unexpected:
        problems.append(f"unexpected: {', '.join(unexpected)}")
    if shapes:
        problems.append(f"wrong shape: {', '.join(shapes)}")
    if problems:
        raise CheckpointError(
            f"{source}: '{what}' does not fit the model ({'; '.join(problems)}). "
            "Check that the config's model size, patch/tubelet size and input size match the checkpoint."
        )
    module.load_state_dict(state_dict, strict=True)
