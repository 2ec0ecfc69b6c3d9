"""Violation of expectation: the twin generator, the metric arithmetic, `vjepa physics` end to end, bad tables."""
from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO
from evals.physics import (
    PhysicsConfig, auroc, clip_scores, event_slot, main, matched_sets, pair_outcomes, property_margins,
    VoEClip, property_metrics, read_voe_table, set_outcomes, surprise_curves, token_surprise,
)
from evals.stats import bootstrap_ci
from evals.worldmodel import WorldModelSource, build_world_models, slot_l1
from vjepa.config import load_config
from vjepa.data import DataError
from vjepa.world.physics import DISC, ObjectSpec, Scene, simulate
from vjepa.world.render import BACKGROUND, BARRIER
from vjepa.world.voe import (
    BALANCED, PROPERTIES, VoEConfig, generate_voe, make_balanced_set, make_twins, make_wall_set, violation,
)

TINY_WORLD = ["world.frames=16", "world.size=32", "world.object_size=[2.0,5.0]"]
IN_SETS = (*BALANCED, "solidity")  # the properties written as balanced sets of four clips (gravity: twin pairs)


def voe_config(output, *overrides: str) -> VoEConfig:
    return load_config(VoEConfig, REPO / "configs/world/voe.yaml",
                       [f"output={output}", "groups_per_property=2", *TINY_WORLD, *overrides])


@pytest.fixture(scope="module")
def tiny_voe(tmp_path_factory):
    out = tmp_path_factory.mktemp("voe")
    generate_voe(voe_config(out))
    return out


# --------------------------------------------------------------------------- the generator


def test_gravity_twins_are_identical_before_the_event_and_differ_after(tmp_path):
    possible, impossible, event = make_twins(voe_config(tmp_path), 0)
    assert possible.shape == impossible.shape == (16, 32, 32, 3)
    assert 0 < event < 16
    assert np.array_equal(possible[:event], impossible[:event])
    assert not np.array_equal(possible[event:], impossible[event:])


@pytest.mark.parametrize("prop", BALANCED)
def test_balanced_set_shows_its_change_from_the_event(prop, tmp_path):
    a, b, event = make_balanced_set(voe_config(tmp_path), prop, 0)
    assert a.shape == b.shape == (16, 32, 32, 3) and 0 < event < 16
    assert np.abs(a[event:].astype(int) - b[event:].astype(int)).max() >= 64  # the splices visibly jump at the event


def test_balanced_permanence_hides_object_0_and_changes_nothing_else(tmp_path):
    a, b, _ = make_balanced_set(voe_config(tmp_path, "world.min_objects=3"), "permanence", 1)
    differs = (a != b).any(-1)
    assert differs.any(axis=(1, 2)).all()  # object 0 is drawn in A in every frame
    assert (b[differs] == BACKGROUND).all()  # and where A and B differ, B shows the empty box: the others did not move


def test_solidity_ghost_passes_through_the_barrier_and_still_meets_objects():
    # a disc heads for a bar; the possible run bounces off it, the ghost run goes through it
    a = ObjectSpec(shape=DISC, mass=1.0, size=4.0, elasticity=0.9, friction=0.0, x0=16.0, y0=32.0, vx0=60.0, vy0=0.0,
                   angle0=0.0, colour=(200, 40, 40))
    scene = Scene(size=64, gravity=0.0, objects=[a], barrier=(32.0, 16.0, 32.0, 48.0))
    on_frame = violation("solidity", scene, event=1, fps=15)
    solid = simulate(scene, 8, 15, 8)
    ghost = simulate(scene, 8, 15, 8, on_frame)
    assert solid.position[:, 0, 0].max() < 32 and ghost.position[-1, 0, 0] > 40
    # with a second object in its way beyond the bar, the ghost still bounces off that one
    pair = replace(scene, objects=[a, replace(a, x0=52.0, vx0=0.0, colour=(40, 200, 40))])
    ghost = simulate(pair, 20, 15, 8, violation("solidity", pair, 1, 15))
    assert ghost.n_collisions >= 1 and ghost.position[:, 0, 0].max() < 52


