"""Video clips from a video list, read with decord, and the loader that batches them.

Every random choice for sample i (clip start, crop, flip) comes from
`np.random.default_rng([seed, epoch, i])`, so a sample is a pure function of (seed, epoch, index):
the same for any number of workers, and exactly reproduced when a run resumes mid-epoch.

A missing, empty, truncated or undecodable file does not stop a run: `__getitem__` returns
`Skipped(path, reason)`, `collate_videos` drops it from the batch, and the main process reports
each bad file once through `SkipTracker`. A list with no readable video at all stops at once.
"""
from __future__ import annotations

import contextlib
import logging
import os
import random
import re
import sys
import tempfile
from pathlib import Path
from typing import Callable, Iterable, Iterator, NamedTuple

import decord
import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from vjepa.preemption import preemption

from .transforms import to_unit_clip
from .video_list import DataError, read_video_list

decord.bridge.set_bridge("native")
# ffmpeg would print several lines per bad file, in every worker, every epoch; SkipTracker reports
# each bad file once instead
decord.logging.set_level(decord.logging.QUIET)
# the '[time] file.cc:line: ' prefix of decord's C++ (dmlc) log lines and error messages
DMLC_PREFIX = r"^\[[\d:]+\] \S+:\d+: "

logger = logging.getLogger("vjepa.data")

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}
FILE_NOT_FOUND = "file not found"

Transform = Callable[[torch.Tensor, np.random.Generator], torch.Tensor]


class Skipped(NamedTuple):
    path: str
    reason: str


def sample_clip_indices(
    num_frames: int, frames_per_clip: int, frame_step: int, clips_per_video: int, rng: np.random.Generator
) -> np.ndarray:
    """Frame indices [clips_per_video, frames_per_clip]: frames_per_clip frames, frame_step apart.

    Clip starts are evenly spaced over the video, each jittered within its own segment (one clip:
    a uniform start). A video shorter than a clip's span repeats its last frame.
    """
    span = (frames_per_clip - 1) * frame_step + 1
    segment = (max(num_frames - span, 0) + 1) / clips_per_video
    starts = ((np.arange(clips_per_video) + rng.random(clips_per_video)) * segment).astype(np.int64)
    indices = starts[:, None] + frame_step * np.arange(frames_per_clip)
    return np.minimum(indices, num_frames - 1)


def read_frames(video: decord.VideoReader, indices: np.ndarray) -> np.ndarray:
    """uint8 frames [len(indices), H, W, 3] (works around decord's misread of padded rows)."""
    try:
        return video.get_batch(indices.tolist()).asnumpy()
    except decord.DECORDError as exc:
        if "must exactly match" not in str(exc):
            raise
    # decord 0.6 misreads frames whose rows ffmpeg pads for alignment (16, 24, 48 or 72 pixels
    # wide, among others): get_batch fails and a single frame comes back as [H, W, C'] with the
    # padding folded into C'. Read frame by frame and cut the padding off each row.
    frames = []
    for i in indices.tolist():
        frame = video[i].asnumpy()
        height, width = frame.shape[:2]
        frames.append(frame.reshape(height, -1)[:, : 3 * width].reshape(height, width, 3))
    return np.stack(frames)


def _decord_message(exc: Exception) -> str:
    """The first line of a decord error, without its '[time] file.cc:line:' prefix."""
    lines = str(exc).strip().splitlines() or [type(exc).__name__]
    return re.sub(DMLC_PREFIX, "", lines[0])


class CapturedStderr:
    """What was written to file descriptor 2 while decord read one video; `failed` marks a read that failed."""

    def __init__(self, file) -> None:
        self.file, self.failed = file, False

    def text(self) -> bytes:
        self.file.seek(0)
        return self.file.read()

    def decord_cause(self) -> str:
        """decord's own account of a failure ('Invalid data found when processing input'), or ''."""
        lines = [re.sub(DMLC_PREFIX, "", line) for line in self.text().decode(errors="replace").splitlines()
                 if re.match(DMLC_PREFIX, line)]
        return re.sub(r"^ERROR opening: .*, ", "", lines[-1]) if lines else ""


@contextlib.contextmanager
def decord_stderr_captured() -> Iterator[CapturedStderr | None]:
    """Hold back what is written to file descriptor 2 while decord reads one video.

    decord's C++ layer logs 'video_reader.cc:83: ERROR opening: ...' straight to fd 2, whatever
    decord.logging's level: a second report of every bad file, in every worker, every epoch. If the
    read succeeds, the captured text is passed on as it was; if it fails (an exception, or `failed`
    set), decord's log lines are dropped, the Skipped reason quoting them, and anything else is
    passed on. With fd 2 closed it yields None: nothing would be printed anyway.
    """
    try:
        real_stderr = os.dup(2)
    except OSError:
        yield None
        return
    try:
        with tempfile.TemporaryFile() as file:
            captured = CapturedStderr(file)
            _flush_stderr()
            os.dup2(file.fileno(), 2)
            try:
                yield captured
            except BaseException:
                captured.failed = True
                raise
            finally:
                _flush_stderr()
                os.dup2(real_stderr, 2)
                text = captured.text()
                if captured.failed:
                    text = re.sub(DMLC_PREFIX.encode() + rb".*\n?", b"", text, flags=re.M)
                _write_stderr(text)
    finally:
        os.close(real_stderr)


