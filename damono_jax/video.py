"""Video in and out: frames decoded from a video file, and a side-by-side depth video written.

Decoding and encoding use PyAV, which ships its own FFmpeg (with H.264), so no system codec
or external tool is needed. Frames are uint8 RGB (H, W, 3). A file that is not a readable
video is a `DataError` naming it (and the frame, where one is at fault). Used by prediction
(`prediction.run`) and by the own-footage dataset builder (`data_prep.depth_folder`).
"""

from __future__ import annotations

import dataclasses
import os
import queue
import threading
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from damono_jax.errors import DataError

VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".avi")
# H.264 in yuv420p needs even sides; the quality of the written video (x264's CRF: lower is
# better, 18 is visually lossless for most content).
_ENCODER = "libx264"
_ENCODER_OPTIONS = {"crf": "18", "preset": "veryfast"}


def is_video(path: str | os.PathLike) -> bool:
    """Whether `path` has one of `VIDEO_EXTENSIONS` (the content is checked when opened)."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


@dataclasses.dataclass(frozen=True)
class VideoInfo:
    """What the container says about its first video stream.

    `frame_count` is the container's count (0 when it records none); `fps` is the stream's
    average frame rate; `duration` the stream's (else the container's) length in seconds (0
    when neither records one). `declared_frames` is the length a whole video must have: the
    count, else `round(duration * fps)`, else 0 (then a cut cannot be told from the end).
    """

    path: str
    codec: str
    width: int
    height: int
    fps: float
    frame_count: int
    duration: float = 0.0

    @property
    def declared_frames(self) -> int:
        if self.frame_count:
            return self.frame_count
        return round(self.duration * self.fps) if self.duration > 0 else 0

    @property
    def length_declared_by(self) -> str:
        """How the container declares its length: "frame count", "duration" or "nothing"."""
        if self.frame_count:
            return "frame count"
        return "duration" if self.duration > 0 else "nothing"

    def kept_frames(self, every: int, max_frames: int | None) -> int:
        """Frames that `read_frames(every, max_frames)` yields, from the declared length."""
        kept = -(-self.declared_frames // every)
        return kept if max_frames is None else min(kept, max_frames)

    def shortfall(self, decoded: int) -> str | None:
        """Why a video that ended after `decoded` frames is not whole, or None.

        A frame count must be met exactly. A length derived from the duration is an estimate
        (`round(duration * fps)`, which variable frame rates blur), so it may be missed by
        `DURATION_SLACK` of it, and by at least one frame.
        """
        if self.frame_count:
            return (None if decoded >= self.frame_count
                    else f"it ends after frame {decoded} of {self.frame_count} (truncated?)")
        expected = self.declared_frames
        if not expected or decoded >= expected - max(1, round(DURATION_SLACK * expected)):
            return None
        return (f"it ends after frame {decoded} of about {expected} ({self.duration:.2f} s at "
                f"{self.fps:g} fps; truncated?)")


# How far a video whose length is declared only by its duration may fall short of it.
DURATION_SLACK = 0.02


def _open(path: Path) -> Any:
    import av  # imported here: only prediction of videos needs it

    try:
        return av.open(str(path))
    except (av.error.FFmpegError, OSError, ValueError) as error:
        raise DataError(path, f"cannot read video: {_reason(error)}") from error


def _reason(error: BaseException) -> str:
    """FFmpeg's own words, without the errno and file name PyAV adds around them."""
    strerror = getattr(error, "strerror", None)
    return str(strerror or error).splitlines()[0]


def _video_stream(container: Any, path: Path) -> Any:
    if not container.streams.video:
        raise DataError(path, "has no video stream")
    stream = container.streams.video[0]
    if stream.codec_context is None or stream.codec_context.codec is None:
        raise DataError(path, "unsupported video codec (FFmpeg has no decoder for it)")
    return stream


def _info(container: Any, stream: Any, path: Path) -> VideoInfo:
    import av

    rate = stream.average_rate or stream.base_rate or stream.guessed_rate
    if not rate or rate <= 0:
        raise DataError(path, "the video records no frame rate")
    if stream.duration and stream.time_base:
        duration = float(stream.duration * stream.time_base)
    else:
        duration = float(container.duration or 0) / av.time_base
    return VideoInfo(
        path=str(path), codec=stream.codec_context.name, width=int(stream.width),
        height=int(stream.height), fps=float(rate), frame_count=int(stream.frames or 0),
        duration=max(duration, 0.0),
    )


def probe(path: str | os.PathLike) -> VideoInfo:
    """Opens `path` and reads its video stream's header; decodes nothing."""
    path = Path(path)
    with _open(path) as container:
        return _info(container, _video_stream(container, path), path)


