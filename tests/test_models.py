"""Specification of the encoder, predictor, tubelet embedding and sin-cos positions."""

import numpy as np
import pytest
import torch

from vjepa.models import (
    ENCODER_SIZES,
    PatchEmbed3D,
    Predictor,
    VisionTransformer,
    build_encoder,
    get_3d_sincos_pos_embed,
    interpolate_pos_embed,
)

torch.set_num_threads(1)

# A tiny clip: 8 frames of 32x32 with tubelet 2 and patch 8 -> a (4, 4, 4) grid of 64 tokens.
TINY = dict(img_size=32, num_frames=8, patch_size=8, tubelet_size=2)
GRID = (4, 4, 4)


def tiny_encoder(**kwargs) -> VisionTransformer:
    torch.manual_seed(0)
    return VisionTransformer(**{**TINY, "embed_dim": 48, "depth": 2, "num_heads": 3, **kwargs}).eval()


def tiny_predictor(**kwargs) -> Predictor:
    torch.manual_seed(0)
    sizes = dict(embed_dim=48, predictor_embed_dim=24, depth=2, num_heads=2)
    return Predictor(**{**TINY, **sizes, **kwargs}).eval()


def clip(batch: int = 2, frames: int = 8, size: int = 32) -> torch.Tensor:
    return torch.randn(batch, 3, frames, size, size, generator=torch.Generator().manual_seed(1))


def test_vit_large_has_about_304m_parameters():
    with torch.device("meta"):  # shapes only: allocating and initialising 304M weights is not the point
        model = build_encoder("vit_large", img_size=224, num_frames=16)
    count = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert 303e6 <= count <= 305e6


def test_build_encoder_uses_size_defaults_unless_overridden_by_a_non_none_value():
    model = build_encoder("vit_micro", depth=None, num_heads=None, embed_dim=None, **TINY)
    assert (model.embed_dim, model.depth, model.num_heads) == (96, 4, 3)
    assert build_encoder("vit_micro", depth=1, **TINY).depth == 1


def test_build_encoder_rejects_unknown_names_listing_the_known_ones():
    with pytest.raises(ValueError, match="vit_large"):
        build_encoder("vit_enormous")


def test_giant_sizes_use_the_official_mlp_widths():
    assert int(1408 * ENCODER_SIZES["vit_giant"]["mlp_ratio"]) == 6144
    assert int(1664 * ENCODER_SIZES["vit_gigantic"]["mlp_ratio"]) == 8192


def test_encoder_returns_all_tokens_or_only_the_kept_ones():
    model = tiny_encoder()
    x = clip()
    assert model.token_grid(x) == GRID
    assert model(x).shape == (2, 64, 48)
    keep = torch.stack([torch.arange(10), torch.arange(20, 30)])
    assert model(x, masks=keep).shape == (2, 10, 48)


def test_masked_tokens_never_enter_the_encoder():
    model = tiny_encoder()
    x = clip()
    keep = torch.arange(16, 64).expand(2, -1)  # drop every token of the first tubelet (frames 0-1)
    changed = x.clone()
    changed[:, :, :2] = torch.randn_like(changed[:, :, :2])
    with torch.no_grad():
        assert torch.equal(model(x, masks=keep), model(changed, masks=keep))
        # ...while without a mask the same change reaches every token through attention.
        assert not torch.allclose(model(x)[:, 16:], model(changed)[:, 16:])


def test_encoder_runs_on_a_larger_clip_by_interpolating_positions():
    model = tiny_encoder()
    with torch.no_grad():
        assert model(clip(frames=12, size=48)).shape == (2, 6 * 6 * 6, 48)


def test_interpolating_positions_to_the_same_grid_returns_the_table():
    table = torch.from_numpy(get_3d_sincos_pos_embed(48, *GRID)).float().unsqueeze(0)
    assert interpolate_pos_embed(table, GRID, GRID) is table
    resized = interpolate_pos_embed(table, GRID, (2, 8, 6))
    assert resized.shape == (1, 2 * 8 * 6, 48)


