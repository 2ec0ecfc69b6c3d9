"""Plots and markdown pieces for run folders and the demo report."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # files only; no display on clusters
import matplotlib.pyplot as plt  # noqa: E402

from vjepa.runlog import read_log  # noqa: E402


def _smooth(values: Sequence[float], window: int) -> list[float]:
    out, acc, buf = [], 0.0, []
    for v in values:
        buf.append(v)
        acc += v
        if len(buf) > window:
            acc -= buf.pop(0)
        out.append(acc / len(buf))
    return out


def loss_summary(rows: list[dict]) -> dict[str, float]:
    """The numbers that say whether pretraining worked: early vs late loss, collapse signals."""
    losses = [r["loss"] for r in rows if math.isfinite(r["loss"])]
    first = losses[:100]
    last = losses[-100:]
    ranks = [r["rankme"] for r in rows if math.isfinite(r.get("rankme", float("nan")))]
    stds = [r["target_std"] for r in rows if math.isfinite(r.get("target_std", float("nan")))]
    first_mean = sum(first) / max(1, len(first))
    last_mean = sum(last) / max(1, len(last))
    return {
        "steps": len(losses),
        "first_100_mean_loss": first_mean,
        "last_100_mean_loss": last_mean,
        "loss_ratio": last_mean / first_mean if first_mean else float("nan"),
        "final_target_std": stds[-1] if stds else float("nan"),
        "final_rankme": ranks[-1] if ranks else float("nan"),
        "max_rankme": max(ranks) if ranks else float("nan"),
        "clips_per_s": sorted(r["clips_per_s"] for r in rows)[len(rows) // 2] if rows else float("nan"),
        "wall_time_s": rows[-1]["elapsed"] if rows else float("nan"),
    }


def plot_training_curves(log_csv: str | Path, png: str | Path) -> Path:
    """Loss, learning rate and the collapse signals (target std, RankMe) against the step."""
    rows = read_log(log_csv)
    steps = [r["step"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
    loss = [r["loss"] for r in rows]
    axes[0].plot(steps, loss, color="0.75", lw=0.8, label="per step")
    axes[0].plot(steps, _smooth(loss, 25), color="C0", lw=1.6, label="25-step mean")
    axes[0].set(title="loss", xlabel="step")
    axes[0].legend(frameon=False)
    axes[1].plot(steps, [r["target_std"] for r in rows], color="C2")
    axes[1].set(title="target feature std (collapse -> 0)", xlabel="step")
    ranked = [(r["step"], r["rankme"]) for r in rows if math.isfinite(r["rankme"])]
    if ranked:
        axes[2].plot(*zip(*ranked), marker="o", ms=3, color="C3")
    axes[2].set(title="RankMe effective rank of targets", xlabel="step")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    png = Path(png)
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    def cell(v: object) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def margin_cell(value: float, lo: float, hi: float) -> str:
    """A difference with its interval, "+0.050 [+0.020, +0.081]", in bold where the interval excludes 0."""
    text = f"{value:+.3f} [{lo:+.3f}, {hi:+.3f}]"
    return f"**{text}**" if lo > 0 or hi < 0 else text
