"""Imagined rollouts: the baselines' arithmetic, the autoregressive rollout, `vjepa dream` end to end."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import REPO, tiny_pretrain_config
from evals.dream import (
    DreamConfig, copy_last, last_slot_errors, linear_extrapolation, main, mean_abs_deviation, paired_margin,
    position_mean_errors, swap_changes,
)
from evals.worldmodel import WorldModelSource, build_world_models, slot_l1
from vjepa.checkpoint import load_checkpoint
from vjepa.config import load_config
from vjepa.train import pretrain


def dream_config(world, checkpoint, output, *overrides: str) -> DreamConfig:
    base = [f"world={world}", f"checkpoint={checkpoint}", f"output={output}", "device=cpu",
            "data.max_videos=6", "data.batch_size=3", "data.num_workers=0"]
    return load_config(DreamConfig, REPO / "configs/evals/dream_world.yaml", [*base, *overrides])


def test_copy_last_is_exact_on_a_static_clip_and_linear_on_steady_motion():
    static = torch.randn(2, 1, 5, 8).expand(-1, 4, -1, -1)  # [B, T, N, D]: every slot the same
    assert torch.equal(copy_last(static[:, :2], 2), static[:, 2:])
    start, velocity = torch.randn(2, 1, 5, 8), torch.randn(2, 1, 5, 8)
    moving = start + torch.arange(4.0).view(1, -1, 1, 1) * velocity
    assert torch.allclose(linear_extrapolation(moving[:, :2], 2), moving[:, 2:], atol=1e-5)
    assert not torch.allclose(copy_last(moving[:, :2], 2), moving[:, 2:])


def test_normaliser_is_the_mean_distance_to_the_mean_feature():
    features = torch.tensor([[1.0, 0.0], [3.0, 4.0]])  # mean (2, 2): distances |1|,|2|,|1|,|2|
    assert mean_abs_deviation(features) == pytest.approx(1.5)


def test_position_mean_baseline_is_zero_for_identical_clips_and_the_spread_otherwise():
    layout = torch.randn(1, 3, 4, 8, generator=torch.Generator().manual_seed(0))
    assert position_mean_errors(layout.expand(5, -1, -1, -1)).max() < 1e-6
    # two clips at layout +-1: each is 1 away from their per-position mean, at every horizon
    pair = torch.cat([layout + 1.0, layout - 1.0])
    assert position_mean_errors(pair) == pytest.approx(np.ones((2, 3)))  # per clip and horizon


def test_paired_margin_separates_a_consistent_gap_from_noise():
    rng = np.random.default_rng(0)
    shared = rng.random((200, 3))  # clip difficulty, common to both curves: the pairing cancels it
    better = paired_margin(shared, shared + 0.05 + 0.01 * rng.standard_normal((200, 3)), 500, 0)
    assert better["value"] == pytest.approx([-0.05] * 3, abs=0.005)
    assert all(-0.06 < lo < hi < -0.04 for lo, hi in better["ci"])
    noise = paired_margin(shared, shared + 0.1 * rng.standard_normal((200, 3)), 500, 0)
    assert any(lo < 0 < hi for lo, hi in noise["ci"])


def test_future_mask_token_comes_from_the_checkpoint_masks(tiny_checkpoint):
    (model,) = build_world_models("jepa", WorldModelSource(checkpoint=str(tiny_checkpoint)), None)
    assert model.arch.masks == ["multiblock", "multiblock", "future"] and model.mask_index == 2


def save_official_layout(checkpoint, path):
    """Our weights, predictor included, as the official V-JEPA code saves them: DDP + wrapper prefixes, no config."""
    ckpt = load_checkpoint(checkpoint)
    torch.save({key: {"module.backbone." + k: v for k, v in ckpt[key].items()}
                for key in ("encoder", "target_encoder", "predictor")} | {"epoch": 1}, path)
    return path, ckpt["config"]["model"]


def test_an_official_layout_checkpoint_imagines_exactly_as_ours(tiny_world, tiny_checkpoint, tmp_path):
    official, model = save_official_layout(tiny_checkpoint, tmp_path / "official.pt")
    arch = [f"model.{k}={v}" for k, v in model.items() if v is not None] + [
        "clip.frames_per_clip=8", "clip.frame_step=2", "clip.crop_size=32"]
    cfg = dream_config(tiny_world, official, tmp_path / "dream", "decoder.enabled=false", *arch)
    (theirs,) = build_world_models("jepa", cfg.models.jepa, 2, cfg.model, cfg.clip)
    (ours,) = build_world_models("jepa", WorldModelSource(checkpoint=str(tiny_checkpoint)), None)
    assert theirs.arch.num_mask_tokens == 3 and theirs.arch.masks == []  # read from the weights; no config
    clips = torch.randn(2, 3, 8, 32, 32, generator=torch.Generator().manual_seed(0))
    assert torch.equal(theirs.imagine(clips, 2), ours.imagine(clips, 2))
    (default,) = build_world_models("jepa", cfg.models.jepa, None, cfg.model, cfg.clip)
    assert default.mask_index == 0  # masks unknown: the first token, unless mask_index says otherwise
    metrics = main(dream_config(tiny_world, official, tmp_path / "dream", "decoder.enabled=false", "mask_index=2", *arch))
    assert metrics["models"].keys() == {"jepa", "random"}  # `vjepa dream` runs on it, its random control too


def test_no_future_mask_is_a_clear_error(tiny_world, tmp_path):
    pretrain(tiny_pretrain_config(tiny_world, tmp_path, "optimization.steps=1", "masks=[{type: multiblock}]"))
    with pytest.raises(ValueError, match="without a future mask"):
        build_world_models("jepa", WorldModelSource(checkpoint=str(tmp_path / "checkpoints/latest.pt")), None)


def test_rollout_feeds_its_own_predictions_back(tiny_checkpoint):
    (model,) = build_world_models("jepa", WorldModelSource(checkpoint=str(tiny_checkpoint)), None)
    torch.manual_seed(0)
    clips = torch.randn(2, 3, 8, 32, 32)
    context = model.context_slots(clips, range(2))
    imagined = model.imagine(clips, 2)
    assert imagined.shape == (2, 2, 16, model.encoder.embed_dim)
    # step 2 sees slots 0, 1 real and slot 2 imagined, not the real slot 2
    fed_back = model.predict_slots(torch.cat([context, imagined[:, :1]], 1), range(3), [3])
    real_slot2 = model.target_slots(clips)[:, 2:3]
    from_real = model.predict_slots(torch.cat([context, real_slot2], 1), range(3), [3])
    # an untrained predictor leans little on its context, so the difference is small but far above rounding
    assert (imagined[:, 1:2] - fed_back).abs().max() < 1e-6
    assert (imagined[:, 1:2] - from_real).abs().max() > 1e-4


def test_last_slot_errors_roll_out_from_every_start_to_the_same_slot(tiny_checkpoint):
    (model,) = build_world_models("jepa", WorldModelSource(checkpoint=str(tiny_checkpoint)), None)
    torch.manual_seed(0)
    clips = torch.randn(2, 3, 8, 32, 32)
    real = model.target_slots(clips)  # 4 slots
    errors, base = last_slot_errors(model, clips, real, 2, model.imagine(clips, 2), baselines=True)
    assert errors.shape == (2, 2) and base["copy_last"].shape == (2, 2)
    # horizon 1: the last slot predicted from the 3 real slots before it
    one_step = model.predict_slots(model.context_slots(clips, range(3)), range(3), [3])
    assert errors[:, 0] == pytest.approx(slot_l1(one_step, real[:, 3:])[:, 0], rel=1e-5)
    # copying: slot 2 at horizon 1, slot 1 at horizon 2, whatever the horizon's own copies would be
    for h, source in ((1, 2), (2, 1)):
        copied = model.context_slots(clips, range(source + 1))[:, -1:]
        assert base["copy_last"][:, h - 1] == pytest.approx(slot_l1(copied, real[:, 3:])[:, 0], rel=1e-5)


def test_context_use_is_zero_for_a_predictor_blind_to_its_context(tiny_checkpoint):
    (model,) = build_world_models("jepa", WorldModelSource(checkpoint=str(tiny_checkpoint)), None)
    torch.manual_seed(0)
    clips = torch.randn(3, 3, 8, 32, 32)
    real = model.target_slots(clips)
    first, context = model.imagine(clips, 2)[:, :1], model.context_slots(clips, range(2))
    change, truth = swap_changes(model, context, first, real, 2)
    assert change > 0 and truth > 0
    # the same clips in another order: the same sums
    order = torch.tensor([2, 0, 1])
    assert swap_changes(model, context[order], first[order], real[order], 2) == pytest.approx((change, truth), rel=1e-5)
    with torch.no_grad():  # context tokens carry only their positions now
        model.predictor.predictor_embed.weight.zero_()
        model.predictor.predictor_embed.bias.zero_()
    blind, truth_again = swap_changes(model, context, model.imagine(clips, 2)[:, :1], real, 2)
    assert blind < 1e-4 * change and truth_again == truth


def test_dream_writes_metrics_for_models_and_baselines(tiny_world, tiny_checkpoint, tmp_path):
    metrics = main(dream_config(tiny_world, tiny_checkpoint, tmp_path, "models.random.seeds=[0,1]"))
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert on_disk["models"].keys() == {"jepa", "random"}
    assert on_disk["baselines"].keys() == {"copy_last", "linear", "position_mean"}
    for entry in [*on_disk["models"].values(), *on_disk["baselines"].values()]:
        assert entry["horizon"] == [1, 2]  # 4 slots, 2 of context
        assert len(entry["error"]) == 2 and all(e > 0 for e in entry["error"])
    assert on_disk["models"]["random"]["seeds"] == 2 and len(on_disk["models"]["random"]["std"]) == 2
    assert all(e["context_use"] > 0 for e in on_disk["models"].values())
    assert metrics["videos"] == 6
    for name in ("error_vs_horizon.png", "strip_jepa.png", "report.md", "config.yaml"):
        assert (tmp_path / name).is_file()
    # the first model's margins over every baseline and the other model: the difference of the curves
    assert on_disk["margins"]["jepa"].keys() == {"copy_last", "linear", "position_mean", "random"}
    for other, margin in on_disk["margins"]["jepa"].items():
        curve = {**on_disk["baselines"], **on_disk["models"]}[other]["error"]
        assert margin["value"] == pytest.approx([a - b for a, b in zip(on_disk["models"]["jepa"]["error"], curve)], abs=1e-5)
        assert all(lo <= v <= hi for v, (lo, hi) in zip(margin["value"], margin["ci"]))
    # the last slot imagined from h back: at the longest horizon, the same rollout as the main curve's last step
    fixed = on_disk["fixed_target"]
    assert fixed["slot"] == 3 and fixed["horizon"] == [1, 2]
    assert fixed["error"].keys() == {"jepa", "random", "copy_last", "linear", "position_mean"}
    for name, curve in {**on_disk["models"], **on_disk["baselines"]}.items():
        assert fixed["error"][name][-1] == pytest.approx(curve["error"][-1], rel=1e-5)
    assert fixed["error"]["position_mean"][0] == pytest.approx(fixed["error"]["position_mean"][1])
    for name, g in fixed["growth"].items():
        assert g["value"] == pytest.approx(fixed["error"][name][-1] - fixed["error"][name][0], abs=1e-5)
        assert g["ci"][0] <= g["value"] <= g["ci"][1]
    assert "| growth, +2 − +1 |" in (tmp_path / "report.md").read_text()
    assert "copy_last (baseline)" in (tmp_path / "report.md").read_text()
    assert "| horizon | jepa − copy_last |" in (tmp_path / "report.md").read_text()
    assert "Context use:" in (tmp_path / "report.md").read_text()


def test_dream_without_the_decoder_draws_nothing(tiny_world, tiny_checkpoint, tmp_path):
    metrics = main(dream_config(tiny_world, tiny_checkpoint, tmp_path, "decoder.enabled=false"))
    assert "strips" not in metrics and "decoder" not in metrics["models"]["jepa"]
    assert not list(tmp_path.glob("strip_*.png")) and not (tmp_path / "decoders").exists()
    assert "## Dreams" not in (tmp_path / "report.md").read_text()


def test_context_too_long_for_the_clip_is_a_clear_error(tiny_world, tiny_checkpoint, tmp_path):
    with pytest.raises(ValueError, match="context_slots=4"):
        main(dream_config(tiny_world, tiny_checkpoint, tmp_path, "context_slots=4"))
