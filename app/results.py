"""The demo's headline figures, and `docs/results.md` regenerated from run folders.

`python -m app.results [--demo runs/demo] [--compare runs/compare]` reads the metrics.json files
that `vjepa demo` and `vjepa compare` wrote and rewrites `docs/results.md` (the headline table,
then the demo's and the comparison's reports), copies the small plots it shows to `docs/img/`,
and replaces the README's headline table between its two marker lines. Nothing in those files
is typed by hand, so every figure there is the output of the runs named at their top.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
from datetime import date
from pathlib import Path

from vjepa.report import markdown_table, margin_cell

README_START = "<!-- headline: written by `python -m app.results`; do not edit by hand -->"
README_END = "<!-- /headline -->"
#: the demo plots docs/results.md shows (the dream strips stay in the run folder: they are megabytes)
PLOTS = ["world/preview.png", "pretrain/curves.png", "probe/probe.png", "dream/error_vs_horizon.png",
         "physics/accuracy.png", "physics/surprise_curves.png"]


def _load(demo: Path, rel: str) -> dict:
    path = demo / rel
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found; run `vjepa demo output={demo}` first")
    return json.loads(path.read_text())


def _margin(margins: dict, model: str, key: str) -> str:
    m = margins.get(model, {}).get(key)
    return margin_cell(m["value"], *m["ci"]) if m else "—"


def headline_rows(demo: Path) -> list[list[str]]:
    """Five rows: what is measured, the pretrained model, its control, and the margin or reading."""
    probe = _load(demo, "probe/metrics.json")
    dream = _load(demo, "dream/metrics.json")
    physics = _load(demo, "physics/metrics.json")
    jepa, random = probe["models"]["jepa"]["tasks"], probe["models"]["random"]["tasks"]
    rows = []
    for key, what in [("n_objects/attentive", "object count, attentive probe (top-1)"),
                      ("latents/linear", "physical latents, linear probe (mean R²)")]:
        rows.append([what, f"{jepa[key]['value']:.3f}", f"random init {random[key]['value']:.3f}",
                     _margin(probe.get("margins", {}), "jepa", key)])
    error = dream["models"]["jepa"]["error"]
    copy, layout = dream["baselines"]["copy_last"]["error"], dream["baselines"]["position_mean"]["error"]
    for i in (0, len(error) - 1):
        h = dream["models"]["jepa"]["horizon"][i]
        rows.append([f"imagined rollout error at +{h} slot{'s' if h > 1 else ''} (1 = the mean feature)",
                     f"{error[i]:.3f}", f"copy-last {copy[i]:.3f}, position mean {layout[i]:.3f}",
                     _rollout_margin(dream, i)])
    voe = physics["models"]
    rows.append(["violation of expectation, mean relative accuracy over 5 properties",
                 f"{voe['jepa']['mean_relative_accuracy']:.2f}",
                 f"random init {voe['random']['mean_relative_accuracy']:.2f}", "0.5 is chance"])
    return rows


def _rollout_margin(dream: dict, i: int) -> str:
    m = dream.get("margins", {}).get("jepa", {}).get("copy_last")
    if not m:
        return "—"
    return f"vs copy-last {margin_cell(m['value'][i], *m['ci'][i])}"


def headline_table(demo: Path) -> str:
    return markdown_table(["figure", "pretrained (jepa)", "control", "margin [95% interval]"], headline_rows(demo))


def demo_time(demo: Path) -> str:
    """`world 25 s, pretrain 386 s, ...; 11 min 51 s in all`, from the demo's timings.json."""
    timings = _load(demo, "timings.json")
    total = sum(timings.values())
    parts = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in timings.items())
    return f"{parts}; {int(total // 60)} min {int(total % 60)} s in all"


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def demote(report: str, relink) -> list[str]:
    """A report's lines without its title, its sections one level down, each image's path passed
    through `relink` (None drops the image)."""
    lines = []
    for line in report.splitlines():
        if line.startswith("# "):
            continue
        if line.startswith("#"):
            line = "#" + line
        if line.startswith("![") and "](" in line:
            start = line.index("](") + 2
            path = relink(line[start:line.rindex(")")])
            if path is None:
                continue
            line = f"{line[:start]}{path})"
        lines.append(line)
    return lines


def _rebase(report: str, run_dir: Path, img: Path, docs: Path) -> list[str]:
    """A run's report for docs/results.md: the plots of PLOTS copied to docs/img/, the others dropped."""
    def relink(rel: str):
        if rel not in PLOTS:
            return None
        target = img / rel.replace("/", "_")
        shutil.copyfile(run_dir / rel, target)
        return target.relative_to(docs).as_posix()
    return demote(report, relink)


def write_results(demo: Path, compare: Path | None, docs: Path, readme: Path) -> Path:
    docs.mkdir(parents=True, exist_ok=True)
    img = docs / "img"
    img.mkdir(exist_ok=True)
    table, timing = headline_table(demo), demo_time(demo)
    lines = [
        "# Results",
        "",
        f"Written by `python -m app.results --demo {demo}"
        + (f" --compare {compare}" if compare else "") + f"` at {git_commit()} on {date.today().isoformat()}, "
        "from the run folders' own metrics; do not edit by hand.",
        "",
        "## The demo",
        "",
        f"The demo in `{demo}` took {timing}.",
        "",
        *_rebase((demo / "report.md").read_text(), demo, img, docs),
        "",
        "## `vjepa compare`",
        "",
    ]
    if compare is not None and (compare / "report.md").is_file():
        lines += _rebase((compare / "report.md").read_text(), compare, img, docs)
    else:
        lines += ["Not in this regeneration: run `vjepa compare --config configs/evals/compare_world.yaml`, "
                  "then `python -m app.results --compare runs/compare`."]
    path = docs / "results.md"
    path.write_text("\n".join(lines).rstrip() + "\n")
    update_readme(readme, table, f"That run (`{demo}`) took {timing}")
    return path


def update_readme(readme: Path, table: str, timing: str) -> None:
    text = readme.read_text()
    if README_START not in text or README_END not in text:
        raise ValueError(f"{readme}: no headline markers ({README_START!r} ... {README_END!r})")
    head, rest = text.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    block = f"{README_START}\n{table}\n\n{timing}.\n{README_END}"
    readme.write_text(head + block + tail)


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(prog="python -m app.results", description=__doc__.splitlines()[0])
    parser.add_argument("--demo", type=Path, default=Path("runs/demo"), help="a `vjepa demo` output folder")
    parser.add_argument("--compare", type=Path, default=None, help="a `vjepa compare` output folder")
    parser.add_argument("--docs", type=Path, default=Path("docs"))
    parser.add_argument("--readme", type=Path, default=Path("README.md"), help="whose headline table to rewrite")
    args = parser.parse_args(argv)
    try:
        path = write_results(args.demo, args.compare, args.docs, args.readme)
    except (FileNotFoundError, ValueError) as err:
        parser.exit(2, f"python -m app.results: error: {err}\n")
    print(f"wrote {path} and the headline of {args.readme}")
    return path


if __name__ == "__main__":
    main()