def test_solidity_set_crosses_the_bar_with_the_motion(tmp_path):
    cfg = voe_config(tmp_path)
    for index in range(3):
        ((bounce, through), (straight, turn)), event = make_wall_set(cfg, index)
        bar = (bounce[0] == BARRIER).all(-1)  # the bar's pixels, as drawn in the first frame
        assert bar.sum() >= 8 and (through[0][bar] == BARRIER).all()

        def covered(clip):  # the most bar pixels an object hides in one frame
            return int((clip[:, bar] != BARRIER).any(-1).sum(-1).max())
        assert covered(through[event:]) >= covered(bounce) + 4  # the ghost is drawn over the bar as it passes
        assert not (straight == BARRIER).all(-1).any() and not (turn == BARRIER).all(-1).any()  # B has no bar
        for possible, impossible in ((bounce, through), (straight, turn)):  # twins: the same until the event
            assert np.array_equal(possible[:event], impossible[:event])
            assert np.abs(possible[event:].astype(int) - impossible[event:].astype(int)).max() >= 64
        # each impossible clip is the other pair's possible motion with this pair's bar: off the bar, the same pixels
        footprint = (bounce[0] != straight[0]).any(-1)  # the bar as drawn (edges included): at the start, all it changes
        assert footprint.sum() >= bar.sum()
        for barred, unbarred in ((through, straight), (bounce, turn)):
            assert np.array_equal(barred[:, ~footprint], unbarred[:, ~footprint])


