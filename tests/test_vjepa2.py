"""V-JEPA 2 checkpoints: a file in facebookresearch/vjepa2's layout loads with the RoPE its released models were
trained with, and gives the features of a reference computation written here from that definition.

The reference below is plain tensor code, independent of vjepa/models: a pre-norm ViT whose attention rotates
each head's queries and keys in three blocks of channels (time slot, row, column), channel by channel.
"""
from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from conftest import REPO
from evals.dream import DreamConfig, main as dream
from evals.physics import PhysicsConfig, main as physics
from vjepa.config import load_config
from vjepa.models.config import ModelConfig, build_encoder_from
from vjepa.models.rope import apply_rope, rope_angles
from vjepa.pretrained import ClipConfig, fallback_architecture, load_pretrained
from vjepa.world.voe import VoEConfig, generate_voe

WIDTH, HEADS, DEPTH, PATCH, TUBELET = 80, 2, 2, 8, 2  # head width 40: 6 pairs per axis, 4 channels unrotated
PRED_WIDTH, PRED_HEADS, PRED_DEPTH, MASK_TOKENS = 48, 2, 2, 2  # head width 24: 4 pairs per axis
FRAMES, SIZE = 8, 32
GRID = (FRAMES // TUBELET, SIZE // PATCH, SIZE // PATCH)
ARCH = [f"model.num_heads={HEADS}", f"model.pred_num_heads={PRED_HEADS}", f"clip.frames_per_clip={FRAMES}",
        "clip.frame_step=2", f"clip.crop_size={SIZE}"]


# --------------------------------------------------------------------------- the reference


def reference_rotation(x: torch.Tensor, coords: torch.Tensor, released: bool) -> torch.Tensor:
    """x [B, H, N, Dh] rotated channel by channel; coords [N, 3] are (slot, row, column). Per axis a block of
    2P channels (P = Dh // 6); channel c of a block turns by pos * 10000^(-j/P), j = c mod P in the released
    V-JEPA 2 models, j = c // 2 in the textbook rotation; an even channel takes -its odd partner, an odd one
    +its even partner."""
    pairs = x.shape[-1] // 6
    out = x.clone()
    for axis in range(3):
        for c in range(2 * pairs):
            j = c % pairs if released else c // 2
            angle = coords[:, axis].double() * 10000.0 ** (-j / pairs)
            channel = axis * 2 * pairs + c
            partner, sign = (channel + 1, -1.0) if c % 2 == 0 else (channel - 1, 1.0)
            out[..., channel] = (x[..., channel].double() * angle.cos()
                                 + sign * x[..., partner].double() * angle.sin()).to(x.dtype)
    return out


def grid_coords(idx: torch.Tensor) -> torch.Tensor:
    _, h, w = GRID
    return torch.stack([idx // (h * w), (idx // w) % h, idx % w], dim=-1)


def reference_blocks(state: dict, prefix: str, x: torch.Tensor, coords: torch.Tensor, heads: int) -> torch.Tensor:
    def ln(t, name):
        return F.layer_norm(t, t.shape[-1:], state[f"{name}.weight"], state[f"{name}.bias"], eps=1e-6)

    def linear(t, name):
        return t @ state[f"{name}.weight"].T + state[f"{name}.bias"]

    depth = len({k.split(".")[1] for k in state if k.startswith(prefix + ".")})
    for i in range(depth):
        p = f"{prefix}.{i}"
        b, n, d = x.shape
        q, k, v = linear(ln(x, f"{p}.norm1"), f"{p}.attn.qkv").view(b, n, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
        q, k = reference_rotation(q, coords, True), reference_rotation(k, coords, True)
        weights = (q @ k.transpose(-1, -2) / math.sqrt(d // heads)).softmax(-1)
        x = x + linear((weights @ v).transpose(1, 2).reshape(b, n, d), f"{p}.attn.proj")
        x = x + linear(F.gelu(linear(ln(x, f"{p}.norm2"), f"{p}.mlp.fc1")), f"{p}.mlp.fc2")
    return x


def reference_encoder(state: dict, clips: torch.Tensor) -> torch.Tensor:
    x = F.conv3d(clips, state["patch_embed.proj.weight"], state["patch_embed.proj.bias"], stride=(TUBELET, PATCH, PATCH))
    x = x.flatten(2).transpose(1, 2)
    x = reference_blocks(state, "blocks", x, grid_coords(torch.arange(x.shape[1])), HEADS)
    return F.layer_norm(x, x.shape[-1:], state["norm.weight"], state["norm.bias"], eps=1e-6)


def reference_predictor(state: dict, ctx: torch.Tensor, ctx_idx: torch.Tensor, tgt_idx: torch.Tensor,
                        mask_index: int) -> torch.Tensor:
    x = ctx @ state["predictor_embed.weight"].T + state["predictor_embed.bias"]
    targets = state[f"mask_tokens.{mask_index}"].expand(x.shape[0], len(tgt_idx), -1)
    x = reference_blocks(state, "predictor_blocks", torch.cat([x, targets], dim=1),
                         grid_coords(torch.cat([ctx_idx, tgt_idx])), PRED_HEADS)
    x = F.layer_norm(x[:, -len(tgt_idx):], (PRED_WIDTH,), state["predictor_norm.weight"], state["predictor_norm.bias"],
                     eps=1e-6)
    return x @ state["predictor_proj.weight"].T + state["predictor_proj.bias"]


# --------------------------------------------------------------------------- a file in V-JEPA 2's layout


def vit_state(prefix: str, width: int, depth: int, g: torch.Generator) -> dict:
    """Random weights under V-JEPA 2's key names; queries and keys large enough that attention is sharp."""
    state = {}
    for i in range(depth):
        p = f"{prefix}.{i}"
        qkv = torch.randn(3 * width, width, generator=g) * 0.02
        qkv[: 2 * width] *= 25.0  # logits of several units: a fresh init's near-uniform attention would hide RoPE
        state |= {f"{p}.norm1.weight": 1 + 0.1 * torch.randn(width, generator=g), f"{p}.norm1.bias": torch.zeros(width),
                  f"{p}.attn.qkv.weight": qkv, f"{p}.attn.qkv.bias": torch.randn(3 * width, generator=g) * 0.02,
                  f"{p}.attn.proj.weight": torch.randn(width, width, generator=g) * 0.05,
                  f"{p}.attn.proj.bias": torch.zeros(width),
                  f"{p}.norm2.weight": torch.ones(width), f"{p}.norm2.bias": torch.zeros(width),
                  f"{p}.mlp.fc1.weight": torch.randn(4 * width, width, generator=g) * 0.05,
                  f"{p}.mlp.fc1.bias": torch.zeros(4 * width),
                  f"{p}.mlp.fc2.weight": torch.randn(width, 4 * width, generator=g) * 0.05,
                  f"{p}.mlp.fc2.bias": torch.zeros(width)}
    return state


def vjepa2_states(seed: int = 0) -> tuple[dict, dict]:
    g = torch.Generator().manual_seed(seed)
    encoder = {"patch_embed.proj.weight": torch.randn(WIDTH, 3, TUBELET, PATCH, PATCH, generator=g) * 0.05,
               "patch_embed.proj.bias": torch.zeros(WIDTH), **vit_state("blocks", WIDTH, DEPTH, g),
               "norm.weight": torch.ones(WIDTH), "norm.bias": torch.zeros(WIDTH)}
    predictor = {"predictor_embed.weight": torch.randn(PRED_WIDTH, WIDTH, generator=g) * 0.1,
                 "predictor_embed.bias": torch.zeros(PRED_WIDTH),
                 **{f"mask_tokens.{i}": torch.randn(1, 1, PRED_WIDTH, generator=g) for i in range(MASK_TOKENS)},
                 **vit_state("predictor_blocks", PRED_WIDTH, PRED_DEPTH, g),
                 "predictor_norm.weight": torch.ones(PRED_WIDTH), "predictor_norm.bias": torch.zeros(PRED_WIDTH),
                 "predictor_proj.weight": torch.randn(WIDTH, PRED_WIDTH, generator=g) * 0.1,
                 "predictor_proj.bias": torch.zeros(WIDTH)}
    return encoder, predictor


@pytest.fixture(scope="module")
def vjepa2_checkpoint(tmp_path_factory):
    """The layout vjepa2's training loop saves: DDP + wrapper prefixes, no config, no position tables."""
    encoder, predictor = vjepa2_states()
    wrap = lambda state: {f"module.backbone.{k}": v for k, v in state.items()}  # noqa: E731
    path = tmp_path_factory.mktemp("vjepa2") / "vjepa2-tiny.pt"
    torch.save({"encoder": wrap(encoder), "target_encoder": wrap(encoder), "predictor": wrap(predictor),
                "opt": {}, "scaler": None, "epoch": 1, "loss": 0.0, "batch_size": 8, "world_size": 1, "lr": 0.0}, path)
    return path, encoder, predictor


def loaded(path, **model):
    arch = fallback_architecture(ModelConfig(num_heads=HEADS, pred_num_heads=PRED_HEADS, **model),
                                 ClipConfig(frames_per_clip=FRAMES, frame_step=2, crop_size=SIZE))
    return load_pretrained(path, arch, with_predictor=True)


# --------------------------------------------------------------------------- the tests


@pytest.mark.parametrize("variant, released", [("rope", False), ("rope_vjepa2", True)])
def test_each_rope_variant_computes_its_definition(variant, released):
    x = torch.randn(2, 2, 5, 40, dtype=torch.float64)
    idx = torch.tensor([0, 7, 21, 42, 63])
    ours = apply_rope(x, tuple(t.double() for t in rope_angles(idx[None], GRID, 40, variant)))
    assert torch.allclose(ours, reference_rotation(x, grid_coords(idx), released), atol=1e-6)
    assert torch.equal(ours[..., 36:], x[..., 36:])  # the channels that do not divide into three stay as they are


def test_the_rope_variants_differ_and_only_the_textbook_one_is_a_rotation():
    x, idx = torch.randn(1, 1, 64, 40), torch.arange(64)[None]
    textbook = apply_rope(x, rope_angles(idx, GRID, 40, "rope"))
    released = apply_rope(x, rope_angles(idx, GRID, 40, "rope_vjepa2"))
    assert torch.allclose(textbook.norm(dim=-1), x.norm(dim=-1), atol=1e-5)
    assert (released.norm(dim=-1) - x.norm(dim=-1)).abs().max() > 1e-2  # a pair's channels turn by different angles
    assert (released - textbook).abs().max() > 0.1
    assert torch.equal(released[..., 0, :], textbook[..., 0, :])  # at the origin neither turns


def test_a_vjepa2_checkpoint_loads_with_the_released_rope_and_gives_the_reference_features(vjepa2_checkpoint):
    path, encoder_state, predictor_state = vjepa2_checkpoint
    model = loaded(path)  # the evaluation config says sin-cos (the default): the file decides
    assert model.arch.model.pos_embed == "rope_vjepa2" and model.arch.num_mask_tokens == MASK_TOKENS
    assert (model.arch.model.embed_dim, model.arch.model.depth, model.arch.model.pred_embed_dim) == (80, 2, 48)
    clips = torch.randn(2, 3, FRAMES, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = model.encoder(clips)
        expected = reference_encoder(encoder_state, clips)
        assert (ours - expected).abs().max() < 1e-4 * expected.abs().max()
        # the same weights read with the textbook rotation are another encoder, by far more than rounding
        textbook = build_encoder_from(replace(model.arch.model, pos_embed="rope"), FRAMES, SIZE)
        textbook.load_state_dict(encoder_state)
        assert ((textbook(clips) - expected).abs().max() / expected.abs().max()) > 0.05
        ctx_idx, tgt_idx = torch.arange(32), torch.arange(32, 64)
        context = model.encoder(clips, masks=ctx_idx.expand(2, -1))
        pred = model.predictor(context, ctx_idx.expand(2, -1), tgt_idx.expand(2, -1), mask_index=1)
        expected_pred = reference_predictor(predictor_state, context, ctx_idx, tgt_idx, 1)
        assert (pred - expected_pred).abs().max() < 1e-4 * expected_pred.abs().max()


def test_dream_and_physics_run_on_a_vjepa2_checkpoint(vjepa2_checkpoint, tiny_world, tmp_path):
    path = vjepa2_checkpoint[0]
    cfg = load_config(DreamConfig, REPO / "configs/evals/dream_world.yaml", [
        f"world={tiny_world}", f"checkpoint={path}", f"output={tmp_path / 'dream'}", "device=cpu",
        "data.max_videos=4", "data.batch_size=2", "data.num_workers=0", "decoder.enabled=false", "mask_index=0", *ARCH])
    assert dream(cfg)["models"].keys() == {"jepa", "random"}
    voe = generate_voe(load_config(VoEConfig, REPO / "configs/world/voe.yaml", [
        f"output={tmp_path / 'voe'}", "groups_per_property=1", "properties=[gravity,permanence]", "world.frames=16",
        f"world.size={SIZE}", "world.object_size=[2.0,5.0]"]))
    metrics = physics(load_config(PhysicsConfig, REPO / "configs/evals/physics_world.yaml", [
        f"voe={voe}", f"checkpoint={path}", f"output={tmp_path / 'physics'}", "device=cpu", "context_slots=[2]",
        "bootstrap=50", "mask_index=0", *ARCH]))
    assert metrics["models"].keys() == {"jepa", "random"} and metrics["videos"] == 6
