"""Checkpoints: atomic writes, official-layout prefixes, and loads that name every mismatch."""
import pytest
import torch
from torch import nn

from vjepa.checkpoint import CheckpointError, load_checkpoint, load_module_state, save_checkpoint, strip_prefixes


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


def test_missing_or_corrupt_checkpoint_file_is_named(tmp_path):
    with pytest.raises(CheckpointError, match="nothere.pt"):
        load_checkpoint(tmp_path / "nothere.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="bad.pt"):
        load_checkpoint(bad)
