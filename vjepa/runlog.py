"""Run folders: the per-step CSV log every run writes, and the terminal progress bar."""
from __future__ import annotations

import csv
import math
import logging
import sys
from pathlib import Path
from typing import Iterable, Mapping

from tqdm import tqdm


def setup_logging(level: int = logging.INFO) -> None:
    """One plain format for every entry point; tqdm-friendly (messages go to stderr)."""
    root = logging.getLogger()
    if not any(getattr(h, "_vjepa", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
        handler._vjepa = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(level)


class CSVLog:
    """Append-only CSV, one row per logged step, flushed each row so a crash loses nothing.

    On resume the rows past the checkpoint's step are dropped: they belong to steps the resumed
    run is about to redo, and keeping them would give two rows for one step.
    """

    def __init__(self, path: str | Path, fields: Iterable[str], resume_from_step: int | None = None):
        self.path = Path(path)
        self.fields = list(fields)
        kept = self._rows_before(resume_from_step) if resume_from_step is not None else []
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "w", newline="")
        self._writer = csv.DictWriter(self._file, fieldnames=self.fields, extrasaction="ignore")
        self._writer.writeheader()
        for row in kept:
            self._writer.writerow(row)
        self._file.flush()

    def _rows_before(self, step: int) -> list[dict]:
        if not self.path.is_file():
            return []
        with open(self.path, newline="") as f:
            return [row for row in csv.DictReader(f) if int(row["step"]) < step]

    def write(self, row: Mapping[str, object]) -> None:
        self._writer.writerow({k: _fmt(v) for k, v in row.items()})
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def _fmt(v: object) -> object:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.6g}"  # an empty cell: not measured at this step
    return v


def read_log(path: str | Path) -> list[dict[str, float]]:
    """The CSV log as numbers (empty cells become NaN)."""
    with open(path, newline="") as f:
        return [{k: float(v) if v not in ("", None) else float("nan") for k, v in row.items()} for row in csv.DictReader(f)]


def progress(total: int, initial: int = 0, desc: str = "", enabled: bool = True) -> tqdm:
    return tqdm(total=total, initial=initial, desc=desc, disable=not enabled, dynamic_ncols=True, mininterval=1.0)
