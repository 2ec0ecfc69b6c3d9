"""Interleaved A/B of the JEPA training step: the plain V-JEPA step against this repo's.

    python benchmarks/ab_step.py [--size tiny] [--rounds 8] [--threads 0]

`plain` is the step as the official code writes it: every mask configuration embeds the clip
again, the EMA is a multiply and an add, AdamW is the foreach implementation. `repo` is
`vjepa.train.train_step` as it is. Both share one model, clips and masks, and run alternately
(ABBA...), so a machine shared with other work disturbs both alike; min and median are reported,
with MFU against a matmul peak measured in the same process.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import flops, step  # noqa: E402
from benchmarks.hardware import matmul_peak  # noqa: E402
from vjepa.models.vit import gather_tokens  # noqa: E402
from vjepa.optim import param_groups  # noqa: E402


def plain_step(runner: step.StepRunner, optimizer: torch.optim.Optimizer) -> None:
    jepa, clips = runner.objective, runner.clips
    with torch.no_grad():
        h = jepa.target_encoder(clips)
        targets = F.layer_norm(h, (h.size(-1),))
    losses = []
    for i, (ctx_idx, tgt_idx) in enumerate(runner.masks):
        ctx = jepa.encoder(clips, masks=ctx_idx)
        pred = jepa.predictor(ctx, ctx_idx, tgt_idx, mask_index=i)
        losses.append(F.l1_loss(pred, gather_tokens(targets, tgt_idx)))
    loss = torch.stack(losses).mean()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    params = [p for m in jepa.trainable_modules() for p in m.parameters() if p.requires_grad]
    torch.nn.utils.clip_grad_norm_(params, 10.0, foreach=True)
    optimizer.step()
    with torch.no_grad():
        target = list(jepa.target_encoder.parameters())
        torch._foreach_mul_(target, 0.999)
        torch._foreach_add_(target, [p.detach() for p in jepa.encoder.parameters()], alpha=0.001)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="tiny", choices=list(step.SIZES))
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--threads", type=int, default=0, help="0: torch's default")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    runner = step.StepRunner(step.step_config(args.size, "jepa", step.Shape()), torch.device("cpu"), torch.float32)
    foreach = torch.optim.AdamW(param_groups(runner.objective.trainable_modules(), 0.04), lr=1e-4, foreach=True)
    variants = {"plain": lambda: plain_step(runner, foreach), "repo": runner.run}
    times: dict[str, list[float]] = {name: [] for name in variants}
    for run in variants.values():
        run()
    for i in range(args.rounds):
        for name in (list(variants) if i % 2 == 0 else list(variants)[::-1]):
            start = time.perf_counter()
            variants[name]()
            times[name].append(time.perf_counter() - start)

    peak = matmul_peak(torch.device("cpu"), (2048, 4096))["flops_per_s"]
    counted = flops.jepa_step(runner.objective, runner.masks, runner.clips)
    work = counted["linear"] + counted["attention"]
    print(f"{args.size} JEPA step, batch {runner.clips.size(0)}, {torch.get_num_threads()} threads, "
          f"{work / 1e9:.1f} GFLOP, peak {peak / 1e9:.0f} GFLOP/s, {args.rounds} rounds")
    for name, ts in times.items():
        best, median = min(ts), statistics.median(ts)
        print(f"  {name:6s} min {best:.3f} s (MFU {work / best / peak:.0%})  median {median:.3f} s "
              f"(MFU {work / median / peak:.0%})")


if __name__ == "__main__":
    main()
