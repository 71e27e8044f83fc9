"""Times the full DA-Monodepth train step: JAX (damono_jax.train.step) against its PyTorch twin.

The JAX step is `damono_jax.train.step.make_train_step` (forward over source + target, all loss
terms, backward, shared-block gradient mean, Adam, donated state) on the default config's
"full" variant; the PyTorch step is `tests.torch_twin.TwinTrainer`, the identical
network and loss, run eagerly and (with --torch_compile) through `torch.compile`. Both
start from the same weights and see the same fixed batch (the input pipeline is measured
separately), and their first-step losses are printed side by side as a check that they
compute the same thing.

Protocol (benchmarks/timing.py): warm-up, then the variants interleaved round-robin for
>= 20 device-synchronised steps each; the median step time, images/s (source images per
second; every step also consumes as many target images), peak memory, XLA's FLOPs per
step and MFU against a matmul peak measured in the same run.

    python -m benchmarks.train_step --batch_sizes=2,4 --image_size=192,640 \\
        --torch_compile --output=BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import shlex
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import timing
from configs import default
from damono_jax.models.conv import WEIGHT_GRADIENTS
from damono_jax.train import state, step

SECTION_ID = "train_step"
GRL_SCALE = 0.5


def make_batch(config: Any, seed: int = 0) -> dict[str, np.ndarray]:
    """A random NHWC batch with the keys of the training stream (source + target)."""
    rng = np.random.default_rng(seed)
    batch_size = config.batch_size
    height, width = config.data.image_size
    images = rng.uniform(size=(batch_size, height, width, 3)).astype(np.float32)
    depth = rng.uniform(1.0, 90.0, size=(batch_size, height, width)).astype(np.float32)
    depth[:, : height // 3] = 0.0  # sky: no ground truth, as in real frames
    label = rng.integers(0, config.model.num_classes, size=(batch_size, height, width, 1))
    return {
        "source_image": images,
        "source_image_clean": images,
        "source_depth": depth,
        "source_label": label.astype(np.int32),
        "target_image": rng.uniform(size=(batch_size, height, width, 3)).astype(np.float32),
    }


def benchmark_config(batch_size: int, image_size: tuple[int, int], dtype: str) -> Any:
    """The default ("full") config at the benchmark's batch size, image size and dtype."""
    config = default.get_config()
    config.batch_size = batch_size
    config.data.image_size = image_size
    config.dtype = dtype
    return config


class JaxStep:
    """The compiled JAX train step on a fixed batch; `__call__` runs one synchronised step."""

    def __init__(self, config: Any):
        mesh = state.create_mesh()
        model = state.create_model(config)
        self.state = state.create_train_state(config, model, mesh)
        # Host copy of the initial weights, for the twin (the state is donated every step).
        self.initial_variables = jax.device_get(
            {"params": self.state.params, "batch_stats": self.state.batch_stats}
        )
        self.batch_numpy = make_batch(config)
        self.batch = step.shard_batch(self.batch_numpy, mesh)
        self.grl_scale = jnp.float32(GRL_SCALE)
        train_step = step.make_train_step(config, model, mesh)
        self.compiled = train_step.lower(self.state, self.batch, self.grl_scale).compile()
        self.flops = timing.xla_flops(self.compiled)
        self.first_terms: dict[str, float] | None = None

    def __call__(self) -> None:
        self.state, _, terms = self.compiled(self.state, self.batch, self.grl_scale)
        jax.block_until_ready((self.state, terms))
        if self.first_terms is None:
            self.first_terms = {name: float(value) for name, value in terms.items()}


class TorchStep:
    """One synchronised step of the twin (eager or torch.compile) on the same batch."""

    def __init__(self, config: Any, jax_step: JaxStep, compile: bool,
                 compile_backend: str = "inductor"):
        import torch

        from tests import torch_twin

        self.torch = torch
        self.device = torch.device("cuda" if jax.default_backend() == "gpu" else "cpu")
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("JAX runs on a GPU but torch.cuda is not available")
        model = torch_twin.TwinDAMonodepth.from_config(config)
        torch_twin.load_jax_variables(model, jax_step.initial_variables)
        model.to(self.device)
        if self.device.type == "cuda":
            model.to(memory_format=torch.channels_last)
        autocast = torch.bfloat16 if config.dtype == "bfloat16" else None
        self.trainer = torch_twin.TwinTrainer(
            model, config, compile=compile, compile_backend=compile_backend,
            autocast_dtype=autocast,
        )
        self.batch = torch_twin.nhwc_batch_to_torch(jax_step.batch_numpy, self.device)
        self.grl_scale = torch.tensor(GRL_SCALE, device=self.device)
        self.first_terms: dict[str, float] | None = None

    def __call__(self) -> None:
        terms = self.trainer.step(self.batch, self.grl_scale)
        if self.device.type == "cuda":
            self.torch.cuda.synchronize()
        if self.first_terms is None:
            self.first_terms = {name: float(value) for name, value in terms.items()}


