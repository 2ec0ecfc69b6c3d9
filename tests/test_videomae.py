"""Published VideoMAE models: a folder in the Hugging Face layout and a file in the original repository's layout,
written here from their documented keys, load as a feature source and as a pixel world model, and give what a
reference computation of VideoMAE's math, written here in plain tensor code, gives.
"""
from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from conftest import REPO
from evals.dream import DreamConfig, main as dream
from evals.features import FeatureConfig, SourceConfig, build_sources
from evals.physics import PhysicsConfig, main as physics
from evals.worldmodel import VideoMAEWorldModel, WorldModelSource, build_world_models
from vjepa.checkpoint import CheckpointError
from vjepa.config import load_config
from vjepa.models.config import ModelConfig
from vjepa.pretrained import ClipConfig
from vjepa.world.voe import VoEConfig, generate_voe

WIDTH, HEADS, DEPTH, MLP = 48, 2, 2, 96
DEC_WIDTH, DEC_HEADS, DEC_DEPTH, DEC_MLP = 32, 2, 1, 64
PATCH, TUBELET, FRAMES, SIZE = 8, 2, 8, 32
GRID = (FRAMES // TUBELET, SIZE // PATCH, SIZE // PATCH)
TOKENS = GRID[0] * GRID[1] * GRID[2]
PIXELS = 3 * TUBELET * PATCH * PATCH
CONFIG = {"model_type": "videomae", "architectures": ["VideoMAEForPreTraining"], "image_size": SIZE,
          "patch_size": PATCH, "num_channels": 3, "num_frames": FRAMES, "tubelet_size": TUBELET, "hidden_size": WIDTH,
          "num_hidden_layers": DEPTH, "num_attention_heads": HEADS, "intermediate_size": MLP, "hidden_act": "gelu",
          "qv_bias": True, "use_mean_pooling": False, "layer_norm_eps": 1e-6, "decoder_hidden_size": DEC_WIDTH,
          "decoder_num_hidden_layers": DEC_DEPTH, "decoder_num_attention_heads": DEC_HEADS,
          "decoder_intermediate_size": DEC_MLP, "norm_pix_loss": True}
TINY = ModelConfig(num_heads=HEADS, pred_num_heads=DEC_HEADS)  # what an original file's shapes do not say
FEATURES = FeatureConfig(frames_per_clip=FRAMES, frame_step=2, crop_size=SIZE, batch_size=2, num_workers=0)


# --------------------------------------------------------------------------- the reference


def sinusoid_table(tokens: int, width: int) -> torch.Tensor:
    """VideoMAE's fixed table over the flat token index: channel j of token n is sin (j even) or cos (j odd) of
    n / 10000^(2 (j // 2) / width)."""
    n, j = torch.arange(tokens, dtype=torch.float64)[:, None], torch.arange(width)
    angle = n / 10000.0 ** (2 * (j // 2) / width)
    return torch.where(j % 2 == 0, angle.sin(), angle.cos()).float()


def reference_layers(state: dict, prefix: str, x: torch.Tensor, heads: int) -> torch.Tensor:
    """Pre-norm blocks: attention with query and value biases and none on the keys, then a GELU MLP."""
    ln = lambda t, n: F.layer_norm(t, t.shape[-1:], state[f"{n}.weight"], state[f"{n}.bias"], eps=1e-6)  # noqa: E731
    lin = lambda t, n, bias=True: t @ state[f"{n}.weight"].T + (state[f"{n}.bias"] if bias else 0)  # noqa: E731
    depth = len({k[len(prefix) + 1:].split(".")[0] for k in state if k.startswith(prefix + ".")})
    b, n, d = x.shape
    for i in range(depth):
        p, a = f"{prefix}.{i}", f"{prefix}.{i}.attention.attention"
        h = ln(x, f"{p}.layernorm_before")
        q, k, v = (lin(h, f"{a}.{w}", bias=False).view(b, n, heads, d // heads).transpose(1, 2) + bias
                   for w, bias in (("query", state[f"{a}.q_bias"].view(heads, 1, -1)), ("key", 0.0),
                                   ("value", state[f"{a}.v_bias"].view(heads, 1, -1))))
        att = ((q @ k.transpose(-1, -2)) / math.sqrt(d // heads)).softmax(-1) @ v
        x = x + lin(att.transpose(1, 2).reshape(b, n, d), f"{p}.attention.output.dense")
        x = x + lin(F.gelu(lin(ln(x, f"{p}.layernorm_after"), f"{p}.intermediate.dense")), f"{p}.output.dense")
    return x


def reference_encoder(state: dict, clips: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Tokens `keep` of clips [B, C, T, H, W], the encoder seeing only them, through its final LayerNorm."""
    x = F.conv3d(clips, state["videomae.embeddings.patch_embeddings.projection.weight"],
                 state["videomae.embeddings.patch_embeddings.projection.bias"], stride=(TUBELET, PATCH, PATCH))
    x = (x.flatten(2).transpose(1, 2) + sinusoid_table(TOKENS, WIDTH))[:, keep]
    x = reference_layers(state, "videomae.encoder.layer", x, HEADS)
    return F.layer_norm(x, (WIDTH,), state["videomae.layernorm.weight"], state["videomae.layernorm.bias"], eps=1e-6)


def reference_reconstruction(state: dict, context: torch.Tensor, keep: torch.Tensor, hidden: torch.Tensor):
    """The decoder's pixels of tokens `hidden` from the encoder's outputs on `keep`."""
    table = sinusoid_table(TOKENS, DEC_WIDTH)
    x = torch.cat([context @ state["encoder_to_decoder.weight"].T + table[keep],
                   (state["mask_token"] + table[hidden]).expand(len(context), -1, -1)], dim=1)
    x = reference_layers(state, "decoder.decoder_layers", x, DEC_HEADS)[:, -len(hidden):]
    x = F.layer_norm(x, (DEC_WIDTH,), state["decoder.norm.weight"], state["decoder.norm.bias"], eps=1e-5)
    return x @ state["decoder.head.weight"].T + state["decoder.head.bias"]


# --------------------------------------------------------------------------- files in the publishers' layouts


def block_state(prefix: str, width: int, mlp: int, g: torch.Generator) -> dict:
    rand = lambda *shape, s=0.05: torch.randn(*shape, generator=g) * s  # noqa: E731
    a = f"{prefix}.attention.attention"
    return {f"{prefix}.layernorm_before.weight": 1 + rand(width), f"{prefix}.layernorm_before.bias": rand(width),
            # queries and keys large enough that attention is sharp (near-uniform attention would hide errors)
            f"{a}.query.weight": rand(width, width, s=0.5), f"{a}.q_bias": rand(width),
            f"{a}.key.weight": rand(width, width, s=0.5), f"{a}.value.weight": rand(width, width),
            f"{a}.v_bias": rand(width), f"{prefix}.attention.output.dense.weight": rand(width, width),
            f"{prefix}.attention.output.dense.bias": rand(width),
            f"{prefix}.layernorm_after.weight": 1 + rand(width), f"{prefix}.layernorm_after.bias": rand(width),
            f"{prefix}.intermediate.dense.weight": rand(mlp, width), f"{prefix}.intermediate.dense.bias": rand(mlp),
            f"{prefix}.output.dense.weight": rand(width, mlp), f"{prefix}.output.dense.bias": rand(width)}


def videomae_state(seed: int = 0) -> dict:
    """VideoMAEForPreTraining's weights under the key names of the published Hugging Face folders (MCG-NJU's:
    the query and value biases as `q_bias` and `v_bias`, the keys without one)."""
    g = torch.Generator().manual_seed(seed)
    rand = lambda *shape, s=0.05: torch.randn(*shape, generator=g) * s  # noqa: E731
    state = {"videomae.embeddings.patch_embeddings.projection.weight": rand(WIDTH, 3, TUBELET, PATCH, PATCH),
             "videomae.embeddings.patch_embeddings.projection.bias": rand(WIDTH),
             "videomae.layernorm.weight": 1 + rand(WIDTH), "videomae.layernorm.bias": rand(WIDTH),
             "encoder_to_decoder.weight": rand(DEC_WIDTH, WIDTH, s=0.2), "mask_token": rand(1, 1, DEC_WIDTH, s=0.5),
             "decoder.norm.weight": 1 + rand(DEC_WIDTH), "decoder.norm.bias": rand(DEC_WIDTH),
             "decoder.head.weight": rand(PIXELS, DEC_WIDTH, s=0.2), "decoder.head.bias": rand(PIXELS)}
    for i in range(DEPTH):
        state |= block_state(f"videomae.encoder.layer.{i}", WIDTH, MLP, g)
    for i in range(DEC_DEPTH):
        state |= block_state(f"decoder.decoder_layers.{i}", DEC_WIDTH, DEC_MLP, g)
    return state


def original_block(state: dict, hf: str, ours: str) -> dict:
    """One block as MCG-NJU/VideoMAE's modeling_pretrain.py names it: qkv in one matrix, q_bias and v_bias apart."""
    a = f"{hf}.attention.attention"
    out = {f"{ours}.attn.qkv.weight": torch.cat([state[f"{a}.{w}.weight"] for w in ("query", "key", "value")]),
           f"{ours}.attn.q_bias": state[f"{a}.q_bias"], f"{ours}.attn.v_bias": state[f"{a}.v_bias"]}
    for theirs, mine in (("layernorm_before", "norm1"), ("attention.output.dense", "attn.proj"),
                         ("layernorm_after", "norm2"), ("intermediate.dense", "mlp.fc1"), ("output.dense", "mlp.fc2")):
        out |= {f"{ours}.{mine}.{w}": state[f"{hf}.{theirs}.{w}"] for w in ("weight", "bias")}
    return out


def original_layout(state: dict) -> dict:
    out = {"encoder.patch_embed.proj.weight": state["videomae.embeddings.patch_embeddings.projection.weight"],
           "encoder.patch_embed.proj.bias": state["videomae.embeddings.patch_embeddings.projection.bias"],
           "encoder.norm.weight": state["videomae.layernorm.weight"], "encoder.norm.bias": state["videomae.layernorm.bias"],
           **{k: state[k] for k in ("encoder_to_decoder.weight", "mask_token", "decoder.norm.weight",
                                    "decoder.norm.bias", "decoder.head.weight", "decoder.head.bias")}}
    for i in range(DEPTH):
        out |= original_block(state, f"videomae.encoder.layer.{i}", f"encoder.blocks.{i}")
    for i in range(DEC_DEPTH):
        out |= original_block(state, f"decoder.decoder_layers.{i}", f"decoder.blocks.{i}")
    return out


@pytest.fixture(scope="module")
def videomae(tmp_path_factory):
    """A Hugging Face folder (config.json + model.safetensors) and an original checkpoint of the same weights."""
    root, state = tmp_path_factory.mktemp("videomae"), videomae_state()
    folder = root / "videomae-tiny"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(CONFIG))
    save_file(state, folder / "model.safetensors")
    torch.save({"model": original_layout(state), "epoch": 800}, root / "checkpoint-799.pth")
    return folder, root / "checkpoint-799.pth", state


def world_model(path, **spec) -> VideoMAEWorldModel:
    (model,) = build_world_models("videomae", WorldModelSource(kind="videomae", checkpoint=str(path), **spec), None,
                                  TINY, ClipConfig(frames_per_clip=FRAMES, frame_step=2, crop_size=SIZE))
    return model


def clips(seed: int = 1) -> torch.Tensor:
    return torch.randn(2, 3, FRAMES, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


# --------------------------------------------------------------------------- the tests


@pytest.mark.parametrize("layout", ["folder", "original"])
def test_a_videomae_gives_the_reference_features(videomae, layout):
    path = videomae[0] if layout == "folder" else videomae[1]
    (source,) = build_sources("videomae", SourceConfig(kind="videomae", checkpoint=str(path)), TINY, FEATURES)
    with torch.no_grad():
        assert relative_error(source.encode(clips()), reference_encoder(videomae[2], clips(), torch.arange(TOKENS))) < 1e-4
        assert len(source.encode_layers(clips(), 2)) == 2


@pytest.mark.parametrize("layout", ["folder", "original"])
def test_a_videomae_reconstructs_the_hidden_future_as_the_reference_does(videomae, layout):
    model = world_model(videomae[0] if layout == "folder" else videomae[1])
    past, future = [0, 1], [2, 3]
    keep, hidden = torch.arange(2 * 16), torch.arange(2 * 16, TOKENS)
    with torch.no_grad():
        context = model.context_slots(clips(), past)  # the encoder sees the past slots only
        assert relative_error(context.flatten(1, 2), reference_encoder(videomae[2], clips(), keep)) < 1e-4
        pred = model.predict_slots(context, past, future)
        want = reference_reconstruction(videomae[2], context.flatten(1, 2), keep, hidden)
    assert pred.shape == (2, 2, 16, PIXELS) and relative_error(pred.flatten(1, 2), want) < 1e-4


def test_the_encoder_gives_tokens_back_in_the_order_asked(videomae):
    model, shuffled = world_model(videomae[0]), torch.randperm(TOKENS, generator=torch.Generator().manual_seed(0))[:20]
    with torch.no_grad():
        asked = model.encoder(clips(), masks=shuffled.expand(2, -1))
        in_order = model.encoder(clips(), masks=shuffled.sort().values.expand(2, -1))
    assert torch.allclose(asked, in_order[:, shuffled.argsort().argsort()], atol=1e-6)
    assert relative_error(asked, reference_encoder(videomae[2], clips(), shuffled)) < 1e-4


def test_its_surprise_is_measured_against_the_targets_videomae_was_trained_on(videomae):
    """The reconstruction error our world model computes is transformers' own VideoMAE loss on the same mask."""
    from transformers import VideoMAEForPreTraining

    model, x = world_model(videomae[0]), clips()
    hidden = torch.zeros(2, TOKENS, dtype=torch.bool)
    hidden[:, 32:] = True
    with torch.no_grad():
        theirs = VideoMAEForPreTraining.from_pretrained(videomae[0]).eval()(x.transpose(1, 2), bool_masked_pos=hidden).loss
        pred = model.predict_slots(model.context_slots(x, [0, 1]), [0, 1], [2, 3])
        ours = F.mse_loss(pred, model.target_slots(x)[:, 2:])
    assert abs(float(ours) - float(theirs)) < 1e-4 * float(theirs)
    assert float(F.mse_loss(torch.zeros_like(pred), model.target_slots(x)[:, 2:])) != pytest.approx(float(ours), rel=0.01)


def test_a_random_videomae_has_the_folders_architecture_and_its_seed(videomae):
    (a,) = build_world_models("r", WorldModelSource(kind="random", checkpoint=str(videomae[0]), seeds=[3]), None)
    b = world_model(videomae[0])
    assert a.grid == b.grid and a.arch.model.embed_dim == WIDTH and a.seed == 3
    (again,) = build_world_models("r", WorldModelSource(kind="random", checkpoint=str(videomae[0]), seeds=[3]), None)
    with torch.no_grad():
        assert torch.equal(a.target_slots(clips()), b.target_slots(clips()))  # the targets are pixels either way
        assert torch.equal(a.context_slots(clips(), [0]), again.context_slots(clips(), [0]))
        assert relative_error(a.context_slots(clips(), [0]), b.context_slots(clips(), [0])) > 0.1


def test_dream_and_physics_run_on_a_videomae_folder(videomae, tiny_world, tmp_path):
    folder = str(videomae[0])
    models = ["models.jepa.kind=videomae", f"models.jepa.checkpoint={folder}", f"models.random.checkpoint={folder}",
              f"clip.frames_per_clip={FRAMES}", "clip.frame_step=2", f"clip.crop_size={SIZE}"]
    cfg = load_config(DreamConfig, REPO / "configs/evals/dream_world.yaml", [
        f"world={tiny_world}", f"output={tmp_path / 'dream'}", "device=cpu", "data.max_videos=4", "data.batch_size=2",
        "data.num_workers=0", "decoder.enabled=false", *models])
    assert dream(cfg)["models"].keys() == {"jepa", "random"}
    voe = generate_voe(load_config(VoEConfig, REPO / "configs/world/voe.yaml", [
        f"output={tmp_path / 'voe'}", "groups_per_property=1", "properties=[gravity,permanence]", "world.frames=16",
        f"world.size={SIZE}", "world.object_size=[2.0,5.0]"]))
    metrics = physics(load_config(PhysicsConfig, REPO / "configs/evals/physics_world.yaml", [
        f"voe={voe}", f"output={tmp_path / 'physics'}", "device=cpu", "context_slots=[2]", "bootstrap=50", *models]))
    assert metrics["models"].keys() == {"jepa", "random"} and metrics["videos"] == 6


def test_what_does_not_fit_a_videomae_is_named(videomae, tmp_path):
    with pytest.raises(ValueError, match=r"takes clips of 8 frames at 32 px .* set features.frames_per_clip=8 "
                                         r"features.crop_size=32"):
        build_sources("v", SourceConfig(kind="videomae", checkpoint=str(videomae[0])), ModelConfig(),
                      FeatureConfig(frames_per_clip=16, crop_size=32))
    encoder_only = tmp_path / "encoder-only"
    encoder_only.mkdir()
    (encoder_only / "config.json").write_text(json.dumps({**CONFIG, "architectures": ["VideoMAEModel"]}))
    save_file({k[len("videomae."):]: v for k, v in videomae[2].items() if k.startswith("videomae.")},
              encoder_only / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"encoder-only: a VideoMAEModel, without the pretraining decoder"):
        world_model(encoder_only)
    truncated = tmp_path / "truncated"
    truncated.mkdir()
    (truncated / "config.json").write_text(json.dumps(CONFIG))
    save_file({k: v for k, v in videomae[2].items() if not k.startswith("decoder.norm")},
              truncated / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"truncated: its weights do not fill VideoMAEForPreTraining .*decoder\.norm"):
        world_model(truncated)
    for wrong_kind in (videomae[0], videomae[1]):  # kind checkpoint is this project's and V-JEPA's layouts
        with pytest.raises(CheckpointError, match=r"read with kind: videomae"):
            build_sources("v", SourceConfig(checkpoint=str(wrong_kind)), TINY, FEATURES)
    scaled = original_layout(videomae[2]) | {"encoder.blocks.0.gamma_1": torch.ones(WIDTH)}  # a layer scale
    torch.save({"model": scaled}, tmp_path / "layer-scale.pth")
    with pytest.raises(CheckpointError, match=r"layer-scale\.pth: tensors this VideoMAE layout does not have: "
                                              r"encoder\.blocks\.0\.gamma_1"):
        build_sources("v", SourceConfig(kind="videomae", checkpoint=str(tmp_path / "layer-scale.pth")), TINY, FEATURES)
    (tmp_path / "not-videomae").mkdir()
    with pytest.raises(CheckpointError, match=r"not-videomae: not a VideoMAE folder"):
        world_model(tmp_path / "not-videomae")
