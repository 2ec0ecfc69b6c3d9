"""The frozen-feature pixel decoder and the dream strips `vjepa dream` draws with it."""
from __future__ import annotations

import json

import matplotlib.image
import torch

from conftest import tiny_pretrain_config
from evals.decoder import DecoderConfig, PixelDecoder, load_or_train, slot_patches
from evals.dream import DreamConfig, main, strip_size
from evals.worldmodel import WorldModelSource, build_world_models, clip_transform
from test_dream import dream_config
from vjepa.config import load_config
from vjepa.data import VideoDataset, collate_videos
from vjepa.train import pretrain

PIXEL_MASKS = "masks=[{type: tube, ratio: 0.9}, {type: future}]"


def test_decoder_renders_each_token_tubelet_from_its_slot():
    decoder = PixelDecoder(embed_dim=96, grid=(4, 4), pixels=384)
    slots = torch.randn(2, 3, 16, 96)  # [B, S, H*W, D]
    assert decoder(slots).shape == (2, 3, 16, 384)
    # slots are rendered independently of each other
    assert torch.allclose(decoder(slots[:, 1:2]), decoder(slots)[:, 1:2], atol=1e-6)


def test_decoder_learns_from_frozen_features_and_beats_the_mean_frame(tiny_world, tiny_checkpoint, tmp_path):
    (model,) = build_world_models("jepa", WorldModelSource(checkpoint=str(tiny_checkpoint)), None)
    cfg = DecoderConfig(train_list=str(tiny_world / "train.txt"), epochs=12, batch_size=16)
    trained = load_or_train(model, str(tiny_checkpoint), cfg, 0, 8, 0, tmp_path, torch.device("cpu"))
    assert trained.clips == 24 and len(trained.epoch_loss) == 12
    assert trained.epoch_loss[-1] < 0.5 * trained.epoch_loss[0]

    val = VideoDataset(str(tiny_world / "val.txt"), frames_per_clip=8, frame_step=2,
                       transform=clip_transform(model.arch), seed=0)
    clips = collate_videos([val[i] for i in range(len(val))])["clips"]
    pixels = slot_patches(model, clips)
    decoded = ((trained.render(model.target_slots(clips)) - pixels) ** 2).mean()
    mean_frame = ((trained.mean_patch - pixels) ** 2).mean()
    assert decoded < 0.8 * mean_frame

    # a rerun with the same checkpoint, clips and settings reuses the decoder on disk
    (cached,) = tmp_path.glob("jepa-*.pt")
    again = load_or_train(model, str(tiny_checkpoint), cfg, 0, 8, 0, tmp_path, torch.device("cpu"))
    assert again.epoch_loss == trained.epoch_loss
    assert torch.equal(again.render(model.target_slots(clips)), trained.render(model.target_slots(clips)))
    assert list(tmp_path.glob("jepa-*.pt")) == [cached]


def test_dream_draws_a_strip_of_three_rows_per_clip(tiny_world, tiny_checkpoint, tmp_path):
    metrics = main(dream_config(tiny_world, tiny_checkpoint, tmp_path, "decoder.strip_clips=2", "decoder.epochs=3"))
    assert metrics["strips"] == {"jepa": "strip_jepa.png"}  # random init gets no decoder and no strip
    png = matplotlib.image.imread(tmp_path / "strip_jepa.png")
    # 2 clips x (real, decoded, dreamed), 8 frames of 32x32 in 4 slots of 2
    assert png.shape[:2] == strip_size(clips=2, rows=3, frames=8, frame_size=32, frames_per_slot=2)
    decoder = json.loads((tmp_path / "metrics.json").read_text())["models"]["jepa"]["decoder"]
    assert decoder.keys() >= {"val_mse", "mean_frame_mse", "dream_mse", "train_clips", "epoch_loss"}
    assert len(decoder["dream_mse"]) == 2 and decoder["train_clips"] == 24
    assert "decoder" not in metrics["models"]["random"]
    assert "![dream strip jepa](strip_jepa.png)" in (tmp_path / "report.md").read_text()


def test_pixel_model_dreams_are_drawn_without_a_decoder(tiny_world, tiny_checkpoint, tmp_path):
    pretrain(tiny_pretrain_config(tiny_world, tmp_path / "pixel", "objective=pixel", PIXEL_MASKS, "optimization.steps=2"))
    pixel = tmp_path / "pixel/checkpoints/latest.pt"
    # pixel first: the baselines are computed in the first model's space, here its pixels
    cfg = load_config(DreamConfig, None, [f"world={tiny_world}", "data.list=${world}/val.txt", "data.max_videos=3",
                                          "data.num_workers=0", "device=cpu", f"output={tmp_path / 'dream'}",
                                          "decoder.strip_clips=3", "decoder.epochs=1",
                                          f"models.pixel.checkpoint={pixel}", f"models.jepa.checkpoint={tiny_checkpoint}"])
    metrics = main(cfg)
    assert metrics["strips"] == {"jepa": "strip_jepa.png", "pixel": "strip_pixel.png"}
    png = matplotlib.image.imread(tmp_path / "dream/strip_pixel.png")
    assert png.shape[:2] == strip_size(clips=3, rows=2, frames=8, frame_size=32, frames_per_slot=2)  # real, dreamed
    assert [p.name.split("-")[0] for p in (tmp_path / "dream/decoders").iterdir()] == ["jepa"]
    assert "decoder" not in metrics["models"]["pixel"]
    assert metrics["baselines"]["copy_last"]["space"] == "pixel"
