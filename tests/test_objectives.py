"""The generative baselines: pixel reconstruction (VideoMAE) and denoising, through the shared loop."""
import torch

from conftest import tiny_pretrain_config
from evals.features import SourceConfig, build_sources
from evals.worldmodel import PixelWorldModel, WorldModelSource, build_world_models
from vjepa.checkpoint import load_checkpoint
from vjepa.models import build_encoder
from vjepa.objectives.pixel import normalise_patches, patchify, unpatchify
from vjepa.runlog import read_log
from vjepa.models.config import ModelConfig, token_grid
from vjepa.train import pretrain

PIXEL_MASKS = "masks=[{type: tube, ratio: 0.9}, {type: future}]"


def test_patchify_follows_the_encoders_token_order_and_inverts():
    encoder = build_encoder("vit_micro", img_size=32, num_frames=8, patch_size=8, tubelet_size=2, depth=1)
    clips = torch.randn(2, 3, 8, 32, 32)
    patches = patchify(clips, 2, 8)
    assert patches.shape == (2, 64, 2 * 8 * 8 * 3)
    assert torch.equal(unpatchify(patches, (4, 4, 4), 2, 8), clips)
    # the conv patch embedding of token i is a linear map of exactly patch i's pixels
    w = encoder.patch_embed.proj.weight  # [D, C, tubelet, p, p]
    tokens = encoder.patch_embed(clips)  # [B, N, D]
    flat = w.permute(0, 2, 3, 4, 1).reshape(w.size(0), -1)  # pixel order of patchify: tubelet, p, p, C
    expected = patches @ flat.T + encoder.patch_embed.proj.bias
    assert torch.allclose(tokens, expected, atol=1e-4)


def test_normalised_patches_have_zero_mean_and_unit_variance():
    p = normalise_patches(torch.randn(3, 10, 48) * 5 + 2)
    assert torch.allclose(p.mean(-1), torch.zeros(3, 10), atol=1e-5)
    assert torch.allclose(p.var(-1, unbiased=False), torch.ones(3, 10), atol=1e-3)


def losses(run_dir):
    return [r["loss"] for r in read_log(run_dir / "log.csv")]


def test_pixel_loss_falls_on_the_world(tiny_world, tmp_path):
    pretrain(tiny_pretrain_config(tiny_world, tmp_path, "objective=pixel", PIXEL_MASKS, "optimization.steps=24",
                                  "optimization.lr=1e-3", "optimization.warmup_steps=3"))
    loss = losses(tmp_path)
    assert sum(loss[-4:]) / 4 < 0.8 * sum(loss[:4]) / 4
    assert set(load_checkpoint(tmp_path / "checkpoints/latest.pt")) >= {"encoder", "predictor", "opt", "step"}


def test_denoise_loss_falls_and_resumes_exactly(tiny_world, tmp_path):
    """The noise comes from torch's global RNG, seeded per step: a resumed run draws the same noise."""
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    common = ["objective=denoise", "optimization.lr=1e-3", "optimization.warmup_steps=3", "logging.checkpoint_every=6",
              "optimization.schedule_steps=12"]  # the first half stops early on the whole run's schedules
    pretrain(tiny_pretrain_config(tiny_world, straight, *common, "optimization.steps=12"))
    pretrain(tiny_pretrain_config(tiny_world, resumed, *common, "optimization.steps=6"))
    pretrain(tiny_pretrain_config(tiny_world, resumed, *common, "optimization.steps=12", "resume=true"))
    loss = losses(straight)
    assert sum(loss[-3:]) / 3 < 0.8 * sum(loss[:3]) / 3
    assert losses(resumed) == loss
    a, b = (load_checkpoint(d / "checkpoints/latest.pt") for d in (straight, resumed))
    assert all(torch.equal(a["head"][k], b["head"][k]) for k in a["head"])


def test_pixel_and_denoise_checkpoints_evaluate_through_the_same_paths(tiny_world, tmp_path):
    for objective, extra in (("pixel", [PIXEL_MASKS]), ("denoise", [])):
        pretrain(tiny_pretrain_config(tiny_world, tmp_path / objective, f"objective={objective}",
                                      "optimization.steps=2", *extra))
    clips = torch.randn(2, 3, 8, 32, 32)
    for objective in ("pixel", "denoise"):
        spec = SourceConfig(kind="checkpoint", checkpoint=str(tmp_path / objective / "checkpoints/latest.pt"))
        (source,) = build_sources(objective, spec, ModelConfig(), None)
        tokens = source.encode(clips)
        assert tokens.shape == (2, 64, 96)
        assert torch.equal(tokens, source.encode(clips))  # a denoiser's noise is a function of the clip: cacheable
    (model,) = build_world_models("pixel", WorldModelSource(checkpoint=str(tmp_path / "pixel/checkpoints/latest.pt")), None)
    assert isinstance(model, PixelWorldModel)
    assert model.imagine(clips, 2).shape == model.target_slots(clips)[:, 2:].shape == (2, 2, 16, 384)


