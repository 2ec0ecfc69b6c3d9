"""Mask generators: the shared contract, each recipe's shape, seeding and config errors."""
import math

import pytest
import torch
from omegaconf import OmegaConf

from vjepa.masks import (
    FutureMask,
    MaskConfig,
    MaskPair,
    MultiBlock3D,
    RandomTube,
    build_mask_generator,
    equalize_counts,
    sample_masks,
)

GRID = (8, 8, 8)
VJEPA_GRID = (8, 14, 14)


def make(kind, grid=GRID):
    return {
        "multiblock": lambda: MultiBlock3D(grid, num_blocks=4, spatial_scale=(0.1, 0.3), temporal_scale=(0.5, 1.0)),
        "multiblock_ctx": lambda: MultiBlock3D(grid, num_blocks=2, max_context_frames=grid[0] // 2),
        "tube": lambda: RandomTube(grid, ratio=0.75),
        "future": lambda: FutureMask(grid),
    }[kind]()


def draw(gen, batch_size=8, seed=0):
    return gen(batch_size, torch.Generator().manual_seed(seed))


def as_bool(indices, grid):
    """[B, N] indices -> boolean [B, T, H, W]."""
    mask = torch.zeros(indices.shape[0], math.prod(grid), dtype=torch.bool)
    mask.scatter_(1, indices, True)
    return mask.view(-1, *grid)


@pytest.mark.parametrize("kind", ["multiblock", "multiblock_ctx", "tube", "future"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_generator_gives_equal_counts_sorted_disjoint_rows(kind, seed):
    masks = draw(make(kind), batch_size=8, seed=seed)
    assert isinstance(masks, MaskPair)
    n = math.prod(GRID)
    for idx in masks:
        assert idx.dtype == torch.long and idx.ndim == 2 and idx.shape[0] == 8 and idx.shape[1] > 0
        assert (idx >= 0).all() and (idx < n).all()
        assert (idx[:, 1:] > idx[:, :-1]).all(), "rows must be sorted without repeats"
    context, target = as_bool(masks.context, GRID), as_bool(masks.target, GRID)
    assert not (context & target).any()


def rectangle(slot):
    """(h, w) of the single axis-aligned rectangle `slot` holds, or None if it holds another shape."""
    ys, xs = slot.nonzero(as_tuple=True)
    h, w = int(ys.max() - ys.min() + 1), int(xs.max() - xs.min() + 1)
    return (h, w) if h * w == len(ys) else None


@pytest.mark.parametrize("seed", range(6))
def test_multiblock_block_is_one_rectangle_within_scale_ranges(seed):
    lo, hi, ar_lo, ar_hi = 0.1, 0.3, 0.75, 1.5
    gen = MultiBlock3D(VJEPA_GRID, num_blocks=1, spatial_scale=(lo, hi), aspect_ratio=(ar_lo, ar_hi))
    T, H, W = VJEPA_GRID
    target = as_bool(draw(gen, seed=seed).target, VJEPA_GRID)
    for sample in target:
        assert (sample == sample[0]).all(), "default temporal_scale covers every time slot"
        h, w = rectangle(sample[0])
        # h and w are rounded from sqrt(keep * ar) and sqrt(keep / ar): each is off by at most 0.5
        slack = (h + w) / 2 + 1
        assert H * W * lo - slack <= h * w <= H * W * hi + slack
        assert (h + 0.5) / (w - 0.5) >= ar_lo and (h - 0.5) / (w + 0.5) <= ar_hi


def test_multiblock_temporal_scale_sets_the_block_duration():
    gen = MultiBlock3D(GRID, num_blocks=1, spatial_scale=(0.2, 0.2), temporal_scale=(0.5, 0.5))
    target = as_bool(draw(gen).target, GRID)
    for sample in target:
        slots = sample.flatten(1).any(dim=1).nonzero().squeeze(1)
        assert len(slots) == 4 and (slots.diff() == 1).all()


def test_multiblock_max_context_frames_keeps_context_in_the_first_frames():
    assert not as_bool(draw(make("multiblock_ctx")).context, GRID)[:, 4:].any()
    # a batch of one drops no tokens to equalize counts
    target = as_bool(draw(make("multiblock_ctx"), batch_size=1).target, GRID)
    assert target[:, 4:].all(), "tokens past the context window are predicted, as in V-JEPA"


def test_future_mask_context_is_exactly_the_first_context_frames():
    masks = draw(FutureMask(GRID, context_frames=3), batch_size=2)
    T, H, W = GRID
    assert torch.equal(masks.context, torch.arange(3 * H * W).expand(2, -1))
    assert torch.equal(masks.target, torch.arange(3 * H * W, T * H * W).expand(2, -1))
    assert FutureMask(GRID).context_frames == T // 2


def test_future_mask_with_a_range_draws_one_cut_per_batch_over_the_whole_range():
    T, H, W = GRID
    gen = FutureMask(GRID, context_frames_range=(1, T - 1))
    g = torch.Generator().manual_seed(0)
    cuts = set()
    for _ in range(200):
        masks = gen(3, g)
        cut = masks.context.shape[1] // (H * W)
        cuts.add(cut)
        assert torch.equal(masks.context, torch.arange(cut * H * W).expand(3, -1))
        assert torch.equal(masks.target, torch.arange(cut * H * W, T * H * W).expand(3, -1))
    assert cuts == set(range(1, T))


def test_future_mask_with_target_frames_predicts_only_the_next_slots_and_stops_at_the_clip_end():
    T, H, W = GRID
    gen = FutureMask(GRID, context_frames_range=(1, T - 1), target_frames=2)
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        masks = gen(2, g)
        cut = masks.context.shape[1] // (H * W)
        end = min(T, cut + 2)
        assert torch.equal(masks.target, torch.arange(cut * H * W, end * H * W).expand(2, -1))
    with pytest.raises(ValueError, match=rf"target_frames must lie in \[1, {T - 1}\]"):
        FutureMask(GRID, target_frames=0)


def test_tube_targets_are_identical_across_time_and_differ_across_samples():
    target = as_bool(draw(RandomTube(GRID, ratio=0.75)).target, GRID)
    assert (target == target[:, :1]).all()
    assert (target[:, 0].flatten(1).sum(1) == 48).all()
    assert not (target[0] == target[1]).all()


def test_same_seed_and_step_give_identical_masks_and_a_new_step_changes_them():
    gens = [make("multiblock"), make("tube"), make("future")]
    first = sample_masks(gens, batch_size=4, seed=7, step=100)
    again = sample_masks(gens, batch_size=4, seed=7, step=100)
    later = sample_masks(gens, batch_size=4, seed=7, step=101)
    other_rank = sample_masks(gens, batch_size=4, seed=8, step=100)
    for a, b in zip(first, again):
        assert torch.equal(a.context, b.context) and torch.equal(a.target, b.target)
    for moved in (later, other_rank):
        assert not torch.equal(first[0].target, moved[0].target)
        assert not torch.equal(first[1].target, moved[1].target)


def test_generators_never_touch_the_global_rng():
    torch.manual_seed(0)
    state = torch.get_rng_state()
    sample_masks([make("multiblock"), make("tube"), make("future")], batch_size=4, seed=0, step=0)
    assert torch.equal(state, torch.get_rng_state())


@pytest.mark.parametrize("num_blocks, scale", [(8, 0.15), (2, 0.7)])
def test_vjepa_default_recipe_hides_a_large_but_partial_fraction(num_blocks, scale):
    gen = MultiBlock3D(VJEPA_GRID, num_blocks=num_blocks, spatial_scale=(scale, scale))
    g = torch.Generator().manual_seed(0)
    fractions = [gen(8, g).target.shape[1] / math.prod(VJEPA_GRID) for _ in range(20)]
    assert 0.4 < sum(fractions) / len(fractions) < 0.9


def test_equalize_counts_keeps_a_random_subset_not_the_first_tokens():
    g = torch.Generator().manual_seed(0)
    rows = [torch.arange(10), torch.arange(4)]
    kept = [equalize_counts(rows, g) for _ in range(20)]
    assert all(k.shape == (2, 4) and torch.equal(k[1], torch.arange(4)) for k in kept)
    assert all((k[0].diff() > 0).all() for k in kept)
    assert any(not torch.equal(k[0], torch.arange(4)) for k in kept)


def test_block_covering_the_whole_grid_raises_a_clear_error():
    gen = MultiBlock3D(GRID, num_blocks=1, spatial_scale=(1.0, 1.0), aspect_ratio=(1.0, 1.0))
    with pytest.raises(ValueError, match="no context.*spatial_scale"):
        draw(gen)


def test_build_mask_generator_rejects_an_unknown_type():
    with pytest.raises(ValueError, match="unknown mask type 'x'; expected one of multiblock, tube, future"):
        build_mask_generator(MaskConfig(type="x"), GRID)


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"spatial_scale": (0.0, 0.5)}, "spatial_scale"),
        ({"spatial_scale": (0.5, 1.5)}, "spatial_scale"),
        ({"temporal_scale": (0.8, 0.5)}, "temporal_scale"),
        ({"num_blocks": 0}, "num_blocks"),
        ({"max_context_frames": 9}, "max_context_frames"),
        ({"type": "tube", "ratio": 1.0}, "ratio"),
        ({"type": "future", "context_frames": 8}, "context_frames"),
        ({"type": "future", "context_frames_range": (0, 3)}, "context_frames_range"),
        ({"type": "future", "context_frames_range": (5, 3)}, "context_frames_range"),
    ],
)
def test_out_of_range_settings_raise_errors_naming_the_field(overrides, field):
    with pytest.raises(ValueError, match=field):
        build_mask_generator(MaskConfig(**overrides), GRID)


def test_build_mask_generator_reads_an_omegaconf_structured_config():
    cfg = OmegaConf.merge(OmegaConf.structured(MaskConfig), OmegaConf.from_dotlist(["num_blocks=2", "spatial_scale=[0.2,0.4]"]))
    gen = build_mask_generator(cfg, GRID)
    assert isinstance(gen, MultiBlock3D) and gen.num_blocks == 2 and gen.spatial_scale == (0.2, 0.4)
    assert isinstance(build_mask_generator(MaskConfig(type="future", context_frames=2), GRID), FutureMask)
