"""Frozen probes: feature sources and their cache, the three probes, end to end on the tiny world, bad input."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from conftest import REPO
from evals import features as features_module
from evals.attentive import AttentiveConfig, attentive_classifier
from evals.features import FeatureConfig, SourceConfig, build_sources, eval_dataset, load_or_extract
from evals.knn import KnnConfig, knn_classifier
from evals.linear import LinearConfig, linear_classifier, linear_regressor
from evals.probe import Outcome, ProbeConfig, main, margins
from evals.tasks import holdout_videos, regression_metrics
from vjepa.checkpoint import CheckpointError, load_checkpoint
from vjepa.config import load_config
from vjepa.data import DataError
from vjepa.models import get_3d_sincos_pos_embed, interpolate_pos_embed
from vjepa.models.config import ModelConfig

TINY_FEATURES = FeatureConfig(frames_per_clip=8, frame_step=2, crop_size=32, batch_size=8, num_workers=0)


def probe_config(world, checkpoint, output, *overrides: str) -> ProbeConfig:
    """The world recipe, shrunk to the tiny world and a few probe epochs."""
    base = [
        f"world={world}", f"checkpoint={checkpoint}", f"output={output}", "device=cpu",
        "data.max_train_videos=0", "features.frames_per_clip=8", "features.crop_size=32", "features.layers=2",
        "features.batch_size=8", "features.num_workers=0", "attentive.epochs=2", "attentive.lrs=[0.001]",
    ]
    return load_config(ProbeConfig, REPO / "configs/evals/probe_world.yaml", [*base, *overrides])


def checkpoint_model_config(checkpoint) -> ModelConfig:
    """The architecture a checkpoint of ours was trained with, as a probe config would state it."""
    return OmegaConf.merge(OmegaConf.structured(ModelConfig), load_checkpoint(checkpoint)["config"]["model"])


def save_official_layout(checkpoint, path, pos_embed=None):
    """Our weights as the official V-JEPA code saves them: DDP + wrapper prefixes, no config."""
    ckpt = load_checkpoint(checkpoint)
    official = {}
    for key in ("encoder", "target_encoder"):
        state = dict(ckpt[key])
        if pos_embed is not None:
            state["pos_embed"] = pos_embed
        official[key] = {"module.backbone." + k: v for k, v in state.items()}
    torch.save({**official, "epoch": 1}, path)
    return path


# --------------------------------------------------------------------------- end to end


def test_probe_writes_metrics_for_jepa_and_random_in_the_design_format(tiny_world, tiny_checkpoint, tmp_path):
    metrics = main(probe_config(tiny_world, tiny_checkpoint, tmp_path / "probe"))
    on_disk = json.loads((tmp_path / "probe" / "metrics.json").read_text())
    assert on_disk["models"].keys() == {"jepa", "random"} and on_disk == json.loads(json.dumps(metrics))
    for model in ("jepa", "random"):
        tasks = on_disk["models"][model]["tasks"]
        assert tasks["n_objects/linear"]["metric"] == "top1" and 0 <= tasks["n_objects/linear"]["value"] <= 1
        for key in ("n_objects/attentive", "n_objects/knn", "gravity/linear", "obj0_vx0/attentive", "latents/linear"):
            assert isinstance(tasks[key]["value"], float), key
        assert tasks["gravity/linear"]["metric"] == "r2" and tasks["gravity/linear"]["mse"] >= 0
    assert on_disk["models"]["jepa"]["tasks"]["gravity/linear"]["hparams"]["alpha"] in LinearConfig().alphas
    random_entry = on_disk["models"]["random"]["tasks"]["gravity/linear"]
    assert len(random_entry["values"]) == 2 and random_entry["std"] >= 0  # two seeds: mean and spread
    assert on_disk["data"]["train"]["videos"] == 24 and on_disk["data"]["val"]["videos"] == 8
    # the margin over the control (random init) is the difference of the two columns, inside its interval
    for task, margin in on_disk["margins"]["jepa"].items():
        diff = on_disk["models"]["jepa"]["tasks"][task]["value"] - on_disk["models"]["random"]["tasks"][task]["value"]
        assert margin["value"] == pytest.approx(diff, abs=1e-9), task
        assert margin["ci"][0] <= margin["value"] <= margin["ci"][1], task
    assert on_disk["margins"]["jepa"].keys() == on_disk["models"]["jepa"]["tasks"].keys()
    report = (tmp_path / "probe" / "report.md").read_text()
    assert "| task | metric | jepa | random | jepa − random |" in report and "n_objects/knn" in report
    assert (tmp_path / "probe" / "probe.png").stat().st_size > 0
    saved = OmegaConf.load(tmp_path / "probe" / "config.yaml")
    assert saved.data.train_list == f"{tiny_world}/train.txt"  # resolved, not ${world}


def test_a_second_probe_reuses_cached_features_without_encoding(tiny_world, tiny_checkpoint, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    only_linear = ["tasks.n_objects.probes=[linear]", "tasks.latents.probes=[linear]", f"cache_dir={cache}"]
    first = main(probe_config(tiny_world, tiny_checkpoint, tmp_path / "a", *only_linear))
    files = {p: p.stat().st_mtime_ns for p in cache.iterdir()}
    assert len(files) == 6  # (jepa + 2 random seeds) x (train, val)

    def no_extraction(*args, **kwargs):
        raise AssertionError("features were extracted again")

    monkeypatch.setattr(features_module, "extract", no_extraction)
    second = main(probe_config(tiny_world, tiny_checkpoint, tmp_path / "b", *only_linear, "linear.Cs=[1.0]"))
    assert {p: p.stat().st_mtime_ns for p in cache.iterdir()} == files
    assert second["models"]["jepa"]["tasks"]["gravity/linear"]["value"] == first["models"]["jepa"]["tasks"]["gravity/linear"]["value"]


def test_several_clips_per_video_give_features_per_clip(tiny_world, tmp_path):
    feats = FeatureConfig(**{**vars(TINY_FEATURES), "clips_per_video": 2})
    source = build_sources("random", SourceConfig(kind="random"), tiny_model(), feats)[0]
    dataset = eval_dataset(tiny_world / "val.txt", feats, seed=0)
    (out,) = load_or_extract([source], dataset, [0, 1, 2], feats, True, tmp_path, torch.device("cpu"), "val")
    assert out.video.tolist() == [0, 0, 1, 1, 2, 2]
    assert out.pooled.shape == (6, 96) and out.tokens.shape == (6, 64, 96) and out.tokens.dtype == torch.float16


def test_layers_concatenate_the_last_blocks_in_pooled_features_and_tokens(tiny_world, tmp_path):
    source = build_sources("random", SourceConfig(kind="random"), tiny_model(), TINY_FEATURES)[0]
    dataset = eval_dataset(tiny_world / "val.txt", TINY_FEATURES, seed=0)
    two = FeatureConfig(**{**vars(TINY_FEATURES), "layers": 2})
    (last,) = load_or_extract([source], dataset, [0, 1], TINY_FEATURES, True, tmp_path, torch.device("cpu"), "val")
    (both,) = load_or_extract([source], dataset, [0, 1], two, True, tmp_path, torch.device("cpu"), "val")
    assert both.pooled.shape == (2, 192) and both.tokens.shape == (2, 64, 192)  # a separate cache entry
    assert torch.equal(both.tokens[..., 96:], last.tokens) and torch.allclose(both.pooled[:, 96:], last.pooled)
    assert not torch.allclose(both.tokens[..., :96].float(), last.tokens.float(), atol=1e-2)  # block 1 is not block 2


def tiny_model() -> ModelConfig:
    return OmegaConf.merge(OmegaConf.structured(ModelConfig),
                           {"name": "vit_micro", "depth": 2, "patch_size": 8, "tubelet_size": 2})


# --------------------------------------------------------------------------- feature sources


def test_official_layout_checkpoint_gives_the_same_features_as_ours(tiny_checkpoint, tmp_path):
    official = save_official_layout(tiny_checkpoint, tmp_path / "official.pt")
    model = checkpoint_model_config(tiny_checkpoint)
    ours = build_sources("ours", SourceConfig(checkpoint=str(tiny_checkpoint)), ModelConfig(), TINY_FEATURES)[0]
    theirs = build_sources("theirs", SourceConfig(checkpoint=str(official)), model, TINY_FEATURES)[0]
    clips = torch.randn(2, 3, 8, 32, 32)
    with torch.no_grad():
        assert torch.equal(ours.encode(clips), theirs.encode(clips))
        target = ours.encode(clips)
    online = build_sources("online", SourceConfig(checkpoint=str(official), encoder="encoder"), model,
                           TINY_FEATURES)[0]
    with torch.no_grad():
        assert not torch.equal(online.encode(clips), target)  # `encoder` on request is the other network


def test_official_pos_embed_for_more_frames_is_interpolated_to_the_probe_clip(tiny_checkpoint, tmp_path):
    model = checkpoint_model_config(tiny_checkpoint)
    table = torch.from_numpy(get_3d_sincos_pos_embed(96, 8, 4, 4, uniform_power=True)).float().unsqueeze(0)  # 16 frames
    official = save_official_layout(tiny_checkpoint, tmp_path / "official.pt", pos_embed=table)
    source = build_sources("jepa", SourceConfig(checkpoint=str(official)), model, TINY_FEATURES)[0]  # 8 frames
    expected = interpolate_pos_embed(table, (8, 4, 4), (4, 4, 4))
    assert torch.allclose(source.network.pos_embed, expected)


def test_a_checkpoint_without_config_is_built_as_its_tensors_say(tiny_checkpoint, tmp_path):
    official = save_official_layout(tiny_checkpoint, tmp_path / "official.pt")
    wrong = OmegaConf.merge(checkpoint_model_config(tiny_checkpoint), {"depth": 3, "patch_size": 16, "name": "vit_base"})
    theirs = build_sources("jepa", SourceConfig(checkpoint=str(official)), wrong, TINY_FEATURES)[0]
    ours = build_sources("ours", SourceConfig(checkpoint=str(tiny_checkpoint)), ModelConfig(), TINY_FEATURES)[0]
    assert (len(theirs.network.blocks), theirs.network.patch_size, theirs.network.embed_dim) == (2, 8, 96)
    clips = torch.randn(2, 3, 8, 32, 32)
    with torch.no_grad():
        assert torch.equal(ours.encode(clips), theirs.encode(clips))


def test_what_a_config_less_checkpoint_cannot_tell_is_named(tiny_checkpoint, tmp_path):
    state = {"patch_embed.proj.weight": torch.zeros(100, 3, 2, 8, 8), "blocks.0.norm1.weight": torch.zeros(100)}
    torch.save({"encoder": state}, tmp_path / "odd.pt")
    with pytest.raises(CheckpointError, match=r"odd\.pt: a 100-wide encoder.*set model\.num_heads"):
        build_sources("jepa", SourceConfig(checkpoint=str(tmp_path / "odd.pt")), ModelConfig(), TINY_FEATURES)
    torch.save({"encoder": {"blocks.0.norm1.weight": torch.zeros(96)}}, tmp_path / "flat.pt")
    with pytest.raises(CheckpointError, match=r"flat\.pt: no 3D patch embedding"):
        build_sources("jepa", SourceConfig(checkpoint=str(tmp_path / "flat.pt")), ModelConfig(), TINY_FEATURES)


def test_random_sources_are_seeded_and_timm_models_run_per_frame():
    a, b, c = build_sources("random", SourceConfig(kind="random", seeds=[0, 0, 1]), tiny_model(), TINY_FEATURES)
    clips = torch.randn(2, 3, 8, 32, 32)
    with torch.no_grad():
        assert torch.equal(a.encode(clips), b.encode(clips)) and not torch.equal(a.encode(clips), c.encode(clips))
        (frames,) = build_sources("cnn", SourceConfig(kind="timm", timm_model="test_resnet"), ModelConfig(),
                                  TINY_FEATURES)
        assert frames.encode(clips).shape == (2, 8, 96)  # one 1x1 feature map per frame


# --------------------------------------------------------------------------- probes on planted signals


def planted_split(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 32)), np.arange(n)


def test_linear_probe_recovers_a_planted_linear_signal_and_fails_honestly_on_noise():
    (x, videos), (x_val, _) = planted_split(400), planted_split(200, seed=1)
    w = np.random.default_rng(2).normal(size=32)
    held = holdout_videos(videos, 0.2, seed=0)
    pred, info = linear_regressor(x, x @ w + 0.1 * np.random.default_rng(3).normal(size=400), held, x_val, LinearConfig())
    assert regression_metrics(pred, x_val @ w)["r2"] > 0.9 and info["alpha"] in LinearConfig().alphas
    noise = np.random.default_rng(4)
    pred, _ = linear_regressor(x, noise.normal(size=400), held, x_val, LinearConfig())
    assert abs(regression_metrics(pred, noise.normal(size=200))["r2"]) < 0.1


def test_linear_classifier_separates_a_planted_direction():
    (x, videos), (x_val, _) = planted_split(300), planted_split(100, seed=1)
    proba, info = linear_classifier(x, (x[:, 0] > 0).astype(int), holdout_videos(videos, 0.2, 0), x_val, LinearConfig())
    assert np.mean(proba.argmax(1) == (x_val[:, 0] > 0)) > 0.9 and proba.shape == (100, 2)


def marker_tokens(n: int, seed: int) -> tuple[torch.Tensor, np.ndarray]:
    """16 noise tokens a clip; one, at a random place, is marked (channel 1) and its channel 0 sign is the class."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randn(n, 16, 8, generator=g)
    tokens[:, :, 1] = 0
    where = torch.randint(0, 16, (n,), generator=g)
    tokens[torch.arange(n), where, 1] = 4.0
    labels = (tokens[torch.arange(n), where, 0] > 0).long().numpy()
    return tokens.half(), labels