def _flush_stderr() -> None:
    """Let Python's buffered stderr text out before fd 2 moves, so it lands where it was meant to."""
    with contextlib.suppress(AttributeError, OSError, ValueError):  # sys.stderr None, broken or closed
        sys.stderr.flush()


def _write_stderr(data: bytes) -> None:
    with contextlib.suppress(OSError):  # stderr gone: there is nowhere left to say it
        while data:
            data = data[os.write(2, data) :]


class VideoDataset(Dataset):
    """Clips from the videos (and still images) of a `path label` list.

    Each item is `dict(clip, label, path, index)` with clip [C, T, H, W] (or
    [clips_per_video, C, T, H, W]), or `Skipped(path, reason)` for a file that cannot be read.
    """

    def __init__(
        self,
        list_path: str | Path,
        frames_per_clip: int = 16,
        frame_step: int = 2,
        clips_per_video: int = 1,
        transform: Transform | None = None,
        seed: int = 0,
        check_readable: bool = True,
    ):
        if min(frames_per_clip, frame_step, clips_per_video) < 1:
            raise ValueError(
                f"frames_per_clip ({frames_per_clip}), frame_step ({frame_step}) and clips_per_video "
                f"({clips_per_video}) must all be at least 1"
            )
        self.list_path = str(list_path)
        self.entries = read_video_list(list_path)
        self.frames_per_clip = frames_per_clip
        self.frame_step = frame_step
        self.clips_per_video = clips_per_video
        self.transform = transform
        self.seed = seed
        self.epoch = 0
        if check_readable:
            self._check_readable()

    def __len__(self) -> int:
        return len(self.entries)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitem__(self, index: int) -> dict | Skipped:
        index = int(index)
        entry = self.entries[index]
        rng = np.random.default_rng([self.seed, self.epoch, index])
        frames = self._read_frames(entry.path, rng)
        if isinstance(frames, Skipped):
            return frames
        clips = [self._transform(torch.from_numpy(f), rng) for f in frames]
        clip = clips[0] if self.clips_per_video == 1 else torch.stack(clips)
        return dict(clip=clip, label=entry.label, path=entry.path, index=index)

    def _transform(self, frames: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        if self.transform is None:
            return to_unit_clip(frames)
        return self.transform(frames, rng)

    def _read_frames(self, path: str, rng: np.random.Generator) -> np.ndarray | Skipped:
        """uint8 frames [clips_per_video, frames_per_clip, H, W, 3], or why they cannot be read."""
        if not os.path.exists(path):
            return Skipped(path, FILE_NOT_FOUND)
        if os.path.getsize(path) == 0:
            return Skipped(path, "empty file")
        with decord_stderr_captured() as stderr:
            try:
                if Path(path).suffix.lower() in IMAGE_SUFFIXES:
                    return self._read_image(path)
                return self._read_video(path, rng)
            except (RuntimeError, OSError, decord.DECORDError) as exc:  # decord raises RuntimeError on open
                if stderr is None:
                    return Skipped(path, f"cannot decode ({_decord_message(exc)})")
                stderr.failed = True
                return Skipped(path, f"cannot decode ({stderr.decord_cause() or _decord_message(exc)})")

    def _read_image(self, path: str) -> np.ndarray:
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("RGB"))
        return np.tile(pixels, (self.clips_per_video, self.frames_per_clip, 1, 1, 1))

    def _read_video(self, path: str, rng: np.random.Generator) -> np.ndarray | Skipped:
        video = decord.VideoReader(path, num_threads=1, ctx=decord.cpu(0))
        if len(video) == 0:
            return Skipped(path, "no frames")
        indices = sample_clip_indices(len(video), self.frames_per_clip, self.frame_step, self.clips_per_video, rng)
        # decode each distinct frame once: clips may overlap and short videos repeat their last frame
        wanted, where = np.unique(indices.ravel(), return_inverse=True)
        return read_frames(video, wanted)[where.reshape(indices.shape)]

    def _check_readable(self) -> None:
        """Stop at once if no entry can be read; a good list costs one probe."""
        missing = unreadable = 0
        first_problem = None
        for entry in self.entries:
            result = self._read_frames(entry.path, np.random.default_rng(self.seed))
            if not isinstance(result, Skipped):
                return
            first_problem = first_problem or result
            if result.reason == FILE_NOT_FOUND:
                missing += 1
            else:
                unreadable += 1
        raise DataError(
            f"no readable video in {self.list_path}: {len(self.entries)} entries, {missing} missing, "
            f"{unreadable} unreadable (first: {first_problem.path}: {first_problem.reason})"
        )