def _peak_memory(name: str, step: Callable[[], None]) -> timing.PeakMemory:
    """Device allocator peak on GPU, RSS high-water mark over two steps on CPU."""
    if jax.default_backend() == "cpu":
        return timing.measure_host_peak_memory(step, num_calls=2)
    if name == "jax":
        step()
        peak = timing.jax_device_peak_memory_bytes()
        return timing.PeakMemory("device allocator peak (JAX, whole run)", peak or 0, 0)
    import torch

    torch.cuda.reset_peak_memory_stats()
    baseline = torch.cuda.memory_allocated()
    step()
    step()
    return timing.PeakMemory(
        "device allocator peak (torch)", torch.cuda.max_memory_allocated(), baseline
    )


def run_batch_size(
    batch_size: int,
    args: argparse.Namespace,
    matmul_peak: timing.MatmulPeak,
) -> tuple[list[list[str]], list[str]]:
    """Times every variant at one batch size; returns table rows and notes."""
    config = benchmark_config(batch_size, args.image_size, args.dtype)
    notes: list[str] = []
    jax_step = JaxStep(config)
    notes.append(
        f"batch {batch_size}: the jax row is the project's train step; its convolution weight "
        f"gradients are {state.resolve_weight_gradient(config.conv_weight_gradient)!r} "
        f"(config.conv_weight_gradient={config.conv_weight_gradient!r})"
    )
    steps: dict[str, Callable[[], None]] = {"jax": jax_step}
    for weight_gradient in args.weight_gradients:
        # The same train step with the other convolution module (models.conv.conv_module).
        variant_config = config.copy_and_resolve_references()
        variant_config.conv_weight_gradient = weight_gradient
        steps[f"jax[{weight_gradient}]"] = JaxStep(variant_config)
    steps["torch_eager"] = TorchStep(config, jax_step, compile=False)
    if args.torch_compile:
        try:
            compiled = TorchStep(config, jax_step, compile=True)
            compiled()  # compiles; failures surface here
            steps["torch_compile"] = compiled
        except Exception as error:
            message = f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
            notes.append(f"batch {batch_size}: torch.compile failed, not timed ({message})")
            print(traceback.format_exc(), file=sys.stderr)
    results = timing.time_interleaved(steps, num_warmup=args.num_warmup, num_steps=args.num_steps)
    memory = {name: _peak_memory(name, step) for name, step in steps.items()}

    jax_terms = jax_step.first_terms or {}
    for name in [n for n in steps if n != "jax"]:
        if steps[name].first_terms is not None:
            twin_terms = steps[name].first_terms
            notes.append(
                f"batch {batch_size}: first-step total loss jax {jax_terms['total']:.6f}, "
                f"{name} {twin_terms['total']:.6f}"
            )
    # The matmul peak again, right after these steps: on a shared machine the faster of the
    # two measurements is the better estimate of what the hardware can do.
    matmul_peak = max(
        matmul_peak, timing.measure_matmul_peak(args.dtype), key=lambda p: p.flops_per_s
    )
    notes.append(
        f"batch {batch_size}: MFU against a matmul peak of {matmul_peak.flops_per_s / 1e9:.1f} "
        "GFLOP/s (the faster of the measurements before the run and after this batch size)"
    )
    rows = []
    jax_rate = batch_size / results["jax"].median_s
    for name, result in results.items():
        rate = batch_size / result.median_s
        mfu = timing.model_flops_utilisation(
            jax_step.flops, result.median_s, matmul_peak.flops_per_s
        )
        rows.append(
            [
                str(batch_size),
                name,
                f"{result.median_s * 1e3:.0f}",
                f"{result.min_s * 1e3:.0f}",
                f"{result.spread:.2f}",
                f"{rate:.3f}",
                "1.00" if name == "jax" else f"{jax_rate / rate:.2f}",
                timing.format_bytes(memory[name].peak_bytes),
                f"{jax_step.flops / 1e9:.1f}",
                f"{100 * mfu:.1f}%",
            ]
        )
        print(" | ".join(rows[-1]), flush=True)
    return rows, notes


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch_sizes", default="2,4", help="comma-separated source batch sizes")
    parser.add_argument("--image_size", default="192,640", help="height,width (multiples of 32)")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--torch_compile", action="store_true", help="also time torch.compile")
    parser.add_argument(
        "--weight_gradients",
        default="",
        help="comma-separated conv weight gradients (xla, band) to time as extra JAX rows",
    )
    parser.add_argument("--num_steps", type=int, default=timing.MIN_TIMED_STEPS)
    parser.add_argument("--num_warmup", type=int, default=2)
    parser.add_argument("--output", default="", help="markdown file to write the section into")
    parser.add_argument("--note", default="", help="free text put above the table")
    args = parser.parse_args(argv)
    try:
        args.batch_sizes = [int(v) for v in args.batch_sizes.split(",") if v]
        if not args.batch_sizes or min(args.batch_sizes) < 1:
            raise ValueError
    except ValueError:
        parser.error(f"--batch_sizes={args.batch_sizes!r}: expected positive ints, e.g. 2,4")
    args.image_size = timing.parse_image_size(parser, args.image_size)
    args.weight_gradients = [v for v in args.weight_gradients.split(",") if v]
    unknown = sorted(set(args.weight_gradients) - set(WEIGHT_GRADIENTS))
    if unknown:
        parser.error(f"--weight_gradients: unknown {unknown}; choose from {WEIGHT_GRADIENTS}")
    if args.num_steps < timing.MIN_TIMED_STEPS:
        parser.error(
            f"--num_steps={args.num_steps}: the protocol needs >= {timing.MIN_TIMED_STEPS}"
        )
    return args


