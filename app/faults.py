"""`docs/reliability.md` regenerated: every fault tried, what the user sees, what is kept, and the test behind it.

`python -m app.faults` runs the tests that take the `fault` fixture (`pytest -m fault`): each one
provokes a fault for real (bad files, damaged checkpoints, killed processes, signals, SLURM, a
write limit) and, once its assertions hold, records the line the user saw and what survived. A
test that fails or is skipped appears as such, so the table never claims more than this machine
showed. Nothing in the file is typed by hand.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from datetime import date
from pathlib import Path

import torch

from app.results import git_commit
from vjepa.report import markdown_table

REPO = Path(__file__).resolve().parent.parent


def run_fault_tests(folder: Path) -> tuple[list[dict], dict[str, str], float]:
    """The rows the tests recorded, each test's outcome (passed / failed / skipped), and the wall time."""
    rows, junit = folder / "rows.jsonl", folder / "junit.xml"
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "fault", "-p", "no:cacheprovider", f"--junitxml={junit}",
                    "tests"], cwd=REPO, env={**os.environ, "VJEPA_FAULT_TABLE": str(rows)})
    seconds = time.perf_counter() - t0
    if not junit.is_file():
        raise RuntimeError("pytest wrote no report: see its output above")
    outcomes = {}
    for case in ET.parse(junit).iter("testcase"):
        test = f"{case.get('classname').replace('.', '/')}.py::{case.get('name')}"
        kinds = {child.tag for child in case}
        outcomes[test] = "failed" if kinds & {"failure", "error"} else "skipped" if "skipped" in kinds else "passed"
    recorded = [json.loads(line) for line in rows.read_text().splitlines()] if rows.is_file() else []
    return recorded, outcomes, seconds


def cell(text: str, code: bool = False) -> str:
    """A table cell: pipes escaped, one line of the text per line of the cell, as code where it is what a user saw."""
    lines = [line.replace("|", "\\|") for line in text.splitlines()]
    if code:  # a backtick inside would end the code span
        lines = [f"`{line.replace('`', chr(39))}`" for line in lines]
    return "<br>".join(lines) or "nothing"


def write_table(rows: list[dict], outcomes: dict[str, str], seconds: float, path: Path) -> Path:
    counts = {o: sum(v == o for v in outcomes.values()) for o in ("passed", "failed", "skipped")}
    table = [[cell(r["fault"]), cell(r["sees"], code=True), cell(r["kept"]), f"`{r['test']}`"]
             for r in rows]
    missing = [t for t, o in outcomes.items() if o != "passed"]
    lines = [
        "# Reliability: faults tried and what they do",
        "",
        f"Written by `python -m app.faults` at {git_commit()} on {date.today().isoformat()} (torch {torch.__version__}): "
        f"{len(outcomes)} tests, {counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped, "
        f"in {seconds:.0f} s on this machine. Each row is recorded by its test once the test's assertions hold; "
        "do not edit by hand.",
        "",
        markdown_table(["fault", "what the user sees", "what is kept", "test"], table),
    ]
    if missing:
        lines += ["", "Not shown in this regeneration (no row): " + ", ".join(f"`{t}` ({outcomes[t]})" for t in missing)]
    path.write_text("\n".join(lines) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.faults", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "reliability.md")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        rows, outcomes, seconds = run_fault_tests(Path(folder))
    path = write_table(rows, outcomes, seconds, args.out)
    print(f"wrote {path}: {len(rows)} rows from {len(outcomes)} tests")
    return 0 if all(o == "passed" for o in outcomes.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
