"""Where a model's solidity score comes from, token by token (a diagnostic of `vjepa physics`).

`vjepa voe`'s solidity set crosses the bar (group `a`: drawn, group `b`: not) with the motion (bounce
or straight on). A set passes when its possible clips (bar + bounce, no bar + straight) are less
surprising in total than its impossible ones (bar + through, no bar + bounce). The two motions are
the same with and without the bar, so the set's score is an interaction:

    (bar + bounce − no bar + bounce) − (bar + through − no bar + straight)   (< 0: the set passes)

This script splits it over the tokens of each slot from the event on, by what the pixels show there:
the bar and the object's path (where bounce and through differ), the path alone, the bar alone
(static: the object never reaches it in that slot), or neither. It also asks how well the predictor
keeps a static bar: its error on bar tokens the object never touches, against copying the token's
feature from the last context slot.

    python -m evals.solidity_tokens --checkpoint runs/pretrain/checkpoints/latest.pt --table runs/voe/voe.csv

Surprise is `vjepa physics`'s (prefix contexts `--context-slots`, scored from the event slot on).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from evals.physics import event_slot, read_voe_table, to_pictures, token_surprise
from evals.worldmodel import WorldModelSource, build_world_models, clip_transform, read_clip_from_start

CLIPS = ("bar + bounce", "bar + through", "no bar + straight", "no bar + bounce")
CLASSES = ("bar and path", "path", "bar", "neither")
DIFFER = 40 / 255  # pixels differ where a channel differs by more than this (video coding noise stays below 16 levels)


def solidity_sets(table: str) -> list[list]:
    """Per solidity set of a `vjepa voe` table, its clips in the order of CLIPS."""
    sets: dict[str, dict] = {}
    for clip in read_voe_table(table):
        if clip.property == "solidity":
            sets.setdefault(clip.set or clip.group[:-1], {})[(clip.group[-1], clip.possible)] = clip
    keys = [("a", 1), ("a", 0), ("b", 1), ("b", 0)]
    bad = [name for name, s in sets.items() if sorted(s) != sorted(keys)]
    if not sets or bad:
        raise ValueError(f"{table}: expected `vjepa voe` solidity sets of four clips (groups NAMEa and NAMEb, a possible "
                         f"and an impossible clip each); {'none found' if not sets else 'not so: ' + ', '.join(bad[:3])}")
    return [[s[k] for k in keys] for _, s in sorted(sets.items())]


def differ(first: torch.Tensor, second: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
    """[T, H*W]: whether any pixel of a token differs between two clips' pictures [F, H, W, 3] (one broadcasts)."""
    t, h, w = grid
    d = (first - second).abs().amax(-1) > DIFFER  # [F, H, W]
    frames, size = d.shape[0], d.shape[1]
    return d.view(t, frames // t, h, size // h, w, size // w).any(5).any(3).any(1).reshape(t, h * w)


def token_classes(pictures: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
    """Each token's class index into CLASSES, [T, H*W], from the set's pictures [4, F, H, W, 3] in [0, 1]."""
    bar = differ(pictures[0], pictures[3], grid) | differ(pictures[1], pictures[2], grid)  # same motion, bar or not
    path = differ(pictures[0], pictures[1], grid)  # same bar, bounce or through
    return torch.where(bar & path, 0, torch.where(path, 1, torch.where(bar, 2, 3)))


@torch.no_grad()
def diagnose(checkpoint: str, table: str, context_slots: list[int]) -> dict:
    (model,) = build_world_models("jepa", WorldModelSource(checkpoint=checkpoint), None)
    arch = model.arch
    transform = clip_transform(arch)
    num_slots = model.grid[0]
    sums = np.zeros((len(CLASSES), len(CLIPS)))
    tokens = np.zeros(len(CLASSES))
    interaction, static = [], {"predictor": [], "copy": [], "background_predictor": [], "background_copy": []}
    k = min(context_slots)
    for clips in solidity_sets(table):
        frames = torch.stack([read_clip_from_start(c.path, arch.data.frames_per_clip, arch.data.frame_step, transform)
                              for c in clips])
        pictures = to_pictures(frames, transform)
        classes = token_classes(pictures, model.grid)
        start = max(event_slot(clips[0].event_frame, arch.data.frame_step, arch.model.tubelet_size, num_slots), k)
        errors = token_surprise(model, frames, context_slots, "prefix")[:, start:]  # [4, S, N]
        per_token = (errors[0] - errors[3]) - (errors[1] - errors[2])
        interaction.append(float(per_token.mean(-1).sum()))
        for c in range(len(CLASSES)):
            where = classes[start:] == c
            sums[c] += errors[:, where].sum(-1).numpy()
            tokens[c] += int(where.sum())
        # a static bar: bar tokens the object never touches, from the shortest prefix, in the bar + bounce clip
        context = model.context_slots(frames[:1], range(k))
        pred = model.predict_slots(context, range(k), range(k, num_slots))[0]
        real = model.target_slots(frames[:1])[0, k:]
        moved = differ(pictures[0], pictures[0, :1], model.grid)[k:]  # changed since the first frame
        for name, cls in (("", 2), ("background_", 3)):
            keep = (classes[k:] == cls) & ~moved
            if keep.any():
                static[name + "predictor"].append(float((pred - real).abs().mean(-1)[keep].mean()))
                static[name + "copy"].append(float((context[0, -1].unsqueeze(0) - real).abs().mean(-1)[keep].mean()))
    n = len(interaction)
    return {
        "checkpoint": checkpoint, "table": table, "sets": n, "context_slots": list(context_slots),
        "sets_passed": float(np.mean(np.array(interaction) < 0)),
        "interaction": float(np.mean(interaction)),
        "classes": {cls: {"tokens": int(tokens[c]), "error": dict(zip(CLIPS, (sums[c] / max(tokens[c], 1)).round(4).tolist())),
                          "interaction_share": float((sums[c] @ np.array([1, -1, 1, -1])) / n / model.tokens_per_slot)}
                    for c, cls in enumerate(CLASSES)},
        "static_bar": {key: float(np.mean(v)) if v else None for key, v in static.items()},
    }


def print_report(result: dict) -> None:
    print(f"{result['sets']} solidity sets of {result['table']}, checkpoint {result['checkpoint']}")
    print(f"sets passed under the mean score: {result['sets_passed']:.2f}; interaction per set "
          f"{result['interaction']:+.4f} (< 0 passes)")
    print(f"{'tokens':>14} {'count':>6} " + " ".join(f"{c:>17}" for c in CLIPS) + "  share of the interaction")
    for cls, e in result["classes"].items():
        print(f"{cls:>14} {e['tokens']:>6} " + " ".join(f"{v:>17.4f}" for v in e["error"].values())
              + f"  {e['interaction_share']:+.4f}")
    s = {key: "none" if v is None else f"{v:.4f}" for key, v in result["static_bar"].items()}
    print(f"static bar tokens, error from the first {min(result['context_slots'])} slots: predictor "
          f"{s['predictor']}, copying the last context slot {s['copy']}; empty background: predictor "
          f"{s['background_predictor']}, copying {s['background_copy']}")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--table", required=True, help="a `vjepa voe` table (voe.csv) with solidity sets")
    parser.add_argument("--context-slots", type=int, nargs="+", default=[2, 3, 4, 5, 6])
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args(argv)
    result = diagnose(args.checkpoint, args.table, args.context_slots)
    print_report(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
