"""Checkpoints: atomic writes, a checksum that finds damage at load, official-layout prefixes, and loads that name
every mismatch."""
import struct
import subprocess
import sys

import pytest
import torch
from torch import nn

from conftest import REPO
from vjepa.checkpoint import (CheckpointError, contents_crc32, load_checkpoint, load_module_state, resume_candidates,
                              save_checkpoint, strip_prefixes)


def test_save_is_atomic_and_leaves_no_temporary_files(tmp_path):
    path = tmp_path / "ckpt" / "latest.pt"
    save_checkpoint({"step": 1, "w": torch.ones(3)}, path)
    save_checkpoint({"step": 2, "w": torch.zeros(3)}, path)
    assert load_checkpoint(path)["step"] == 2
    assert [p.name for p in path.parent.iterdir()] == ["latest.pt"]


def test_a_save_that_fails_keeps_the_previous_checkpoint(tmp_path):
    path = tmp_path / "latest.pt"
    save_checkpoint({"step": 1}, path)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        save_checkpoint({"step": 2, "bad": Unpicklable()}, path)
    assert load_checkpoint(path)["step"] == 1


def test_module_and_backbone_prefixes_are_stripped():
    sd = {"module.backbone.blocks.0.w": 1, "module.norm.b": 2, "pos_embed": 3}
    assert strip_prefixes(sd) == {"blocks.0.w": 1, "norm.b": 2, "pos_embed": 3}


def test_load_names_every_missing_unexpected_and_misshaped_tensor():
    model = nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 2))
    sd = {f"module.{k}": v for k, v in model.state_dict().items()}
    sd["module.0.weight"] = torch.zeros(8, 5)
    del sd["module.1.bias"]
    sd["module.extra"] = torch.zeros(1)
    with pytest.raises(CheckpointError) as err:
        load_module_state(model, sd, "encoder", "ckpt.pt")
    msg = str(err.value)
    assert "ckpt.pt" in msg and "'encoder'" in msg
    assert "missing: 1.bias" in msg and "unexpected: extra" in msg and "0.weight (checkpoint (8, 5), model (8, 4))" in msg


def test_load_of_matching_weights_with_prefixes_succeeds():
    src, dst = nn.Linear(3, 3), nn.Linear(3, 3)
    load_module_state(dst, {f"module.backbone.{k}": v for k, v in src.state_dict().items()}, "encoder", "x.pt")
    assert torch.equal(dst.weight, src.weight)


def test_missing_or_corrupt_checkpoint_file_is_named(tmp_path, fault):
    with pytest.raises(CheckpointError, match="nothere.pt"):
        load_checkpoint(tmp_path / "nothere.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="bad.pt") as err:
        load_checkpoint(bad)
    fault.record("a garbage file given as a checkpoint", str(err.value), "the file, untouched")


def test_a_byte_damaged_after_saving_is_found_at_load(tmp_path, fault):
    path = save_checkpoint({"step": 3, "w": torch.full((1000,), 7.0)}, tmp_path / "latest.pt")
    data = bytearray(path.read_bytes())
    at = data.find(struct.pack("<f", 7.0) * 4)  # inside the tensor's bytes, which torch.load reads without a check
    data[at] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"latest.pt is damaged") as err:
        load_checkpoint(path)
    fault.record("one byte flipped inside a checkpoint's tensor (torch.load alone reads it silently)", str(err.value),
                 "the file, untouched; a resumed run passes over it to an older snapshot")


def test_checkpoints_without_a_checksum_load_as_before(tmp_path):
    torch.save({"encoder": {"w": torch.ones(2)}, "epoch": 1}, tmp_path / "official.pth.tar")  # as the official code saves
    assert load_checkpoint(tmp_path / "official.pth.tar")["epoch"] == 1


def test_the_checksum_covers_values_keys_and_tensors():
    state = {"step": 3, "opt": {"state": {0: {"exp_avg": torch.zeros(4)}}, "param_groups": [{"lr": 0.1}]}}
    crc = contents_crc32(state)
    assert contents_crc32({**state, "crc32": 12345}) == crc  # its own entry aside
    assert contents_crc32({**state, "step": 4}) != crc
    assert contents_crc32({"step": 3, "opt": {"state": {1: {"exp_avg": torch.zeros(4)}}, "param_groups": [{"lr": 0.1}]}}) != crc
    assert contents_crc32({"step": 3, "opt": {"state": {0: {"exp_avg": torch.zeros(2, 2)}}, "param_groups": [{"lr": 0.1}]}}) != crc


def test_a_save_that_runs_out_of_space_keeps_the_previous_checkpoint_and_says_so(tmp_path):
    path = save_checkpoint({"step": 1, "w": torch.zeros(10)}, tmp_path / "latest.pt")
    # a real write limit in a child process: writes past 64 KiB fail with EFBIG, as a full disk fails with ENOSPC
    code = ("import resource, torch; from vjepa.checkpoint import save_checkpoint; "
            "resource.setrlimit(resource.RLIMIT_FSIZE, (65536, resource.RLIM_INFINITY)); "
            f"save_checkpoint({{'step': 2, 'w': torch.zeros(100_000)}}, {str(path)!r})")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert result.returncode != 0
    assert f"CheckpointError: cannot write checkpoint {path}: File too large; latest.pt is as it was before" in result.stderr
    assert load_checkpoint(path)["step"] == 1 and [p.name for p in tmp_path.iterdir()] == ["latest.pt"]


def test_resume_candidates_are_latest_then_snapshots_newest_first(tmp_path):
    for name in ("step_0000002.pt", "step_0000010.pt", "latest.pt", "step_notes.pt", "other.pt"):
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in resume_candidates(tmp_path)] == ["latest.pt", "step_0000010.pt", "step_0000002.pt"]
