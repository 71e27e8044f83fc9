"""Where the train step's time goes, by op category: JAX (jax.profiler) vs the PyTorch twin.

JAX: after warm-up, `jax.profiler.trace` records `--num_steps` steps of the compiled train
step (`benchmarks.train_step.JaxStep`). On CPU, XLA's thunk runtime emits one trace event
per executed thunk (fusion, convolution, dot, copy, ...) named after its HLO instruction,
with `hlo_op` / `hlo_module` stats; no XLA_FLAGS are needed (jax 0.10). The events are read
from the `.xplane.pb` with `jax.profiler.ProfileData`. Thunks of one step run on several
threads at once, so each op is charged its share of wall time: where k ops overlap, each
gets 1/k of that interval, and the categories sum to the time some op was running (the
rest of the step is host work: dispatch, argument handling, idle threads).

Every instruction of the compiled HLO (`compiled.as_text()`) is classified from its opcode,
and for fusions from the instructions they call: a convolution is backward-input when it
has lhs dilation, backward-filter when its result has the dims of a kernel (a rank-4 entry
parameter; XLA swaps operands and drops metadata, so shapes are the reliable signal),
backward-input when JAX's op_name says it is a transposed JVP, and forward otherwise;
dots; reductions (BatchNorm statistics, loss means); pooling windows; data movement
(copy / transpose / slice / concatenate); pads; the rest of the fusions are elementwise.
FLOPs of convolutions and dots are computed from shapes and windows, counting only
multiply-adds that touch real (not padded or dilation-hole) input, as XLA's cost analysis
does; bytes are the operand and result sizes of each executed instruction.

PyTorch: `torch.profiler.profile` over the same number of steps of the twin (eager),
aggregated by aten op (self CPU time) into the same categories where they map; PyTorch's
`convolution_backward` computes the input and the filter gradient together, so it is one
row, `conv_bwd`. Its FLOPs are taken from the JAX side (the twin is the same network).

    python -m benchmarks.profile_step --image_size=192,640 --batch_size=2 --num_steps=3 \\
        --output=BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import os
import re
import shlex
import shutil
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import timing, train_step  # noqa: E402
from damono_jax.models.conv import BAND_SCOPE  # noqa: E402

SECTION_ID = "profile"
TOP_OPS = 15

# The categories of both tables, in display order. `conv_bwd` is PyTorch's fused
# input + filter gradient (JAX splits it into conv_bwd_input and conv_bwd_filter).
CATEGORIES = (
    "conv_fwd",
    "conv_bwd_input",
    "conv_bwd_filter",
    "conv_bwd",
    "dot",
    "reduce",
    "pool",
    "elementwise",
    "copy_transpose",
    "pad",
    "other",
)
_DATA_MOVEMENT = frozenset(
    {
        "parameter",
        "constant",
        "copy",
        "transpose",
        "bitcast",
        "reshape",
        "broadcast",
        "slice",
        "dynamic-slice",
        "dynamic-update-slice",
        "concatenate",
        "tuple",
        "get-tuple-element",
        "reverse",
        "iota",
        "copy-start",
        "copy-done",
    }
)
_ELEMENTWISE_TOP_LEVEL = frozenset(
    {
        "add",
        "subtract",
        "multiply",
        "divide",
        "maximum",
        "minimum",
        "select",
        "compare",
        "exponential",
        "log",
        "negate",
        "sqrt",
        "rsqrt",
        "tanh",
        "convert",
        "abs",
        "power",
        "and",
        "or",
        "not",
        "clamp",
    }
)
_DTYPE_BYTES = {
    "pred": 1,
    "s8": 1,
    "u8": 1,
    "s16": 2,
    "u16": 2,
    "f16": 2,
    "bf16": 2,
    "s32": 4,
    "u32": 4,
    "f32": 4,
    "s64": 8,
    "u64": 8,
    "f64": 8,
    "c64": 8,
    "c128": 16,
}

_COMPUTATION_RE = re.compile(r"^(?:ENTRY\s+)?%?(?P<name>[^\s(]+)\s+\(.*\)\s*->\s*.*\{\s*$")
_INSTRUCTION_RE = re.compile(
    r"^\s*(?:ROOT\s+)?%?(?P<name>[^\s=]+)\s*=\s*(?P<type>\([^=]*?\)|[^\s(]+)\s+"
    r"(?P<opcode>[a-z][\w\-]*)\((?P<operands>[^)]*)\)(?P<attrs>.*)$"
)
_ARRAY_TYPE_RE = re.compile(r"(?P<dtype>[a-z]+\d*)\[(?P<dims>[\d,]*)\]")


# ---------------------------------------------------------------------------- HLO parsing


@dataclasses.dataclass
class Instruction:
    """One HLO instruction as written in the module text."""

    name: str
    opcode: str
    type: str
    operands: tuple[str, ...]
    attrs: str
    computation: str

    def attr(self, key: str) -> str | None:
        """The raw value of `key=...` (braces kept balanced), or None."""
        match = re.search(rf"(?:^|[\s,]){re.escape(key)}=", self.attrs)
        if not match:
            return None
        start = match.end()
        if self.attrs[start : start + 1] in ("{", '"'):
            depth, index = 0, start
            closing = {"{": "}", '"': '"'}[self.attrs[start]]
            while index < len(self.attrs):
                char = self.attrs[index]
                if char == closing and (closing != '"' or index > start):
                    if closing == '"' or depth == 1:
                        return self.attrs[start + 1 : index]
                    depth -= 1
                elif char == "{":
                    depth += 1
                index += 1
            return self.attrs[start + 1 :]
        return re.split(r"[,\s]", self.attrs[start:], maxsplit=1)[0]

    @property
    def op_name(self) -> str:
        """JAX's `metadata={op_name=...}` (the traced primitive's name stack), or ''."""
        match = re.search(r'op_name="([^"]*)"', self.attrs)
        return match.group(1) if match else ""


@dataclasses.dataclass
class HloModule:
    """The instructions of a module's text, by name, and the computations' members."""

    name: str
    instructions: dict[str, Instruction]
    computations: dict[str, list[str]]
    entry: str


def parse_hlo_module(text: str) -> HloModule:
    """Parses `compiled.as_text()` (HLO text) into instructions and computations.

    Raises:
      ValueError: if the text holds no `HloModule` header or no instruction.
    """
    header = re.search(r"^HloModule\s+([^\s,]+)", text, re.MULTILINE)
    if not header:
        raise ValueError("HLO text has no 'HloModule <name>' header (not compiled.as_text()?)")
    instructions: dict[str, Instruction] = {}
    computations: dict[str, list[str]] = {}
    current, entry = "", ""
    for line in text.splitlines():
        match = _COMPUTATION_RE.match(line)
        if match:
            current = match.group("name")
            computations[current] = []
            if line.startswith("ENTRY"):
                entry = current
            continue
        if not current:
            continue
        match = _INSTRUCTION_RE.match(line)
        if not match:
            continue
        operands = tuple(
            part.strip().split()[-1].lstrip("%")
            for part in match.group("operands").split(",")
            if part.strip()
        )
        instruction = Instruction(
            name=match.group("name"),
            opcode=match.group("opcode"),
            type=match.group("type"),
            operands=operands,
            attrs=match.group("attrs"),
            computation=current,
        )
        instructions[instruction.name] = instruction
        computations[current].append(instruction.name)
    if not instructions:
        raise ValueError(f"HLO module {header.group(1)}: no instruction could be parsed")
    return HloModule(header.group(1), instructions, computations, entry)


def array_dims(type_string: str) -> list[tuple[str, tuple[int, ...]]]:
    """The (dtype, dims) of each array in an HLO type (one, or several for a tuple)."""
    return [
        (m.group("dtype"), tuple(int(d) for d in m.group("dims").split(",") if d))
        for m in _ARRAY_TYPE_RE.finditer(type_string)
    ]


def type_bytes(type_string: str) -> int:
    """Bytes of all arrays in an HLO type."""
    return sum(
        _DTYPE_BYTES.get(dtype, 4) * int(np.prod(dims, dtype=np.int64))
        for dtype, dims in array_dims(type_string)
    )


def _shape(type_string: str) -> tuple[int, ...]:
    arrays = array_dims(type_string)
    if len(arrays) != 1:
        raise ValueError(f"expected one array type, got {type_string!r}")
    return arrays[0][1]


def _window(instruction: Instruction) -> dict[str, list[Any]]:
    """The convolution window as lists per spatial dim: size, stride, pad, dilations."""
    text = instruction.attr("window") or ""
    fields = dict(re.findall(r"(\w+)=([\w\-]+)", text))
    if "size" not in fields:
        raise ValueError(f"{instruction.name}: convolution without window size ({text!r})")
    size = [int(v) for v in fields["size"].split("x")]
    rank = len(size)

    def ints(key: str, default: int) -> list[int]:
        return [int(v) for v in fields[key].split("x")] if key in fields else [default] * rank

    pads = (
        [tuple(int(v) for v in p.split("_")) for p in fields["pad"].split("x")]
        if "pad" in fields
        else [(0, 0)] * rank
    )
    return {
        "size": size,
        "stride": ints("stride", 1),
        "pad": pads,
        "lhs_dilate": ints("lhs_dilate", 1),
        "rhs_dilate": ints("rhs_dilate", 1),
    }


def _valid_taps(
    length: int, out: int, size: int, stride: int, pad_low: int, lhs_dilate: int, rhs_dilate: int
) -> int:
    """(output position, window tap) pairs of one spatial dim that read real input."""
    positions = np.arange(out)[:, None] * stride + np.arange(size)[None, :] * rhs_dilate - pad_low
    dilated = (length - 1) * lhs_dilate + 1
    valid = (positions >= 0) & (positions < dilated) & (positions % lhs_dilate == 0)
    return int(valid.sum())


@dataclasses.dataclass(frozen=True)
class ConvInfo:
    """What a convolution computes, read from its dim_labels, shapes and window."""

    lhs: tuple[int, ...]  # in dim_labels order: batch, feature, spatial...
    rhs: tuple[int, ...]  # input feature, output feature, spatial...
    out: tuple[int, ...]  # batch, feature, spatial...
    window: Mapping[str, Any]
    flops: float


def conv_info(instruction: Instruction, types: Mapping[str, str]) -> ConvInfo:
    """Shapes in (b, f, spatial) order and the FLOPs of a convolution instruction."""
    labels = instruction.attr("dim_labels")
    if not labels or "->" not in labels or "_" not in labels:
        raise ValueError(f"{instruction.name}: convolution without dim_labels")
    lhs_labels, rest = labels.split("_", 1)
    rhs_labels, out_labels = rest.split("->")
    lhs_shape = _shape(types[instruction.operands[0]])
    rhs_shape = _shape(types[instruction.operands[1]])
    out_shape = _shape(instruction.type)

    def reorder(shape: tuple[int, ...], labels: str, first: str, second: str) -> tuple[int, ...]:
        spatial = sorted((c for c in labels if c.isdigit()), key=int)
        return tuple(shape[labels.index(c)] for c in (first, second, *spatial))

    lhs = reorder(lhs_shape, lhs_labels, "b", "f")
    rhs = reorder(rhs_shape, rhs_labels, "i", "o")
    out = reorder(out_shape, out_labels, "b", "f")
    window = _window(instruction)
    taps = 1
    for d in range(len(window["size"])):
        taps *= _valid_taps(
            lhs[2 + d],
            out[2 + d],
            window["size"][d],
            window["stride"][d],
            window["pad"][d][0],
            window["lhs_dilate"][d],
            window["rhs_dilate"][d],
        )
    flops = 2.0 * out[0] * out[1] * rhs[0] * taps
    return ConvInfo(lhs, rhs, out, window, flops)


def dot_flops(instruction: Instruction, types: Mapping[str, str]) -> float:
    """2 * output elements * contracted size of a dot."""
    lhs_shape = _shape(types[instruction.operands[0]])
    contracting = instruction.attr("lhs_contracting_dims") or ""
    contracted = int(np.prod([lhs_shape[int(d)] for d in contracting.split(",") if d]))
    return 2.0 * float(np.prod(_shape(instruction.type))) * contracted


@dataclasses.dataclass
class OpInfo:
    """One executable HLO instruction (what a thunk runs), classified."""

    name: str
    category: str
    opcode: str
    flops: float
    bytes: int
    shapes: str  # operand shapes -> result shape
    detail: str  # window / dim_labels of the convolution, fusion kind, ...
    implementation: str = ""  # what runs it: "ynnpack" fusion, XLA "convolution" thunk, ...


def _called(instruction: Instruction) -> list[str]:
    names = []
    for key in ("calls", "to_apply", "body", "condition", "branch_computations"):
        value = instruction.attr(key)
        if value:
            names += [v.strip().lstrip("%") for v in value.split(",") if v.strip()]
    return names


def _members(module: HloModule, computation: str) -> list[Instruction]:
    """The instructions of a fused computation, nested fusions included."""
    found = []
    for name in module.computations.get(computation, []):
        instruction = module.instructions[name]
        found.append(instruction)
        if instruction.opcode == "fusion":
            for called in _called(instruction):
                found += _members(module, called)
    return found


def _kernel_dims(module: HloModule) -> set[tuple[int, ...]]:
    """Sorted dims of the rank-4 entry parameters: the step's conv kernels (and its images).

    XLA swaps convolution operands and rewrites their metadata freely, so a gradient
    convolution is recognised by its result having a kernel's dims, not by its operands.
    """
    return {
        tuple(sorted(_shape(ins.type)))
        for name in module.computations.get(module.entry, [])
        if (ins := module.instructions[name]).opcode == "parameter"
        and len(array_dims(ins.type)) == 1
        and len(_shape(ins.type)) == 4
    }


def _conv_category(info: ConvInfo, op_name: str, kernels: set[tuple[int, ...]]) -> str:
    """conv_bwd_input: lhs dilation (strided conv's input gradient), else a transposed-JVP
    conv whose result is not kernel-shaped; conv_bwd_filter: a kernel-shaped result, or a
    conv of `damono_jax.models.conv.band_weight_gradient` (by its named scope `BAND_SCOPE`;
    rank 3, not kernel-shaped)."""
    if BAND_SCOPE in op_name:
        return "conv_bwd_filter"
    if max(info.window["lhs_dilate"]) > 1:
        return "conv_bwd_input"
    if tuple(sorted(info.out)) in kernels:
        return "conv_bwd_filter"
    if "transpose(" in op_name:
        return "conv_bwd_input"
    return "conv_fwd"


def classify_module(module: HloModule) -> dict[str, OpInfo]:
    """Classifies every instruction of every non-fused computation (thunk candidates)."""
    types = {name: ins.type for name, ins in module.instructions.items()}
    kernels = _kernel_dims(module)
    # Fused computations and reducers (`to_apply`) never run as thunks of their own.
    fused = {
        called.strip().lstrip("%")
        for ins in module.instructions.values()
        for key in ("calls", "to_apply")
        for called in (ins.attr(key) or "").split(",")
        if called.strip()
    }
    ops: dict[str, OpInfo] = {}
    for computation, names in module.computations.items():
        if computation in fused:
            continue
        for name in names:
            instruction = module.instructions[name]
            if instruction.opcode in ("parameter", "constant", "tuple", "get-tuple-element"):
                continue
            ops[name] = _classify(module, instruction, types, kernels)
    return ops


def _classify(
    module: HloModule,
    instruction: Instruction,
    types: Mapping[str, str],
    kernels: set[tuple[int, ...]],
) -> OpInfo:
    operand_types = [types.get(o, "?") for o in instruction.operands]
    shapes = ", ".join(_short_type(t) for t in operand_types) + " -> "
    shapes += _short_type(instruction.type)
    nbytes = type_bytes(instruction.type) + sum(type_bytes(t) for t in operand_types)
    members = (
        _members(module, _called(instruction)[0])
        if instruction.opcode == "fusion" and _called(instruction)
        else [instruction]
    )
    opcodes = {m.opcode for m in members}
    convs = [m for m in members if m.opcode == "convolution"]
    dots = [m for m in members if m.opcode == "dot"]
    detail = instruction.attr("kind") or ""
    flops = 0.0
    if convs:
        category = ""
        for conv in convs:
            info = conv_info(conv, types)
            flops += info.flops
            category = category or _conv_category(
                info, conv.op_name or instruction.op_name, kernels
            )
            detail = f"window={{{conv.attr('window')}}} {conv.attr('dim_labels')}"
    elif dots:
        category = "dot"
        flops = sum(dot_flops(d, types) for d in dots)
        detail = f"contracting={dots[0].attr('lhs_contracting_dims')}"
    elif opcodes & {"reduce-window", "select-and-scatter"}:
        category = "pool"
    elif "reduce" in opcodes:
        category = "reduce"
    elif opcodes <= _DATA_MOVEMENT | {"pad"}:
        category = "pad" if "pad" in opcodes else "copy_transpose"
    elif instruction.opcode == "fusion" or opcodes <= _ELEMENTWISE_TOP_LEVEL:
        category = "elementwise"
    else:
        category = "other"
        detail = instruction.opcode
    implementation = "ynnpack" if "__ynn_fusion" in instruction.attrs else instruction.opcode
    return OpInfo(
        instruction.name,
        category,
        instruction.opcode,
        flops,
        nbytes,
        shapes,
        detail.strip(),
        implementation,
    )


def _short_type(type_string: str) -> str:
    arrays = array_dims(type_string)
    if not arrays:
        return type_string
    return "+".join(f"{dtype}[{','.join(map(str, dims))}]" for dtype, dims in arrays)


# ---------------------------------------------------------------------------- trace parsing


@dataclasses.dataclass(frozen=True)
class OpEvent:
    """One executed thunk: HLO instruction name, thread and interval (ns)."""

    op: str
    thread: str
    start_ns: float
    end_ns: float


def find_trace_file(trace_dir: str | os.PathLike[str]) -> Path:
    """The newest `*.xplane.pb` under `trace_dir` (as `jax.profiler.trace` writes it).

    Raises:
      FileNotFoundError: naming `trace_dir` when it holds no trace.
    """
    files = sorted(Path(trace_dir).glob("**/*.xplane.pb"), key=lambda p: p.stat().st_mtime)
    if not files:
        raise FileNotFoundError(
            f"{trace_dir}: no *.xplane.pb trace file under it (did jax.profiler.trace run "
            "and write there?)"
        )
    return files[-1]


def read_op_events(trace_file: str | os.PathLike[str], module_name: str) -> list[OpEvent]:
    """The thunk events of HLO module `module_name` in an `.xplane.pb` trace.

    Raises:
      FileNotFoundError: naming the file when it does not exist.
      ValueError: naming the file when it holds no event of the module.
    """
    path = Path(trace_file)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: trace file not found")
    from jax.profiler import ProfileData

    data = ProfileData.from_file(str(path))
    events = []
    modules: collections.Counter[str] = collections.Counter()
    for plane in data.planes:
        for line in plane.lines:
            for event in line.events:
                stats = dict(event.stats)
                if "hlo_op" not in stats:
                    continue
                modules[str(stats.get("hlo_module"))] += 1
                if stats.get("hlo_module") != module_name:
                    continue
                start = float(event.start_ns)
                events.append(
                    OpEvent(
                        str(stats["hlo_op"]),
                        f"{plane.name}/{line.name}",
                        start,
                        start + float(event.duration_ns),
                    )
                )
    if not events:
        raise ValueError(
            f"{path}: no op event of HLO module {module_name!r} (modules with op events: "
            f"{dict(modules) or 'none'})"
        )
    return events


def attribute_wall_time(events: Iterable[OpEvent]) -> tuple[dict[str, float], dict[str, float]]:
    """Per-op (wall share, thread self time) in ns.

    On each thread, an event enclosing others (a while loop around its body's thunks) keeps
    only its own time. Across threads, time where k ops run at once is split k ways, so the
    wall shares sum to the time at least one op was running.
    """
    by_thread: dict[str, list[OpEvent]] = collections.defaultdict(list)
    for event in events:
        by_thread[event.thread].append(event)
    segments: list[tuple[float, float, str]] = []
    for thread_events in by_thread.values():
        segments += _self_segments(thread_events)
    self_ns: dict[str, float] = collections.defaultdict(float)
    for start, end, op in segments:
        self_ns[op] += end - start
    boundaries = sorted(
        [(start, 1, i) for i, (start, _, _) in enumerate(segments)]
        + [(end, 0, i) for i, (_, end, _) in enumerate(segments)]
    )
    wall_ns: dict[str, float] = collections.defaultdict(float)
    active: set[int] = set()
    previous = None
    for when, kind, index in boundaries:
        if active and previous is not None and when > previous:
            share = (when - previous) / len(active)
            for i in active:
                wall_ns[segments[i][2]] += share
        previous = when
        if kind == 1:
            active.add(index)
        else:
            active.discard(index)
    return dict(wall_ns), dict(self_ns)


def _self_segments(events: list[OpEvent]) -> list[tuple[float, float, str]]:
    """Non-overlapping (start, end, op) pieces of one thread's possibly nested events."""
    segments = []
    stack: list[tuple[float, str]] = []  # (end, op) of enclosing events
    cursor = 0.0

    def emit(start: float, end: float, op: str) -> None:
        if end > start:
            segments.append((start, end, op))

    for event in sorted(events, key=lambda e: (e.start_ns, -e.end_ns)):
        while stack and stack[-1][0] <= event.start_ns:
            end, op = stack.pop()
            emit(cursor, end, op)
            cursor = end
        if stack:
            emit(cursor, event.start_ns, stack[-1][1])
        end = min(event.end_ns, stack[-1][0]) if stack else event.end_ns
        stack.append((end, event.op))
        cursor = event.start_ns
    while stack:
        end, op = stack.pop()
        emit(cursor, end, op)
        cursor = end
    return segments


# ---------------------------------------------------------------------------- tables


@dataclasses.dataclass
class CategoryRow:
    """Time, work and op count of one category, per step."""

    ms: float = 0.0
    thread_ms: float = 0.0
    flops: float = 0.0
    bytes: float = 0.0
    count: float = 0.0


@dataclasses.dataclass
class Profile:
    """One framework's per-step profile: categories, top ops and the step's wall time."""

    framework: str
    step_ms: float  # median wall time of the profiled steps
    categories: dict[str, CategoryRow]
    top_ops: list[list[str]]
    notes: list[str]
    # (category, implementation) -> row, for the FLOP-carrying categories (JAX only).
    implementations: dict[tuple[str, str], CategoryRow] = dataclasses.field(default_factory=dict)

    @property
    def op_ms(self) -> float:
        """Sum of the categories' ms per step."""
        return sum(row.ms for row in self.categories.values())


def jax_profile(
    ops: Mapping[str, OpInfo],
    events: Sequence[OpEvent],
    num_steps: int,
    step_ms: float,
) -> Profile:
    """Aggregates a JAX trace's op events per category (ms/step, FLOPs, bytes, top ops).

    Raises:
      ValueError: if an event names an instruction the HLO does not have.
    """
    wall_ns, self_ns = attribute_wall_time(events)
    counts = collections.Counter(event.op for event in events)
    unknown = sorted(set(counts) - set(ops))
    if unknown:
        raise ValueError(
            f"trace ops not in the compiled HLO: {unknown[:5]} ({len(unknown)} in all); "
            "was the trace taken of this compiled step?"
        )
    categories = {name: CategoryRow() for name in CATEGORIES}
    implementations: dict[tuple[str, str], CategoryRow] = {}
    for op in counts:
        info = ops[op]
        rows = [categories[info.category]]
        if info.flops:
            key = (info.category, info.implementation)
            rows.append(implementations.setdefault(key, CategoryRow()))
        executions = counts[op] / num_steps
        for row in rows:
            row.ms += wall_ns.get(op, 0.0) / 1e6 / num_steps
            row.thread_ms += self_ns.get(op, 0.0) / 1e6 / num_steps
            row.flops += info.flops * executions
            row.bytes += info.bytes * executions
            row.count += executions
    top = sorted(wall_ns, key=wall_ns.get, reverse=True)[:TOP_OPS]
    top_rows = []
    for op in top:
        info = ops[op]
        ms = wall_ns[op] / 1e6 / num_steps
        per_step_flops = info.flops * counts[op] / num_steps
        top_rows.append(
            [
                f"`{op}`",
                info.category,
                f"{ms:.1f}",
                f"{self_ns.get(op, 0.0) / 1e6 / num_steps:.1f}",
                f"{per_step_flops / 1e9:.2f}" if info.flops else "",
                f"{per_step_flops / ms / 1e6:.1f}" if info.flops and ms > 0 else "",
                f"`{info.shapes}`",
                info.detail.replace("|", "/"),
            ]
        )
    threads = len({event.thread for event in events})
    notes = [
        f"{len(events) / num_steps:.0f} op events per step on {threads} threads; the ops' "
        f"summed thread time is {sum(r.thread_ms for r in categories.values()):.1f} ms/step"
    ]
    return Profile(
        "jax", step_ms, categories, top_rows, notes, dict(sorted(implementations.items()))
    )


# PyTorch aten op -> category (self CPU time). Ops not listed: elementwise when they are
# aten ops, `other` otherwise (autograd engine nodes, optimizer wrappers, record_function).
_TORCH_CATEGORIES = {
    "conv_fwd": (
        "convolution",
        "_convolution",
        "conv2d",
        "mkldnn_convolution",
        "_slow_conv2d_forward",
        "thnn_conv2d",
    ),
    "conv_bwd": ("convolution_backward", "mkldnn_convolution_backward", "_slow_conv2d_backward"),
    "dot": ("mm", "addmm", "bmm", "matmul", "linear", "baddbmm", "einsum"),
    "reduce": (
        "native_batch_norm",
        "native_batch_norm_backward",
        "batch_norm",
        "_batch_norm_impl_index",
        "_batch_norm_with_update",
        "batch_norm_backward",
        "_batch_norm_impl_index_backward",
        "sum",
        "mean",
        "var",
        "std",
        "max",
        "min",
        "amax",
        "amin",
        "nll_loss2d_forward",
        "nll_loss2d_backward",
        "nll_loss_forward",
        "nll_loss_backward",
        "_log_softmax",
        "_log_softmax_backward_data",
        "logsumexp",
        "norm",
        "cumsum",
        "argmax",
    ),
    "pool": (
        "max_pool2d",
        "max_pool2d_with_indices",
        "max_pool2d_with_indices_backward",
        "avg_pool2d",
        "avg_pool2d_backward",
    ),
    "copy_transpose": (
        "copy_",
        "clone",
        "contiguous",
        "cat",
        "stack",
        "to",
        "_to_copy",
        "index",
        "index_put_",
        "slice_backward",
        "narrow_copy",
        "select_backward",
        "flip",
        "roll",
        "repeat",
        "expand",
        "permute",
        "transpose",
        "view",
        "reshape",
        "_reshape_alias",
        "as_strided",
        "slice",
        "select",
        "unsqueeze",
        "squeeze",
        "t",
        "detach",
        "empty",
        "empty_like",
        "empty_strided",
        "zeros",
        "zeros_like",
        "zero_",
        "fill_",
        "ones_like",
        "resize_",
        "split",
        "chunk",
        "unbind",
        "alias",
        "lift_fresh",
    ),
    "pad": (
        "reflection_pad2d",
        "reflection_pad2d_backward",
        "constant_pad_nd",
        "pad",
        "replication_pad2d",
        "replication_pad2d_backward",
    ),
}
_TORCH_OP_CATEGORY = {op: cat for cat, names in _TORCH_CATEGORIES.items() for op in names}


def torch_op_category(name: str) -> str:
    """Category of a torch profiler event name (e.g. 'aten::mkldnn_convolution')."""
    if not name.startswith("aten::"):
        return "other"
    return _TORCH_OP_CATEGORY.get(name.removeprefix("aten::"), "elementwise")


def torch_profile(
    step: Callable[[], None], num_steps: int, jax_categories: Mapping[str, CategoryRow]
) -> Profile:
    """Profiles `num_steps` calls of the twin's step; FLOPs per category from the JAX side."""
    import torch

    times = []
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(num_steps):
            start = time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
    categories = {name: CategoryRow() for name in CATEGORIES}
    by_op = []
    for event in prof.key_averages():
        row = categories[torch_op_category(event.key)]
        ms = event.self_cpu_time_total / 1e3 / num_steps
        row.ms += ms
        row.thread_ms += ms
        row.count += event.count / num_steps
        by_op.append((ms, event.key, event.count / num_steps))
    flops = {
        "conv_fwd": jax_categories["conv_fwd"].flops,
        "conv_bwd": jax_categories["conv_bwd_input"].flops
        + jax_categories["conv_bwd_filter"].flops,
        "dot": jax_categories["dot"].flops,
    }
    for name, value in flops.items():
        categories[name].flops = value
    top_rows = [
        [f"`{key}`", torch_op_category(key), f"{ms:.1f}", f"{count:.0f}"]
        for ms, key, count in sorted(by_op, reverse=True)[:TOP_OPS]
    ]
    notes = [
        f"{torch.get_num_threads()} intra-op threads; self CPU time of the calling thread "
        "per aten op (convolution_backward = input + filter gradient)"
    ]
    return Profile("torch", 1e3 * statistics.median(times), categories, top_rows, notes)


def category_table(jax_result: Profile, torch_result: Profile | None) -> str:
    """Side-by-side markdown table of the categories (rows with time in either)."""
    header = [
        "category",
        "JAX ms/step",
        "JAX %",
        "JAX GFLOP/step",
        "JAX GFLOP/s",
        "JAX GB/s",
        "JAX ops/step",
    ]
    if torch_result:
        header += ["torch ms/step", "torch %", "torch GFLOP/s", "JAX ms / torch ms"]
    rows = []
    names = list(CATEGORIES)

    def cells(name: str, jax_row: CategoryRow, torch_row: CategoryRow | None) -> list[str]:
        row = [
            name,
            f"{jax_row.ms:.1f}",
            f"{100 * jax_row.ms / jax_result.step_ms:.1f}",
            f"{jax_row.flops / 1e9:.2f}" if jax_row.flops else "",
            f"{jax_row.flops / jax_row.ms / 1e6:.1f}" if jax_row.flops and jax_row.ms else "",
            f"{jax_row.bytes / jax_row.ms / 1e6:.1f}" if jax_row.bytes and jax_row.ms else "",
            f"{jax_row.count:.0f}",
        ]
        if torch_result and torch_row is not None:
            row += [
                f"{torch_row.ms:.1f}",
                f"{100 * torch_row.ms / torch_result.step_ms:.1f}",
                f"{torch_row.flops / torch_row.ms / 1e6:.1f}"
                if torch_row.flops and torch_row.ms
                else "",
                f"{jax_row.ms / torch_row.ms:.2f}" if torch_row.ms and jax_row.ms else "",
            ]
        elif torch_result:
            row += ["", "", "", ""]
        return row

    for name in names:
        jax_row = jax_result.categories[name]
        torch_row = torch_result.categories[name] if torch_result else None
        if not jax_row.ms and not (torch_row and torch_row.ms):
            continue
        rows.append(cells(name, jax_row, torch_row))
    if torch_result:
        both = CategoryRow()
        for name in ("conv_bwd_input", "conv_bwd_filter"):
            for field in dataclasses.fields(CategoryRow):
                value = getattr(jax_result.categories[name], field.name)
                setattr(both, field.name, getattr(both, field.name) + value)
        rows.append(
            cells(
                "(JAX conv_bwd_input + conv_bwd_filter vs torch conv_bwd)",
                both,
                torch_result.categories["conv_bwd"],
            )
        )
    total_row = [
        "**all ops**",
        f"{jax_result.op_ms:.1f}",
        f"{100 * jax_result.op_ms / jax_result.step_ms:.1f}",
        "",
        "",
        "",
        "",
    ]
    step_row = ["**step wall time**", f"{jax_result.step_ms:.1f}", "100.0", "", "", "", ""]
    if torch_result:
        total_row += [
            f"{torch_result.op_ms:.1f}",
            f"{100 * torch_result.op_ms / torch_result.step_ms:.1f}",
            "",
            "",
        ]
        step_row += [
            f"{torch_result.step_ms:.1f}",
            "100.0",
            "",
            f"{jax_result.step_ms / torch_result.step_ms:.2f}",
        ]
    rows += [total_row, step_row]
    return timing.markdown_table(header, rows)


def implementation_table(result: Profile) -> str:
    """Conv / dot time and GFLOP/s of a JAX profile split by what executes the op."""
    rows = [
        [
            category,
            implementation,
            f"{row.count:.0f}",
            f"{row.ms:.1f}",
            f"{row.thread_ms:.1f}",
            f"{row.flops / 1e9:.2f}",
            f"{row.flops / row.ms / 1e6:.1f}" if row.ms else "",
        ]
        for (category, implementation), row in result.implementations.items()
    ]
    header = ["category", "executed as", "ops/step", "ms/step", "thread ms", "GFLOP", "GFLOP/s"]
    return timing.markdown_table(header, rows)


# ---------------------------------------------------------------------------- running


def profile_jax(step: train_step.JaxStep, num_steps: int, trace_dir: str) -> Profile:
    """Traces `num_steps` calls of a warmed-up JaxStep and builds its category profile."""
    shutil.rmtree(trace_dir, ignore_errors=True)
    times = []
    with jax.profiler.trace(trace_dir):
        for _ in range(num_steps):
            start = time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
    module = parse_hlo_module(step.compiled.as_text())
    ops = classify_module(module)
    events = read_op_events(find_trace_file(trace_dir), module.name)
    result = jax_profile(ops, events, num_steps, 1e3 * statistics.median(times))
    conv_dot = sum(r.flops for r in result.categories.values())
    result.notes.append(
        f"conv + dot FLOPs from shapes {conv_dot / 1e9:.2f} G/step; XLA cost analysis of "
        f"the whole step {step.flops / 1e9:.2f} G (includes elementwise and reductions)"
    )
    return result


def _load_average() -> str:
    return " / ".join(f"{v:.2f}" for v in os.getloadavg())


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--image_size", default="192,640", help="height,width (multiples of 32)")
    parser.add_argument("--batch_size", type=int, default=2, help="source images per step")
    parser.add_argument("--num_steps", type=int, default=3, help="profiled steps per framework")
    parser.add_argument("--num_warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--trace_dir", default="/tmp/jax_trace", help="jax.profiler output")
    parser.add_argument("--skip_torch", action="store_true", help="profile only JAX")
    parser.add_argument("--output", default="", help="markdown file to write the section into")
    parser.add_argument("--note", default="", help="free text put above the tables")
    args = parser.parse_args(argv)
    try:
        height, width = (int(v) for v in args.image_size.split(","))
    except ValueError:
        parser.error(f"--image_size={args.image_size!r}: expected 'height,width', e.g. 192,640")
    if height % 32 or width % 32 or height <= 0 or width <= 0:
        parser.error(f"--image_size={args.image_size}: both sides must be positive multiples of 32")
    args.image_size = (height, width)
    for flag in ("batch_size", "num_steps", "num_warmup"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag}={getattr(args, flag)}: must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    command = "python -m benchmarks.profile_step " + shlex.join(
        sys.argv[1:] if argv is None else list(argv)
    )
    args = parse_args(argv)
    load_before = _load_average()
    machine = timing.machine_description()
    config = train_step.benchmark_config(args.batch_size, args.image_size, "float32")
    jax_step = train_step.JaxStep(config)
    for _ in range(args.num_warmup):
        jax_step()
    jax_result = profile_jax(jax_step, args.num_steps, args.trace_dir)
    torch_result = None
    if not args.skip_torch:
        torch_step = train_step.TorchStep(config, jax_step, compile=False)
        for _ in range(args.num_warmup):
            torch_step()
        torch_result = torch_profile(torch_step, args.num_steps, jax_result.categories)
    load_after = _load_average()

    table = category_table(jax_result, torch_result)
    top_jax = timing.markdown_table(
        ["JAX op", "category", "ms/step", "thread ms", "GFLOP", "GFLOP/s", "shapes", "detail"],
        jax_result.top_ops,
    )
    parts = [
        table,
        "",
        "JAX convolutions and dots by what executes them (`ynnpack`: XLA CPU's YNNPACK "
        "fusions; `convolution`: XLA's own (Eigen) convolution thunk). Caveat: at 192x640 "
        "the `convolution` thunks' events are far shorter than their FLOPs allow (GFLOP/s "
        "above any CPU peak), so their compute is not inside their events; it falls in the "
        "step time that `all ops` leaves out. Read their GFLOP/s as meaningless, not fast.",
        "",
        implementation_table(jax_result),
        "",
        f"Top {TOP_OPS} JAX ops (wall share per step):",
        "",
        top_jax,
    ]
    if torch_result:
        top_torch = timing.markdown_table(
            ["torch op", "category", "self ms/step", "calls/step"], torch_result.top_ops
        )
        parts += ["", f"Top {TOP_OPS} torch ops (self CPU time per step):", "", top_torch]
    notes = [f"JAX: {n}" for n in jax_result.notes]
    notes += [f"torch: {n}" for n in (torch_result.notes if torch_result else [])]
    notes.append(f"load average (1/5/15 min) before: {load_before}, after: {load_after}")
    print("\n".join(parts))
    for note in notes:
        print("-", note)
    if args.output:
        height, width = args.image_size
        body = timing.report_header(
            f"Train step profile by op category: JAX vs PyTorch twin "
            f"({jax.default_backend().upper()}, {height}x{width}, batch {args.batch_size})",
            command, machine, args.note,
        )
        body += [
            "",
            "JAX ms are each XLA op's share of wall time (ops overlapping on k threads get "
            "1/k each), so `all ops` is the time some op was running; the rest of the step "
            "is host work and idle threads. torch ms are aten self CPU times on the calling "
            "thread. GFLOP/s = FLOPs (conv/dot, from shapes; the twin's are the JAX "
            "network's) / ms; GB/s = operand + result bytes / ms. Profiling adds overhead: "
            "the step wall times here are not the benchmark's.",
            "",
            *parts,
            "",
            *[f"- {note}" for note in notes],
        ]
        timing.write_markdown_section(args.output, SECTION_ID, "\n".join(body))
        print(f"wrote section {SECTION_ID} of {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