def test_interpolation_keeps_a_table_that_is_constant_along_the_resized_axis():
    table = torch.from_numpy(get_3d_sincos_pos_embed(48, 1, 4, 4)).float().unsqueeze(0)
    resized = interpolate_pos_embed(table, (1, 4, 4), (3, 4, 4))
    assert torch.allclose(resized.reshape(3, 16, 48), table.reshape(1, 16, 48).expand(3, -1, -1), atol=1e-6)


@pytest.mark.parametrize("uniform_power", [False, True])
def test_sincos_table_has_distinct_bounded_rows(uniform_power):
    table = get_3d_sincos_pos_embed(48, *GRID, uniform_power=uniform_power)
    assert table.shape == (64, 48)
    assert np.abs(table).max() <= 1.0
    assert len(np.unique(table.round(6), axis=0)) == 64


def test_sincos_table_gives_time_half_the_channels_unless_uniform_power():
    table = get_3d_sincos_pos_embed(48, *GRID)
    frame_rows = table.reshape(4, 16, 48)
    # Time channels (first 24) change only with t; height/width channels (last 24) only within a frame.
    assert np.allclose(frame_rows[:, :1, :24], frame_rows[:, :, :24])
    assert np.allclose(frame_rows[:1, :, 24:], frame_rows[:, :, 24:])
    uniform = get_3d_sincos_pos_embed(48, *GRID, uniform_power=True).reshape(4, 16, 48)
    assert np.allclose(uniform[:, :1, :16], uniform[:, :, :16])
    assert not np.allclose(uniform[:, :1, :24], uniform[:, :, :24])


def test_sincos_table_is_t_major():
    table = get_3d_sincos_pos_embed(48, 2, 3, 5).reshape(2, 3, 5, 48)
    assert np.allclose(table[0, :, :, :24], table[0, 0, 0, :24])  # same frame, same time code
    assert np.allclose(table[:, 1, :, 24:36], table[0, 1, 0, 24:36])  # same row, same height code
    assert np.allclose(table[:, :, 2, 36:], table[0, 0, 2, 36:])  # same column, same width code


def test_predictor_returns_one_prediction_per_target_that_depends_on_the_context():
    predictor = tiny_predictor(zero_init_mask_tokens=False, num_mask_tokens=2)
    ctx_idx = torch.arange(0, 40).expand(2, -1)
    tgt_idx = torch.arange(40, 64).expand(2, -1)
    ctx = torch.randn(2, 40, 48)
    with torch.no_grad():
        out = predictor(ctx, ctx_idx, tgt_idx)
        assert out.shape == (2, 24, 48)
        assert not torch.allclose(out, predictor(ctx + 1.0, ctx_idx, tgt_idx))
        assert not torch.allclose(out, predictor(ctx, ctx_idx, tgt_idx, mask_index=1))


def test_predictor_runs_on_another_grid():
    predictor = tiny_predictor()
    ctx_idx = torch.arange(0, 100).expand(2, -1)
    tgt_idx = torch.arange(100, 216).expand(2, -1)
    with torch.no_grad():
        assert predictor(torch.randn(2, 100, 48), ctx_idx, tgt_idx, grid=(6, 6, 6)).shape == (2, 116, 48)


def test_copy_context_source_is_the_same_position_in_the_latest_earlier_context_slot():
    from vjepa.models.predictor import latest_context_source

    grid = (4, 2, 2)  # 4 slots of 4 positions; token index = slot * 4 + position
    ctx_idx = torch.tensor([[0, 1, 2, 3, 4, 5, 6, 7, 8], [1, 2, 5, 6, 9, 10, 13, 14, 0]])
    tgt_idx = torch.tensor([[9, 10, 11, 12, 13], [3, 7, 8, 12, 15]])
    src, found = latest_context_source(ctx_idx, tgt_idx, grid)
    # row 0: slots 0-1 and token 8 (slot 2, position 0) are context
    assert found[0].all()
    assert ctx_idx[0, src[0]].tolist() == [5, 6, 7, 8, 5]
    # row 1: positions 1 and 2 are context in every slot but the last, position 0 only in slot 0, 3 never
    assert found[1].tolist() == [False, False, True, True, False]
    assert ctx_idx[1, src[1, 2:4]].tolist() == [0, 0]