def test_attentive_probe_learns_a_task_that_mean_pooling_misses():
    tokens, y = marker_tokens(512, seed=0)
    tokens_val, y_val = marker_tokens(256, seed=1)
    cfg = AttentiveConfig(epochs=15, batch_size=64, lrs=[1e-2, 3e-2], weight_decays=[0.01], num_heads=2)
    held = holdout_videos(np.arange(512), 0.2, seed=0)
    proba, info = attentive_classifier(tokens, y, held, tokens_val, cfg, torch.device("cpu"), seed=0)
    assert np.mean(proba.argmax(1) == y_val) > 0.9 and info["lr"] in cfg.lrs
    pooled, pooled_val = tokens.float().mean(1).numpy(), tokens_val.float().mean(1).numpy()
    linear, _ = linear_classifier(pooled, y, held, pooled_val, LinearConfig())
    assert np.mean(linear.argmax(1) == y_val) < 0.75  # the planted signal needs attention


def test_knn_classifies_separable_clusters():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 16)) * 5
    y, y_val = rng.integers(0, 3, 150), rng.integers(0, 3, 60)
    x, x_val = centres[y] + rng.normal(size=(150, 16)), centres[y_val] + rng.normal(size=(60, 16))
    scores = knn_classifier(x, y, x_val, KnnConfig(k=10))
    assert (scores.argmax(1) == y_val).all() and np.allclose(scores.sum(1), 1)


