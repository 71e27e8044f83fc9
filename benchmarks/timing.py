"""Shared timing protocol for the benchmarks in this directory.

Every benchmark here measures the same way, so JAX and PyTorch numbers are comparable:

* warm-up calls first (compilation, autotuning, allocator growth), never timed;
* each timed call blocks until the device has finished (`jax.block_until_ready`,
  `torch.cuda.synchronize`), so a step time is the wall time of one complete step;
* variants are interleaved round-robin (`time_interleaved`), so a load spike on a shared
  machine hits every variant alike, and the reported figure is the median of >= 20 steps;
* peak memory: on CPU the process's resident-set high-water mark (`VmHWM`, reset through
  `/proc/self/clear_refs` before each measured block); on GPU JAX's `peak_bytes_in_use`
  and `torch.cuda.max_memory_allocated`;
* FLOPs per step come from XLA's cost analysis of the compiled step; the matmul peak that
  model FLOP utilisation (MFU) is measured against is timed in the same run, on the same
  device (`measure_matmul_peak`).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import platform
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from damono_jax.models.da_monodepth import INPUT_SIZE_MULTIPLE

# Re-exported: every benchmark writes its tables through `timing`.
from damono_jax.tools.markdown import markdown_table, write_markdown_section  # noqa: F401

MIN_TIMED_STEPS = 20
_PROC_STATUS = Path("/proc/self/status")
_PROC_CLEAR_REFS = Path("/proc/self/clear_refs")


def parse_image_size(parser: argparse.ArgumentParser, text: str,
                     flag: str = "--image_size") -> tuple[int, int]:
    """`(height, width)` from a benchmark's `height,width` flag; both sides must be positive
    multiples of the network's input multiple, else `parser.error` names the flag."""
    try:
        height, width = (int(value) for value in text.split(","))
    except ValueError:
        parser.error(f"{flag}={text!r}: expected 'height,width', e.g. 192,640")
    if min(height, width) <= 0 or height % INPUT_SIZE_MULTIPLE or width % INPUT_SIZE_MULTIPLE:
        parser.error(f"{flag}={text}: both sides must be multiples of {INPUT_SIZE_MULTIPLE}")
    return height, width


@dataclasses.dataclass(frozen=True)
class StepTimes:
    """Wall times (seconds) of the timed calls of one variant, in call order."""

    name: str
    times_s: tuple[float, ...]

    @property
    def median_s(self) -> float:
        """Median step time in seconds."""
        return statistics.median(self.times_s)

    @property
    def min_s(self) -> float:
        """Fastest step in seconds (the least-disturbed call on a loaded machine)."""
        return min(self.times_s)

    @property
    def spread(self) -> float:
        """Interquartile range divided by the median: how noisy the measurement was."""
        q1, _, q3 = statistics.quantiles(self.times_s, n=4)
        return (q3 - q1) / self.median_s


def time_interleaved(
    steps: Mapping[str, Callable[[], Any]],
    *,
    num_warmup: int = 3,
    num_steps: int = MIN_TIMED_STEPS,
    smoke: bool = False,
) -> dict[str, StepTimes]:
    """Times each callable `num_steps` times, interleaving the variants round-robin.

    Each callable must run one complete step and block until the device has finished
    (wrap JAX calls with `jax.block_until_ready`, CUDA torch calls with
    `torch.cuda.synchronize`). All variants get `num_warmup` untimed calls first.
    `smoke=True` allows fewer than 20 timed calls, for tests and runs whose numbers are
    never reported.

    Raises:
      ValueError: if `steps` is empty, or `num_steps` < 20 (the protocol's minimum) without
        `smoke`, or `num_steps` < 1, or `num_warmup` < 1 (the first call compiles and must
        never be timed).
    """
    if not steps:
        raise ValueError("time_interleaved: `steps` is empty; pass at least one variant")
    if num_steps < (1 if smoke else MIN_TIMED_STEPS):
        raise ValueError(
            f"time_interleaved: num_steps={num_steps}; the protocol needs >= {MIN_TIMED_STEPS}"
            + (" (>= 1 for a smoke run)" if smoke else "")
        )
    if num_warmup < 1:
        raise ValueError(f"time_interleaved: num_warmup={num_warmup}; need >= 1 (compilation)")
    for _ in range(num_warmup):
        for step in steps.values():
            step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(num_steps):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    return {name: StepTimes(name, tuple(values)) for name, values in times.items()}


# ---------------------------------------------------------------------------- memory