def main(argv: Sequence[str] | None = None) -> int:
    command = "python -m benchmarks.train_step " + shlex.join(
        sys.argv[1:] if argv is None else list(argv)
    )
    args = parse_args(argv)
    machine = timing.machine_description()
    peak = timing.measure_matmul_peak(args.dtype)
    print(
        f"matmul peak ({peak.dtype}, {peak.size}^3): {peak.flops_per_s / 1e9:.1f} GFLOP/s",
        flush=True,
    )
    header = [
        "batch",
        "variant",
        "median ms",
        "min ms",
        "IQR/median",
        "img/s",
        "JAX/this img/s",
        "peak mem",
        "GFLOP/step (XLA)",
        "MFU",
    ]
    rows: list[list[str]] = []
    notes: list[str] = []
    for batch_size in args.batch_sizes:
        batch_rows, batch_notes = run_batch_size(batch_size, args, peak)
        rows += batch_rows
        notes += batch_notes
    table = timing.markdown_table(header, rows)
    print(table)
    for note in notes:
        print(note)
    if args.output:
        body = timing.report_header(
            f"Train step: JAX vs PyTorch twin ({jax.default_backend().upper()}, "
            f"{args.image_size[0]}x{args.image_size[1]}, {args.dtype})",
            command, machine, args.note,
        )
        body += [
            f"- matmul peak before the run ({peak.dtype}, {peak.size}x{peak.size}, fastest of "
            f"{timing.MIN_TIMED_STEPS}): {peak.flops_per_s / 1e9:.1f} GFLOP/s",
            "",
            table,
            "",
            "img/s counts source images (each step also consumes as many target images). "
            "MFU uses XLA's FLOP count of the JAX step for every variant (same network). "
            "Peak memory on CPU is the process RSS high-water mark over two steps (it "
            "includes the other variants' resident buffers); on GPU the allocator peak.",
        ]
        body += [f"- {note}" for note in notes]
        timing.write_markdown_section(
            args.output, f"{SECTION_ID}-{jax.default_backend()}", "\n".join(body)
        )
        print(f"wrote section {SECTION_ID}-{jax.default_backend()} of {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
