"""VideoMAE and VideoMAEv2 (Tong et al. 2022; Wang et al. 2023), the published pixel-reconstruction models, as an
encoder and a predictor with this project's interfaces, so that probes, dreams and physics take them as they take
a pixel model trained here.

The networks are transformers' (`VideoMAEModel`, `VideoMAEForPreTraining`; the optional extra `videomae`), read
from a local folder in the Hugging Face layout, or from a checkpoint file of the original repositories
(MCG-NJU/VideoMAE, OpenGVLab/VideoMAEv2: `encoder.blocks.N.attn.qkv` with `q_bias` / `v_bias`, `decoder.*`),
renamed to transformers' keys with a config read from its shapes. Nothing is downloaded.

A VideoMAE takes clips of exactly its size (its position table is a fixed 1-D sin-cos table over the flat token
index, which no resizing keeps). Its decoder reconstructs hidden tubes as pixels normalised per patch and per
colour channel (its `norm_pix_loss`), the space its surprise and dreams are measured in.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from torch import Tensor, nn

from vjepa.checkpoint import CheckpointError, load_module_state, strip_prefixes

#: attention heads of the published VideoMAE / VideoMAEv2 encoders by width (ViT-S, B, L, H, g)
VIDEOMAE_HEADS = {384: 6, 768: 12, 1024: 16, 1280: 16, 1408: 16}


def transformers_module():
    try:
        import transformers
    except ImportError as exc:
        raise ImportError("VideoMAE models need the transformers package: pip install 'vjepa[videomae]'") from exc
    return transformers


def keep_mask(idx: Tensor, num_tokens: int) -> Tensor:
    """transformers' `bool_masked_pos` (True: hidden) for the tokens idx [B, M] to keep."""
    masked = torch.ones(idx.size(0), num_tokens, dtype=torch.bool, device=idx.device)
    return masked.scatter(1, idx, False)