def _read_status_kib(field: str) -> int:
    """Reads one `kB` field (e.g. `VmHWM`) of /proc/self/status, in KiB."""
    for line in _PROC_STATUS.read_text().splitlines():
        if line.startswith(field + ":"):
            value, unit = line.split(":", 1)[1].split()
            if unit != "kB":
                raise ValueError(f"{_PROC_STATUS}: field {field} has unit {unit!r}, expected 'kB'")
            return int(value)
    raise ValueError(f"{_PROC_STATUS}: no field {field!r} (not a Linux kernel?)")


def reset_host_peak_memory() -> None:
    """Resets the process's resident-set high-water mark (`VmHWM`) to the current RSS.

    Uses Linux's `/proc/self/clear_refs` (value 5, Linux >= 4.0).

    Raises:
      OSError: if the kernel does not allow the reset; the caller must then not report a
        per-variant peak, since the mark would include earlier variants.
    """
    try:
        _PROC_CLEAR_REFS.write_text("5")
    except OSError as error:
        raise OSError(
            f"{_PROC_CLEAR_REFS}: cannot reset the RSS high-water mark ({error}); "
            "per-variant host peak memory cannot be measured on this kernel"
        ) from error


def host_peak_memory_bytes() -> int:
    """Resident-set high-water mark of this process since the last reset, in bytes."""
    return _read_status_kib("VmHWM") * 1024


def host_current_memory_bytes() -> int:
    """Current resident-set size of this process, in bytes."""
    return _read_status_kib("VmRSS") * 1024


def jax_device_peak_memory_bytes(device: jax.Device | None = None) -> int | None:
    """JAX's `peak_bytes_in_use` for an accelerator; None on CPU (no allocator stats)."""
    device = device or jax.devices()[0]
    stats = device.memory_stats()
    if not stats:
        return None
    if "peak_bytes_in_use" not in stats:
        raise KeyError(
            f"{device}: memory_stats() has no 'peak_bytes_in_use' (keys: {sorted(stats)})"
        )
    return int(stats["peak_bytes_in_use"])


@dataclasses.dataclass(frozen=True)
class PeakMemory:
    """Peak memory of one measured block; `kind` says what the numbers mean."""

    kind: str  # "host RSS high-water mark" or "device allocator peak"
    peak_bytes: int
    baseline_bytes: int  # RSS (or device bytes in use) before the block

    @property
    def increase_bytes(self) -> int:
        """Peak minus the baseline: what the measured block itself added."""
        return self.peak_bytes - self.baseline_bytes


def measure_host_peak_memory(step: Callable[[], Any], num_calls: int = 2) -> PeakMemory:
    """Runs `step` `num_calls` times and returns the RSS high-water mark over those calls."""
    reset_host_peak_memory()
    baseline = host_current_memory_bytes()
    for _ in range(num_calls):
        step()
    return PeakMemory("host RSS high-water mark", host_peak_memory_bytes(), baseline)


# ---------------------------------------------------------------------------- FLOPs / peak


def xla_flops(compiled: jax.stages.Compiled) -> float:
    """FLOPs of one call of a compiled JAX computation, from XLA's cost analysis.

    Raises:
      ValueError: if the cost analysis has no `flops` entry (some backends return none).
    """
    analysis = compiled.cost_analysis()
    if isinstance(analysis, Sequence) and not isinstance(analysis, Mapping):
        # Older jax returned one dict per partition.
        analyses = list(analysis)
    else:
        analyses = [analysis]
    total = 0.0
    for entry in analyses:
        if not entry or "flops" not in entry:
            raise ValueError(
                f"XLA cost analysis has no 'flops' entry (got keys {sorted(entry or {})}); "
                "FLOPs per step cannot be reported on this backend"
            )
        total += float(entry["flops"])
    return total


@dataclasses.dataclass(frozen=True)
class MatmulPeak:
    """Measured matrix-multiply throughput: the roofline MFU is computed against."""

    dtype: str
    size: int
    median_s: float
    flops_per_s: float


