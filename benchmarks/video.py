"""End-to-end video prediction: frames/s from an mp4 to per-frame npy + the depth video.

    python -m benchmarks.video [--height=192] [--width=640] [--frames=48] [--batch_size=4] \
        [--rounds=3] [--output=BENCHMARKS.md]

The video is the synthetic world (target domain) rendered at the export's input size and
encoded here with PyAV; the export has random weights (speed only). Measured side by side,
round-robin over `--rounds` after one warm-up round (compilation, codec start-up):

* end to end: `prediction.run.predict_images(save=("npy", "video"))`, decoding in its
  background thread ahead of the network, as users run it;
* decoding alone: `video.read_frames` of every frame;
* the network alone: `InferenceModel.predict_scaled_disparity` of every batch;
* encoding alone: `video.DepthVideoWriter` of every frame beside its colour map.

Each stage's median time is reported as a share of the end-to-end median. Decoding runs
beside the network, so the shares may sum to more than 100%; what they do not cover is
resizing, colour maps and writing the npy files.
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from benchmarks import timing
from benchmarks.inference import random_model
from damono_jax import export, video, visualization
from damono_jax.inference import batching
from damono_jax.prediction import run as prediction

SECTION_ID = "video"


def write_drive(path: Path, frames: int, height: int, width: int, fps: int) -> None:
    """`frames` consecutive synthetic-world frames (target domain) as an H.264 mp4."""
    import av

    from data_prep.synthetic_driving import render

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width, stream.pix_fmt = height, width, "yuv420p"
        for index in range(frames):
            image = render.render_example("target", 0, "test", index, height, width)["image"]
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def measure(args: argparse.Namespace, directory: Path) -> dict[str, list[float]]:
    """Wall seconds of every stage, one list per stage, `args.rounds` timed rounds."""
    model = random_model(args.height, args.width)
    export_dir = directory / "export"
    metadata = {**model.metadata, "class_names": []}
    export.save_export(export_dir, model.variables, metadata)
    drive = directory / "drive.mp4"
    write_drive(drive, args.frames, args.height, args.width, args.fps)
    frames = [frame for _, frame in video.read_frames(drive)]
    inputs = [model.prepare_image(frame) for frame in frames]
    colours = [visualization.colorize(np.full(frame.shape[:2], 0.1, np.float32), 0.0, 1.0)
               for frame in frames]

    def end_to_end(round_index: int) -> None:
        prediction.predict_images(export_dir, [drive], directory / f"out{round_index}",
                                  save=("npy", "video"), batch_size=args.batch_size,
                                  color_range=(2.0, 60.0), progress=False)

    def decode(_: int) -> None:
        for _ in video.read_frames(drive):
            pass

    def network(_: int) -> None:
        for batch in batching.batches(inputs, args.batch_size):
            model.predict_scaled_disparity(batching.stack_padded(batch, args.batch_size))

    def encode(round_index: int) -> None:
        with video.DepthVideoWriter(directory / f"encoded{round_index}.mp4", args.fps) as out:
            for frame, colour in zip(frames, colours, strict=True):
                out.write(frame, colour)

    stages: dict[str, Callable[[int], None]] = {
        "end to end": end_to_end, "decode": decode, "network": network, "encode": encode}
    for stage in stages.values():  # warm-up: compilation, codec start-up
        stage(-1)
    times: dict[str, list[float]] = {name: [] for name in stages}
    for round_index in range(args.rounds):
        for name, stage in stages.items():
            started = time.perf_counter()
            stage(round_index)
            times[name].append(time.perf_counter() - started)
    return times


def report(args: argparse.Namespace, times: dict[str, list[float]], command: str) -> str:
    total = statistics.median(times["end to end"])
    rows = []
    for name, values in times.items():
        median = statistics.median(values)
        rows.append((name, f"{median:.2f}", f"{min(values):.2f}",
                     f"{args.frames / median:.1f}", f"{100 * median / total:.0f}%"))
    lines = timing.report_header(
        f"Video prediction (`benchmarks/video.py`): an mp4 to npy + depth video, "
        f"{args.height}x{args.width}",
        command, timing.machine_description(),
        note=(f"{args.frames} frames at {args.fps} fps, batch {args.batch_size}, random "
              f"weights; median (and min) of {args.rounds} rounds after one warm-up round, "
              "the stages interleaved round-robin. Share: the stage's median as a part of "
              "the end-to-end median (decoding runs beside the network, so the shares may "
              "sum to more than 100%)."),
    )
    lines += ["", timing.markdown_table(
        ("stage", "median s", "min s", "frames/s", "share of end to end"), rows)]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--height", type=int, default=192)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--fps", type=int, default=10)
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--output", default="BENCHMARKS.md", help="Markdown file ('' = none).")
    args = parser.parse_args(argv)
    timing.parse_image_size(parser, f"{args.height},{args.width}", "--height,--width")
    for flag in ("frames", "fps", "batch_size", "rounds"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag}={getattr(args, flag)}: must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    command = "python -m benchmarks.video " + shlex.join(
        arg for arg in (sys.argv[1:] if argv is None else list(argv))
        if not arg.startswith("--output"))
    with tempfile.TemporaryDirectory() as directory:
        times = measure(args, Path(directory))
    body = report(args, times, command.strip())
    print(body)
    if args.output:
        timing.write_markdown_section(args.output, SECTION_ID, body)
        print(f"wrote section '{SECTION_ID}' of {args.output}")


if __name__ == "__main__":
    main()
