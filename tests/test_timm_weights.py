"""Image models with published weights as per-frame feature sources: a file in DINOv2's own layout, read by timm
from a local path, gives the tokens of a reference ViT written here in plain tensor code.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from evals.features import FeatureConfig, FrameSource, SourceConfig, build_sources
from vjepa.checkpoint import CheckpointError
from vjepa.models.config import ModelConfig

WIDTH, HEADS, DEPTH, PATCH, SIZE = 48, 2, 2, 8, 32
ARGS = {"patch_size": PATCH, "embed_dim": WIDTH, "depth": DEPTH, "num_heads": HEADS}
FEATURES = FeatureConfig(frames_per_clip=4, frame_step=1, crop_size=SIZE, batch_size=2, num_workers=0)


def dinov2_state(grid: int, seed: int = 0) -> dict:
    """Random weights under the key names of facebookresearch/dinov2's released .pth files (layer scale, a class
    token, a mask token), queries and keys large enough that attention is sharp."""
    g = torch.Generator().manual_seed(seed)
    rand = lambda *shape, s=0.05: torch.randn(*shape, generator=g) * s  # noqa: E731
    state = {"cls_token": rand(1, 1, WIDTH, s=0.5), "pos_embed": rand(1, 1 + grid * grid, WIDTH, s=0.5),
             "mask_token": torch.zeros(1, WIDTH), "patch_embed.proj.weight": rand(WIDTH, 3, PATCH, PATCH),
             "patch_embed.proj.bias": rand(WIDTH), "norm.weight": 1 + rand(WIDTH), "norm.bias": rand(WIDTH)}
    for i in range(DEPTH):
        qkv = rand(3 * WIDTH, WIDTH, s=0.02)
        qkv[: 2 * WIDTH] *= 25.0
        state |= {f"blocks.{i}.norm1.weight": 1 + rand(WIDTH), f"blocks.{i}.norm1.bias": rand(WIDTH),
                  f"blocks.{i}.attn.qkv.weight": qkv, f"blocks.{i}.attn.qkv.bias": rand(3 * WIDTH),
                  f"blocks.{i}.attn.proj.weight": rand(WIDTH, WIDTH), f"blocks.{i}.attn.proj.bias": rand(WIDTH),
                  f"blocks.{i}.ls1.gamma": 0.5 + rand(WIDTH), f"blocks.{i}.ls2.gamma": 0.5 + rand(WIDTH),
                  f"blocks.{i}.norm2.weight": 1 + rand(WIDTH), f"blocks.{i}.norm2.bias": rand(WIDTH),
                  f"blocks.{i}.mlp.fc1.weight": rand(4 * WIDTH, WIDTH), f"blocks.{i}.mlp.fc1.bias": rand(4 * WIDTH),
                  f"blocks.{i}.mlp.fc2.weight": rand(WIDTH, 4 * WIDTH), f"blocks.{i}.mlp.fc2.bias": rand(WIDTH)}
    return state


def reference_dinov2(state: dict, frames: torch.Tensor) -> torch.Tensor:
    """Patch tokens [B, N, D] of a pre-norm ViT with layer scale; the class token attends but is dropped."""
    ln = lambda t, n: F.layer_norm(t, (WIDTH,), state[f"{n}.weight"], state[f"{n}.bias"], eps=1e-6)  # noqa: E731
    lin = lambda t, n: t @ state[f"{n}.weight"].T + state[f"{n}.bias"]  # noqa: E731
    x = F.conv2d(frames, state["patch_embed.proj.weight"], state["patch_embed.proj.bias"], stride=PATCH)
    x = torch.cat([state["cls_token"].expand(len(frames), -1, -1), x.flatten(2).transpose(1, 2)], 1)
    x = x + state["pos_embed"]
    b, n, d = x.shape
    for i in range(DEPTH):
        p = f"blocks.{i}"
        q, k, v = lin(ln(x, f"{p}.norm1"), f"{p}.attn.qkv").view(b, n, 3, HEADS, d // HEADS).permute(2, 0, 3, 1, 4)
        att = ((q @ k.transpose(-1, -2)) / math.sqrt(d // HEADS)).softmax(-1) @ v
        x = x + state[f"{p}.ls1.gamma"] * lin(att.transpose(1, 2).reshape(b, n, d), f"{p}.attn.proj")
        x = x + state[f"{p}.ls2.gamma"] * lin(F.gelu(lin(ln(x, f"{p}.norm2"), f"{p}.mlp.fc1")), f"{p}.mlp.fc2")
    return ln(x, "norm")[:, 1:]


def dinov2_source(path, **args):
    spec = SourceConfig(kind="timm", timm_model="vit_small_patch14_dinov2", timm_weights=str(path),
                        timm_args={**ARGS, **args})
    (source,) = build_sources("dinov2", spec, ModelConfig(), FEATURES)
    return source


def test_a_dinov2_file_gives_the_reference_tokens_of_every_frame(tmp_path):
    state = dinov2_state(SIZE // PATCH)
    torch.save(state, tmp_path / "dinov2_tiny_pretrain.pth")
    source = dinov2_source(tmp_path / "dinov2_tiny_pretrain.pth")
    clips = torch.randn(2, 3, 4, SIZE, SIZE)
    with torch.no_grad():
        tokens = source.encode(clips)
        frames = clips.permute(0, 2, 1, 3, 4).reshape(8, 3, SIZE, SIZE)  # DINOv2 takes ImageNet-normalised pixels
        want = reference_dinov2(state, frames).reshape(2, 4 * (SIZE // PATCH) ** 2, WIDTH)
    assert tokens.shape == want.shape
    assert (tokens - want).abs().max() / want.abs().max() < 1e-4
    # the weights matter: a random model of the same architecture is far off
    (random,) = build_sources("r", SourceConfig(kind="timm", timm_model="vit_small_patch14_dinov2", timm_args=ARGS),
                              ModelConfig(), FEATURES)
    with torch.no_grad():
        assert (random.encode(clips) - want).abs().max() / want.abs().max() > 0.1


def test_a_position_table_for_larger_images_is_resized_to_the_probes_frames(tmp_path):
    torch.save(dinov2_state(6), tmp_path / "dinov2_48px.pth")  # made for 48 px frames, probed at 32
    source = dinov2_source(tmp_path / "dinov2_48px.pth")
    with torch.no_grad():
        assert source.encode(torch.randn(1, 3, 4, SIZE, SIZE)).shape == (1, 4 * 16, WIDTH)


def test_a_model_trained_on_other_pixel_statistics_sees_its_own(tmp_path):
    """SigLIP-style models take pixels normalised with mean 0.5 and std 0.5, not ImageNet's."""
    torch.save(dinov2_state(SIZE // PATCH), tmp_path / "w.pth")
    imagenet, network = dinov2_source(tmp_path / "w.pth"), dinov2_source(tmp_path / "w.pth").network
    network.pretrained_cfg = {**network.pretrained_cfg, "mean": (0.5,) * 3, "std": (0.5,) * 3}
    half = FrameSource("siglip-like", network, {})
    clips = torch.randn(1, 3, 4, SIZE, SIZE)
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1, 1)
    as_half = ((clips * std + mean) - 0.5) / 0.5
    with torch.no_grad():
        assert torch.allclose(half.encode(clips), imagenet.encode(as_half), atol=1e-4)


def test_a_weights_file_that_is_missing_or_does_not_fit_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"models\.dinov2\.timm_weights: no file .*nowhere\.pth"):
        dinov2_source(tmp_path / "nowhere.pth")
    torch.save(dinov2_state(SIZE // PATCH), tmp_path / "w.pth")
    with pytest.raises(CheckpointError, match=r"w\.pth: does not load into timm model vit_small_patch14_dinov2"):
        dinov2_source(tmp_path / "w.pth", embed_dim=64)


def test_timm_args_that_would_fetch_weights_from_the_hub_are_refused(tmp_path):
    torch.save(dinov2_state(SIZE // PATCH), tmp_path / "w.pth")
    for key, value in [("pretrained", True), ("pretrained_cfg_overlay", {"hf_hub_id": "x/y"})]:
        refused = rf"models\.dinov2\.timm_args\.{key}: weights come only from models\.dinov2\.timm_weights=FILE"
        with pytest.raises(ValueError, match=refused):
            dinov2_source(tmp_path / "w.pth", **{key: value})