def test_copy_context_makes_each_future_query_follow_its_own_positions_past():
    ctx_idx = torch.arange(0, 32).expand(1, -1)  # slots 0-1 of the (4, 4, 4) grid
    tgt_idx = torch.arange(32, 48).expand(1, -1)  # slot 2
    ctx = torch.randn(1, 32, 48)
    moved = ctx.clone()
    moved[:, 16 + 5] += 3.0  # the last context slot, position 5
    for copy, position_5_moves_most in ((True, True), (False, False)):
        predictor = tiny_predictor(copy_context=copy)
        with torch.no_grad():
            change = (predictor(moved, ctx_idx, tgt_idx) - predictor(ctx, ctx_idx, tgt_idx)).abs().mean(-1)[0]
        assert (change.argmax().item() == 5 and change[5] > 2 * change.median()) == position_5_moves_most


def test_state_dict_keys_match_the_official_vjepa_names():
    keys = set(tiny_encoder().state_dict()) | set(tiny_predictor().state_dict())
    official = {
        "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias", "blocks.0.norm1.weight",
        "blocks.0.attn.qkv.weight", "blocks.0.attn.qkv.bias", "blocks.0.attn.proj.weight",
        "blocks.1.mlp.fc1.weight", "blocks.1.mlp.fc2.weight", "norm.weight", "norm.bias",
        "predictor_embed.weight", "mask_tokens.0", "predictor_pos_embed",
        "predictor_blocks.0.mlp.fc1.weight", "predictor_norm.weight", "predictor_proj.weight",
    }
    assert official <= keys


def test_position_tables_are_not_trained():
    assert not tiny_encoder().pos_embed.requires_grad
    assert not tiny_predictor().predictor_pos_embed.requires_grad


def test_residual_projections_are_scaled_down_with_depth():
    model = tiny_encoder(depth=8, embed_dim=96)
    first, last = model.blocks[0].mlp.fc2.weight.std(), model.blocks[7].mlp.fc2.weight.std()
    assert (first / last).item() == pytest.approx(8**0.5, rel=0.1)  # sqrt(2*8) / sqrt(2*1)
    assert torch.all(model.blocks[0].attn.qkv.bias == 0)


def test_intermediate_layers_end_with_the_forward_output():
    model = tiny_encoder(depth=3)
    x = clip()
    with torch.no_grad():
        last_two = model.get_intermediate_layers(x, n=2)
        chosen = model.get_intermediate_layers(x, n=[0, -1])
        assert len(last_two) == 2 and len(chosen) == 2
        assert torch.allclose(last_two[-1], model(x), atol=1e-6)
        assert torch.allclose(chosen[-1], last_two[-1]) and not torch.allclose(chosen[0], last_two[0])


def test_activation_checkpointing_gives_the_same_gradients():
    grads = []
    for checkpointing in (False, True):
        model = tiny_encoder(use_activation_checkpointing=checkpointing).train()
        model(clip(), masks=torch.arange(8, 40).expand(2, -1)).square().mean().backward()
        grads.append([p.grad for p in model.parameters() if p.requires_grad])
    for plain, checkpointed in zip(*grads):
        assert torch.allclose(plain, checkpointed, atol=1e-6)


@pytest.mark.parametrize(
    "shape, dimension", [((1, 3, 7, 32, 32), "T"), ((1, 3, 8, 30, 32), "H"), ((1, 3, 8, 32, 36), "W")]
)
def test_input_that_does_not_tile_names_the_dimension(shape, dimension):
    with pytest.raises(ValueError, match=f"input {dimension} "):
        PatchEmbed3D(patch_size=8, tubelet_size=2, in_chans=3, embed_dim=16)(torch.zeros(shape))
    with pytest.raises(ValueError, match=f"input {dimension} "):
        tiny_encoder()(torch.zeros(shape))