def measure_matmul_peak(
    dtype: str = "float32",
    size: int | None = None,
    num_steps: int = MIN_TIMED_STEPS,
    device: jax.Device | None = None,
) -> MatmulPeak:
    """Times a square `size x size` JAX matmul on `device`: the achievable matmul peak.

    `size` defaults to 2048 on CPU and 8192 on accelerators (large enough to be compute
    bound). The result is 2 * size**3 / median time.
    """
    device = device or jax.devices()[0]
    if size is None:
        size = 2048 if device.platform == "cpu" else 8192
    if size <= 0:
        raise ValueError(f"measure_matmul_peak: size={size} must be positive")
    key_a, key_b = jax.random.split(jax.random.key(0))
    a = jax.device_put(jax.random.normal(key_a, (size, size), jnp.dtype(dtype)), device)
    b = jax.device_put(jax.random.normal(key_b, (size, size), jnp.dtype(dtype)), device)
    matmul = jax.jit(lambda x, y: x @ y)
    timed = time_interleaved(
        {"matmul": lambda: jax.block_until_ready(matmul(a, b))},
        num_warmup=2,
        num_steps=num_steps,
    )["matmul"]
    # The fastest call is the best estimate of the attainable peak on a shared machine;
    # the median is kept in the record for reference.
    return MatmulPeak(str(jnp.dtype(dtype)), size, timed.median_s, 2.0 * size**3 / timed.min_s)


def model_flops_utilisation(flops_per_step: float, step_s: float, peak_flops_per_s: float) -> float:
    """MFU: achieved FLOP/s of the step divided by the measured matmul peak."""
    if step_s <= 0 or peak_flops_per_s <= 0:
        raise ValueError(
            f"MFU needs positive step time and peak (got {step_s}, {peak_flops_per_s})"
        )
    return flops_per_step / step_s / peak_flops_per_s


# ---------------------------------------------------------------------------- machine / report


COLD_COMPILATION_NOTE = ("compilation cache off (`benchmarks.timing.cold_compilation`): "
                         "compile and first-call times are those of a first run")


def cold_compilation() -> str:
    """Turns the persistent compilation cache off for this process (a benchmark that times
    compilation must compile), and returns the note its report carries."""
    from damono_jax import compile_cache

    compile_cache.disable()
    return COLD_COMPILATION_NOTE


def smoke_compilation() -> str:
    """Turns the persistent compilation cache on where every command would (a smoke run checks
    the script, its times mean nothing, and the test suite's run then loads what an earlier
    run compiled), and returns the note its report carries."""
    from damono_jax import compile_cache

    path = compile_cache.enable()
    return (f"compilation cache {'off' if path is None else 'on at ' + path} "
            "(`benchmarks.timing.smoke_compilation`, a dry run): compile and first-call times "
            "may be cache loads")


def cpu_model_name() -> str:
    """The CPU model string from /proc/cpuinfo (or platform.processor() off Linux)."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def machine_description() -> dict[str, str]:
    """Machine facts that go next to every result: CPU, cores, devices, library versions."""
    facts = {
        "date (UTC)": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M"),
        "cpu": cpu_model_name(),
        "cores usable": str(len(os.sched_getaffinity(0))),
        "cores online": str(os.cpu_count()),
        "jax": jax.__version__,
        "jax devices": ", ".join(f"{d.platform}:{d.device_kind}" for d in jax.devices()),
        "python": platform.python_version(),
    }
    try:
        import torch

        facts["torch"] = torch.__version__
        facts["torch threads"] = str(torch.get_num_threads())
        if torch.cuda.is_available():
            facts["torch device"] = torch.cuda.get_device_name()
    except ImportError:
        facts["torch"] = "not installed"
    facts["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "")
    return facts


def report_header(
    title: str,
    command: str,
    machine: Mapping[str, str],
    note: str | None = None,
    omit: Sequence[str] = (),
) -> list[str]:
    """The opening lines of a BENCHMARKS.md section: heading, note, command, machine facts.

    `omit` names machine facts to leave out (e.g. XLA_FLAGS where the table varies them).
    """
    lines = [f"## {title}", ""]
    if note:
        lines += [note, ""]
    lines += [f"Command: `{command}`", ""]
    lines += [f"- {key}: {value}" for key, value in machine.items() if key not in omit]
    return lines


def format_bytes(num_bytes: int | None) -> str:
    """Human-readable byte count (MiB / GiB), or 'n/a'."""
    if num_bytes is None:
        return "n/a"
    if num_bytes >= 1 << 30:
        return f"{num_bytes / (1 << 30):.2f} GiB"
    return f"{num_bytes / (1 << 20):.0f} MiB"


def relative_error(actual: np.ndarray, reference: np.ndarray) -> float:
    """max |actual - reference| / max |reference| (0 when both are zero)."""
    actual, reference = np.asarray(actual, np.float64), np.asarray(reference, np.float64)
    if actual.shape != reference.shape:
        raise ValueError(f"relative_error: shapes differ {actual.shape} vs {reference.shape}")
    scale = np.max(np.abs(reference))
    diff = np.max(np.abs(actual - reference)) if actual.size else 0.0
    return float(diff / scale) if scale > 0 else float(diff)
