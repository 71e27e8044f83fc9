"""The compiled train step as XLA sees it: cost analysis, memory analysis and a trace.

XLA's own numbers for one step of `benchmarks.train_step.JaxStep` (the project's step):
FLOPs, bytes accessed and their ratio from `compiled.cost_analysis()`, the argument, output
and temporary buffer sizes from `compiled.memory_analysis()`, the compile time, and the
median step time. With `--trace_dir`, `jax.profiler.trace` records `--num_steps` more steps
for TensorBoard's profile plugin or Perfetto, where the per-op breakdown is read.

    python -m benchmarks.profile_step --image_size=192,640 --batch_size=2 \\
        --trace_dir=/tmp/trace --output=BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import jax

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import timing, train_step

SECTION_ID = "profile_step"


@dataclasses.dataclass(frozen=True)
class StepProfile:
    """XLA's analysis of one compiled step, and its measured time."""

    flops: float
    bytes_accessed: float
    argument_bytes: int
    output_bytes: int
    temp_bytes: int
    compile_s: float
    median_step_s: float

    @property
    def flops_per_byte(self) -> float:
        """Arithmetic intensity: FLOPs per byte accessed."""
        return self.flops / self.bytes_accessed


def profile(config, num_steps: int, trace_dir: str | None, smoke: bool = False) -> StepProfile:
    """Compiles the train step of `config`, reads XLA's analyses and times `num_steps`."""
    started = time.perf_counter()
    step = train_step.JaxStep(config)
    compile_s = time.perf_counter() - started
    analysis = step.compiled.cost_analysis()
    analysis = analysis[0] if isinstance(analysis, list) else analysis
    memory = step.compiled.memory_analysis()
    times = timing.time_interleaved({"jax": step}, num_warmup=1, num_steps=num_steps,
                                    smoke=smoke)["jax"]
    if trace_dir:
        with jax.profiler.trace(trace_dir):
            for _ in range(num_steps):
                step()
    return StepProfile(
        flops=timing.xla_flops(step.compiled),
        bytes_accessed=float(analysis["bytes accessed"]),
        argument_bytes=int(memory.argument_size_in_bytes),
        output_bytes=int(memory.output_size_in_bytes),
        temp_bytes=int(memory.temp_size_in_bytes),
        compile_s=compile_s,
        median_step_s=times.median_s,
    )


def markdown_rows(result: StepProfile) -> list[list[str]]:
    """The section's table: one (quantity, value) row each."""
    return [
        ["FLOPs per step (XLA cost analysis)", f"{result.flops / 1e9:.2f} G"],
        ["bytes accessed per step (XLA cost analysis)", f"{result.bytes_accessed / 1e9:.2f} GB"],
        ["FLOPs per byte", f"{result.flops_per_byte:.1f}"],
        ["arguments (state + batch)", timing.format_bytes(result.argument_bytes)],
        ["outputs", timing.format_bytes(result.output_bytes)],
        ["temporaries", timing.format_bytes(result.temp_bytes)],
        ["compile (init + lower + compile)", f"{result.compile_s:.1f} s"],
        ["median step", f"{result.median_step_s * 1e3:.0f} ms"],
        ["achieved", f"{result.flops / result.median_step_s / 1e9:.1f} GFLOP/s"],
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image_size", default="192,640", help="height,width (multiples of 32)")
    parser.add_argument("--batch_size", type=int, default=2)
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--num_steps", type=int, default=timing.MIN_TIMED_STEPS)
    parser.add_argument("--trace_dir", default="", help="also record a jax.profiler trace")
    parser.add_argument("--output", default="", help="markdown file to write the section into")
    parser.add_argument("--smoke", action="store_true", help="allow < 20 steps (tests)")
    args = parser.parse_args(argv)
    height, width = timing.parse_image_size(parser, args.image_size)
    if args.batch_size < 1:
        parser.error(f"--batch_size={args.batch_size}: must be positive")
    command = "python -m benchmarks.profile_step " + shlex.join(
        sys.argv[1:] if argv is None else list(argv)
    )
    config = train_step.benchmark_config(args.batch_size, (height, width), args.dtype)
    result = profile(config, args.num_steps, args.trace_dir or None, smoke=args.smoke)
    table = timing.markdown_table(["quantity", "value"], markdown_rows(result))
    print(table)
    if args.output:
        body = timing.report_header(
            f"Train step as XLA sees it ({jax.default_backend().upper()}, {height}x{width}, "
            f"batch {args.batch_size}, {args.dtype})",
            command, timing.machine_description(),
        )
        timing.write_markdown_section(
            args.output, f"{SECTION_ID}-{jax.default_backend()}", "\n".join([*body, "", table])
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
