"""The video data pipeline: lists, clip sampling, transforms, bad files and the loader."""
import logging
import os

import av
import numpy as np
import pytest
import torch
from PIL import Image

from vjepa.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    DataError,
    Skipped,
    SkipTracker,
    VideoDataset,
    VideoEntry,
    VideoTransform,
    batches_per_epoch,
    build_loader,
    collate_videos,
    read_video_list,
    sample_clip_indices,
    sample_crop_box,
)
from vjepa.data.dataset import decord_stderr_captured

CODEC = "libx264" if "libx264" in av.codecs_available else "mpeg4"
RAMP_STEP = 12  # frame k of a ramp video is a flat grey of intensity 12 * k


def write_video(path, frames: np.ndarray) -> None:
    """Write uint8 frames [T, H, W, 3] as an mp4, (nearly) losslessly."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream(CODEC, rate=10)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        if CODEC == "libx264":
            stream.options = {"qp": "0"}
        else:
            stream.bit_rate = 8_000_000
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def ramp_frames(num_frames: int, size: int) -> np.ndarray:
    return np.repeat(np.arange(num_frames, dtype=np.uint8) * RAMP_STEP, size * size * 3).reshape(num_frames, size, size, 3)


def texture_frames(num_frames: int, size: int) -> np.ndarray:
    """A fixed random texture with a white square moving right one pixel a frame."""
    frames = np.repeat(np.random.default_rng(0).integers(0, 200, (1, size, size, 3), dtype=np.uint8), num_frames, 0)
    for t in range(num_frames):
        frames[t, 8:16, t : t + 8] = 255
    return frames


def write_list(path, lines) -> str:
    path.write_text("".join(f"{line}\n" for line in lines))
    return str(path)


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("media")
    write_video(root / "ramp.mp4", ramp_frames(20, 32))
    write_video(root / "ramp48.mp4", ramp_frames(20, 48))  # a width decord 0.6 misreads without help
    write_video(root / "texture.mp4", texture_frames(20, 32))
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(root / "still.png")
    (root / "corrupt.mp4").write_bytes(np.random.default_rng(2).bytes(4096))
    good = (root / "ramp.mp4").read_bytes()
    (root / "truncated.mp4").write_bytes(good[: len(good) // 2])
    return root


def frame_numbers(clip: torch.Tensor) -> list[int]:
    """Which ramp frames a [C, T, H, W] clip in [0, 1] holds."""
    return [round(v) for v in (clip.mean(dim=(0, 2, 3)) * 255 / RAMP_STEP).tolist()]


# --- video lists ---------------------------------------------------------------------------------


def test_video_list_resolves_relative_paths_against_its_folder_and_reads_labels(tmp_path):
    absolute = tmp_path / "elsewhere" / "b c.mp4"
    list_path = write_list(tmp_path / "videos.txt", ["a.mp4 3", "", f"{absolute} 7", "sub/c.mp4 -1"])
    assert read_video_list(list_path) == [
        VideoEntry(str(tmp_path / "a.mp4"), 3),
        VideoEntry(str(absolute), 7),
        VideoEntry(str(tmp_path / "sub" / "c.mp4"), -1),
    ]


@pytest.mark.parametrize("bad_line", ["no_label.mp4", "a.mp4 cat", "a.mp4 1.5"])
def test_malformed_line_error_names_the_file_and_line(tmp_path, bad_line):
    list_path = write_list(tmp_path / "videos.txt", ["a.mp4 0", bad_line])
    with pytest.raises(DataError, match=r"videos\.txt:2"):
        read_video_list(list_path)


def test_missing_or_empty_list_is_a_data_error_naming_it(tmp_path):
    with pytest.raises(DataError, match="nowhere.txt"):
        read_video_list(tmp_path / "nowhere.txt")
    with pytest.raises(DataError, match="empty.txt"):
        read_video_list(write_list(tmp_path / "empty.txt", ["", "  "]))


# --- clip sampling -------------------------------------------------------------------------------


@pytest.mark.parametrize("video", ["ramp.mp4", "ramp48.mp4"])
def test_clip_holds_every_frame_step_th_frame(media, tmp_path, video):
    dataset = VideoDataset(write_list(tmp_path / "l.txt", [f"{media / video} 0"]), frames_per_clip=4, frame_step=3)
    size = 48 if "48" in video else 32
    starts = set()
    for epoch in range(5):
        dataset.set_epoch(epoch)
        clip = dataset[0]["clip"]
        assert clip.shape == (3, 4, size, size) and clip.dtype == torch.float32
        frames = frame_numbers(clip)
        assert frames == [frames[0] + 3 * k for k in range(4)] and frames[-1] < 20
        starts.add(frames[0])
    assert len(starts) > 1, "the clip start should be random"


def test_short_video_repeats_its_last_frame(media, tmp_path):
    dataset = VideoDataset(write_list(tmp_path / "l.txt", [f"{media / 'ramp.mp4'} 0"]), frames_per_clip=8, frame_step=4)
    assert frame_numbers(dataset[0]["clip"]) == [0, 4, 8, 12, 16, 19, 19, 19]


def test_several_clips_per_video_start_in_successive_segments(media, tmp_path):
    dataset = VideoDataset(
        write_list(tmp_path / "l.txt", [f"{media / 'ramp.mp4'} 0"]), frames_per_clip=4, frame_step=1, clips_per_video=2
    )
    clips = dataset[0]["clip"]
    assert clips.shape == (2, 3, 4, 32, 32)
    first, second = frame_numbers(clips[0]), frame_numbers(clips[1])
    assert first == list(range(first[0], first[0] + 4)) and second == list(range(second[0], second[0] + 4))
    assert first[0] <= 8 <= second[0]  # 17 possible starts split into [0, 8.5) and [8.5, 17)


def test_clip_starts_are_jittered_within_even_segments():
    starts = np.stack(
        [sample_clip_indices(100, 10, 1, 3, np.random.default_rng(s))[:, 0] for s in range(50)]
    )  # 91 possible starts, three segments of 30.33
    for k in range(3):
        assert (starts[:, k] >= int(k * 91 / 3)).all() and (starts[:, k] < (k + 1) * 91 / 3).all()
        assert len(set(starts[:, k])) > 5


# --- transforms ----------------------------------------------------------------------------------


def test_transform_gives_normalised_square_clips_and_eval_is_deterministic():
    frames = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (5, 30, 50, 3), dtype=np.uint8))
    train, evaluate = VideoTransform(crop_size=16), VideoTransform(crop_size=16, train=False)
    assert train(frames, np.random.default_rng(0)).shape == (3, 5, 16, 16)
    out = evaluate(frames, np.random.default_rng(0))
    assert torch.equal(out, evaluate(frames, np.random.default_rng(1)))
    # eval keeps the central 30x30 square; a 30 -> 30 "resize" leaves pixels untouched
    center = VideoTransform(crop_size=30, train=False)(frames, np.random.default_rng(0))
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1, 1)
    expected = frames[:, :, 10:40].permute(3, 0, 1, 2).float() / 255
    torch.testing.assert_close(center * std + mean, expected)


def test_train_transform_applies_one_crop_and_flip_to_every_frame():
    base = np.random.default_rng(0).integers(0, 100, (1, 40, 40, 3))
    frames = torch.from_numpy((base + 5 * np.arange(6).reshape(6, 1, 1, 1)).astype(np.uint8))
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    for seed in range(10):
        out = VideoTransform(crop_size=24)(frames, np.random.default_rng(seed))
        # brightness shifts survive only if every frame was cropped, resized and flipped alike
        for t in range(6):
            torch.testing.assert_close(out[:, t] - out[:, 0], (5 * t / 255 / std).expand(3, 24, 24), atol=1e-4, rtol=0)


def test_uint8_resize_stays_within_one_grey_level_of_a_float_resize():
    frames = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (4, 37, 53, 3), dtype=np.uint8))
    transform = VideoTransform(crop_size=24, random_resize_scale=(0.5, 0.9), horizontal_flip=False)
    out = transform(frames, np.random.default_rng(3))
    top, left, h, w = sample_crop_box(37, 53, transform.scale, transform.ratio, np.random.default_rng(3))
    reference = torch.nn.functional.interpolate(
        frames[:, top : top + h, left : left + w].permute(0, 3, 1, 2).float(), size=(24, 24), mode="bilinear",
        align_corners=False, antialias=True).permute(1, 0, 2, 3)
    std, mean = torch.tensor(IMAGENET_STD).view(3, 1, 1, 1), torch.tensor(IMAGENET_MEAN).view(3, 1, 1, 1)
    grey_levels = (out * std + mean) * 255 - reference
    assert grey_levels.abs().max() <= 1.0 + 1e-3
    assert out.dtype == torch.float32 and out.is_contiguous()


def test_horizontal_flip_is_sampled_per_clip():
    frames = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (2, 40, 40, 3), dtype=np.uint8))
    flipped = []
    for seed in range(20):
        with_flip = VideoTransform(crop_size=24)(frames, np.random.default_rng(seed))
        without = VideoTransform(crop_size=24, horizontal_flip=False)(frames, np.random.default_rng(seed))
        assert torch.equal(with_flip, without) or torch.equal(with_flip, without.flip(-1))
        flipped.append(not torch.equal(with_flip, without))
    assert any(flipped) and not all(flipped)


# --- reproducibility -----------------------------------------------------------------------------


def test_sample_is_a_function_of_seed_epoch_and_index(media, tmp_path):
    list_path = write_list(tmp_path / "l.txt", [f"{media / 'texture.mp4'} 0"] * 2)

    def sample(seed=0, epoch=0, index=0):
        dataset = VideoDataset(list_path, frames_per_clip=4, transform=VideoTransform(crop_size=16), seed=seed)
        dataset.set_epoch(epoch)
        return dataset[index]["clip"]

    assert torch.equal(sample(), sample())
    assert not torch.equal(sample(), sample(epoch=1))
    assert not torch.equal(sample(), sample(seed=1))
    assert not torch.equal(sample(), sample(index=1))  # same file, another sample


# --- bad files -----------------------------------------------------------------------------------


def test_bad_files_are_skipped_and_reported_once_while_good_ones_load(media, tmp_path, caplog):
    bad = [str(media / "corrupt.mp4"), str(media / "truncated.mp4"), str(tmp_path / "missing.mp4")]
    good = [str(media / "ramp.mp4"), str(media / "texture.mp4"), str(media / "still.png")]
    list_path = write_list(tmp_path / "l.txt", [f"{p} 0" for p in good[:1] + bad + good[1:]])
    dataset = VideoDataset(list_path, frames_per_clip=2)
    tracker, loaded = SkipTracker(), set()
    with caplog.at_level(logging.WARNING, logger="vjepa.data"):
        for epoch in range(2):
            for batch in build_loader(dataset, batch_size=2, num_workers=2, epoch=epoch, drop_last=False):
                assert batch["clips"].shape[0] == len(batch["paths"]) == len(batch["labels"])
                loaded.update(batch["paths"])
                tracker.update(batch["skipped"])
    assert loaded == set(good)
    assert (tracker.count, tracker.total) == (3, 6)
    warnings = [r.getMessage() for r in caplog.records if r.name == "vjepa.data"]
    assert sorted(warnings) == sorted(f"skipping {p}: {tracker.reasons[p]}" for p in bad)
    assert tracker.reasons[str(tmp_path / "missing.mp4")] == "file not found"


def test_bad_files_leave_stderr_to_the_skip_reasons_in_the_main_process_and_in_workers(media, tmp_path, capfd, fault):
    (tmp_path / "notes.mp4").write_text("not a video")
    bad = [str(tmp_path / "notes.mp4"), str(media / "truncated.mp4")]  # not a video; an H.264 file cut short
    list_path = write_list(tmp_path / "l.txt", [f"{p} 0" for p in [media / "ramp.mp4", *bad]])
    dataset = VideoDataset(list_path, frames_per_clip=2)
    items = [dataset[i] for i in range(len(dataset))]
    in_worker = [s for b in build_loader(dataset, batch_size=3, num_workers=1, drop_last=False) for s in b["skipped"]]
    stderr = capfd.readouterr().err
    assert "video_reader.cc" not in stderr and "ERROR opening" not in stderr
    assert items[0]["clip"].shape == (3, 2, 32, 32)
    reasons = {item.path: item.reason for item in items[1:]}
    assert sorted(reasons) == sorted(bad) and dict(in_worker) == reasons
    # decord's own account of the failure, which only its log line held, is in the reason
    assert reasons[bad[0]] == "cannot decode (Invalid data found when processing input)"
    assert reasons[bad[1]].startswith("cannot decode (") and "Error reading" not in reasons[bad[1]], reasons[bad[1]]
    fault.record("decord's C++ 'ERROR opening' line for a non-video and a cut-short file, in the process and a worker",
                 stderr, "each file's reason, with decord's cause in it, for the project's one line per file")


def test_stderr_written_while_decord_reads_is_kept_but_for_its_log_lines_on_failure(capfd):
    with decord_stderr_captured():
        os.write(2, b"said during a good read\n")
    with pytest.raises(RuntimeError), decord_stderr_captured():
        os.write(2, b"[03:13:26] /src/video/video_reader.cc:83: ERROR opening: x.mp4, Invalid data\nnot decord's\n")
        raise RuntimeError("Error reading x.mp4...")
    assert capfd.readouterr().err == "said during a good read\nnot decord's\n"


def test_videos_still_read_with_stderr_closed(media, tmp_path):
    dataset = VideoDataset(write_list(tmp_path / "l.txt", [f"{media / 'ramp.mp4'} 0", f"{media / 'corrupt.mp4'} 0"]))
    stderr = os.dup(2)
    os.close(2)
    try:
        good, bad = dataset[0], dataset[1]
    finally:
        os.dup2(stderr, 2)
        os.close(stderr)
    assert good["clip"].shape[1] == 16 and bad.reason.startswith("cannot decode (")


def test_a_batch_of_only_skipped_files_is_empty():
    batch = collate_videos([Skipped("a.mp4", "file not found"), Skipped("b.mp4", "empty file")])
    assert batch["clips"].shape[0] == 0 and batch["labels"].shape == (0,) and batch["paths"] == []
    assert batch["skipped"] == [("a.mp4", "file not found"), ("b.mp4", "empty file")]


def test_list_without_a_readable_video_stops_naming_the_list(media, tmp_path):
    list_path = write_list(tmp_path / "all_bad.txt", [f"{media / 'corrupt.mp4'} 0", "missing.mp4 1"])
    with pytest.raises(DataError, match=r"all_bad\.txt: 2 entries, 1 missing, 1 unreadable"):
        VideoDataset(list_path)


def test_images_load_as_clips_of_repeated_frames(media, tmp_path):
    clip = VideoDataset(write_list(tmp_path / "l.txt", [f"{media / 'still.png'} 4"]), frames_per_clip=3)[0]["clip"]
    pixels = torch.from_numpy(np.array(Image.open(media / "still.png"))).permute(2, 0, 1).float() / 255
    assert clip.shape == (3, 3, 30, 40)
    for t in range(3):
        assert torch.equal(clip[:, t], pixels)


# --- the loader ----------------------------------------------------------------------------------


@pytest.fixture
def ten_videos(media, tmp_path):
    videos = ["ramp.mp4", "texture.mp4"] * 5
    list_path = write_list(tmp_path / "ten.txt", [f"{media / v} {i}" for i, v in enumerate(videos)])
    return VideoDataset(list_path, frames_per_clip=2, transform=VideoTransform(crop_size=16))


def loader_batches(dataset, **kwargs):
    return [(b["indices"].tolist(), b["clips"]) for b in build_loader(dataset, batch_size=3, **kwargs)]


def test_loader_batches_do_not_depend_on_the_number_of_workers(ten_videos):
    serial, parallel = loader_batches(ten_videos, num_workers=0, epoch=1), loader_batches(ten_videos, num_workers=2, epoch=1)
    assert [i for i, _ in serial] == [i for i, _ in parallel] and len(serial) == 3
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(serial, parallel))
    assert [i for i, _ in serial] != [i for i, _ in loader_batches(ten_videos, num_workers=0, epoch=2)]


@pytest.mark.parametrize("drop_last", [True, False])
def test_ranks_are_disjoint_and_cover_the_epoch(ten_videos, drop_last):
    shards = []
    for rank in range(2):
        batches = loader_batches(ten_videos, num_workers=0, rank=rank, world_size=2, drop_last=drop_last)
        assert len(batches) == batches_per_epoch(10, 3, 2, drop_last)
        shards.append({i for indices, _ in batches for i in indices})
    assert not shards[0] & shards[1]
    assert len(shards[0] | shards[1]) == (6 if drop_last else 10)  # 5 a rank: one batch of 3, or 3 + 2


def test_start_batch_resumes_exactly_after_k_batches(ten_videos):
    full = loader_batches(ten_videos, num_workers=0, epoch=3, drop_last=False)
    resumed = loader_batches(ten_videos, num_workers=0, epoch=3, drop_last=False, start_batch=2)
    assert [i for i, _ in resumed] == [i for i, _ in full[2:]]
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(resumed, full[2:]))
