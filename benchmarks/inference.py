"""Inference speed of the exported DepthNet: batch-1 latency and batch-16 throughput.

    python -m benchmarks.inference [--export=DIR] [--height=192] [--width=640]
        [--batch_sizes=1,16] [--num_steps=20] [--output=BENCHMARKS.md]

Times the jitted network call of `damono_jax.export.InferenceModel` (sigmoid disparity from
float32 NHWC images already on the device, `jax.block_until_ready`), following
`benchmarks.timing`: warm-up calls first (compilation, timed separately as "first call"),
then >= 20 timed calls per batch size, interleaved round-robin, median reported. Without
`--export` the network has random weights (speed does not depend on the values). The
table also gives XLA's FLOPs per image, the first-call (compile) time, the peak host
memory and, with `--host_timing`, the host-to-host time of `predict_depth` on numpy input
(what `damono_jax.predict` pays per batch besides image decoding and resizing). The
results replace the `inference` section of `--output`.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import timing
from damono_jax import export
from damono_jax.models import DepthNet

SECTION_ID = "inference"


def random_model(height: int, width: int) -> export.InferenceModel:
    """An InferenceModel with random DepthNet weights (built from shapes, no init compile)."""
    images = jax.ShapeDtypeStruct((1, height, width, 3), jnp.float32)
    abstract = jax.eval_shape(lambda x: DepthNet().init(jax.random.key(0), x), images)
    rng = np.random.default_rng(0)

    def fill(path, leaf):
        if "var" in jax.tree_util.keystr(path):
            return rng.uniform(0.5, 1.5, leaf.shape).astype(np.float32)
        return (0.05 * rng.standard_normal(leaf.shape)).astype(np.float32)

    variables = jax.tree_util.tree_map_with_path(fill, abstract)
    metadata = {
        "model": {"upsample_mode": "bilinear"},
        "input_size": [height, width],
        "min_depth": 0.1,
        "max_depth": 100.0,
        "units": "metres",
        "class_names": [],
        "step": 0,
    }
    return export.InferenceModel(metadata, variables)


def run(
    model: export.InferenceModel, height: int, width: int, batch_sizes: Sequence[int],
    num_steps: int, host_timing: bool = False,
) -> list[list[str]]:
    """Measures every batch size; returns the markdown table rows."""
    network = export._jitted_sigmoid_disparity(model.network)
    variables = model._device_variables
    rng = np.random.default_rng(1)
    host_images = {
        b: rng.random((b, height, width, 3), dtype=np.float32) for b in batch_sizes
    }
    device_images = {b: jax.device_put(images) for b, images in host_images.items()}
    first_call_s, flops = {}, {}
    for batch in batch_sizes:
        start = time.perf_counter()
        compiled = network.lower(variables, device_images[batch]).compile()
        jax.block_until_ready(compiled(variables, device_images[batch]))
        first_call_s[batch] = time.perf_counter() - start
        flops[batch] = timing.xla_flops(compiled)
    device_steps = {
        f"network b{b}": (lambda b=b: jax.block_until_ready(network(variables, device_images[b])))
        for b in batch_sizes
    }
    host_steps = {
        f"predict_depth b{b}": (lambda b=b: model.predict_depth(host_images[b]))
        for b in batch_sizes
        if host_timing
    }
    times = timing.time_interleaved({**device_steps, **host_steps}, num_steps=num_steps)
    peak = timing.measure_host_peak_memory(
        lambda: jax.block_until_ready(network(variables, device_images[max(batch_sizes)]))
    )
    rows = []
    for batch in batch_sizes:
        device = times[f"network b{batch}"]
        host = times.get(f"predict_depth b{batch}")
        rows.append([
            str(batch),
            f"{height}x{width}",
            f"{device.median_s * 1e3:.1f}",
            f"{device.min_s * 1e3:.1f}",
            f"{device.spread:.2f}",
            f"{batch / device.median_s:.1f}",
            f"{host.median_s * 1e3:.1f}" if host else "not timed",
            f"{first_call_s[batch]:.1f}",
            f"{flops[batch] / batch / 1e9:.2f}",
        ])
    rows.append([
        f"peak host RSS at b{max(batch_sizes)}", "", "", "", "", "", "", "",
        timing.format_bytes(peak.peak_bytes),
    ])
    return rows


HEADER = (
    "batch", "input", "median ms/call", "min ms/call", "IQR/median", "images/s",
    "predict_depth ms (host numpy in/out)", "first call s (compile)", "GFLOPs/image (XLA)",
)


def main(argv: Sequence[str] | None = None) -> None:
    """Parses the flags, measures, prints and writes the `inference` section."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--export", default=None, help="Export dir (default: random weights).")
    parser.add_argument("--height", type=int, default=192)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--batch_sizes", default="1,16")
    parser.add_argument("--num_steps", type=int, default=timing.MIN_TIMED_STEPS)
    parser.add_argument("--output", default="BENCHMARKS.md", help="Markdown file ('' = none).")
    parser.add_argument("--host_timing", action="store_true",
                        help="Also time predict_depth on host numpy arrays (doubles the run).")
    parser.add_argument("--note", default="", help="Free text put under the table.")
    args = parser.parse_args(argv)
    try:
        batch_sizes = [int(part) for part in args.batch_sizes.split(",")]
    except ValueError:
        parser.error(f"--batch_sizes={args.batch_sizes}: expected comma-separated integers")
    if not batch_sizes or min(batch_sizes) < 1:
        parser.error(f"--batch_sizes={args.batch_sizes}: batch sizes must be >= 1")
    if args.export:
        model = export.load_export(args.export)
        if model.input_size != (args.height, args.width):
            print(
                f"note: export input size {model.input_size}, timing at "
                f"{args.height}x{args.width} as asked",
                file=sys.stderr,
            )
    else:
        model = random_model(args.height, args.width)
    rows = run(model, args.height, args.width, batch_sizes, args.num_steps, args.host_timing)
    machine = timing.machine_description()
    recorded = [
        arg for arg in (argv if argv is not None else sys.argv[1:])
        if not arg.startswith(("--output", "--note"))
    ]
    command = "python -m benchmarks.inference " + " ".join(recorded)
    body = "\n".join([
        "## Inference (DepthNet, `benchmarks/inference.py`)",
        "",
        f"Command: `{command.strip()}`  ",
        f"Weights: {'export ' + args.export if args.export else 'random (speed only)'}; "
        f"float32; {args.num_steps} timed calls per variant after warm-up, interleaved.",
        "",
        timing.markdown_table(HEADER, rows),
        "",
        "Machine: " + "; ".join(f"{key} {value}" for key, value in machine.items() if value),
        "",
        args.note,
    ])
    print(body)
    if args.output:
        timing.write_markdown_section(args.output, SECTION_ID, body)
        print(f"wrote section '{SECTION_ID}' of {args.output}")


if __name__ == "__main__":
    main()
