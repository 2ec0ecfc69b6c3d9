"""Video lists: one video a line, `path label`, the layout the official V-JEPA code reads.

Paths are absolute or relative to the list file's folder; labels are integers (pretraining ignores
them). The label is the last token of a line, so a path may contain spaces.
"""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple


class DataError(ValueError):
    """A video list or data set that cannot be used as given."""


class VideoEntry(NamedTuple):
    path: str
    label: int


def read_video_list(path: str | Path) -> list[VideoEntry]:
    """Read a `path label` list; relative paths are resolved against the list's folder."""
    list_path = Path(path)
    if not list_path.is_file():
        raise DataError(f"video list {list_path} does not exist; give a text file with one 'path label' line per video")
    folder = list_path.absolute().parent
    entries = []
    for line_number, line in enumerate(list_path.read_text().splitlines(), start=1):
        if line.strip():
            entries.append(_parse_line(line, folder, f"{list_path}:{line_number}"))
    if not entries:
        raise DataError(f"video list {list_path} is empty; add one 'path label' line per video")
    return entries


def _parse_line(line: str, folder: Path, where: str) -> VideoEntry:
    parts = line.strip().rsplit(maxsplit=1)
    if len(parts) != 2:
        raise DataError(f"{where}: expected 'path label', got {line.strip()!r}")
    video, label = parts
    try:
        label_value = int(label)
    except ValueError:
        raise DataError(f"{where}: label {label!r} is not an integer (line {line.strip()!r})") from None
    return VideoEntry(str(folder / video), label_value)  # `folder / video` keeps an absolute `video` as is
