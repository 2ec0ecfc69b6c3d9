"""Reading and writing checkpoints: the one module every entry point uses.

A checkpoint is a `torch.save` dict with the keys of the official V-JEPA checkpoints (`encoder`,
`predictor`, `target_encoder`, `opt`, `epoch`) plus `step` and the resolved `config`, so that
checkpoints from either code base can be evaluated here. Files are written to a temporary name
and renamed, so a crash never leaves a half-written checkpoint behind; each carries a CRC-32 of its
contents (`crc32`), so a file damaged later (a node dying mid-copy, a bad disk) is found when it is
loaded, not as a strange error or silently wrong weights afterwards. A resumed run takes the newest
checkpoint of its folder that loads: `latest.pt`, then the `step_*.pt` snapshots.
"""
from __future__ import annotations

import logging
import os
import re
import zlib
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

LATEST = "latest.pt"
SNAPSHOT = re.compile(r"step_(\d+)\.pt")
CHECKSUM = "crc32"
STRIPPED_PREFIXES = ("module.", "backbone.", "_orig_mod.")

log = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or does not fit the model."""


def contents_crc32(state: Mapping[str, Any]) -> int:
    """CRC-32 of every key, tensor (dtype, shape, bytes) and plain value of `state`, in order, its own `crc32` aside.

    Computed on the objects, not the file's bytes, so the file can carry it; torch.load itself reads a
    flipped byte inside a tensor without complaint. About 4 GB/s: small beside writing the file.
    """
    crc = 0

    def add(value: Any) -> None:
        nonlocal crc
        if isinstance(value, torch.Tensor):
            t = value.detach().cpu().contiguous()
            crc = zlib.crc32(f"{t.dtype}{tuple(t.shape)}".encode(), crc)
            crc = zlib.crc32(t.reshape(-1).view(torch.uint8).numpy(), crc)
        elif isinstance(value, Mapping):
            for k, v in value.items():
                crc = zlib.crc32(repr(k).encode(), crc)
                add(v)
        elif isinstance(value, (list, tuple)):
            crc = zlib.crc32(f"{type(value).__name__}{len(value)}".encode(), crc)
            for v in value:
                add(v)
        elif value is None or isinstance(value, (str, bytes, int, float, bool)):
            crc = zlib.crc32(repr(value).encode(), crc)
        else:  # anything else is the unpickler's to check
            crc = zlib.crc32(type(value).__name__.encode(), crc)

    add({k: v for k, v in state.items() if k != CHECKSUM})
    return crc


def save_checkpoint(state: Mapping[str, Any], path: str | Path) -> Path:
    """Write `state` with its checksum atomically: temp file in the same folder, fsync, rename.

    A write that fails (a full disk, a file size limit) removes its temporary file and leaves the previous
    checkpoint as it was; the error says which file could not be written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    state = {**state, CHECKSUM: contents_crc32(state)}
    writer = None
    try:
        with open(tmp, "wb") as f:
            writer = _WriteErrors(f)
            torch.save(state, writer)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        failed = getattr(writer, "error", None) or exc  # torch.save reports a failed write as an unrelated error
        if isinstance(failed, OSError):
            kept = f"{path.name} is as it was before" if path.exists() else f"there was no {path.name} before"
            raise CheckpointError(f"cannot write checkpoint {path}: {failed.strerror or failed}; {kept}") from exc
        raise failed
    return path


class _WriteErrors:
    """A file for torch.save that keeps what made a write fail (a full disk, a signal handler's exception): torch
    reports it as an unrelated RuntimeError."""

    def __init__(self, file) -> None:
        self.file, self.error = file, None

    def write(self, data) -> int:
        try:
            return self.file.write(data)
        except Exception as exc:
            self.error = exc
            raise

    def flush(self) -> None:
        self.file.flush()


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path}: a folder, not a checkpoint file (a Hugging Face VideoMAE folder is read "
                              f"with kind: videomae)")
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        # weights_only=False: our checkpoints carry the config dict and optimizer state
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise CheckpointError(f"cannot read checkpoint {path} ({path.stat().st_size} bytes): {read_failure(exc)}") from exc
    if isinstance(ckpt, dict) and CHECKSUM in ckpt:  # official and older checkpoints carry none
        expected = ckpt.pop(CHECKSUM)
        if contents_crc32(ckpt) != expected:
            raise CheckpointError(f"{path} is damaged: its contents do not match the checksum saved with them")
    return ckpt


def read_failure(exc: Exception) -> str:
    """What torch.load's error means: its zip reader's failures and EINVAL are a file cut short or not a checkpoint."""
    text = str(exc).split(" This is an internal miniz error")[0].strip() or type(exc).__name__
    if isinstance(exc, (EOFError, OSError)) or "zip archive" in text:
        return f"truncated, or not a torch checkpoint ({text})"
    return text


def resume_candidates(folder: str | Path) -> list[Path]:
    """The checkpoints a resumed run may continue from, newest first: `latest.pt`, then snapshots by step."""
    folder = Path(folder)
    snapshots = sorted((p for p in folder.glob("step_*.pt") if SNAPSHOT.fullmatch(p.name)),
                       key=lambda p: int(SNAPSHOT.fullmatch(p.name).group(1)), reverse=True)
    return [p for p in [folder / LATEST, *snapshots] if p.is_file()]


def load_newest(folder: str | Path) -> tuple[Path, dict] | None:
    """The newest checkpoint of `folder` that loads, or None where there is none; each one passed over is named
    with its reason. Every one damaged is an error: starting over would overwrite what a user may still recover."""
    candidates, failures = resume_candidates(folder), []
    for path in candidates:
        try:
            return path, load_checkpoint(path)
        except CheckpointError as exc:
            log.warning("resume: %s", exc)
            failures.append(str(exc))
    if failures:
        raise CheckpointError(f"no checkpoint in {folder} could be read: " + "; ".join(failures))
    return None


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
