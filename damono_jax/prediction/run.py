"""The batched prediction loop: `predict_images(export_dir, sources, output_dir)`.

Images and video frames are read (`inputs`, `video`) by a background thread ahead of the
network, resized to the export's input size, batched with padding (one compilation), and the
network's disparity is resized back to each image's own resolution, bilinearly, then
inverted, as in the evaluation. The files written per image or frame are `writers'`, the
side-by-side depth video `video.DepthVideoWriter`'s; the command line and what each file
holds are described in `damono_jax.predict`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from damono_jax import cli, evaluation, files, video
from damono_jax.errors import DataError, DiskFullError, PredictError
from damono_jax.inference import batching
from damono_jax.inference import model as inference_model
from damono_jax.prediction import inputs, writers

AUTO_RANGE_PERCENTILES = (5.0, 95.0)
# Frames decoded ahead of the network, in batches.
READ_AHEAD_BATCHES = 2
FRAME_NAME = "{index:06d}"  # a video frame's file stem inside `<video stem>/`


@dataclasses.dataclass(frozen=True)
class _Frame:
    """One image, or one frame of a video (`index` set), ready for the network."""

    source: Path
    image: np.ndarray
    index: int | None = None


@dataclasses.dataclass(frozen=True)
class _Failed:
    """A source that cannot be read; a video may have yielded frames first."""

    source: Path
    error: PredictError | DataError


class _OutOfSpace(Exception):
    """The disk filled while the outputs of `unwritten[0]` were written (`error` names the
    file); `sources`: the sources of it and of the frames predicted after it, none written."""

    def __init__(self, unwritten: Sequence[_Frame], error: DiskFullError):
        super().__init__(str(error))
        self.sources = list(dict.fromkeys(frame.source for frame in unwritten))
        self.error = error


@dataclasses.dataclass(frozen=True)
class _VideoDone:
    """Every kept frame of a video has been yielded."""

    source: Path


def _video_record(info: video.VideoInfo) -> dict[str, Any]:
    """What prediction.json says about a video before it is read."""
    record = {"fps": info.fps, "frame_count": info.frame_count, "duration_s": info.duration,
              "length_declared_by": info.length_declared_by, "codec": info.codec,
              "size": [info.height, info.width]}
    if not info.declared_frames:
        record["note"] = ("the container declares no length: read to its end, so a cut "
                          "could not be told from the end")
    return record


def _stream(paths: Sequence[Path], every: int, max_frames: int | None,
            videos: dict[str, dict[str, Any]]) -> Iterator[_Frame | _Failed | _VideoDone]:
    """The sources' images and frames in order; a source that cannot be read becomes a
    `_Failed` (after the frames a video yielded first). Fills `videos` (path -> what the
    container says) as each video is opened."""
    for path in paths:
        try:
            if not video.is_video(path):
                yield _Frame(path, inputs.read_image(path))
                continue
            videos[str(path)] = _video_record(video.probe(path))
            for index, frame in video.read_frames(path, every=every, max_frames=max_frames):
                yield _Frame(path, frame, index)
            yield _VideoDone(path)
        except (PredictError, DataError) as error:
            yield _Failed(path, error)




def _check_save(save: Sequence[str]) -> tuple[str, ...]:
    save = tuple(save)
    unknown = [item for item in save if item not in writers.SAVE_FORMATS]
    if unknown or not save:
        raise PredictError(
            f"--save: expected a non-empty subset of {writers.SAVE_FORMATS}, got {save}"
        )
    return save


def _output_names(paths: Sequence[Path]) -> None:
    """Every source writes under its stem: two sources with one stem are an error."""
    stems: dict[str, Path] = {}
    for path in paths:
        if path.stem in stems:
            raise PredictError(
                f"{path}: same output name '{path.stem}' as {stems[path.stem]}; "
                "predict them into different --output folders"
            )
        stems[path.stem] = path


def _expected_frames(paths: Sequence[Path], every: int, max_frames: int | None) -> int | None:
    """The progress bar's total: every image, and each video's kept frames as its container
    records them (None when a video records no count or does not open: its error comes
    from the stream, in order)."""
    total = 0
    for path in paths:
        if not video.is_video(path):
            total += 1
            continue
        try:
            info = video.probe(path)
        except DataError:
            return None
        if not info.declared_frames:
            return None
        total += info.kept_frames(every, max_frames)
    return total


def predict_images(
    export_dir: str | os.PathLike,
    sources: str | Sequence[str | os.PathLike],
    output_dir: str | os.PathLike,
    *,
    save: Sequence[str] = writers.DEFAULT_SAVE,
    batch_size: int = 4,
    color_range: tuple[float, float] | None = None,
    intrinsics: tuple[float, float, float, float] | None = None,
    focal: float | None = None,
    on_error: str = "stop",
    cmap: str = "magma",
    every: int = 1,
    max_frames: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Predicts metric depth for images and videos and writes the requested files.

    Args:
      export_dir: an export written by `damono_jax.export.save_export`.
      sources: an image or video path, folder or glob (`inputs.list_inputs`), or a list of
        paths.
      output_dir: created if needed; an image's files are named after its stem, a video
        frame's `<video stem>/<frame index, 6 digits>*`, its depth video `<stem>_depth.mp4`.
      save: subset of `writers.SAVE_FORMATS`; "video" needs a video among the sources.
      batch_size: images per network call (the last batch is padded: one compilation).
      color_range: `(near, far)` metres for the colour map; None = 5th/95th depth
        percentiles of the first batch. Either way one range is used for every image.
      intrinsics: `(fx, fy, cx, cy)` of the original images for the PLY; None = KITTI-like.
      focal: fx (pixels, original image) of the user's camera; rescales depth by
        `(focal / W) / metadata["train_focal_x_normalized"]`. None = no rescaling.
      on_error: "stop" raises on an unreadable image or video; "skip" logs it and goes on.
        Either way nothing of that input is left (a video's frames written before its
        error are deleted), and the inputs read before it are predicted. After a stop,
        `prediction.json` (when anything was written) lists what was, and `stopped` says
        which input stopped the run and why.
      cmap: matplotlib colormap of the colour PNGs and the depth video.
      every: keep every `every`-th frame of a video (frames 0, every, 2 every, ...).
      max_frames: keep at most this many frames of each video (None = all).
      progress: show a progress bar (frames, and frames per second).

    Returns:
      A summary: `written` (input -> list of files), `skipped` (input -> reason),
      `stopped` (None, or the input and reason that stopped the run),
      `videos` (input -> fps, frame counts, output fps, the depth video), `color_range`,
      `focal_scale`, and the rest of what `prediction.json` records.
    """
    save = _check_save(save)
    if on_error not in ("stop", "skip"):
        raise PredictError(f"--on_error: expected 'stop' or 'skip', got {on_error!r}")
    if batch_size < 1:
        raise PredictError(f"--batch_size: must be >= 1, got {batch_size}")
    if every < 1:
        raise PredictError(f"--every: must be >= 1, got {every}")
    if max_frames is not None and max_frames < 1:
        raise PredictError(f"--max_frames: must be >= 1, got {max_frames}")
    if color_range is not None and not 0 < color_range[0] < color_range[1]:
        raise PredictError(f"--color_range: need 0 < near < far metres, got {color_range}")
    if intrinsics is not None and (intrinsics[0] <= 0 or intrinsics[1] <= 0):
        raise PredictError(f"--intrinsics: fx and fy must be > 0, got {intrinsics}")
    if focal is not None and focal <= 0:
        raise PredictError(f"--focal: must be > 0 pixels, got {focal}")
    paths = inputs.list_inputs(sources) if isinstance(sources, str) else [Path(p) for p in sources]
    if not paths:
        raise PredictError("no input images")
    _output_names(paths)
    if "video" in save and not any(video.is_video(path) for path in paths):
        raise PredictError(f"--save=video: none of the inputs is a video "
                           f"({', '.join(video.VIDEO_EXTENSIONS)})")
    cli.require_folder_or_absent(output_dir, "--output")
    model = inference_model.load_export(export_dir)
    train_focal = model.metadata.get("train_focal_x_normalized")
    if focal is not None and train_focal is None:
        raise PredictError(
            f"--focal: {export_dir} records no train_focal_x_normalized, so depth cannot be "
            "rescaled to another focal length"
        )
    # --output is created only once there is something to write, so a run that stops on
    # its first input leaves nothing behind.
    output_dir = Path(output_dir)
    output_existed = output_dir.exists()

    written: dict[str, list[str]] = {}
    skipped: dict[str, str] = {}
    focal_scales: dict[str, float] = {}
    videos: dict[str, dict[str, Any]] = {}
    video_writers: dict[str, video.DepthVideoWriter] = {}
    pending: list[_Frame] = []
    per_frame = [item for item in save if item != "video"]  # the depth video is per source

    def predict_batch() -> None:
        nonlocal color_range
        if not pending:
            return
        network_inputs = batching.stack_padded(
            [model.prepare_image(frame.image) for frame in pending], batch_size
        )
        scaled_disparity = model.predict_scaled_disparity(network_inputs)
        finite = np.isfinite(scaled_disparity[: len(pending)]).all(axis=(1, 2))
        if not finite.all():
            raise PredictError(
                f"{export_dir}: the network's output for {pending[int(np.argmin(finite))].source} "
                "is NaN or Inf; the export's variables are corrupt or diverged"
            )
        depths = []
        for index, frame in enumerate(pending):
            height, width = frame.image.shape[:2]
            disparity = evaluation.resize_bilinear(scaled_disparity[index], height, width)
            depth = (1.0 / disparity).astype(np.float32)
            scale = 1.0 if focal is None else (focal / width) / train_focal
            focal_scales[str(frame.source)] = scale
            depths.append(depth * np.float32(scale))
        if color_range is None:
            pixels = np.concatenate([depth.ravel() for depth in depths])
            near, far = np.percentile(pixels, AUTO_RANGE_PERCENTILES)
            color_range = (float(near), float(max(far, near * (1 + 1e-6))))
        output_dir.mkdir(parents=True, exist_ok=True)
        for index, (frame, depth) in enumerate(zip(pending, depths, strict=True)):
            try:
                with files.naming_a_full_disk(output_dir, f"the outputs of {frame.source}"):
                    _write_frame(frame, depth)
            except DiskFullError as full:
                raise _OutOfSpace(pending[index:], full) from full
            bar.update(1)
        pending.clear()

    def _write_frame(frame: _Frame, depth: np.ndarray) -> None:
        key = str(frame.source)
        if frame.index is None:
            directory, stem = output_dir, frame.source.stem
        else:
            directory = output_dir / frame.source.stem
            stem = FRAME_NAME.format(index=frame.index)
            directory.mkdir(exist_ok=True)
            videos[key]["frames_kept"] = videos[key].get("frames_kept", 0) + 1
        to_video = frame.index is not None and "video" in save
        # One colour map per frame, for its PNG and its video frame alike.
        colour = (writers.colour_map(depth, color_range, cmap)
                  if to_video or "color" in save else None)
        written.setdefault(key, []).extend(writers.write_outputs(
            directory, stem, frame.image, depth, per_frame, colour, intrinsics))
        if to_video:
            if key not in video_writers:
                video_writers[key] = video.DepthVideoWriter(
                    output_dir / f"{frame.source.stem}_depth.mp4", videos[key]["fps"] / every)
            video_writers[key].write(frame.image, colour)

    def finish_video(source: Path, complete: bool) -> None:
        key = str(source)
        record = videos.get(key)
        if record is not None:
            record.update(every=every, max_frames=max_frames, output_fps=record["fps"] / every)
            record.setdefault("frames_kept", 0)
        writer = video_writers.pop(key, None)
        if writer is None:
            return
        if complete:
            writer.close()
            record["video"] = str(writer.path)
            written[key].append(str(writer.path))
        else:
            writer.abort()

    def discard(source: Path) -> None:
        """Nothing of `source` is left: its frames not yet predicted, its depth video, and
        the files its frames wrote."""
        key = str(source)
        pending[:] = [frame for frame in pending if frame.source != source]
        writer = video_writers.pop(key, None)
        if writer is not None:
            writer.abort()
        for name in written.pop(key, []):
            Path(name).unlink(missing_ok=True)
        frames_dir = output_dir / source.stem
        if key in videos:
            videos[key]["frames_kept"] = 0
            if frames_dir.is_dir() and not any(frames_dir.iterdir()):
                frames_dir.rmdir()
        focal_scales.pop(key, None)

    stopped: _Failed | None = None
    stream = video.read_ahead(_stream(paths, every, max_frames, videos),
                              depth=READ_AHEAD_BATCHES * batch_size)
    # The bar closes before an error propagates, so that the error line is the last line.
    with tqdm(total=_expected_frames(paths, every, max_frames), desc="predict",
              unit="frame", disable=not progress) as bar:
        try:
            for item in stream:
                if isinstance(item, _Frame):
                    pending.append(item)
                    if len(pending) == batch_size:
                        predict_batch()
                    continue
                if isinstance(item, _Failed):
                    discard(item.source)
                predict_batch()  # a video's last frames, or the inputs read before a failure
                if isinstance(item, _VideoDone):
                    finish_video(item.source, complete=True)
                elif on_error == "stop":
                    stopped = item
                    break
                else:
                    logging.warning("skipping %s", item.error)
                    skipped[str(item.source)] = str(item.error)
                    finish_video(item.source, complete=False)
                    bar.update(1)
            predict_batch()
        except _OutOfSpace as full:
            # Stopped by a full disk: nothing is left of the input being written, nor of the
            # inputs read after it (not written yet).
            stopped = _Failed(full.sources[0], full.error)
            for source in full.sources:
                discard(source)
        finally:
            stream.close()
            for key in list(video_writers):
                video_writers.pop(key).abort()

    summary = {
        "export": str(Path(export_dir).absolute()),
        "units": "metres",
        "save": list(save),
        "color_range": list(color_range) if color_range is not None else None,
        "color_map": f"{cmap} of inverse depth, 1/far..1/near",
        "png16": "uint16 round(depth * 256), depth clipped to [0, 255.996] m",
        "focal": focal,
        "train_focal_x_normalized": train_focal,
        "focal_scale": focal_scales,
        "intrinsics": list(intrinsics) if intrinsics is not None else "kitti-like default",
        "videos": videos,
        "written": written,
        "skipped": skipped,
        "stopped": None if stopped is None else {"input": str(stopped.source),
                                                 "reason": str(stopped.error)},
    }
    if stopped is not None and not written:
        # Nothing was written: a run that stops on its first input leaves nothing behind.
        if not output_existed and output_dir.is_dir() and not any(output_dir.iterdir()):
            output_dir.rmdir()
        raise stopped.error
    output_dir.mkdir(parents=True, exist_ok=True)
    try:
        files.atomic_write(
            output_dir / "prediction.json",
            lambda p: p.write_text(json.dumps(summary, indent=2) + "\n"),
        )
    except DiskFullError:
        if stopped is None or not isinstance(stopped.error, DiskFullError):
            raise
        # The disk that stopped the run has no room for the record either: the error line
        # names the output that did not fit, the outputs on disk are each complete.
        logging.warning("%s: no room for prediction.json either", output_dir)
    if stopped is not None:
        raise stopped.error
    return summary