def read_frames(path: str | os.PathLike, *, every: int = 1,
                max_frames: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """`(frame index, uint8 RGB frame)` for every `every`-th frame (0, every, 2 every, ...),
    at most `max_frames` of them.

    A video is whole or an error (`DataError` naming the file): read to its end, it must reach
    the length its container declares (`VideoInfo.shortfall`), and no packet may be flagged
    corrupt (FFmpeg flags the packet a cut ends in). A frame that does not decode is an error
    naming it; a video that yields no frame at all is an error too. A video that declares no
    length is read to its end, which is then taken for its length.
    """
    import av

    if every < 1:
        raise ValueError(f"every: must be >= 1, got {every}")
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames: must be >= 1, got {max_frames}")
    path = Path(path)
    kept = 0
    index = -1
    cut = False
    with _open(path) as container:
        stream = _video_stream(container, path)
        info = _info(container, stream, path)
        stream.thread_type = "AUTO"  # FFmpeg's own frame threads
        for packet in container.demux(stream):
            cut = cut or packet.is_corrupt
            try:
                frames = packet.decode()
            except av.error.FFmpegError as error:
                if cut:  # the packet a cut ends in: said below, with the length
                    continue
                raise DataError(
                    path, f"frame {index + 1}: cannot decode ({_reason(error)}); the video is "
                    "truncated or corrupt"
                ) from error
            for frame in frames:
                index += 1
                if index % every:
                    continue
                yield index, frame.to_ndarray(format="rgb24")
                kept += 1
                if max_frames is not None and kept >= max_frames:
                    return
    problem = info.shortfall(index + 1)
    if problem is None and cut:
        problem = f"a packet after frame {index + 1} is corrupt (truncated?)"
    if problem is not None:
        raise DataError(path, f"cannot read video: {problem}")
    if index < 0:
        raise DataError(path, "the video has no frames")


def read_ahead(frames: Iterator[Any], depth: int) -> Iterator[Any]:
    """`frames`, decoded by a background thread up to `depth` items ahead of the consumer
    (FFmpeg releases the GIL while it decodes). Errors reach the consumer in order."""
    done = object()
    items: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in frames:
                while not stop.is_set():
                    try:
                        items.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            items.put((done, None))
        except BaseException as error:  # handed to the consumer, raised there
            items.put((done, error))

    thread = threading.Thread(target=produce, name="decode", daemon=True)
    thread.start()
    try:
        while True:
            item, error = items.get()
            if item is done:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        stop.set()
        thread.join()


class DepthVideoWriter:
    """Writes `<video>_depth.mp4`: each input frame beside its colourised inverse depth.

    H.264 (libx264, yuv420p) at `fps`; the picture is (H, 2 W) rounded down to even sides.
    The file is written under a temporary name and renamed into place by `close()`; `abort()`
    (or an exception inside `with`) deletes it, so no partial video is left behind.
    """

    def __init__(self, path: str | os.PathLike, fps: float):
        import av

        self.path = Path(path)
        self._temporary = self.path.with_name(f".{self.path.name}.partial{self.path.suffix}")
        self._container = av.open(str(self._temporary), "w")
        self._stream = self._container.add_stream(
            _ENCODER, rate=Fraction(fps).limit_denominator(1001 * 1000),
            options=dict(_ENCODER_OPTIONS),
        )
        self._stream.pix_fmt = "yuv420p"
        self._size: tuple[int, int] | None = None
        self.frames = 0

    def write(self, image: np.ndarray, colour: np.ndarray) -> None:
        """Appends one frame: `image` and `colour`, uint8 RGB (H, W, 3) of one size."""
        import av

        picture = np.concatenate([image, colour], axis=1)
        height, width = picture.shape[0] // 2 * 2, picture.shape[1] // 2 * 2
        if self._size is None:
            self._stream.height, self._stream.width = height, width
            self._size = (height, width)
        elif (height, width) != self._size:
            raise ValueError(f"{self.path}: frame {self.frames} is {height}x{width}, the "
                             f"video is {self._size[0]}x{self._size[1]}")
        frame = av.VideoFrame.from_ndarray(
            np.ascontiguousarray(picture[:height, :width]), format="rgb24")
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        """Flushes the encoder and renames the file into place."""
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()
        os.replace(self._temporary, self.path)

    def abort(self) -> None:
        """Closes and deletes the partial file."""
        try:
            self._container.close()
        finally:
            self._temporary.unlink(missing_ok=True)

    def __enter__(self) -> DepthVideoWriter:
        return self

    def __exit__(self, kind: Any, *rest: Any) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()
