"""Inference speed of DepthNet: JAX against its PyTorch twin, batch-1 latency and throughput.

    python -m benchmarks.inference [--export=DIR] [--height=192] [--width=640]
        [--batch_sizes=1,16] [--num_steps=20] [--torch_compile] [--host_timing]
        [--output=BENCHMARKS.md]

Variants, all with the same weights and the same random images:

* `jax`: the jitted network call of `damono_jax.inference_model.InferenceModel` (sigmoid disparity
  of float32 NHWC images already on the device, `jax.block_until_ready`);
* `torch_eager`: `tests.torch_twin.TwinDAMonodepth(use_semantic=False,
  use_domain_classifier=False)` - encoder + shared block + depth decoder, the inference
  network - with the DepthNet weights copied in by `load_jax_variables`, in eval mode under
  `torch.inference_mode()`, on an NCHW copy of the images; PyTorch's default thread count,
  as in `benchmarks/train_step.py`;
* `torch_compile` (with `--torch_compile`): the same twin through `torch.compile`; a
  compilation failure is reported in the table instead of stopping the run;
* `jax predict_depth` (with `--host_timing`): `InferenceModel.predict_depth` on host numpy
  arrays, what `damono_jax.predict` pays per batch besides decoding and resizing.

Before timing, each torch variant's scale-0 disparity must match JAX's to 1e-4 (max abs
difference, printed), so that both sides time the same computation; otherwise the run
stops with a `ParityError`. The twin also evaluates the output convs of scales 1-3, which
XLA drops as dead code (well under 1% of the FLOPs).

Protocol (`benchmarks.timing`): the first call of every variant is timed separately ("first
call", JAX's includes compilation), then warm-up calls, then all variants and batch sizes
interleaved round-robin for >= 20 calls each; median, min, IQR/median, images/s and
"JAX/this img/s" (> 1: JAX is faster) per row, XLA's FLOPs per image, and the process's
peak RSS over two calls of each variant. Without `--export` the weights are random (speed
does not depend on the values). Fewer than 20 calls are allowed only for smoke runs with
`--output=''`. The results replace the `inference` section of `--output`.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import timing
from damono_jax.inference import model as inference_model
from damono_jax.models import DepthNet

SECTION_ID = "inference"
PARITY_TOLERANCE = 1e-4
HEADER = (
    "batch", "input", "variant", "median ms/call", "min ms/call", "IQR/median", "images/s",
    "JAX/this img/s", "first call s", "GFLOPs/image (XLA)", "peak host RSS",
)


class ParityError(ValueError):
    """The twin's disparity differs from JAX's: the two variants compute different things."""


def random_model(height: int, width: int) -> inference_model.InferenceModel:
    """An InferenceModel with random DepthNet weights (built from shapes, no init compile).

    Kernels ~ N(0, 1/fan_in), BatchNorm scales and running variances ~ U(0.5, 1.5), other
    leaves ~ U(-0.1, 0.1): the disparity varies across the image, so the parity check
    against the twin compares something.
    """
    images = jax.ShapeDtypeStruct((1, height, width, 3), jnp.float32)
    abstract = jax.eval_shape(lambda x: DepthNet().init(jax.random.key(0), x), images)
    rng = np.random.default_rng(0)

    def fill(path, leaf):
        name = path[-1].key
        if name == "kernel":
            fan_in = int(np.prod(leaf.shape[:-1]))
            return rng.normal(0.0, 1.0 / np.sqrt(fan_in), leaf.shape).astype(np.float32)
        if name in ("scale", "var"):
            return rng.uniform(0.5, 1.5, leaf.shape).astype(np.float32)
        return rng.uniform(-0.1, 0.1, leaf.shape).astype(np.float32)

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
    return inference_model.InferenceModel(metadata, variables)


def torch_device() -> Any:
    """CUDA when JAX runs on a GPU, else CPU (like `benchmarks/train_step.py`)."""
    import torch

    device = torch.device("cuda" if jax.default_backend() == "gpu" else "cpu")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("JAX runs on a GPU but torch.cuda is not available")
    return device


def make_twin(model: inference_model.InferenceModel, device: Any = "cpu") -> Any:
    """The PyTorch twin of `model.network` with its weights, in eval mode on `device`."""
    from tests import torch_twin

    twin = torch_twin.TwinDAMonodepth(
        upsample_mode=model.metadata["model"]["upsample_mode"],
        use_semantic=False,
        use_domain_classifier=False,
    )
    torch_twin.load_jax_variables(twin, model.variables)
    return twin.to(device).eval()


def to_torch_images(images: np.ndarray, device: Any = "cpu") -> Any:
    """An NCHW torch copy of float32 NHWC images."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))).to(device)