def test_variance_hinge_is_one_for_collapsed_features_and_zero_for_spread_ones():
    from vjepa.objectives.jepa import variance_hinge

    collapsed = torch.ones(4, 50, 16)
    spread = torch.randn(4, 50, 16, generator=torch.Generator().manual_seed(0)) * 2.0
    assert variance_hinge(collapsed).item() > 0.98
    assert variance_hinge(spread).item() == 0.0


def test_var_reg_adds_the_hinge_of_the_context_features_and_reaches_the_encoder(tiny_world, tmp_path):
    from vjepa.masks import build_mask_generator, sample_masks
    from vjepa.models.vit import gather_tokens
    from vjepa.objectives.jepa import variance_hinge
    from vjepa.train import build_objective

    cfg = tiny_pretrain_config(tiny_world, tmp_path, "loss.var_reg=0.0")
    clips = torch.randn(2, 3, 8, 32, 32, generator=torch.Generator().manual_seed(0))
    masks = sample_masks([build_mask_generator(m, token_grid(cfg.data.frames_per_clip, cfg.data.crop_size, cfg.model)) for m in cfg.masks], 2, 0, 0)
    torch.manual_seed(0)
    plain = build_objective(cfg)
    cfg.loss.var_reg = 2.0
    torch.manual_seed(0)
    regularised = build_objective(cfg)
    base, _ = plain(clips, masks)
    loss, _ = regularised(clips, masks)
    tokens = regularised.encoder.embed(clips)
    hinges = [variance_hinge(regularised.encoder.forward_tokens(gather_tokens(tokens, c))) for c, _ in masks]
    torch.testing.assert_close(loss, base + 2.0 * torch.stack(hinges).mean(), rtol=1e-5, atol=1e-6)
    loss.backward()
    assert regularised.encoder.patch_embed.proj.weight.grad.abs().sum() > 0


def test_var_reg_is_ignored_by_objectives_without_it(tiny_world, tmp_path):
    from vjepa.train import build_objective

    cfg = tiny_pretrain_config(tiny_world, tmp_path, "objective=pixel", PIXEL_MASKS, "loss.var_reg=1.0")
    assert not hasattr(build_objective(cfg), "var_reg")


def _objective_and_batch(tiny_world, tmp_path, *overrides):
    """The tiny recipe's jepa objective (no variance hinge, seed 0) with a batch of 2 random clips and its masks."""
    from vjepa.masks import build_mask_generator, sample_masks
    from vjepa.train import build_objective

    cfg = tiny_pretrain_config(tiny_world, tmp_path, *overrides, "loss.var_reg=0.0")
    clips = torch.randn(2, 3, 8, 32, 32, generator=torch.Generator().manual_seed(0))
    masks = sample_masks([build_mask_generator(m, token_grid(cfg.data.frames_per_clip, cfg.data.crop_size, cfg.model)) for m in cfg.masks], 2, 0, 0)
    torch.manual_seed(0)
    return cfg, build_objective(cfg), clips, masks


def _predictions(objective, clips, masks):
    """(prediction, target, target indices) per mask configuration, computed outside the objective's forward."""
    from vjepa.models.vit import gather_tokens

    targets, tokens = objective.target_features(clips), objective.encoder.embed(clips)
    return [(objective.predictor(objective.encoder.forward_tokens(gather_tokens(tokens, c)), c, t, mask_index=i),
             gather_tokens(targets, t), t) for i, (c, t) in enumerate(masks)]


def test_loss_exp_is_l1_at_one_and_half_the_squared_error_at_two(tiny_world, tmp_path):
    import pytest

    from vjepa.objectives.jepa import prediction_loss
    from vjepa.train import build_objective

    a, b = torch.randn(3, 7, 5), torch.randn(3, 7, 5)
    torch.testing.assert_close(prediction_loss(a, b, 1.0), (a - b).abs().mean())
    torch.testing.assert_close(prediction_loss(a, b, 2.0), 0.5 * ((a - b) ** 2).mean())
    cfg, objective, clips, masks = _objective_and_batch(tiny_world, tmp_path, "loss.loss_exp=2.0")
    loss, _ = objective(clips, masks)
    expected = torch.stack([0.5 * ((pred - target) ** 2).mean() for pred, target, _ in _predictions(objective, clips, masks)])
    torch.testing.assert_close(loss, expected.mean(), rtol=1e-5, atol=1e-6)
    cfg.loss.loss_exp = 0.0
    with pytest.raises(ValueError, match="loss.loss_exp"):
        build_objective(cfg)
