"""Do XLA:CPU's options (XLA_FLAGS) make the JAX train step or DepthNet inference faster?

    python -m benchmarks.xla_flags [--image_size=96,320] [--batch_size=2] [--rounds=3]
        [--what=train_step,inference] [--settings=default,no_xnnpack,...]
        [--output=BENCHMARKS.md]

XLA reads XLA_FLAGS once per process, so every candidate setting of `SETTINGS` runs in its
own child process (this module with `--child`, the variable set in its environment). The
children of the different settings alternate in rounds (A B C ... A B C ...), so a load
change on the shared machine hits every setting alike. Each child

* `train_step`: builds the step exactly as `benchmarks.train_step.JaxStep` (default "full"
  config, float32, fixed random batch) and times it with `timing.time_interleaved`;
* `inference`: the jitted DepthNet disparity call of `benchmarks.inference.random_model`
  at batch 1 (`export._jitted_sigmoid_disparity`, images already on the device);
* reports its check values - every first-step loss term of the train step, mean and
  standard deviation of the disparity - and compares them with the default setting's
  (passed in by the parent): a setting whose values differ by more than 1e-4 relative is
  reported as computing something else, next to its speed, not dropped.

A setting that XLA refuses (unknown flag, illegal value) or that fails to compile/run gets
a row with its error line. The table has the median step time over all rounds' timed
steps, the per-round medians, and the speed-up against the default (> 1: faster). The
results replace the `xla_flags` section of `--output`.

Children import the working tree at their start: run from a checkout nobody edits during
the run (e.g. `git worktree add`), or the default's own rounds disagree (reported as
DIFFERENT in its row).

Option meanings and values are from `XLA_FLAGS=--help` of this jaxlib (0.10.2); see
`SETTINGS`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SECTION_ID = "xla_flags"
RESULT_PREFIX = "XLA_FLAGS_RESULT "
CHECK_TOLERANCE = 1e-4
WHATS = ("train_step", "inference")
REPO_ROOT = Path(__file__).resolve().parent.parent
CHILD_TIMEOUT_S = 1800


@dataclasses.dataclass(frozen=True)
class Setting:
    """One candidate XLA_FLAGS value and why it might help."""

    name: str
    flags: str
    meaning: str


# Meanings and defaults from `XLA_FLAGS=--help` of jaxlib 0.10.2 (xla/debug_options_flags.cc).
SETTINGS: tuple[Setting, ...] = (
    Setting("default", "", "no XLA_FLAGS"),
    Setting(
        "no_xnnpack",
        "--xla_cpu_use_xnnpack=false",
        "XNNPACK for supported ops (dots, convolutions) is on by default; off: Eigen",
    ),
    Setting(
        "xnn_fusion_all",
        "--xla_cpu_experimental_xnn_fusion_type=dot,eltwise,reduce",
        "XNNPACK fusions of dots with elementwise/reduce ops (default list empty)",
    ),
    Setting(
        "xnn_graph_greedy",
        "--xla_cpu_experimental_xnn_graph_fusion_mode=XNN_GRAPH_FUSION_MODE_GREEDY",
        "greedy extraction of XNNPACK-compatible subgraphs (default DISABLED)",
    ),
    Setting(
        "ynn_fusion_all",
        "--xla_cpu_experimental_ynn_fusion_type="
        "dot,eltwise,reduce,individual_dot,individual_convolution",
        "YNNPACK (XNNPACK's successor) for dots, convolutions and their fusions "
        "(LibraryFusionType enum; default list empty)",
    ),
    Setting(
        "onednn",
        "--xla_cpu_use_onednn=true",
        "oneDNN thunks for matmul and convolution fusions (default false)",
    ),
    Setting(
        "onednn_fusion",
        "--xla_cpu_experimental_onednn_fusion_type=dot,eltwise",
        "oneDNN fusions of dots with elementwise ops (default list empty)",
    ),
    Setting(
        "vector_width_512",
        "--xla_cpu_prefer_vector_width=512",
        "LLVM preferred vector width for XLA's own kernels (default 256; this CPU has AVX-512)",
    ),
    Setting(
        "fast_math",
        "--xla_cpu_enable_fast_math=true",
        "unsafe fast-math in XLA's own kernels (default false)",
    ),
    Setting(
        "concurrency_scheduler",
        "--xla_cpu_scheduler_type=CPU_SCHEDULER_TYPE_CONCURRENCY_OPTIMIZED",
        "HLO scheduler that exposes independent thunks for concurrent execution "
        "(default CPU_SCHEDULER_TYPE_DEFAULT; MEMORY_OPTIMIZED is the third value)",
    ),
    Setting(
        "no_fusion_emitters",
        "--xla_cpu_use_fusion_emitters=false",
        "MLIR fusion emitters for XLA's own kernels are on by default; off: legacy IR emitter",
    ),
    Setting(
        "single_thread_eigen",
        "--xla_cpu_multi_thread_eigen=false",
        "Eigen calls (convolutions/dots not taken by XNNPACK) single-threaded (default true)",
    ),
)
SETTINGS_BY_NAME = {setting.name: setting for setting in SETTINGS}


class CheckMismatch(ValueError):
    """A setting's check values (losses, disparity statistics) differ from the default's."""


# ---------------------------------------------------------------------------- checks


def compare_check_values(
    values: Mapping[str, float],
    reference: Mapping[str, float],
    tolerance: float = CHECK_TOLERANCE,
) -> float:
    """Max relative difference of `values` from the default setting's `reference`.

    Raises:
      CheckMismatch: if the keys differ, a value is not finite, or a relative difference
        exceeds `tolerance`; the message names every offending value.
    """
    if set(values) != set(reference):
        raise CheckMismatch(
            f"check values have keys {sorted(values)}, the default's {sorted(reference)}"
        )
    worst = 0.0
    bad = []
    for key in sorted(reference):
        actual, expected = float(values[key]), float(reference[key])
        rel = abs(actual - expected) / max(abs(expected), 1e-12)
        if not rel <= tolerance:  # also catches NaN
            bad.append(f"{key} {actual:.6g} vs default {expected:.6g} (rel {rel:.1e})")
        else:
            worst = max(worst, rel)
    if bad:
        raise CheckMismatch(
            f"results differ from the default's by more than {tolerance:g} relative: "
            + "; ".join(bad)
        )
    return worst


def error_line(stderr: str) -> str:
    """The most informative error line of a failed child's stderr.

    An XLA glog error/fatal line (`E1125 ... file.cc:145] message`) first, else the last
    `SomeError: message` line of a Python traceback, else the last non-empty line.
    """
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in lines:
        match = re.match(r"^[EF]\d{4} [\d:.]+\s+\d+ (\S+\]) (.*)$", line)
        if match:
            return f"{match.group(1)} {match.group(2)}"[:300]
    for line in reversed(lines):
        if re.match(r"^[\w.]*(Error|Exception)\b.*:", line):
            return line[:300]
    return lines[-1][:300] if lines else "(no output on stderr)"


def parse_child_output(stdout: str) -> dict[str, dict[str, Any]]:
    """The child's results by `what`, from its `XLA_FLAGS_RESULT {json}` lines.

    Raises:
      ValueError: if a result line is not valid JSON or lacks `what`, or a `what` repeats.
    """
    results: dict[str, dict[str, Any]] = {}
    for line in stdout.splitlines():
        if not line.startswith(RESULT_PREFIX):
            continue
        try:
            result = json.loads(line[len(RESULT_PREFIX) :])
        except json.JSONDecodeError as error:
            raise ValueError(f"child output: bad result line {line[:200]!r} ({error})") from error
        if not isinstance(result, dict) or "what" not in result:
            raise ValueError(f"child output: result line without 'what': {line[:200]!r}")
        if result["what"] in results:
            raise ValueError(f"child output: two results for {result['what']!r}")
        results[result["what"]] = result
    return results


# ---------------------------------------------------------------------------- child


def _train_step_child(image_size: tuple[int, int], batch_size: int, num_steps: int) -> dict:
    from benchmarks import timing, train_step

    config = train_step.benchmark_config(batch_size, image_size, "float32")
    start = time.perf_counter()
    step = train_step.JaxStep(config)
    compile_s = time.perf_counter() - start
    times = timing.time_interleaved({"jax": step}, num_warmup=2, num_steps=num_steps)["jax"]
    return {
        "times_s": list(times.times_s),
        "compile_s": compile_s,
        "gflops": step.flops / 1e9,
        # The first warm-up call runs from the initial state: deterministic losses.
        "check": {f"loss {name}": value for name, value in (step.first_terms or {}).items()},
    }


def _inference_child(image_size: tuple[int, int], num_steps: int) -> dict:
    import jax
    import numpy as np

    from benchmarks import inference, timing
    from damono_jax import export

    height, width = image_size
    model = inference.random_model(height, width)
    network = export._jitted_sigmoid_disparity(model.network)
    variables = model._device_variables
    images = jax.device_put(np.random.default_rng(1).random((1, height, width, 3), np.float32))
    start = time.perf_counter()
    compiled = network.lower(variables, images).compile()
    disparity = np.asarray(jax.block_until_ready(compiled(variables, images)), np.float64)
    compile_s = time.perf_counter() - start
    times = timing.time_interleaved(
        {"jax": lambda: jax.block_until_ready(compiled(variables, images))}, num_steps=num_steps
    )["jax"]
    return {
        "times_s": list(times.times_s),
        "compile_s": compile_s,
        "gflops": timing.xla_flops(compiled) / 1e9,
        "check": {
            "disparity mean": float(disparity.mean()),
            "disparity std": float(disparity.std()),
        },
    }


def run_child(
    what: str,
    image_size: tuple[int, int],
    batch_size: int,
    num_steps: int,
    reference: Mapping[str, float] | None,
) -> dict[str, Any]:
    """Times one `what` in this process (under its XLA_FLAGS); never raises for the step.

    The result has `times_s`, `compile_s`, `gflops`, `check` (the values compared across
    settings) and `check_error` (None, or the mismatch message against `reference`), or
    only `error` (the exception line) when building or running the step failed.
    """
    if what not in WHATS:
        raise ValueError(f"--what: unknown {what!r}; choose from {list(WHATS)}")
    result: dict[str, Any] = {"what": what, "xla_flags": os.environ.get("XLA_FLAGS", "")}
    try:
        if what == "train_step":
            result.update(_train_step_child(image_size, batch_size, num_steps))
        else:
            result.update(_inference_child(image_size, num_steps))
    except Exception as error:  # noqa: BLE001 - reported as the setting's row
        print(traceback.format_exc(), file=sys.stderr)
        result["error"] = f"{type(error).__name__}: {(str(error).splitlines() or [''])[0][:240]}"
        return result
    result["check_error"] = None
    result["max_rel_diff"] = None
    if reference is not None:
        try:
            result["max_rel_diff"] = compare_check_values(result["check"], reference)
        except CheckMismatch as error:
            result["check_error"] = str(error)
    return result


# ---------------------------------------------------------------------------- parent


@dataclasses.dataclass
class Outcome:
    """Everything measured for one (setting, what) over the rounds."""

    setting: Setting
    what: str
    round_times_s: list[list[float]] = dataclasses.field(default_factory=list)
    compile_s: list[float] = dataclasses.field(default_factory=list)
    check_errors: list[str] = dataclasses.field(default_factory=list)
    max_rel_diff: float = 0.0
    error: str | None = None
    gflops: float | None = None

    @property
    def median_s(self) -> float:
        """Median over every timed step of every round."""
        return statistics.median(t for times in self.round_times_s for t in times)


def launch_child(
    setting: Setting,
    whats: Sequence[str],
    image_size: tuple[int, int],
    batch_size: int,
    num_steps: int,
    references: Mapping[str, Mapping[str, float]],
) -> dict[str, dict[str, Any]]:
    """Runs one child process with `setting.flags` as XLA_FLAGS; its results by `what`.

    A `what` the child did not report (XLA aborted the process, e.g. on an unknown flag)
    gets `{"error": <the error line of its stderr>}`.
    """
    env = dict(os.environ)
    env["XLA_FLAGS"] = setting.flags
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    command = [
        sys.executable, "-m", "benchmarks.xla_flags", "--child",
        f"--what={','.join(whats)}",
        f"--image_size={image_size[0]},{image_size[1]}",
        f"--batch_size={batch_size}",
        f"--num_steps={num_steps}",
        f"--references={json.dumps(dict(references))}",
    ]  # fmt: skip
    try:
        process = subprocess.run(
            command, env=env, cwd=REPO_ROOT, capture_output=True, text=True,
            timeout=CHILD_TIMEOUT_S,
        )  # fmt: skip
        stdout, stderr, returncode = process.stdout, process.stderr, process.returncode
    except subprocess.TimeoutExpired as error:
        stdout = error.stdout.decode() if isinstance(error.stdout, bytes) else error.stdout or ""
        stderr, returncode = f"child timed out after {CHILD_TIMEOUT_S} s", -1
    results = parse_child_output(stdout)
    for what in whats:
        if what not in results:
            results[what] = {
                "what": what,
                "error": f"exit code {returncode}: {error_line(stderr)}",
            }
    return results


def run_rounds(
    settings: Sequence[Setting],
    whats: Sequence[str],
    image_size: tuple[int, int],
    batch_size: int,
    rounds: int,
    num_steps: int,
) -> dict[tuple[str, str], Outcome]:
    """All settings' children, alternating A B C ... for `rounds` rounds.

    Raises:
      RuntimeError: if the default setting (the reference) fails.
    """
    if not settings or settings[0].name != "default":
        raise ValueError("run_rounds: the first setting must be 'default' (the reference)")
    outcomes = {(s.name, w): Outcome(s, w) for s in settings for w in whats}
    references: dict[str, dict[str, float]] = {}
    for round_index in range(rounds):
        for setting in settings:
            if all(outcomes[setting.name, w].error for w in whats):
                continue  # failed in an earlier round: its error is already recorded
            start = time.perf_counter()
            results = launch_child(setting, whats, image_size, batch_size, num_steps, references)
            for what, result in results.items():
                outcome = outcomes[setting.name, what]
                if "error" in result:
                    outcome.error = outcome.error or result["error"]
                    if setting.name == "default":
                        raise RuntimeError(f"default setting failed ({what}): {result['error']}")
                    print(
                        f"[{round_index + 1}] {setting.name} {what}: {result['error']}", flush=True
                    )
                    continue
                if setting.name == "default" and what not in references:
                    references[what] = result["check"]
                outcome.round_times_s.append(result["times_s"])
                outcome.compile_s.append(result["compile_s"])
                outcome.gflops = result["gflops"]
                if result.get("check_error"):
                    outcome.check_errors.append(result["check_error"])
                if result.get("max_rel_diff") is not None:
                    outcome.max_rel_diff = max(outcome.max_rel_diff, result["max_rel_diff"])
                print(
                    f"[{round_index + 1}] {setting.name} {what}: median "
                    f"{statistics.median(result['times_s']) * 1e3:.1f} ms, compile "
                    f"{result['compile_s']:.1f} s, check {result['check']}"
                    + (f" MISMATCH {result['check_error']}" if result.get("check_error") else ""),
                    flush=True,
                )
            print(f"    child took {time.perf_counter() - start:.0f} s", flush=True)
    return outcomes


HEADER = (
    "what", "setting", "XLA_FLAGS", "median ms", "per-round medians ms", "speed-up vs default",
    "compile s", "results vs default",
)  # fmt: skip


def table_rows(
    outcomes: Mapping[tuple[str, str], Outcome], whats: Sequence[str]
) -> list[list[str]]:
    """One row per (what, setting); failures and result mismatches are spelled out."""
    rows = []
    for what in whats:
        default = outcomes["default", what]
        for (_, outcome_what), outcome in outcomes.items():
            if outcome_what != what:
                continue
            cells = [
                what,
                outcome.setting.name,
                f"`{outcome.setting.flags}`" if outcome.setting.flags else "",
            ]
            if outcome.error:
                rows.append(cells + [f"failed: {outcome.error}", "", "", "", ""])
                continue
            speedup = default.median_s / outcome.median_s
            if outcome.check_errors:  # for the default: its rounds disagree (code changed?)
                check = f"DIFFERENT: {outcome.check_errors[0]}"
            elif outcome.setting.name == "default":
                check = "reference"
            else:
                check = f"same (max rel diff {outcome.max_rel_diff:.0e})"
            rows.append(cells + [
                f"{outcome.median_s * 1e3:.1f}",
                ", ".join(f"{statistics.median(t) * 1e3:.1f}" for t in outcome.round_times_s),
                f"{speedup:.2f}",
                f"{statistics.median(outcome.compile_s):.1f}",
                check,
            ])  # fmt: skip
    return rows


# ---------------------------------------------------------------------------- CLI


def _parse_image_size(parser: argparse.ArgumentParser, value: str) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in value.split(","))
    except ValueError:
        parser.error(f"--image_size={value!r}: expected 'height,width', e.g. 96,320")
    if height <= 0 or width <= 0 or height % 32 or width % 32:
        parser.error(f"--image_size={value}: both sides must be positive multiples of 32")
    return height, width


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--image_size", default="96,320", help="height,width (multiples of 32)")
    parser.add_argument("--batch_size", type=int, default=2, help="train-step source batch")
    parser.add_argument("--rounds", type=int, default=3, help="rounds over all settings")
    parser.add_argument("--what", default="train_step,inference", help=f"subset of {WHATS}")
    parser.add_argument(
        "--settings", default="", help=f"comma-separated subset of {list(SETTINGS_BY_NAME)} "
        "(default: all; 'default' is always run first)"
    )  # fmt: skip
    parser.add_argument("--num_steps", type=int, default=20, help="timed steps per child")
    parser.add_argument("--output", default="", help="markdown file to write the section into")
    parser.add_argument("--note", default="", help="free text put above the table")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--references", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.image_size = _parse_image_size(parser, args.image_size)
    args.what = [w for w in args.what.split(",") if w]
    unknown = sorted(set(args.what) - set(WHATS))
    if not args.what or unknown:
        parser.error(f"--what={','.join(args.what)}: unknown {unknown}; choose from {list(WHATS)}")
    names = [n for n in args.settings.split(",") if n] or list(SETTINGS_BY_NAME)
    unknown = sorted(set(names) - set(SETTINGS_BY_NAME))
    if unknown:
        parser.error(f"--settings: unknown {unknown}; choose from {list(SETTINGS_BY_NAME)}")
    args.settings = [SETTINGS_BY_NAME["default"]] + [
        SETTINGS_BY_NAME[n] for n in dict.fromkeys(names) if n != "default"
    ]
    if args.batch_size < 1:
        parser.error(f"--batch_size={args.batch_size}: must be >= 1")
    if args.rounds < 1:
        parser.error(f"--rounds={args.rounds}: must be >= 1")
    if args.num_steps < 20:
        parser.error(f"--num_steps={args.num_steps}: the timing protocol needs >= 20")
    try:
        args.references = json.loads(args.references)
    except json.JSONDecodeError as error:
        parser.error(f"--references: not JSON ({error})")
    return args


def _load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        for what in args.what:
            result = run_child(
                what, args.image_size, args.batch_size, args.num_steps, args.references.get(what)
            )
            print(RESULT_PREFIX + json.dumps(result), flush=True)
        return 0

    from benchmarks import timing

    command = "python -m benchmarks.xla_flags " + shlex.join(
        sys.argv[1:] if argv is None else list(argv)
    )
    machine = timing.machine_description()
    load_before = _load_average()
    start = time.perf_counter()
    outcomes = run_rounds(
        args.settings, args.what, args.image_size, args.batch_size, args.rounds, args.num_steps
    )
    load_after = _load_average()
    rows = table_rows(outcomes, args.what)
    table = timing.markdown_table(list(HEADER), rows)
    print(table)
    print(f"load average (1, 5, 15 min) before {load_before}, after {load_after}")
    if args.output:
        height, width = args.image_size
        body = timing.report_header(
            f"XLA:CPU options (XLA_FLAGS): train step b{args.batch_size} and DepthNet "
            f"inference b1 at {height}x{width}",
            command, machine, args.note, omit=("XLA_FLAGS",),
        )
        body += [
            f"- load average (1, 5, 15 min) before the run {load_before}, after {load_after}; "
            f"the run took {(time.perf_counter() - start) / 60:.0f} min. The machine is shared: "
            "the settings' child processes alternate in rounds so load hits all alike.",
            "",
            table,
            "",
            f"Each row: {args.rounds} child process(es) with that XLA_FLAGS, each timing "
            f"{args.num_steps} steps after warm-up (benchmarks/timing.py); median ms over all "
            "of them; speed-up = default median / this median (> 1: faster). train_step is "
            "benchmarks/train_step.py's JaxStep (float32, full config); inference is the "
            "jitted DepthNet sigmoid-disparity call at batch 1. 'results vs default' compares "
            f"every first-step loss term (train_step) or the disparity mean and std "
            f"(inference) with the default's, tolerance {CHECK_TOLERANCE:g} relative.",
            "",
            "Settings:",
            "",
        ]
        body += [f"- `{s.name}`: {s.meaning}" for s in args.settings]
        timing.write_markdown_section(args.output, SECTION_ID, "\n".join(body))
        print(f"wrote section {SECTION_ID} of {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
