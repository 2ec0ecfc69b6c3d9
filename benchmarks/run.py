"""Benchmarks: training-step speed, memory and MFU, token scaling, data loading, evaluation.

    python benchmarks/run.py [--quick] [--out benchmarks/results] [--device auto|cpu|cuda]

Writes <out>/<machine>.json (every figure) and <out>/<machine>.md (the tables), and prints the
tables. MFU is the analytic model FLOPs of a step (benchmarks/flops.py) over its time, over the
FLOP/s of a large matmul measured in the same run (fp32 on CPU, bf16 on GPU, where steps run under
bf16 autocast with SDPA). `--quick` is a smoke test of a few seconds with toy sizes.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `python benchmarks/run.py` from anywhere

from benchmarks import evaluation, flops, loading, step  # noqa: E402
from benchmarks.hardware import PeakMeter, machine_name  # noqa: E402
from vjepa.masks import build_mask_generator, sample_masks  # noqa: E402
from vjepa.objectives import OBJECTIVES  # noqa: E402
from vjepa.device import resolve_device  # noqa: E402
from vjepa.models.config import token_grid  # noqa: E402
from vjepa.train import build_objective  # noqa: E402


@dataclass
class Plan:
    """How much of each benchmark to run."""

    peak_sizes: tuple[int, ...]
    shape: step.Shape  # clips of the per-size step benchmark
    # size -> (warm-up steps, timed steps, objectives or None for all)
    sizes: dict[str, tuple[int, int, tuple[str, ...] | None]]
    budget_s: float  # a configuration estimated to take longer than this (all its steps) is skipped
    scaling_size: str
    scaling_batch: int
    scaling_grids: list[tuple[int, int]]  # (frames, crop); tubelet 2 and patch 8 give frames/2 * (crop/8)^2 tokens
    world: tuple[int, int, int] = (64, 32, 64)  # videos, frames, size
    data_batch: int = 8
    repeats: int = 2
    attentive_epochs: int = 20
    flop_check_shape: step.Shape = field(default_factory=lambda: step.Shape(batch=2))


GRIDS = [(8, 64), (16, 64), (32, 64), (16, 128), (32, 128)]  # 256, 512, 1024, 2048, 4096 tokens

PLANS = {
    "cpu": Plan(
        peak_sizes=(2048, 4096), shape=step.Shape(),
        sizes={"micro": (2, 8, None), "tiny": (1, 4, None), "small": (1, 2, None),
               "base": (1, 2, ("jepa",)), "large": (1, 1, ("jepa",))},
        budget_s=150, scaling_size="tiny", scaling_batch=2, scaling_grids=GRIDS,
    ),
    "cuda": Plan(
        peak_sizes=(4096, 8192), shape=step.Shape(),
        sizes={size: (3, 10, None) for size in step.SIZES},
        budget_s=120, scaling_size="small", scaling_batch=8, scaling_grids=GRIDS + [(64, 128), (64, 256)],
        repeats=3,
    ),
    "quick": Plan(
        peak_sizes=(1024,), shape=step.Shape(batch=2, frames=8, crop=32),
        sizes={"micro": (1, 1, None)},
        budget_s=30, scaling_size="micro", scaling_batch=1, scaling_grids=[(8, 32), (16, 32)],
        world=(8, 16, 32), data_batch=4, repeats=1, attentive_epochs=2,
        flop_check_shape=step.Shape(batch=1, frames=8, crop=32),
    ),
}


# --------------------------------------------------------------------------- the benchmarks


def flop_check(shape: step.Shape, device: torch.device) -> list[dict]:
    """The analytic count against FlopCounterMode for one step of every objective at micro size (fp32)."""
    rows = []
    for name in OBJECTIVES:
        if name not in flops.STEP_FLOPS:
            continue
        runner = step.StepRunner(step.step_config("micro", name, shape), device, torch.float32)
        analytic = runner.flops(name)
        counted = flops.count_step(runner.run)
        attention = analytic["attention"] + analytic["recompute"]
        rows.append({
            "objective": name, "torch": torch.__version__,
            "linear_gflops": analytic["linear"] / 1e9, "counted_linear_gflops": counted["linear"] / 1e9,
            "linear_ratio": analytic["linear"] / counted["linear"],
            "attention_gflops": attention / 1e9, "counted_attention_gflops": counted["attention"] / 1e9,
            # null where this torch's FlopCounterMode has no formula for the attention kernel it ran
            "attention_ratio": attention / counted["attention"] if counted["attention"] else None,
        })
    return rows


def estimate(cfg) -> tuple[float, float]:
    """FLOPs and bytes of weights and optimizer state of one step of `cfg`, from a model on the meta device."""
    with torch.device("meta"):
        objective = build_objective(cfg)
    d = cfg.data
    clips = torch.empty(d.batch_size, 3, d.frames_per_clip, d.crop_size, d.crop_size, device="meta")
    generators = [build_mask_generator(m, token_grid(cfg.data.frames_per_clip, cfg.data.crop_size, cfg.model)) for m in cfg.masks]
    masks = sample_masks(generators, d.batch_size, 0, 0)
    # fp32: a trained weight has a gradient and two AdamW moments; a frozen one (the target encoder) is alone
    state = sum((16 if p.requires_grad else 4) * p.numel() for p in objective.parameters())
    counter = flops.STEP_FLOPS.get(cfg.objective)
    return (sum(counter(objective, masks, clips).values()) if counter else float("nan")), state


def available_memory(device: torch.device) -> float:
    if device.type == "cuda":
        return float(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            return next(int(line.split()[1]) * 1024.0 for line in f if line.startswith("MemAvailable"))
    except (OSError, StopIteration):
        return float("inf")


def skip_reason(cfg, runs: int, plan: Plan, device: torch.device, peak: PeakMeter) -> str | None:
    """Why a configuration is not run: too slow for the budget at 60% MFU, or too big for the free memory.

    The estimate does not depend on the steps measured before, so a machine busy with other work
    for a while still runs the same plan.
    """
    step_flops, state = estimate(cfg)
    seconds = step_flops / (0.6 * peak.flops_per_s)
    if seconds * runs > plan.budget_s:
        return f"~{seconds:.0f} s a step at 60% MFU: {runs} steps exceed the {plan.budget_s:.0f} s budget"
    need = 2 * state  # as much again for activations
    if need > available_memory(device):
        return f"needs ~{need / 2**30:.0f} GiB, more than the memory available"
    return None


def step_benchmarks(plan: Plan, device: torch.device, dtype: torch.dtype, peak: PeakMeter) -> tuple[list, list]:
    rows, skipped = [], []
    for size, (warmup, steps, objectives) in plan.sizes.items():
        for name in objectives or tuple(OBJECTIVES):
            cfg = step.step_config(size, name, plan.shape)
            why = skip_reason(cfg, max(warmup, 1) + steps, plan, device, peak)
            if why:
                skipped.append({"size": size, "objective": name, "reason": why})
                print(f"  skip {size} {name}: {why}", flush=True)
                continue
            try:
                peak.refresh()
                row = {"size": size, **step.measure(cfg, steps, warmup, device, dtype)}
            except torch.cuda.OutOfMemoryError:
                torch.cuda.empty_cache()
                skipped.append({"size": size, "objective": name, "reason": "out of GPU memory"})
                continue
            rows.append(row)
            print(f"  {size:6s} {name:8s} {row['step_s']:7.3f} s/step  {row['achieved_gflops_per_s']:5.0f} GFLOP/s",
                  flush=True)
    return rows, skipped


def scaling_benchmark(plan: Plan, device: torch.device, dtype: torch.dtype, peak: PeakMeter) -> list[dict]:
    rows = []
    for frames, crop in plan.scaling_grids:
        cfg = step.step_config(plan.scaling_size, "jepa", step.Shape(batch=plan.scaling_batch, frames=frames, crop=crop))
        why = skip_reason(cfg, 3, plan, device, peak)
        if why:
            print(f"  skip {frames}x{crop}: {why}", flush=True)
            continue
        peak.refresh()
        row = step.measure(cfg, 2, 1, device, dtype)
        rows.append({"size": plan.scaling_size, **row})
        print(f"  {row['tokens']:5d} tokens {row['step_s']:7.3f} s/step  attention {row['attention_share']:.0%}",
              flush=True)
    return rows


# --------------------------------------------------------------------------- tables


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def mb(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f}"


def markdown(r: dict) -> str:
    peak = r["peak"]
    out = [
        f"# Benchmarks: {r['machine']}",
        "",
        f"`{r['command']}` — torch {r['torch']}, {peak['threads']} threads, steps in {r['dtype']}, "
        f"{r['date']}, {r['seconds']:.0f} s in all.",
        f"Matmul peak ({peak['dtype']}, best square `torch.mm` in the run): **{peak['flops_per_s'] / 1e9:.0f} GFLOP/s**. "
        "MFU = analytic model FLOPs of the step / step time / that peak. Step times are medians.",
        "",
        "## Training step",
        "",
        f"Batch {r['steps'][0]['batch']} of {r['steps'][0]['frames']}x{r['steps'][0]['crop']}x{r['steps'][0]['crop']} "
        f"clips ({r['steps'][0]['tokens']} tokens), each objective with its own masks; "
        "encoder tokens: tokens per clip entering the trained encoder, per pass." if r["steps"] else "",
        "",
        table(["size", "objective", "params (M)", "encoder tokens", "step (s)", "clips/s", "tokens/s", "GFLOP",
               "GFLOP/s", "MFU", "peak memory (MB)"],
              [[s["size"], s["objective"], f"{s['params_m']:.1f}", "+".join(map(str, s["encoder_tokens"])), f"{s['step_s']:.3f}",
                f"{s['clips_per_s']:.1f}", f"{s['tokens_per_s']:.0f}", f"{s['gflops']:.1f}",
                f"{s['achieved_gflops_per_s']:.0f}", f"{s['mfu']:.0%}", mb(s["peak_memory_mb"])] for s in r["steps"]]),
    ]
    if r["skipped"]:
        out += ["", "Not run: " + "; ".join(f"{s['size']} {s['objective']} ({s['reason']})" for s in r["skipped"])]
    out += ["", "Analytic FLOPs over FlopCounterMode's count, micro size, matmuls and convolutions: "
            + ", ".join(f"{c['objective']} {c['linear_ratio']:.3f}" for c in r["flop_check"])
            + "; attention (with SDPA's backward recompute): "
            + ", ".join(f"{c['objective']} " + ("not counted by this torch" if c["attention_ratio"] is None
                                                 else f"{c['attention_ratio']:.3f}") for c in r["flop_check"]) + "."]
    sc = r["scaling"]
    if sc:
        out += [
            "", "## Scaling with tokens", "",
            f"`{sc[0]['size']}` JEPA step, batch {sc[0]['batch']}; frames and resolution grow (tubelet 2, patch 8). "
            "Attention's share is of the step's FLOPs; where it passes ~50% the quadratic term dominates.",
            "",
            table(["frames x crop", "tokens", "step (s)", "ms per clip-token", "attention share", "GFLOP/s", "MFU"],
                  [[f"{s['frames']}x{s['crop']}", s["tokens"], f"{s['step_s']:.3f}",
                    f"{1000 * s['step_s'] / (s['batch'] * s['tokens']):.3f}", f"{s['attention_share']:.0%}",
                    f"{s['achieved_gflops_per_s']:.0f}", f"{s['mfu']:.0%}"] for s in sc]),
        ]
    d = r["data"]
    out += [
        "", "## Data", "",
        f"{d['videos']} videos of the physics world; clips of {d['frames']} frames (frame step {d['frame_step']}), "
        f"cropped to {d['crop']}, batch {d['batch']}. Raw decode of the same frames (decord alone, one process): "
        f"**{d['raw_decode_clips_per_s']:.0f} clips/s**. An epoch includes the workers' start-up.",
        "",
        table(["loader workers", "clips/s (epoch)", "over raw decode", "clips/s (after first batch)", "over raw decode"],
              [[w, f"{rate['epoch']:.0f}", f"{d['loader_overhead'][w]['epoch']:+.0%}", f"{rate['after_first_batch']:.0f}",
                f"{d['loader_overhead'][w]['after_first_batch']:+.0%}"] for w, rate in d["loader_clips_per_s"].items()]),
    ]
    e = r["eval"]
    out += [
        "", "## Evaluation", "",
        table(["figure", "value"], [
            [f"feature extraction ({e['encoder']} depth {e['depth']}, {e['tokens']} tokens, decoding included)",
             f"{e['extract_clips_per_s']:.1f} clips/s"],
            [f"linear probe fit ({e['linear_fits']} logistic regressions, {e['clips']} clips)", f"{e['linear_fit_s']:.2f} s"],
            [f"attentive probe fit ({e['attentive_probes']} probes, {e['attentive_epochs']} epochs)",
             f"{e['attentive_fit_s']:.2f} s"],
        ]),
    ]
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="toy sizes: a smoke test of a few seconds")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for torch; 0: torch's default")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    start = time.perf_counter()
    device = resolve_device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    plan = PLANS["quick" if args.quick else device.type]
    command = " ".join(["python benchmarks/run.py", *(argv if argv is not None else sys.argv[1:])])
    result = {"machine": machine_name(device), "command": command, "quick": args.quick, "device": device.type,
              "dtype": str(dtype).replace("torch.", ""), "torch": torch.__version__, "python": platform.python_version(),
              "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}

    sections = result["section_seconds"] = {}

    def timed(name: str, fn, *args):
        print(f"{name} ...", flush=True)
        began = time.perf_counter()
        out = fn(*args)
        sections[name] = time.perf_counter() - began
        return out

    peak = timed("matmul peak", PeakMeter, device, plan.peak_sizes)
    print(f"  {peak.flops_per_s / 1e9:.0f} GFLOP/s on {result['machine']}", flush=True)
    result["flop_check"] = timed("flop check", flop_check, plan.flop_check_shape, device)
    result["steps"], result["skipped"] = timed("training steps", step_benchmarks, plan, device, dtype, peak)
    result["scaling"] = timed("scaling with tokens", scaling_benchmark, plan, device, dtype, peak)
    with tempfile.TemporaryDirectory(prefix="vjepa-bench-") as tmp:
        videos, frames, size = plan.world
        world = timed("world generation", loading.make_world, Path(tmp) / "world", videos, frames, size)
        clip_frames = frames // 2
        result["data"] = timed("data loading", loading.run, world, clip_frames, size, plan.data_batch, plan.repeats)
        result["eval"] = timed("evaluation", evaluation.run, world, clip_frames, size, plan.data_batch, 1,
                               plan.attentive_epochs, device)
    peak.refresh()
    result["peak"] = peak.result
    for row in result["steps"] + result["scaling"]:
        row["mfu"] = row["achieved_gflops_per_s"] * 1e9 / peak.flops_per_s
    result["seconds"] = time.perf_counter() - start

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = result["machine"] + ("-quick" if args.quick else "")
    (out / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")
    text = markdown(result)
    (out / f"{name}.md").write_text(text)
    print(text)
    print(f"wrote {out / name}.json and .md in {result['seconds']:.0f} s")
    return result


if __name__ == "__main__":
    main()