def collate_videos(items: list[dict | Skipped]) -> dict:
    """Stack the readable items of a batch; Skipped items are dropped and listed in `skipped`.

    A batch can come out smaller than asked, or empty (`clips` with batch dimension 0).
    """
    kept = [item for item in items if not isinstance(item, Skipped)]
    return dict(
        clips=torch.stack([item["clip"] for item in kept]) if kept else torch.empty(0),
        labels=torch.tensor([item["label"] for item in kept], dtype=torch.long),
        paths=[item["path"] for item in kept],
        indices=torch.tensor([item["index"] for item in kept], dtype=torch.long),
        skipped=[(item.path, item.reason) for item in items if isinstance(item, Skipped)],
    )


class SkipTracker:
    """Counts skipped files and warns once per bad file (the main process feeds it each batch)."""

    def __init__(self):
        self.reasons: dict[str, str] = {}
        self.total = 0

    @property
    def count(self) -> int:
        """Distinct bad files seen so far."""
        return len(self.reasons)

    def update(self, skipped: Iterable[tuple[str, str]]) -> None:
        for path, reason in skipped:
            self.total += 1
            if path not in self.reasons:
                self.reasons[path] = reason
                logger.warning(f"skipping {path}: {reason}")


def batches_per_epoch(dataset_len: int, batch_size: int, world_size: int, drop_last: bool = True) -> int:
    """Batches each rank gets in one epoch from `build_loader`."""
    if drop_last:
        return dataset_len // world_size // batch_size
    return _ceil_div(_ceil_div(dataset_len, world_size), batch_size)


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def epoch_batches(
    dataset_len: int, batch_size: int, seed: int, epoch: int, rank: int, world_size: int, drop_last: bool
) -> list[list[int]]:
    """This rank's batches of dataset indices for one epoch.

    Global batch k is the k-th run of `batch_size * world_size` indices of a seeded permutation,
    and rank r takes the r-th contiguous slice of it: so the ranks together see exactly the batch
    one process would see with `batch_size * world_size`, row for row (DDP equals one process).
    """
    generator = torch.Generator().manual_seed(_epoch_seed(seed, epoch))
    order = torch.randperm(dataset_len, generator=generator).tolist()
    if drop_last:
        order = order[: dataset_len - dataset_len % world_size]
    else:  # pad by repeating the start, so every rank runs the same number of steps
        order = (order * world_size)[: _ceil_div(dataset_len, world_size) * world_size]
    per_rank = len(order) // world_size
    batches = []
    for start in range(0, per_rank, batch_size):
        size = min(batch_size, per_rank - start)  # the last global batch may be short: split it evenly
        first = start * world_size + rank * size
        batches.append(order[first : first + size])
    if drop_last and batches and len(batches[-1]) < batch_size:
        batches.pop()
    return batches


def _epoch_seed(seed: int, epoch: int) -> int:
    # mixing (seed, epoch) rather than adding them keeps seed 1 epoch 0 apart from seed 0 epoch 1
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def _seed_worker(worker_id: int) -> None:
    # the dataset seeds every sample itself; this is for third-party code that draws from the
    # global generators. torch.initial_seed() here derives from the loader's seeded generator.
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)
    random.seed(worker_seed)
    preemption.ignore_in_worker()


def build_loader(
    dataset: VideoDataset,
    batch_size: int,
    num_workers: int = 2,
    seed: int = 0,
    epoch: int = 0,
    start_batch: int = 0,
    rank: int = 0,
    world_size: int = 1,
    drop_last: bool = True,
    pin_memory: bool = False,
) -> DataLoader:
    """A loader over this rank's share of one epoch, starting at batch `start_batch`.

    The order is a permutation drawn from (seed, epoch), so resuming at `start_batch` yields
    exactly the batches an uninterrupted run would have seen next.
    """
    batches = epoch_batches(len(dataset), batch_size, seed, epoch, rank, world_size, drop_last)
    if not 0 <= start_batch <= len(batches):
        raise ValueError(f"start_batch {start_batch} is outside this epoch's {len(batches)} batches")
    dataset.set_epoch(epoch)
    return DataLoader(
        dataset,
        batch_sampler=batches[start_batch:],
        num_workers=num_workers,
        collate_fn=collate_videos,
        pin_memory=pin_memory,
        persistent_workers=False,  # workers must see the dataset's current epoch, set just above
        worker_init_fn=_seed_worker,
        generator=torch.Generator().manual_seed(_epoch_seed(seed, epoch)),
    )