def twin_disparity_fn(
    twin: Any, compile: bool = False, backend: str = "inductor"
) -> Callable[[Any], Any]:
    """`fn(nchw_images) -> (B, H, W)` sigmoid disparity of the twin, optionally compiled
    (with torch.compile's `backend`)."""
    import torch

    def disparity(images: Any) -> Any:
        return twin(images)["disp"][0][:, 0]

    return torch.compile(disparity, dynamic=False, backend=backend) if compile else disparity


def check_parity(
    name: str,
    jax_disparity: np.ndarray,
    torch_fn: Callable[[Any], Any],
    torch_images: Any,
    tolerance: float = PARITY_TOLERANCE,
) -> float:
    """Max |torch - JAX| disparity of variant `name` on the same images.

    Raises:
      ParityError: if the shapes differ, the difference exceeds `tolerance` or is not finite.
    """
    import torch

    with torch.inference_mode():
        actual = torch_fn(torch_images).float().cpu().numpy()
    if actual.shape != jax_disparity.shape:
        raise ParityError(
            f"parity check: {name} disparity has shape {actual.shape}, JAX {jax_disparity.shape}"
        )
    diff = float(np.max(np.abs(actual - jax_disparity)))
    if not diff <= tolerance:  # also catches NaN
        raise ParityError(
            f"parity check: {name} disparity differs from JAX's by max abs {diff:.3g} > "
            f"{tolerance:g}; the twin does not compute the same network (weights or layers "
            "differ), so its timing would not be comparable"
        )
    return diff


def _time_variants(
    steps: Mapping[str, Callable[[], Any]], num_steps: int
) -> dict[str, timing.StepTimes]:
    """`timing.time_interleaved`; below its 20-call minimum a smoke run with one warm-up."""
    if num_steps >= timing.MIN_TIMED_STEPS:
        return timing.time_interleaved(steps, num_steps=num_steps)
    return timing.time_interleaved(steps, num_warmup=1, num_steps=num_steps, smoke=True)


def _timed_first_call(step: Callable[[], Any]) -> float:
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


@dataclasses.dataclass
class Results:
    """The table rows, notes for under the table, and each torch variant's parity error."""

    rows: list[list[str]]
    notes: list[str]
    max_abs_diff: dict[str, float]