class VideoMAEEncoder(nn.Module):
    """transformers' VideoMAEModel on clips [B, C, T, H, W] (ImageNet-normalised, as it was trained); with `masks`
    (token indices [B, M], t-major like vjepa.models.vit's) it sees only those tokens, as in pretraining."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        cfg = model.config
        self.embed_dim, self.depth, self.num_heads = cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads
        self.patch_size, self.tubelet_size = cfg.patch_size, cfg.tubelet_size
        self.grid = (cfg.num_frames // cfg.tubelet_size, cfg.image_size // cfg.patch_size, cfg.image_size // cfg.patch_size)
        self.num_tokens = self.grid[0] * self.grid[1] * self.grid[2]

    def forward(self, clips: Tensor, masks: Tensor | None = None) -> Tensor:
        return self.get_intermediate_layers(clips, 1, masks)[-1]

    def get_intermediate_layers(self, clips: Tensor, n: int, masks: Tensor | None = None) -> list[Tensor]:
        """Tokens of the last n blocks, each through the final LayerNorm where the model has one."""
        hidden = None if masks is None else keep_mask(masks, self.num_tokens)
        out = self.model(clips.transpose(1, 2), bool_masked_pos=hidden, output_hidden_states=n > 1)
        layers = [out.last_hidden_state] if n == 1 else list(out.hidden_states[-n:])
        norm = self.model.layernorm
        if n > 1 and norm is not None:
            layers = [norm(x) for x in layers]
        if masks is not None:  # transformers keeps tokens in index order; give them back in the order asked
            order = masks.argsort(1).argsort(1)
            layers = [x.gather(1, order[..., None].expand(-1, -1, x.size(-1))) for x in layers]
        return layers


class VideoMAEDecoder(nn.Module):
    """transformers' VideoMAE decoder as a predictor: the pixels of tokens `tgt_idx` from the encoder's outputs on
    `ctx_idx`, each entering at its place in the fixed position table, as VideoMAEForPreTraining does."""

    def __init__(self, pretraining: nn.Module, grid: tuple[int, int, int]):
        super().__init__()
        self.encoder_to_decoder, self.decoder = pretraining.encoder_to_decoder, pretraining.decoder
        self.mask_token = pretraining.mask_token
        self.register_buffer("position_embeddings", pretraining.position_embeddings.clone(), persistent=False)
        self.grid = grid
        self.predictor_embed_dim = pretraining.config.decoder_hidden_size

    def forward(self, ctx: Tensor, ctx_idx: Tensor, tgt_idx: Tensor, mask_index: int = 0) -> Tensor:
        pos = self.position_embeddings.to(ctx.dtype).expand(ctx.size(0), -1, -1)
        at = lambda idx: pos.gather(1, idx[..., None].expand(-1, -1, pos.size(-1)))  # noqa: E731
        x = torch.cat([self.encoder_to_decoder(ctx) + at(ctx_idx), self.mask_token + at(tgt_idx)], dim=1)
        return self.decoder(x, tgt_idx.size(1)).logits


def normalise_patches_per_channel(patches: Tensor, channels: int = 3) -> Tensor:
    """VideoMAE's `norm_pix_loss` targets: each patch [.., tubelet*patch*patch*C] (channels last) to zero mean and
    unit spread per colour channel (unbiased variance, the epsilon added to the spread)."""
    p = patches.unflatten(-1, (-1, channels))
    p = (p - p.mean(-2, keepdim=True)) / (p.var(-2, unbiased=True, keepdim=True).sqrt() + 1e-6)
    return p.flatten(-2)


def denormalise_patches_per_channel(pred: Tensor, like: Tensor, channels: int = 3) -> Tensor:
    """Normalised patches back to pixels with the per-channel mean and spread of the patches `like`."""
    p, ref = pred.unflatten(-1, (-1, channels)), like.unflatten(-1, (-1, channels))
    return (p * ref.var(-2, unbiased=True, keepdim=True).sqrt() + ref.mean(-2, keepdim=True)).flatten(-2)


# --------------------------------------------------------------------------- loading


def is_videomae_folder(path: str | Path) -> bool:
    config = Path(path) / "config.json"
    return config.is_file() and json.loads(config.read_text()).get("model_type") == "videomae"


def load_videomae(path: str | Path, frames_per_clip: int, crop_size: int, with_decoder: bool,
                  seed: int | None = None, heads: tuple[int | None, int | None] = (None, None)):
    """transformers' VideoMAEModel (and VideoMAEForPreTraining where `with_decoder`) with the weights at `path`: a
    Hugging Face folder, or an original checkpoint file (clip size from `frames_per_clip`, `crop_size`: its file
    does not say; nor the encoder's and decoder's attention heads, `heads`, where they are not the published
    sizes'). With `seed`: the same architecture at a random init of that seed, the weights unread.
    Returns (model, pretraining or None)."""
    path = Path(path)
    if path.is_dir():
        if not is_videomae_folder(path):
            raise CheckpointError(f"{path}: not a VideoMAE folder (no config.json with model_type 'videomae')")
        return from_folder(path, with_decoder, seed)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such VideoMAE folder or checkpoint file")
    return from_original(path, frames_per_clip, crop_size, with_decoder, seed, heads)


def at_random(cls, config, seed: int):
    torch.manual_seed(seed)
    model = cls(config).eval()
    return (model.videomae, model) if hasattr(model, "videomae") else (model, None)


def from_folder(path: Path, with_decoder: bool, seed: int | None = None):
    transformers = transformers_module()
    config = transformers.VideoMAEConfig.from_pretrained(path, local_files_only=True)
    pretraining = "VideoMAEForPreTraining" in (config.architectures or [])
    if with_decoder and not pretraining:
        raise CheckpointError(f"{path}: a {', '.join(config.architectures or ['VideoMAEModel'])}, without the "
                              f"pretraining decoder; world-model tests need a VideoMAEForPreTraining folder")
    cls = transformers.VideoMAEForPreTraining if pretraining else transformers.VideoMAEModel
    if seed is not None:
        return at_random(cls, config, seed)
    try:
        model, info = cls.from_pretrained(path, local_files_only=True, output_loading_info=True)
    except (OSError, RuntimeError, ValueError) as exc:
        raise CheckpointError(f"{path}: does not load as {cls.__name__} ({str(exc).strip().splitlines()[0]})") from exc
    if info.get("missing_keys") or info.get("mismatched_keys"):
        problems = [*info.get("missing_keys", []), *[str(k) for k in info.get("mismatched_keys", [])]]
        raise CheckpointError(f"{path}: its weights do not fill {cls.__name__} (missing or mis-shaped: "
                              f"{', '.join(sorted(problems))})")
    model = model.eval()
    return (model.videomae, model) if pretraining else (model, None)


def original_state(path: Path) -> dict:
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("model", "module", "state_dict"):  # the original scripts save under one of these
        if isinstance(ckpt, dict) and key in ckpt and isinstance(ckpt[key], dict):
            ckpt = ckpt[key]
            break
    state = strip_prefixes(ckpt)
    if not any(k.endswith("patch_embed.proj.weight") for k in state):
        raise CheckpointError(f"{path}: no patch_embed.proj.weight: not a VideoMAE checkpoint "
                              f"(keys: {', '.join(sorted(state)[:8])}, ...)")
    return state


#: original block names -> transformers' (encoder and decoder blocks alike)
BLOCK_NAMES = {"norm1": "layernorm_before", "norm2": "layernorm_after", "attn.proj": "attention.output.dense",
               "mlp.fc1": "intermediate.dense", "mlp.fc2": "output.dense"}


def renamed_block(state: dict, old: str, new: str) -> dict:
    """One original block `old` under transformers' names at `new`; qkv is split and k gets no bias."""
    out = {}
    qkv = state[f"{old}.attn.qkv.weight"]
    for name, w in zip(("query", "key", "value"), qkv.chunk(3)):
        out[f"{new}.attention.attention.{name}.weight"] = w
    if f"{old}.attn.q_bias" in state:
        out[f"{new}.attention.attention.query.bias"] = state[f"{old}.attn.q_bias"]
        out[f"{new}.attention.attention.value.bias"] = state[f"{old}.attn.v_bias"]
    for a, b in BLOCK_NAMES.items():
        for kind in ("weight", "bias"):
            out[f"{new}.{b}.{kind}"] = state[f"{old}.{a}.{kind}"]
    return out


class Reads(dict):
    """A state dict that remembers which keys were read, so that a tensor the renaming does not know (a layer
    scale, say) stops the load instead of being dropped."""

    def __init__(self, state: dict):
        super().__init__(state)
        self.read: set[str] = set()

    def __getitem__(self, key: str):
        self.read.add(key)
        return super().__getitem__(key)


#: keys of a fine-tuned original checkpoint that features do not use: the classification head
CLASSIFIER_KEYS = ("head.weight", "head.bias", "fc_norm.weight", "fc_norm.bias")
DECODER_KEYS = ("decoder.", "encoder_to_decoder.", "mask_token")


def check_all_read(state: Reads, path: Path, with_decoder: bool) -> None:
    skipped = CLASSIFIER_KEYS + (() if with_decoder else DECODER_KEYS)
    unread = sorted(k for k in state if k not in state.read and not k.startswith(skipped))
    if unread:
        raise CheckpointError(f"{path}: tensors this VideoMAE layout does not have: {', '.join(unread[:8])}"
                              f"{' ...' if len(unread) > 8 else ''}; is it another architecture?")


def for_installed(state: dict, model: nn.Module) -> dict:
    """transformers 5 names the query and value biases `query.bias` / `value.bias`; 4.x as its files do,
    `q_bias` / `v_bias`: the renamed state in the names of the installed version's model."""
    if not any(k.endswith("attention.attention.q_bias") for k in model.state_dict()):
        return state
    return {k.replace("attention.attention.query.bias", "attention.attention.q_bias")
            .replace("attention.attention.value.bias", "attention.attention.v_bias"): v for k, v in state.items()}


def count_blocks(state: dict, prefix: str) -> int:
    found = {int(m.group(1)) for k in state if (m := re.match(rf"{re.escape(prefix)}(\d+)\.", k))}
    return max(found) + 1 if found else 0


def from_original(path: Path, frames_per_clip: int, crop_size: int, with_decoder: bool, seed: int | None = None,
                  heads: tuple[int | None, int | None] = (None, None)):
    """An original VideoMAE / VideoMAEv2 checkpoint: architecture from its shapes, clip size from the caller."""
    transformers = transformers_module()
    state = Reads(original_state(path))
    enc = "encoder." if any(k.startswith("encoder.patch_embed") for k in state) else ""
    proj = state[f"{enc}patch_embed.proj.weight"]
    width, channels, tubelet, patch, _ = proj.shape
    has_decoder = "decoder.head.weight" in state
    if with_decoder and not has_decoder:
        raise CheckpointError(f"{path}: no decoder (decoder.head.weight); world-model tests need a pretraining "
                              f"checkpoint")
    num_heads = heads[0] or VIDEOMAE_HEADS.get(width)
    if num_heads is None:
        raise CheckpointError(f"{path}: a {width}-wide encoder, not one of the published VideoMAE sizes "
                              f"({', '.join(map(str, VIDEOMAE_HEADS))}), so its attention heads are unknown: "
                              f"set model.num_heads")
    config = transformers.VideoMAEConfig(
        image_size=crop_size, num_frames=frames_per_clip, patch_size=patch, tubelet_size=tubelet, num_channels=channels,
        hidden_size=width, num_hidden_layers=count_blocks(state, f"{enc}blocks."), num_attention_heads=num_heads,
        intermediate_size=state[f"{enc}blocks.0.mlp.fc1.weight"].shape[0], qv_bias=f"{enc}blocks.0.attn.q_bias" in state,
        use_mean_pooling=f"{enc}norm.weight" not in state, layer_norm_eps=1e-6, norm_pix_loss=True)
    ours = {"embeddings.patch_embeddings.projection.weight": proj,
            "embeddings.patch_embeddings.projection.bias": state[f"{enc}patch_embed.proj.bias"]}
    for i in range(config.num_hidden_layers):
        ours |= renamed_block(state, f"{enc}blocks.{i}", f"encoder.layer.{i}")
    if not config.use_mean_pooling:
        ours |= {"layernorm.weight": state[f"{enc}norm.weight"], "layernorm.bias": state[f"{enc}norm.bias"]}
    if seed is not None and not with_decoder:
        return at_random(transformers.VideoMAEModel, config, seed)
    if not with_decoder:
        check_all_read(state, path, with_decoder)
        model = transformers.VideoMAEModel(config).eval()
        load_module_state(model, for_installed(ours, model), "encoder", path)
        return model, None
    decoder_width = state["decoder.head.weight"].shape[1]
    config.decoder_hidden_size, config.decoder_num_attention_heads = decoder_width, heads[1] or decoder_width // 64
    config.decoder_num_hidden_layers = count_blocks(state, "decoder.blocks.")
    config.decoder_intermediate_size = state["decoder.blocks.0.mlp.fc1.weight"].shape[0]
    if seed is not None:
        return at_random(transformers.VideoMAEForPreTraining, config, seed)
    full = {f"videomae.{k}": v for k, v in ours.items()}
    for i in range(config.decoder_num_hidden_layers):
        full |= renamed_block(state, f"decoder.blocks.{i}", f"decoder.decoder_layers.{i}")
    full |= {k: state[k] for k in ("encoder_to_decoder.weight", "mask_token", "decoder.norm.weight",
                                   "decoder.norm.bias", "decoder.head.weight", "decoder.head.bias")}
    check_all_read(state, path, with_decoder)
    pretraining = transformers.VideoMAEForPreTraining(config).eval()
    load_module_state(pretraining, for_installed(full, pretraining), "encoder and decoder", path)
    return pretraining.videomae, pretraining