# --------------------------------------------------------------------------- 3D RoPE (model.pos_embed=rope)


def test_rope_scores_depend_on_relative_position_only():
    from vjepa.models.rope import apply_rope, rope_angles

    grid, head_dim = (4, 4, 4), 12
    q, k = torch.randn(1, 1, 1, head_dim).expand(1, 1, 2, -1), torch.randn(1, 1, 1, head_dim).expand(1, 1, 2, -1)
    # token pairs (t, h, w): (0,0,0)->(1,2,1) and (2,1,2)->(3,3,3): the same offset, so the same score
    idx = torch.tensor([[0 * 16 + 0 * 4 + 0, 2 * 16 + 1 * 4 + 2]])
    moved = torch.tensor([[1 * 16 + 2 * 4 + 1, 3 * 16 + 3 * 4 + 3]])
    qr, kr = apply_rope(q, rope_angles(idx, grid, head_dim)), apply_rope(k, rope_angles(moved, grid, head_dim))
    scores = (qr * kr).sum(-1)[0, 0]
    assert torch.allclose(scores[0], scores[1], atol=1e-5)
    assert torch.allclose(qr.norm(dim=-1), q.norm(dim=-1), atol=1e-5)  # a rotation
    other = apply_rope(k, rope_angles(torch.tensor([[0, 5]]), grid, head_dim))
    assert not torch.allclose((qr * other).sum(-1)[0, 0, 0], scores[0], atol=1e-3)


def test_rope_encoder_has_no_position_table_and_moves_with_its_input():
    model = tiny_encoder(pos_embed="rope")
    assert "pos_embed" not in model.state_dict()
    x = clip()
    with torch.no_grad():
        features = model(x).view(2, *GRID, -1)
        shifted = model(torch.roll(x, shifts=8, dims=-1)).view(2, *GRID, -1)  # content one patch to the right
        sincos = tiny_encoder()(x), tiny_encoder()(torch.roll(x, shifts=8, dims=-1))
    # the same content gives the same features one column over, up to the grid's edges (the wrapped column now
    # sits at another offset from the rest): about 1e-4 here, against 1 and more for sin-cos positions
    assert (features[..., :-1, :] - shifted[..., 1:, :]).abs().max() < 1e-3
    assert (sincos[0].view(2, *GRID, -1)[..., :-1, :] - sincos[1].view(2, *GRID, -1)[..., 1:, :]).abs().max() > 0.5


def test_rope_encoder_and_predictor_take_masks_and_layers_like_sincos():
    model, predictor = tiny_encoder(pos_embed="rope"), tiny_predictor(pos_embed="rope")
    assert "predictor_pos_embed" not in predictor.state_dict()
    x, keep, targets = clip(), torch.arange(8, 40).expand(2, -1), torch.arange(40, 64).expand(2, -1)
    with torch.no_grad():
        full, kept = model(x), model(x, masks=keep)
        assert kept.shape == (2, 32, 48) and torch.allclose(model.get_intermediate_layers(x, 1)[0], full)
        # the kept tokens see only each other, so they differ from the full pass, and positions still matter
        assert not torch.allclose(kept, full[:, 8:40], atol=1e-3)
        pred = predictor(kept, keep, targets)
        assert pred.shape == (2, 24, 48)
        # positions travel with the tokens: listing the targets in another order permutes the predictions ...
        assert torch.allclose(pred, predictor(kept, keep, targets.flip(1)).flip(1), atol=1e-5)
        # ... and mask tokens at other places predict other things, though the tokens themselves are all alike
        assert (pred - predictor(kept, keep, targets - 40)).abs().max() > 1e-4  # float noise: ~1e-7


def test_unknown_position_embedding_is_a_clear_error():
    with pytest.raises(ValueError, match="model.pos_embed='learned'"):
        tiny_encoder(pos_embed="learned")