# --------------------------------------------------------------------------- bad input


def test_missing_target_column_names_the_column_the_table_and_the_alternatives(tiny_world, tiny_checkpoint, tmp_path):
    cfg = probe_config(tiny_world, tiny_checkpoint, tmp_path, "tasks.latents.targets=[gravity,obj0_colour]")
    with pytest.raises(DataError, match=r"'obj0_colour' is not in .*train_targets\.csv; available columns: .*obj0_mass"):
        main(cfg)


def test_list_of_missing_videos_names_a_file(tiny_world, tiny_checkpoint, tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("gone/00000.mp4 1\ngone/00001.mp4 2\n")
    cfg = probe_config(tiny_world, tiny_checkpoint, tmp_path / "out", f"data.train_list={bad}")
    with pytest.raises(DataError, match=r"bad\.txt.*gone/00000\.mp4: file not found"):
        main(cfg)


def test_a_missing_video_among_good_ones_is_skipped_and_counted(tiny_world, tmp_path):
    lines = [f"{tiny_world}/{line}" for line in (tiny_world / "val.txt").read_text().splitlines()[:3]]
    mixed = tmp_path / "mixed.txt"
    mixed.write_text("\n".join([lines[0], f"{tiny_world}/videos/val/missing.mp4 1", *lines[1:]]) + "\n")
    source = build_sources("random", SourceConfig(kind="random"), tiny_model(), TINY_FEATURES)[0]
    dataset = eval_dataset(mixed, TINY_FEATURES, seed=0)
    (out,) = load_or_extract([source], dataset, range(4), TINY_FEATURES, False, tmp_path, torch.device("cpu"), "val")
    assert out.video.tolist() == [0, 2, 3] and out.tokens is None
    assert [(path.endswith("videos/val/missing.mp4"), reason) for path, reason in out.skipped] == [(True, "file not found")]


def test_margins_resolve_a_real_gap_and_not_a_tie_of_noise():
    rng = np.random.default_rng(0)
    videos = np.arange(400)
    better = Outcome(videos, correct=(rng.random(400) < 0.9).astype(float))
    control = [Outcome(videos, correct=(rng.random(400) < 0.5).astype(float)) for _ in range(2)]  # two seeds
    twin = Outcome(videos, correct=(rng.random(400) < 0.5).astype(float))  # as good as the control
    out = margins({"jepa": {"t": [better]}, "twin": {"t": [twin]}, "random": {"t": control}}, "random", 500, 0)
    gap = out["jepa"]["t"]
    assert gap["value"] == pytest.approx(better.correct.mean() - np.mean([c.correct.mean() for c in control]))
    assert 0.3 < gap["ci"][0] < gap["value"] < gap["ci"][1] < 0.5
    assert out["twin"]["t"]["ci"][0] < 0 < out["twin"]["t"]["ci"][1]
    same = margins({"a": {"t": control[:1]}, "random": {"t": control[:1]}}, "random", 200, 0)["a"]["t"]
    assert same == {"value": 0.0, "ci": [0.0, 0.0]}  # paired: one draw for both models


def test_regression_outcome_rescores_r2_and_skips_unknown_targets():
    rng = np.random.default_rng(1)
    truth = rng.normal(size=(300, 2))
    truth[:50, 1] = np.nan  # the second target is unknown for some videos
    pred = truth + rng.normal(scale=0.5, size=truth.shape)
    outcome = Outcome(np.arange(300), sq_error=(pred - truth) ** 2, truth=truth)
    known = np.isfinite(truth[:, 1])
    r2 = [regression_metrics(pred[:, 0], truth[:, 0])["r2"], regression_metrics(pred[known, 1], truth[known, 1])["r2"]]
    assert outcome.score(np.arange(300)) == pytest.approx(np.mean(r2))


def test_a_control_that_is_not_a_model_is_named(tiny_world, tiny_checkpoint, tmp_path):
    with pytest.raises(ValueError, match=r"control='randm' is not one of the models \(jepa, random\)"):
        main(probe_config(tiny_world, tiny_checkpoint, tmp_path / "p", "control=randm"))
