"""damono_jax.prediction on videos: frames in, per-frame depth and a depth video out, and
every bad video ending in one error line that names it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from damono_jax import errors, export, video
from damono_jax.prediction import run as prediction
from data_prep.synthetic_driving import render
from tests import helpers

INPUT_SIZE = (64, 96)
FRAMES = 12
FPS = 10
HEIGHT, WIDTH = 96, 320
REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("predict_video") / "export"
    metadata = {
        "model": {"upsample_mode": "bilinear"}, "input_size": list(INPUT_SIZE),
        "min_depth": 0.1, "max_depth": 100.0, "units": "metres", "class_names": ["road"],
        "step": 1, "train_focal_x_normalized": 0.58,
    }
    export.save_export(directory, helpers.random_depth_net_variables(INPUT_SIZE), metadata)
    return directory


@pytest.fixture(scope="module")
def drive(tmp_path_factory) -> Path:
    """12 consecutive frames of the synthetic world (target domain) at 96x320 as an mp4."""
    frames = [render.render_example("target", 0, "test", index, HEIGHT, WIDTH)["image"]
              for index in range(FRAMES)]
    path = tmp_path_factory.mktemp("videos") / "drive.mp4"
    helpers.write_video(path, frames)
    return path


def test_every_frame_is_predicted_as_that_frame_alone_would_be(export_dir, drive, tmp_path):
    summary = prediction.predict_images(
        export_dir, str(drive), tmp_path / "out", save=("npy", "color", "video"),
        batch_size=5, progress=False,
    )
    frames_dir = tmp_path / "out" / "drive"
    assert sorted(p.name for p in frames_dir.glob("*.npy")) == [
        f"{index:06d}.npy" for index in range(FRAMES)]
    record = summary["videos"][str(drive)]
    assert record["fps"] == FPS and record["frame_count"] == FRAMES
    assert record["frames_kept"] == FRAMES and record["output_fps"] == FPS
    # Frame k, decoded by the same library and saved losslessly, predicted as an image.
    decoded = helpers.decoded_frames(drive)
    still = tmp_path / "still"
    still.mkdir()
    for index in (0, 7, 11):
        Image.fromarray(decoded[index]).save(still / f"frame{index}.png")
    alone = prediction.predict_images(
        export_dir, str(still), tmp_path / "alone", save=("npy",),
        color_range=tuple(summary["color_range"]), progress=False)
    assert len(alone["written"]) == 3
    for index in (0, 7, 11):
        np.testing.assert_allclose(np.load(frames_dir / f"{index:06d}.npy"),
                                   np.load(tmp_path / "alone" / f"frame{index}.npy"), rtol=1e-6)
    # The side-by-side video: every frame, at the source's rate, input beside colour map.
    depth_video = tmp_path / "out" / "drive_depth.mp4"
    assert record["video"] == str(depth_video)
    info = video.probe(depth_video)
    assert (info.height, info.width, info.fps, info.codec) == (HEIGHT, 2 * WIDTH, FPS, "h264")
    written = helpers.decoded_frames(depth_video)
    assert len(written) == FRAMES
    # Its left half is the input frame, its right half the frame's colour map: H.264 at CRF
    # 18 with 2x2-subsampled chroma keeps them a few levels apart (another frame's depth,
    # or another colour range, is tens of levels away).
    assert np.abs(written[3][:, :WIDTH].astype(int) - decoded[3].astype(int)).mean() < 3
    colour = np.asarray(Image.open(frames_dir / "000003_color.png"))
    assert np.abs(written[3][:, WIDTH:].astype(int) - colour.astype(int)).mean() < 6
    other = np.asarray(Image.open(frames_dir / "000009_color.png"))
    assert np.abs(written[3][:, WIDTH:].astype(int) - other.astype(int)).mean() > 10
    assert not list((tmp_path / "out").glob(".*partial*"))
    recorded = json.loads((tmp_path / "out" / "prediction.json").read_text())
    assert recorded["videos"][str(drive)]["frames_kept"] == FRAMES


def test_every_nth_frame_and_max_frames(export_dir, drive, tmp_path):
    summary = prediction.predict_images(
        export_dir, [drive], tmp_path / "every", save=("npy", "video"), every=5,
        progress=False)
    assert sorted(p.name for p in (tmp_path / "every" / "drive").iterdir()) == [
        "000000.npy", "000005.npy", "000010.npy"]  # ceil(12 / 5) frames
    record = summary["videos"][str(drive)]
    assert record["frames_kept"] == 3 and record["output_fps"] == FPS / 5
    info = video.probe(tmp_path / "every" / "drive_depth.mp4")
    assert info.fps == pytest.approx(FPS / 5) and len(helpers.decoded_frames(info.path)) == 3
    capped = prediction.predict_images(
        export_dir, [drive], tmp_path / "capped", save=("npy",), every=2, max_frames=4,
        progress=False)
    assert capped["videos"][str(drive)]["frames_kept"] == 4
    assert sorted(p.name for p in (tmp_path / "capped" / "drive").iterdir()) == [
        "000000.npy", "000002.npy", "000004.npy", "000006.npy"]


def test_a_folder_mixing_images_and_videos(export_dir, drive, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "clip.mp4").write_bytes(drive.read_bytes())
    Image.fromarray(helpers.decoded_frames(drive)[0]).save(folder / "still.png")
    summary = prediction.predict_images(export_dir, str(folder), tmp_path / "out",
                                        save=("npy",), max_frames=2, progress=False)
    assert sorted(summary["written"]) == [str(folder / "clip.mp4"), str(folder / "still.png")]
    assert (tmp_path / "out" / "still.npy").is_file()
    assert sorted(p.name for p in (tmp_path / "out" / "clip").iterdir()) == [
        "000000.npy", "000001.npy"]


def _bad_videos(drive: Path, directory: Path) -> dict[str, tuple[Path, str]]:
    """Each bad input and the words its error must hold."""
    truncated = directory / "truncated.mp4"
    truncated.write_bytes(drive.read_bytes()[: drive.stat().st_size // 2])
    not_video = directory / "notes.mp4"
    not_video.write_text("these are my notes, not a video\n")
    # Headers and not one frame: the AVI keeps its (MJPEG) video stream, the mp4 keeps none.
    empty, headers_only = directory / "empty.avi", directory / "headers_only.mp4"
    for path, codec, pixels in ((empty, "mjpeg", "yuvj420p"),
                                (headers_only, "libx264", "yuv420p")):
        with av.open(str(path), "w") as output:
            stream = output.add_stream(codec, rate=FPS)
            stream.height, stream.width, stream.pix_fmt = 32, 32, pixels
            output.start_encoding()
    # An AVI whose stream says it is in a codec that FFmpeg has no decoder for: an MJPEG
    # AVI with its fourcc overwritten.
    unknown = directory / "unknown.avi"
    helpers.write_video(unknown, helpers.decoded_frames(drive)[:2], codec="mjpeg", container="avi")
    unknown.write_bytes(unknown.read_bytes().replace(b"MJPG", b"QQQQ"))
    return {
        "truncated": (truncated, f"{truncated}: cannot read video"),
        "not a video": (not_video, f"{not_video}: cannot read video"),
        "no frames": (empty, f"{empty}: the video has no frames"),
        "no video stream": (headers_only, f"{headers_only}: has no video stream"),
        "unknown codec": (unknown, f"{unknown}: unsupported video codec"),
    }


def test_bad_videos_fail_naming_the_file_and_leave_nothing(export_dir, drive, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    for name, (path, message) in _bad_videos(drive, bad).items():
        output = tmp_path / name.replace(" ", "_")
        with pytest.raises(errors.DataError, match=message.replace(".", r"\.")):
            prediction.predict_images(export_dir, [path], output, save=("npy", "video"),
                                      progress=False)
        assert not output.exists(), name
    with pytest.raises(errors.PredictError, match="--every: must be >= 1, got 0"):
        prediction.predict_images(export_dir, [drive], tmp_path / "zero", every=0)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(bad / "still.png")
    with pytest.raises(errors.PredictError, match="--save=video: none of the inputs is a video"):
        prediction.predict_images(export_dir, [bad / "still.png"], tmp_path / "v",
                                  save=("video",))
    assert not (tmp_path / "zero").exists()
    # --on_error=skip: the bad ones are recorded, the good one is written.
    skipped = prediction.predict_images(
        export_dir, [drive, *(path for path, _ in _bad_videos(drive, bad).values())],
        tmp_path / "skip", save=("npy", "video"), max_frames=2, on_error="skip",
        progress=False)
    assert sorted(Path(p).name for p in skipped["skipped"]) == [
        "empty.avi", "headers_only.mp4", "notes.mp4", "truncated.mp4", "unknown.avi"]
    assert sorted(p.name for p in (tmp_path / "skip").iterdir()) == [
        "drive", "drive_depth.mp4", "prediction.json"]


@pytest.fixture(scope="module")
def cut_videos(tmp_path_factory) -> dict[str, tuple[Path, str]]:
    """The drive as an mp4 with its index first (`faststart`) and as an mkv, each cut to 70%
    of its bytes, and the mp4 with its middle packets scrambled; with the error each gives."""
    frames = [render.render_example("target", 0, "test", index, HEIGHT, WIDTH)["image"]
              for index in range(FRAMES)]
    directory = tmp_path_factory.mktemp("cut")
    mp4, mkv = directory / "fast.mp4", directory / "drive.mkv"
    helpers.write_video(mp4, frames, options={"movflags": "faststart"})
    helpers.write_video(mkv, frames)
    cut_mp4, cut_mkv = helpers.cut_video(mp4), helpers.cut_video(mkv)
    middle = helpers.corrupt_middle(mp4, "middle.mp4")
    return {
        "mp4": (cut_mp4, rf"{cut_mp4}: cannot read video: it ends after frame \d+ of 12 "
                         r"\(truncated\?\)"),
        "mkv": (cut_mkv, rf"{cut_mkv}: cannot read video: it ends after frame \d+ of about 12 "
                         r"\(1\.20 s at 10 fps; truncated\?\)"),
        "middle": (middle, rf"{middle}: (frame \d+: cannot decode|cannot read video)"),
        "whole mp4": (mp4, ""),
        "whole mkv": (mkv, ""),
    }


def test_a_cut_video_is_an_error_and_leaves_nothing(export_dir, cut_videos, tmp_path):
    for name in ("whole mp4", "whole mkv"):
        assert len(list(video.read_frames(cut_videos[name][0]))) == FRAMES
    for name in ("mp4", "mkv", "middle"):
        path, message = cut_videos[name]
        output = tmp_path / name
        with pytest.raises(errors.DataError, match=message) as raised:
            prediction.predict_images(export_dir, [path], output, save=("npy", "video"),
                                      batch_size=2, progress=False)
        assert not output.exists(), name
        if name != "middle":  # the cut keeps some frames, not all
            assert 0 < int(str(raised.value).split("after frame ")[1].split()[0]) < FRAMES


def test_skip_lists_a_cut_video_and_stop_keeps_what_was_read_before(export_dir, drive,
                                                                    cut_videos, tmp_path):
    cut_mp4, cut_mkv = cut_videos["mp4"][0], cut_videos["mkv"][0]
    skipped = prediction.predict_images(
        export_dir, [cut_mp4, drive, cut_mkv], tmp_path / "skip", save=("npy", "video"),
        batch_size=4, on_error="skip", progress=False)
    assert sorted(skipped["skipped"]) == sorted([str(cut_mp4), str(cut_mkv)])
    assert re.fullmatch(cut_videos["mp4"][1], skipped["skipped"][str(cut_mp4)])
    assert re.fullmatch(cut_videos["mkv"][1], skipped["skipped"][str(cut_mkv)])
    assert sorted(p.name for p in (tmp_path / "skip").iterdir()) == [
        "drive", "drive_depth.mp4", "prediction.json"]
    assert list(skipped["written"]) == [str(drive)]
    assert skipped["videos"][str(cut_mp4)]["frames_kept"] == 0
    assert skipped["stopped"] is None

    # Stopped by the cut video: the drive read before it is written, the cut one is not,
    # and prediction.json says what was written and what stopped the run.
    with pytest.raises(errors.DataError, match=cut_videos["mkv"][1]):
        prediction.predict_images(export_dir, [drive, cut_mkv], tmp_path / "stop",
                                  save=("npy", "video"), batch_size=5, progress=False)
    assert sorted(p.name for p in (tmp_path / "stop").iterdir()) == [
        "drive", "drive_depth.mp4", "prediction.json"]
    assert len(list((tmp_path / "stop" / "drive").iterdir())) == FRAMES
    record = json.loads((tmp_path / "stop" / "prediction.json").read_text())
    assert list(record["written"]) == [str(drive)]
    assert record["stopped"]["input"] == str(cut_mkv)
    assert re.fullmatch(cut_videos["mkv"][1], record["stopped"]["reason"])


def test_a_video_that_declares_no_length_is_read_to_its_end_and_says_so(export_dir, tmp_path):
    path = tmp_path / "live.mkv"
    frames = [np.full((32, 64, 3), 20 * index, np.uint8) for index in range(5)]
    helpers.write_video(path, frames, container="matroska", options={"live": "1"})
    info = video.probe(path)
    assert (info.frame_count, info.duration, info.length_declared_by) == (0, 0.0, "nothing")
    summary = prediction.predict_images(export_dir, [path], tmp_path / "out", save=("npy",),
                                        progress=False)
    record = summary["videos"][str(path)]
    assert record["frames_kept"] == 5 and record["length_declared_by"] == "nothing"
    assert record["note"].startswith("the container declares no length: read to its end")


def test_video_length_checks():
    info = video.VideoInfo("v.mp4", "h264", 64, 64, fps=10.0, frame_count=12, duration=1.2)
    assert info.shortfall(12) is None and info.shortfall(13) is None
    assert info.shortfall(11) == "it ends after frame 11 of 12 (truncated?)"
    by_duration = video.VideoInfo("v.mkv", "h264", 64, 64, fps=30.0, frame_count=0,
                                  duration=10.0)
    assert by_duration.declared_frames == 300 and by_duration.length_declared_by == "duration"
    assert by_duration.shortfall(294) is None  # 2% of 300: a variable frame rate's blur
    assert by_duration.shortfall(293) == (
        "it ends after frame 293 of about 300 (10.00 s at 30 fps; truncated?)")
    short = video.VideoInfo("v.mkv", "h264", 64, 64, fps=10.0, frame_count=0, duration=1.2)
    assert short.shortfall(11) is None and short.shortfall(10) is not None  # at least 1 frame
    none = video.VideoInfo("v.mkv", "h264", 64, 64, fps=10.0, frame_count=0, duration=0.0)
    assert none.declared_frames == 0 and none.shortfall(1) is None


def test_command_line_on_a_video(export_dir, drive, cut_videos, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "JAX_PLATFORMS": "cpu"}
    base = [sys.executable, "-m", "damono_jax.predict", f"--export={export_dir}"]
    ok = subprocess.run(
        [*base, f"--input={drive}", f"--output={tmp_path / 'out'}", "--save=npy,video",
         "--every=4"], capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=300)
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert sorted(p.name for p in (tmp_path / "out" / "drive").iterdir()) == [
        "000000.npy", "000004.npy", "000008.npy"]
    assert (tmp_path / "out" / "drive_depth.mp4").is_file()
    zero = subprocess.run(
        [*base, f"--input={drive}", f"--output={tmp_path / 'zero'}", "--every=0"],
        capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=300)
    assert zero.returncode == 2  # a bad flag is a usage error (cli: exit 2)
    assert zero.stderr.strip().splitlines()[-1] == "error: --every: must be >= 1, got 0"
    assert not (tmp_path / "zero").exists()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(drive.read_bytes()[:2000])
    truncated = subprocess.run(
        [*base, f"--input={cut}", f"--output={tmp_path / 'cut'}"],
        capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=300)
    assert truncated.returncode == 1, truncated.stderr[-2000:]
    assert truncated.stderr.strip().splitlines()[-1].startswith(f"error: {cut}: cannot read "
                                                                "video")
    assert "Traceback" not in truncated.stderr and not (tmp_path / "cut").exists()
    # The mp4 with its index first, cut: the index promises 12 frames, 6 or so are there.
    cut, message = cut_videos["mp4"]
    result = subprocess.run(
        [*base, f"--input={cut}", f"--output={tmp_path / 'fast'}", "--save=npy,video"],
        capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=300)
    assert result.returncode == 1, result.stderr[-2000:]
    assert re.fullmatch(f"error: {message}", result.stderr.strip().splitlines()[-1])
    assert not (tmp_path / "fast").exists()