def run(
    model: inference_model.InferenceModel,
    height: int,
    width: int,
    batch_sizes: Sequence[int],
    num_steps: int,
    *,
    host_timing: bool = False,
    torch_compile: bool = False,
    torch_compile_backend: str = "inductor",
) -> Results:
    """Checks parity, then times every variant and batch size in one interleaved run."""
    import torch

    device = torch_device()

    def synchronize() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    network = inference_model._jitted_sigmoid_disparity(model.network)
    variables = model._device_variables
    rng = np.random.default_rng(1)
    host_images = {b: rng.random((b, height, width, 3), dtype=np.float32) for b in batch_sizes}
    device_images = {b: jax.device_put(images) for b, images in host_images.items()}
    torch_images = {b: to_torch_images(images, device) for b, images in host_images.items()}
    twin = make_twin(model, device)
    torch_fns = {"torch_eager": twin_disparity_fn(twin)}
    if torch_compile:
        torch_fns["torch_compile"] = twin_disparity_fn(twin, True, torch_compile_backend)

    def torch_step(fn: Callable[[Any], Any], batch: int) -> Callable[[], None]:
        def step() -> None:
            with torch.inference_mode():
                fn(torch_images[batch])
            synchronize()

        return step

    steps: dict[str, Callable[[], Any]] = {}
    first_call_s: dict[str, float] = {}
    flops: dict[int, float] = {}
    failed: dict[str, str] = {}
    notes: list[str] = []
    max_abs_diff: dict[str, float] = {}
    for batch in batch_sizes:
        start = time.perf_counter()
        compiled = network.lower(variables, device_images[batch]).compile()
        jax_disparity = np.asarray(jax.block_until_ready(compiled(variables, device_images[batch])))
        first_call_s[f"jax b{batch}"] = time.perf_counter() - start
        flops[batch] = timing.xla_flops(compiled)
        steps[f"jax b{batch}"] = lambda b=batch: jax.block_until_ready(
            network(variables, device_images[b])
        )
        if host_timing:
            key = f"jax predict_depth b{batch}"
            steps[key] = lambda b=batch: model.predict_depth(host_images[b])
            first_call_s[key] = _timed_first_call(steps[key])
        for name, fn in torch_fns.items():
            key = f"{name} b{batch}"
            step = torch_step(fn, batch)
            try:
                first_call_s[key] = _timed_first_call(step)  # torch.compile compiles here
            except Exception as error:
                if name == "torch_eager":
                    raise
                failed[key] = f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
                notes.append(f"batch {batch}: {name} failed, not timed ({failed[key]})")
                print(traceback.format_exc(), file=sys.stderr)
                continue
            diff = check_parity(f"{name} b{batch}", jax_disparity, fn, torch_images[batch])
            max_abs_diff[name] = max(diff, max_abs_diff.get(name, 0.0))
            print(f"parity {key}: max |disparity - JAX| = {diff:.2e}", flush=True)
            steps[key] = step
    for name, diff in max_abs_diff.items():
        notes.append(
            f"{name}: scale-0 sigmoid disparity matches JAX to max abs {diff:.1e} "
            f"(checked <= {PARITY_TOLERANCE:g} before timing)"
        )

    times = _time_variants(steps, num_steps)
    peaks = {key: timing.measure_host_peak_memory(step) for key, step in steps.items()}
    variants = ["jax", *(["jax predict_depth"] if host_timing else []), *torch_fns]
    rows = []
    for batch in batch_sizes:
        jax_rate = batch / times[f"jax b{batch}"].median_s
        for name in variants:
            key = f"{name} b{batch}"
            cells = [str(batch), f"{height}x{width}", name]
            if key in failed:
                rows.append(cells + ["failed (see notes)"] + [""] * (len(HEADER) - 4))
                continue
            result = times[key]
            rate = batch / result.median_s
            rows.append(cells + [
                f"{result.median_s * 1e3:.1f}",
                f"{result.min_s * 1e3:.1f}",
                f"{result.spread:.2f}",
                f"{rate:.1f}",
                "1.00" if name == "jax" else f"{jax_rate / rate:.2f}",
                f"{first_call_s[key]:.1f}",
                f"{flops[batch] / batch / 1e9:.2f}",
                timing.format_bytes(peaks[key].peak_bytes),
            ])
    return Results(rows, notes, max_abs_diff)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command-line flags, checked."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--export", default=None, help="Export dir (default: random weights).")
    parser.add_argument("--height", type=int, default=192)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--batch_sizes", default="1,16")
    parser.add_argument("--num_steps", type=int, default=timing.MIN_TIMED_STEPS)
    parser.add_argument("--output", default="BENCHMARKS.md", help="Markdown file ('' = none).")
    parser.add_argument("--torch_compile", action="store_true", help="Also time torch.compile.")
    parser.add_argument("--host_timing", action="store_true",
                        help="Also time predict_depth on host numpy arrays.")
    parser.add_argument("--note", default="", help="Free text put under the table.")
    args = parser.parse_args(argv)
    try:
        args.batch_sizes = [int(part) for part in args.batch_sizes.split(",")]
    except ValueError:
        parser.error(f"--batch_sizes={args.batch_sizes}: expected comma-separated integers")
    if not args.batch_sizes or min(args.batch_sizes) < 1:
        parser.error(f"--batch_sizes={args.batch_sizes}: batch sizes must be >= 1")
    for flag in ("height", "width"):
        value = getattr(args, flag)
        if value <= 0 or value % timing.INPUT_SIZE_MULTIPLE:
            parser.error(
                f"--{flag}={value}: must be a positive multiple of {timing.INPUT_SIZE_MULTIPLE}"
            )
    if args.num_steps < 2:
        parser.error(f"--num_steps={args.num_steps}: need >= 2 timed calls (IQR)")
    if args.num_steps < timing.MIN_TIMED_STEPS and args.output:
        parser.error(
            f"--num_steps={args.num_steps}: the protocol needs >= {timing.MIN_TIMED_STEPS} "
            f"calls to write --output={args.output}; pass --output='' for a smoke run"
        )
    return args


def main(argv: Sequence[str] | None = None) -> None:
    """Parses the flags, measures, prints and writes the `inference` section."""
    args = parse_args(argv)
    cache_note = timing.cold_compilation()
    if args.export:
        model = inference_model.load_export(args.export)
        if model.input_size != (args.height, args.width):
            print(
                f"note: export input size {model.input_size}, timing at "
                f"{args.height}x{args.width} as asked",
                file=sys.stderr,
            )
    else:
        model = random_model(args.height, args.width)
    results = run(
        model, args.height, args.width, args.batch_sizes, args.num_steps,
        host_timing=args.host_timing, torch_compile=args.torch_compile,
    )
    machine = timing.machine_description()
    recorded = [
        arg for arg in (argv if argv is not None else sys.argv[1:])
        if not arg.startswith(("--output", "--note"))
    ]
    command = "python -m benchmarks.inference " + " ".join(recorded)
    body = "\n".join([
        "## Inference (DepthNet, `benchmarks/inference.py`): JAX vs PyTorch twin",
        "",
        f"Command: `{command.strip()}`  ",
        f"Weights: {'export ' + args.export if args.export else 'random (speed only)'}, "
        f"the same in JAX and the twin; float32; {args.num_steps} timed calls per variant "
        "after warm-up, interleaved.",
        "",
        timing.markdown_table(HEADER, results.rows),
        "",
        "JAX/this img/s > 1: JAX is faster. FLOPs are XLA's count of the JAX call (same "
        "network in every row). Peak host RSS is the process's high-water mark over two calls "
        "of the variant; it includes the other variants' resident buffers.",
        "",
        *[f"- {note}" for note in [*results.notes, cache_note]],
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
