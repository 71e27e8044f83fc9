r"""Command line of `damono_jax.prediction`: metric depth for your own images and videos.

```
python -m damono_jax.predict --export=WORKDIR/export --input=IMAGE|VIDEO|FOLDER|GLOB \
    --output=OUT [--save=npy,png16,color,ply,video] [--batch_size=4] \
    [--color_range=near,far] [--intrinsics=fx,fy,cx,cy] [--focal=fx] \
    [--every=N] [--max_frames=N] [--on_error=stop|skip]
```

For each image `NAME.ext` it writes, at the image's own resolution (the network output is
resized back as a disparity, bilinearly, then inverted, as in the evaluation):

- `NAME.npy`: float32 depth in metres;
- `NAME_depth16.png`: KITTI-style uint16 PNG, `round(depth * 256)`, depth clipped to
  `[0, 65535 / 256]` m (read back with `png / 256`);
- `NAME_color.png`: magma colour map of inverse depth, ONE range for the whole run
  (`--color_range` in metres, or the 5th/95th depth percentiles of the first batch), so a
  folder of video frames does not flicker;
- `NAME.ply`: coloured point cloud (OpenCV camera frame: x right, y down, z forward, metres)
  from `--intrinsics` of the original image, or KITTI-like defaults scaled to its size
  (fx = 0.58 W, fy = 1.92 H, cx = W / 2, cy = H / 2, Monodepth2's normalised K).

A video `NAME.mp4` (also .mov, .mkv, .avi; decoded by PyAV, which ships FFmpeg) gives the
same files for every `--every`-th frame (at most `--max_frames`), as `NAME/<frame index, 6
digits>.npy` etc., and with `--save=video` `NAME_depth.mp4`: each frame beside its colour
map (H.264, at the video's frame rate / `--every`, one colour range for the whole run). A
video read to its end must reach the length its container declares: a cut one is an error
(`cannot read video: it ends after frame 7 of 12 (truncated?)`), and nothing of it is left.

`prediction.json` in the output folder records the export, the colour range, the focal
scaling and the intrinsics used, per video its fps, declared length, frames kept and output
fps, the inputs skipped (`--on_error=skip`) and, when `--on_error=stop` stopped the run, the
input and reason (`stopped`; the inputs read before it are written). The model is trained
with metric source depth, so outputs are metres for a camera like the training one;
`--focal` (fx in pixels of the original image) rescales depth by
`(fx / W) / train_focal_x_normalized` for another camera.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from absl import flags

from damono_jax import cli
from damono_jax.errors import PredictError
from damono_jax.prediction import run, writers


def parse_floats(text: str, count: int, flag: str) -> tuple[float, ...]:
    """Parses `count` comma-separated finite floats; errors name the flag."""
    parts = [part.strip() for part in text.split(",")]
    try:
        values = tuple(float(part) for part in parts)
    except ValueError as error:
        raise PredictError(f"--{flag}={text}: expected {count} comma-separated numbers") from error
    if len(values) != count or not all(np.isfinite(values)):
        raise PredictError(f"--{flag}={text}: expected {count} comma-separated finite numbers")
    return values


def main(argv: Sequence[str]) -> None:
    """absl entry point: reads the flags below and calls `predict_images`."""
    del argv
    values = flags.FLAGS
    cli.require_folder_or_absent(values.output, "--output")  # before the model is loaded
    save = tuple(item.strip() for item in values.save.split(",") if item.strip())
    color_range = None
    if values.color_range:
        color_range = parse_floats(values.color_range, 2, "color_range")
    intrinsics = None
    if values.intrinsics:
        intrinsics = parse_floats(values.intrinsics, 4, "intrinsics")
    summary = run.predict_images(
        values.export,
        values.input,
        values.output,
        save=save,
        batch_size=values.batch_size,
        color_range=color_range,
        intrinsics=intrinsics,
        focal=values.focal,
        on_error=values.on_error,
        cmap=values.cmap,
        every=values.every,
        max_frames=values.max_frames,
    )
    frames = sum(record.get("frames_kept", 0) for record in summary["videos"].values())
    images = len(summary["written"]) - sum(1 for key in summary["written"]
                                           if key in summary["videos"])
    print(
        f"wrote {images + frames} predictions to {values.output} "
        f"(skipped {len(summary['skipped'])}); colour range {summary['color_range']} m"
    )


def define_flags() -> None:
    """Defines this CLI's absl flags (idempotent)."""
    if "export" in flags.FLAGS:
        return
    flags.DEFINE_string("export", None, "Export directory (damono_jax.export).", required=True)
    flags.DEFINE_string("input", None, "Image or video file, folder or glob.", required=True)
    flags.DEFINE_string("output", None, "Output folder.", required=True)
    flags.DEFINE_string("save", ",".join(writers.DEFAULT_SAVE),
                        f"Comma list of {writers.SAVE_FORMATS}.")
    flags.DEFINE_integer("batch_size", 4, "Images per network call.")
    flags.DEFINE_string("color_range", None, "near,far metres of the colour map (default: "
                        "5th/95th percentiles of the first batch).")
    flags.DEFINE_string("intrinsics", None, "fx,fy,cx,cy of the original images (PLY).")
    flags.DEFINE_float("focal", None, "fx of your camera (pixels, original image) to rescale "
                       "depth from the training camera.")
    flags.DEFINE_enum("on_error", "stop", ["stop", "skip"],
                      "Unreadable image or video: stop or skip.")
    flags.DEFINE_string("cmap", "magma", "Matplotlib colormap of the colour PNGs and video.")
    flags.DEFINE_integer("every", 1, "Videos: keep every Nth frame (0, N, 2N, ...).")
    flags.DEFINE_integer("max_frames", None, "Videos: keep at most this many frames of each.")


if __name__ == "__main__":
    define_flags()
    cli.run(main)
