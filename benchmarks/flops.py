"""FLOPs of a training step, counted from the shapes, and torch's own count to check them against.

Only matrix products are counted (linear layers, the tubelet convolution, attention's two
products), as MFU conventions and FlopCounterMode do: a matmul [m, k] x [k, n] is 2*m*n*k.
Backward costs twice the forward (gradients for the input and for the weights); the tubelet
convolution's input is the clip, which needs no gradient, so its backward is its forward once.
The count is of the work the step needs: the context encoder sees only context tokens, the target
encoder runs forward only, and the clip is embedded once for all mask configurations.

Fused attention (SDPA) recomputes the scores q k^T in its backward. That product is not model
work, so MFU leaves it out; it is counted apart (`recompute`) because FlopCounterMode includes it.
FlopCounterMode's coverage of attention depends on the torch release (2.14 registers no formula for
the CPU's fused SDPA and counts it as 0; 2.15 counts it), so the check compares the two kinds apart.
"""
from __future__ import annotations

from typing import Callable, Sequence

from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode


def linear(tokens: int, d_in: int, d_out: int) -> int:
    return 2 * tokens * d_in * d_out


class StepFlops:
    """Per-sample FLOPs of a step, by kind: linear (incl. convolution), attention, and SDPA's recompute."""

    def __init__(self):
        self.linear = self.attention = self.recompute = 0

    def add_linear(self, flops: int, trained: bool) -> None:
        self.linear += 3 * flops if trained else flops

    def add_blocks(self, blocks: nn.ModuleList, tokens: int, trained: bool) -> None:
        """timm Blocks on `tokens` tokens: qkv, projection and MLP per token; q k^T and a v per pair of tokens."""
        for block in blocks:
            dim, hidden = block.mlp.fc1.in_features, block.mlp.fc1.out_features
            self.add_linear(linear(tokens, dim, 4 * dim) + 2 * linear(tokens, dim, hidden), trained)
            scores = 2 * tokens * tokens * dim
            self.attention += 2 * scores * (3 if trained else 1)
            self.recompute += scores if trained else 0

    def add_patch_embed(self, encoder: nn.Module, tokens: int, trained: bool) -> None:
        proj = encoder.patch_embed.proj
        flops = linear(tokens, proj.in_channels * proj.weight[0].numel() // proj.in_channels, proj.out_channels)
        self.linear += 2 * flops if trained else flops  # no gradient for the clip itself

    def add_predictor(self, predictor: nn.Module, context: int, targets: int) -> None:
        embed, proj = predictor.predictor_embed, predictor.predictor_proj
        self.add_linear(linear(context, embed.in_features, embed.out_features), True)
        self.add_blocks(predictor.predictor_blocks, context + targets, True)
        self.add_linear(linear(targets, proj.in_features, proj.out_features), True)

    def total(self, batch: int) -> dict[str, int]:
        return {"linear": self.linear * batch, "attention": self.attention * batch, "recompute": self.recompute * batch}


def num_tokens(encoder: nn.Module, clips: Tensor) -> int:
    t, h, w = encoder.token_grid(clips)
    return t * h * w


def jepa_step(objective, masks: Sequence[tuple[Tensor, Tensor]], clips: Tensor) -> dict[str, int]:
    f, n = StepFlops(), num_tokens(objective.encoder, clips)
    f.add_patch_embed(objective.target_encoder, n, trained=False)
    f.add_blocks(objective.target_encoder.blocks, n, trained=False)
    f.add_patch_embed(objective.encoder, n, trained=True)
    for ctx, tgt in masks:
        f.add_blocks(objective.encoder.blocks, ctx.size(1), trained=True)
        f.add_predictor(objective.predictor, ctx.size(1), tgt.size(1))
    return f.total(clips.size(0))


def pixel_step(objective, masks: Sequence[tuple[Tensor, Tensor]], clips: Tensor) -> dict[str, int]:
    f, n = StepFlops(), num_tokens(objective.encoder, clips)
    for ctx, tgt in masks:
        f.add_patch_embed(objective.encoder, n, trained=True)
        f.add_blocks(objective.encoder.blocks, ctx.size(1), trained=True)
        f.add_predictor(objective.predictor, ctx.size(1), tgt.size(1))
    return f.total(clips.size(0))


def denoise_step(objective, masks: Sequence[tuple[Tensor, Tensor]], clips: Tensor) -> dict[str, int]:
    f, n = StepFlops(), num_tokens(objective.encoder, clips)
    f.add_patch_embed(objective.encoder, n, trained=True)
    f.add_blocks(objective.encoder.blocks, n, trained=True)
    f.add_linear(linear(n, objective.head.in_features, objective.head.out_features), trained=True)
    return f.total(clips.size(0))


#: analytic counters by objective name; an objective not listed here is counted with FlopCounterMode
STEP_FLOPS: dict[str, Callable[..., dict[str, int]]] = {"jepa": jepa_step, "pixel": pixel_step, "denoise": denoise_step}


def is_attention_op(name: str) -> bool:
    return "scaled_dot_product" in name or "attention" in name


def count_step(run_step: Callable[[], object]) -> dict[str, int]:
    """FLOPs torch dispatches while `run_step()` runs (forward, backward, optimizer), by kind:
    `attention` (SDPA, forward and backward) and `linear` (every other op: matmuls and convolutions)."""
    with FlopCounterMode(display=False) as counter:
        run_step()
    counts = {"linear": 0, "attention": 0}
    for op, flops in counter.get_flop_counts()["Global"].items():
        counts["attention" if is_attention_op(str(op)) else "linear"] += flops
    return counts