def test_balanced_sets_in_the_table_pair_a_and_b_both_ways(tiny_voe):
    import decord

    with open(tiny_voe / "voe.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    for prop in BALANCED:
        for name in sorted({r["set"] for r in rows if r["property"] == prop}):
            members = {Path(r["path"]).stem.removeprefix(name): r for r in rows if r["set"] == name}
            assert sorted(members) == ["a_impossible", "a_possible", "b_impossible", "b_possible"]
            frames = {k: decord.VideoReader(str(tiny_voe / r["path"]))[:].asnumpy().astype(int) for k, r in members.items()}
            event = int(members["a_possible"]["event_frame"])
            # decoded, each impossible splice matches one possible clip before the event and the other after it,
            # up to the codec (the splice's first coded frame after the event cannot refer back to the same past)
            for imp, before, after in (("a_impossible", "a_possible", "b_possible"),
                                       ("b_impossible", "b_possible", "a_possible")):
                assert np.array_equal(frames[imp][:event], frames[before][:event])
                assert np.abs(frames[imp][event:] - frames[after][event:]).mean() < 2.0
                assert np.abs(frames[imp][event:] - frames[before][event:]).max() >= 32
    assert all(r["set"] == "" for r in rows if r["property"] not in IN_SETS)


def test_same_seed_gives_the_same_files_whatever_the_worker_count(tiny_voe, tmp_path):
    generate_voe(voe_config(tmp_path, "world.workers=1"))
    files = sorted(p.relative_to(tiny_voe) for p in tiny_voe.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert all((tiny_voe / f).read_bytes() == (tmp_path / f).read_bytes() for f in files if f.name != "config.yaml")


def test_encoded_twins_decode_identically_before_the_event(tiny_voe):
    """The codec is causal: frames after the event cannot change how earlier ones are coded."""
    import decord

    with open(tiny_voe / "voe.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    for group in sorted({r["group"] for r in rows}):
        possible, impossible = (next(r for r in rows if r["group"] == group and r["possible"] == flag) for flag in "10")
        frames = [decord.VideoReader(str(tiny_voe / r["path"]))[:].asnumpy() for r in (possible, impossible)]
        event = int(possible["event_frame"])
        assert np.array_equal(frames[0][:event], frames[1][:event]), group
        assert not np.array_equal(frames[0][event:], frames[1][event:]), group


def test_voe_table_has_one_possible_and_one_impossible_clip_per_group(tiny_voe):
    with open(tiny_voe / "voe.csv", newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert reader.fieldnames == ["path", "group", "possible", "property", "event_frame", "set"]
    assert len(rows) == 2 * sum(4 if p in IN_SETS else 2 for p in PROPERTIES)  # 2 sets per property
    for group in {r["group"] for r in rows}:
        members = [r for r in rows if r["group"] == group]
        assert sorted(r["possible"] for r in members) == ["0", "1"]
        assert len({r["property"] for r in members}) == len({r["event_frame"] for r in members}) == 1
        assert all((tiny_voe / r["path"]).is_file() for r in members)


# --------------------------------------------------------------------------- the metric


def test_accuracy_is_one_when_impossible_is_always_more_surprising():
    scores = np.array([0.1, 0.9, 0.2, 0.8, 0.3, 0.7])  # clips (0, 1), (2, 3), (4, 5): possible first
    outcomes = pair_outcomes(scores, [(0, 1), (2, 3), (4, 5)])
    assert outcomes.tolist() == [1.0, 1.0, 1.0]
    assert bootstrap_ci(outcomes, 200, seed=0) == (1.0, 1.0)
    assert auroc(scores[[0, 2, 4]], scores[[1, 3, 5]]) == 1.0
    assert auroc(scores[[1, 3, 5]], scores[[0, 2, 4]]) == 0.0


def test_ties_count_half_and_noise_gives_an_interval_around_chance():
    assert pair_outcomes(np.array([0.5, 0.5]), [(0, 1)]).tolist() == [0.5]
    assert auroc(np.array([0.5, 0.5]), np.array([0.5, 0.5])) == 0.5
    rng = np.random.default_rng(0)
    scores = rng.normal(size=400)
    outcomes = pair_outcomes(scores, [(2 * i, 2 * i + 1) for i in range(200)])
    lo, hi = bootstrap_ci(outcomes, 1000, seed=0)
    assert lo < 0.5 < hi and hi - lo < 0.2


def test_scores_start_at_the_first_slot_the_event_reaches():
    # frame_step 2, tubelet 2: slot s holds video frames 4s and 4s + 2
    assert [event_slot(e, 2, 2, 8) for e in (None, 0, 2, 3, 14, 15, 16, 40)] == [0, 0, 0, 1, 3, 4, 4, 7]
    assert event_slot(5, 1, 1, 8) == 5
    curves = np.array([[np.nan, 0.9, 0.2, 0.3], [np.nan, 0.9, 0.4, 0.1]])  # identical before slot 2, as twins are
    assert clip_scores(curves, "max").tolist() == [0.9, 0.9]  # the shared early peak ties them
    assert clip_scores(curves, "max", np.array([2, 2])).tolist() == [0.3, 0.4]
    np.testing.assert_allclose(clip_scores(curves, "mean", np.array([2, 2])), [0.25, 0.25])


def test_auroc_counts_ordered_pairs():
    # impossible 0.3 beats possible 0.1 and 0.2 but not 0.4; impossible 0.5 beats all three: 5 of 6
    assert auroc(np.array([0.1, 0.2, 0.4]), np.array([0.3, 0.5])) == pytest.approx(5 / 6)


def test_balanced_sets_give_a_frame_statistic_chance_and_a_tracker_full_marks(tiny_voe):
    clips = read_voe_table(str(tiny_voe / "voe.csv"))
    sets = matched_sets(clips)
    assert {p: len(s) for p, s in sets.items()} == {p: 2 for p in PROPERTIES}
    assert all(len(ok) == len(bad) == (2 if p in IN_SETS else 1) for p in PROPERTIES for ok, bad in sets[p])
    # clips 0-3: permanence set 0 as written: A possible, A-then-B impossible, B possible, B-then-A impossible
    assert [Path(c.path).stem for c in clips[:4]] == [f"permanence_0000{k}" for k in
                                                      ("a_possible", "a_impossible", "b_possible", "b_impossible")]
    pairs = [(0, 1), (2, 3)]
    # a score that depends only on what the frames after the event show (object 0 there or not): B-then-A scores
    # as A does, A-then-B as B does. Twin pairs call it right once and wrong once; the balanced set ties it
    frames_only = np.array([0.9, 0.1, 0.1, 0.9])
    assert pair_outcomes(frames_only, pairs).tolist() == [0.0, 1.0]
    assert set_outcomes(frames_only, sets["permanence"][:1]).tolist() == [0.5]
    # a tracker, surprised by the vanishing and by the appearing, passes the set
    tracker = np.array([0.3, 0.4, 0.1, 0.9])
    assert set_outcomes(tracker, sets["permanence"][:1]).tolist() == [1.0]
    # solidity: A = bar (bounce, through), B = no bar (straight, turn). A predictor of straight-line motion, surprised
    # by any turn, calls A wrong (the bounce surprises it) and B right: the set ties it, as it ties a score of the
    # bar alone; a model that expects the bar, and only the bar, to turn the object passes
    solidity = sets["solidity"][0]
    assert [Path(clips[i].path).stem.removeprefix("solidity_0000") for i in (*solidity[0], *solidity[1])] == [
        "a_possible", "b_possible", "a_impossible", "b_impossible"]
    members = {Path(clips[i].path).stem.removeprefix("solidity_0000"): i for i in (*solidity[0], *solidity[1])}
    inertia = np.zeros(len(clips))
    inertia[[members["a_possible"], members["b_impossible"]]] = 0.9  # the two clips that turn
    assert set_outcomes(inertia, [solidity]).tolist() == [0.5]
    bar_only = np.zeros(len(clips))
    bar_only[[members["a_possible"], members["a_impossible"]]] = 0.9
    assert set_outcomes(bar_only, [solidity]).tolist() == [0.5]
    walls = np.full(len(clips), 0.1)
    walls[[members["a_impossible"], members["b_impossible"]]] = 0.9  # through the bar, or turning at nothing
    assert set_outcomes(walls, [solidity]).tolist() == [1.0]


def test_seeds_are_averaged_per_pair(tiny_voe):
    clips = read_voe_table(str(tiny_voe / "voe.csv"))[:4]  # two permanence groups
    pairs = {"permanence": [(0, 1), (2, 3)]}
    scores = np.array([[0.1, 0.9, 0.9, 0.1], [0.1, 0.9, 0.1, 0.9]])  # seed 0 right once, seed 1 twice
    m = property_metrics(scores, clips, pairs, PhysicsConfig(table="", bootstrap=100))
    assert m["properties"]["permanence"]["accuracy"] == pytest.approx(0.75)
    assert m["properties"]["permanence"]["seed_accuracy"] == [0.5, 1.0]
    assert m["seeds"] == 2


def test_margin_is_the_difference_of_accuracies_on_the_same_pairs():
    rng = np.random.default_rng(0)
    n = 60
    pairs = {"gravity": [(2 * i, 2 * i + 1) for i in range(n)]}
    sets = {"gravity": [([p], [q]) for p, q in pairs["gravity"]]}
    cfg = PhysicsConfig(table="", bootstrap=500)
    noise = rng.normal(size=(1, 2 * n))
    tracker = noise.copy()
    tracker[0, 1::2] += 3.0  # impossible clips far more surprising: accuracy ~1
    seeds = rng.normal(size=(3, 2 * n))  # three chance-level controls
    clips = [VoEClip(f"{i}.mp4", f"g{i // 2}", 1 - i % 2, "gravity", None) for i in range(2 * n)]
    m = property_margins(tracker, seeds, pairs, sets, cfg)["gravity"]
    ours = property_metrics(tracker, clips, pairs, cfg, sets)["properties"]["gravity"]
    theirs = property_metrics(seeds, clips, pairs, cfg, sets)["properties"]["gravity"]
    for key in ("accuracy", "relative_accuracy"):
        assert m[key]["value"] == pytest.approx(ours[key] - theirs[key])
        lo, hi = m[key]["ci"]
        assert 0.2 < lo <= m[key]["value"] <= hi
    # the same scores against themselves: exactly zero, interval [0, 0]; a chance model against the controls spans 0
    assert property_margins(seeds, seeds, pairs, sets, cfg)["gravity"]["accuracy"] == {"value": 0.0, "ci": [0.0, 0.0]}
    lo, hi = property_margins(noise, seeds, pairs, sets, cfg)["gravity"]["accuracy"]["ci"]
    assert lo < 0 < hi


# --------------------------------------------------------------------------- surprise curves


def test_prefix_surprise_averages_what_the_future_mask_trains(tiny_checkpoint):
    (model,) = build_world_models("jepa", WorldModelSource(checkpoint=str(tiny_checkpoint)), None)
    torch.manual_seed(0)
    clips = torch.randn(2, 3, 8, 32, 32)  # 4 time slots
    real = model.target_slots(clips)

    def from_prefix(k: int) -> torch.Tensor:  # the first k slots predict all later ones at once, [B, 4 - k]
        return slot_l1(model.predict_slots(model.context_slots(clips, range(k)), range(k), range(k, 4)), real[:, k:])

    curves = surprise_curves(model, clips, [1, 2])
    one, two = from_prefix(1), from_prefix(2)
    assert torch.isnan(curves[:, 0]).all()
    assert curves[:, 1] == pytest.approx(one[:, 0], rel=1e-5)  # only the 1-slot prefix reaches slot 1
    assert curves[:, 2:] == pytest.approx((one[:, 1:] + two) / 2, rel=1e-5)
    # per token: the same predictions, the error kept per position; its mean over a slot is the curve
    tokens = token_surprise(model, clips, [1, 2])
    assert tokens.shape == (2, 4, model.tokens_per_slot)
    assert tokens.mean(-1)[:, 1:] == pytest.approx(curves[:, 1:], rel=1e-5)
    per_token = (model.predict_slots(model.context_slots(clips, range(1)), range(1), range(1, 4)) - real[:, 1:]).abs().mean(-1)
    assert tokens[:, 1] == pytest.approx(per_token[:, 0], rel=1e-5)


# --------------------------------------------------------------------------- end to end and bad input


def physics_config(voe, checkpoint, output, *overrides: str) -> PhysicsConfig:
    base = [f"voe={voe}", f"checkpoint={checkpoint}", f"output={output}", "device=cpu", "context_slots=[2,3]",
            "bootstrap=100", "models.random.seeds=[0,1]"]
    return load_config(PhysicsConfig, REPO / "configs/evals/physics_world.yaml", [*base, *overrides])


def test_physics_writes_metrics_with_random_controls(tiny_voe, tiny_checkpoint, tmp_path):
    main(physics_config(tiny_voe, tiny_checkpoint, tmp_path))
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["models"].keys() == {"jepa", "random"}
    assert metrics["models"]["random"]["seeds"] == 2
    for model in metrics["models"].values():
        assert model["properties"].keys() == set(PROPERTIES)
        for prop, e in model["properties"].items():
            assert 0 <= e["ci"][0] <= e["accuracy"] <= e["ci"][1] <= 1 and 0 <= e["auroc"] <= 1
            assert 0 <= e["relative_ci"][0] <= e["relative_accuracy"] <= e["relative_ci"][1] <= 1
            assert e["sets"] == 2 and e["pairs"] == (4 if prop in IN_SETS else 2)
        assert model["mean_accuracy"] == pytest.approx(np.mean([e["accuracy"] for e in model["properties"].values()]))
    margins = metrics["margins"]["jepa"]["random"]
    for prop, e in margins.items():  # jepa minus the mean over random's seeds, per property
        for key in ("accuracy", "relative_accuracy"):
            diff = metrics["models"]["jepa"]["properties"][prop][key] - metrics["models"]["random"]["properties"][prop][key]
            assert e[key]["value"] == pytest.approx(diff) and e[key]["ci"][0] <= e[key]["value"] <= e[key]["ci"][1]
    assert "jepa − random, relative" in (tmp_path / "report.md").read_text()
    # the other score's metrics are those of a run scored by it
    by_mean = main(physics_config(tiny_voe, tiny_checkpoint, tmp_path / "mean", "score=mean"))
    assert metrics["other_scores"]["mean"]["models"] == by_mean["models"]
    assert metrics["other_scores"]["mean"]["margins"] == by_mean["margins"]
    assert by_mean["other_scores"]["max"]["models"] == metrics["models"]
    with open(tmp_path / "surprise.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 * 36  # jepa + 2 random seeds, 36 clips (2 sets per property, four clips in 4 of 5)
    curve = rows[0]["curve"].split(" ")
    assert len(curve) == 4 and curve[:2] == ["", ""] and float(rows[0]["max"]) >= float(rows[0]["mean"]) > 0
    for name in ("accuracy.png", "surprise_curves.png", "surprise_maps.png", "report.md", "config.yaml"):
        assert (tmp_path / name).is_file()
    assert "![surprise per token](surprise_maps.png)" in (tmp_path / "report.md").read_text()


def test_an_official_layout_checkpoint_scores_exactly_as_ours(tiny_voe, tiny_checkpoint, tmp_path):
    """The official V-JEPA layout carries no config: its architecture is read from its tensors, and with the mask
    token it was trained with its surprise is ours to the digit."""
    ckpt = torch.load(tiny_checkpoint, weights_only=False)
    official = tmp_path / "official.pt"
    torch.save({key: {"module.backbone." + k: v for k, v in ckpt[key].items()}
                for key in ("encoder", "target_encoder", "predictor")} | {"epoch": 1}, official)
    arch = [f"model.{k}={v}" for k, v in ckpt["config"]["model"].items() if v is not None] + [
        "clip.frames_per_clip=8", "clip.frame_step=2", "clip.crop_size=32", "mask_index=2", "models.random.seeds=[0]"]
    theirs = main(physics_config(tiny_voe, official, tmp_path / "theirs", *arch))
    ours = main(physics_config(tiny_voe, tiny_checkpoint, tmp_path / "ours", "models.random.seeds=[0]"))
    assert theirs["models"]["jepa"] == ours["models"]["jepa"]

    def surprise(run):
        with open(tmp_path / run / "surprise.csv", newline="") as f:
            return [(r["path"], r["max"], r["mean"]) for r in csv.DictReader(f) if r["model"] == "jepa"]
    assert surprise("theirs") == surprise("ours") and len(surprise("ours")) == 36


def test_table_naming_a_missing_video_is_a_clear_error(tmp_path):
    (tmp_path / "voe.csv").write_text("path,group,possible,property\ngone.mp4,g0,1,gravity\n")
    with pytest.raises(DataError, match="gone.mp4"):
        read_voe_table(str(tmp_path / "voe.csv"))


def test_table_without_a_required_column_is_a_clear_error(tmp_path):
    (tmp_path / "voe.csv").write_text("path,group,property\nclip.mp4,g0,gravity\n")
    with pytest.raises(DataError, match="no column possible"):
        read_voe_table(str(tmp_path / "voe.csv"))
