"""Write frames as an ordinary mp4 (H.264, yuv420p) that decord and any player can read.

The encoder runs on one thread with bit-exact flags and no creation time in the container, so the
same frames always give a byte-identical file: a regenerated dataset can be checked with a hash.
If the PyAV wheel lacks libx264 we fall back to FFmpeg's MPEG-4 Part 2 encoder at near-lossless
quantiser settings, which decord reads just as well.
"""
from __future__ import annotations

import os
from pathlib import Path

import av
import numpy as np

# Causal, constant-quantiser coding: a frame's bytes depend only on it and the frames before it, so
# two clips that share their first frames decode to identical first frames (violation-of-expectation
# twins must be identical up to the event). Rate control, B-frames, lookahead and scene-cut
# detection all let later frames change how earlier ones are coded. (x264's macroblock-tree rate
# control also gave different bytes from one call to the next on these tiny frames.)
H264_OPTIONS = {"preset": "medium", "x264-params": "qp=18:bframes=0:rc-lookahead=0:scenecut=0:mbtree=0"}
MPEG4_OPTIONS = {"qmin": "2", "qmax": "2", "bf": "0"}  # a fixed quantiser near lossless (ffmpeg's -q:v 2), no B-frames


def _codec() -> tuple[str, dict[str, str]]:
    if "libx264" in av.codecs_available:
        return "libx264", H264_OPTIONS
    return "mpeg4", MPEG4_OPTIONS


def write_video(path: str | Path, frames: np.ndarray, fps: int) -> Path:
    """Encode uint8 frames [T, H, W, 3] (H and W even) to `path`, atomically via a temporary name."""
    path = Path(path)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"{path}: frames must be uint8 [T, H, W, 3], got {frames.dtype} {list(frames.shape)}")
    _, height, width, _ = frames.shape
    if height % 2 or width % 2:
        raise ValueError(f"{path}: yuv420p video needs even height and width, got {height}x{width}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    codec, options = _codec()
    # bitexact keeps the muxer from writing its version string and creation time
    with av.open(str(tmp), mode="w", format="mp4", options={"fflags": "+bitexact"}) as container:
        stream = container.add_stream(codec, rate=fps, options=dict(options))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.thread_count = 1
        stream.codec_context.flags |= av.codec.context.Flags.bitexact
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    os.replace(tmp, path)
    return path
