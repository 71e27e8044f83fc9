"""benchmarks/profile_step.py: HLO classification, trace aggregation, a real 64x96 profile."""

import pytest

from benchmarks import profile_step, train_step
from tests.helpers import fast_compilation  # noqa: F401 - module-wide fixture

# A hand-written module in compiled.as_text()'s format: a forward conv (fused, as the CPU
# backend's ynn fusions), its backward-input (lhs_dilate) and backward-filter (transposed
# JVP, kernel-shaped output) convolutions, a dot, a reduction, a pad, a transpose copy and
# an elementwise fusion.
HLO_TEXT = """\
HloModule jit_small, is_scheduled=true

%fused_conv (param_0: f32[2,16,16,8], param_1: f32[3,3,8,16]) -> f32[2,8,8,16] {
  %param_0 = f32[2,16,16,8]{3,2,1,0} parameter(0)
  %param_1 = f32[3,3,8,16]{3,2,1,0} parameter(1)
  ROOT %conv.1 = f32[2,8,8,16]{3,2,1,0} convolution(%param_0, %param_1), \
window={size=3x3 stride=2x2 pad=1_1x1_1}, dim_labels=b01f_01io->b01f, \
metadata={op_name="jit(f)/jvp()/conv_general_dilated"}
}

%fused_add (param_0.1: f32[2,8,8,16], param_1.1: f32[2,8,8,16]) -> f32[2,8,8,16] {
  %param_0.1 = f32[2,8,8,16]{3,2,1,0} parameter(0)
  %param_1.1 = f32[2,8,8,16]{3,2,1,0} parameter(1)
  %add.1 = f32[2,8,8,16]{3,2,1,0} add(%param_0.1, %param_1.1)
  ROOT %exp.1 = f32[2,8,8,16]{3,2,1,0} exponential(%add.1)
}

%add_scalar (x: f32[], y: f32[]) -> f32[] {
  %x = f32[] parameter(0)
  %y = f32[] parameter(1)
  ROOT %sum = f32[] add(%x, %y)
}

%fused_reduce (param_0.2: f32[2,8,8,16]) -> f32[16] {
  %param_0.2 = f32[2,8,8,16]{3,2,1,0} parameter(0)
  %zero = f32[] constant(0)
  ROOT %reduce.1 = f32[16]{0} reduce(%param_0.2, %zero), dimensions={0,1,2}, to_apply=%add_scalar
}

%fused_transpose (param_0.3: f32[2,8,8,16]) -> f32[8,8,2,16] {
  %param_0.3 = f32[2,8,8,16]{3,2,1,0} parameter(0)
  %transpose.1 = f32[8,8,2,16]{3,0,2,1} transpose(%param_0.3), dimensions={1,2,0,3}
  ROOT %copy.1 = f32[8,8,2,16]{3,2,1,0} copy(%transpose.1)
}

ENTRY %main (x: f32[2,16,16,8], w: f32[3,3,8,16], a: f32[4,32], b: f32[32,8]) \
-> f32[2,8,8,16] {
  %x = f32[2,16,16,8]{3,2,1,0} parameter(0)
  %w = f32[3,3,8,16]{3,2,1,0} parameter(1)
  %a = f32[4,32]{1,0} parameter(2)
  %b = f32[32,8]{1,0} parameter(3)
  %ynn_fusion = f32[2,8,8,16]{3,2,1,0} fusion(%x, %w), kind=kCustom, calls=%fused_conv, \
backend_config={"fusion_config":{"kind":"__ynn_fusion"},"outer_dimension_partitions":[]}
  %g = f32[2,8,8,16]{3,2,1,0} exponential(%ynn_fusion)
  %xt = f32[8,16,16,2]{3,2,1,0} transpose(%x), dimensions={3,1,2,0}
  %wt = f32[3,3,16,8]{3,2,1,0} transpose(%w), dimensions={0,1,3,2}
  %convolution.2 = f32[2,16,16,8]{3,2,1,0} convolution(%g, %wt), \
window={size=3x3 pad=1_2x1_2 lhs_dilate=2x2}, dim_labels=b01f_01io->b01f
  %gt = f32[8,8,2,16]{3,2,1,0} fusion(%g), kind=kLoop, calls=%fused_transpose
  %convolution.3 = f32[8,3,3,16]{3,2,1,0} convolution(%xt, %gt), \
window={size=8x8 pad=1_0x1_0 rhs_dilate=2x2}, dim_labels=b01f_01io->b01f, \
metadata={op_name="jit(f)/transpose(jvp())/conv_general_dilated"}
  %dot.1 = f32[4,8]{1,0} dot(%a, %b), lhs_contracting_dims={1}, rhs_contracting_dims={0}
  %reduce_fusion = f32[16]{0} fusion(%g), kind=kLoop, calls=%fused_reduce
  %zero.2 = f32[] constant(0)
  %pad.1 = f32[2,10,10,16]{3,2,1,0} pad(%g, %zero.2), padding=0_0x1_1x1_1x0_0
  ROOT %add_fusion = f32[2,8,8,16]{3,2,1,0} fusion(%ynn_fusion, %g), kind=kLoop, \
calls=%fused_add
}
"""


def test_classify_hand_written_hlo():
    module = profile_step.parse_hlo_module(HLO_TEXT)
    assert module.name == "jit_small"
    assert module.entry == "main"
    ops = profile_step.classify_module(module)
    categories = {name: op.category for name, op in ops.items()}
    assert categories == {
        "ynn_fusion": "conv_fwd",
        "g": "elementwise",
        "xt": "copy_transpose",
        "wt": "copy_transpose",
        "convolution.2": "conv_bwd_input",
        "gt": "copy_transpose",
        "convolution.3": "conv_bwd_filter",
        "dot.1": "dot",
        "reduce_fusion": "reduce",
        "pad.1": "pad",
        "add_fusion": "elementwise",
    }
    assert set(categories.values()) <= set(profile_step.CATEGORIES)
    # Forward 3x3 stride-2 'SAME' conv 16x16 -> 8x8: per spatial dim, 8 outputs x 3 taps
    # minus the one tap on the low pad -> 23 valid taps; 2 * N * Co * Ci * 23^2.
    assert ops["ynn_fusion"].flops == 2 * 2 * 16 * 8 * 23**2
    # Its input gradient reads the same real (output, tap) pairs: the same FLOPs.
    assert ops["convolution.2"].flops == ops["ynn_fusion"].flops
    # The filter gradient also touches each real pair once.
    assert ops["convolution.3"].flops == ops["ynn_fusion"].flops
    assert ops["dot.1"].flops == 2 * 4 * 8 * 32
    assert ops["ynn_fusion"].bytes == 4 * (2 * 16 * 16 * 8 + 3 * 3 * 8 * 16 + 2 * 8 * 8 * 16)
    assert "stride=2x2" in ops["ynn_fusion"].detail
    assert ops["ynn_fusion"].implementation == "ynnpack"
    assert ops["convolution.2"].implementation == "convolution"
    assert ops["add_fusion"].shapes == "f32[2,8,8,16], f32[2,8,8,16] -> f32[2,8,8,16]"


def test_wall_time_attribution_splits_overlap_and_nesting():
    events = [
        profile_step.OpEvent("a", "t0", 0.0, 100.0),
        profile_step.OpEvent("b", "t1", 50.0, 150.0),  # overlaps a for 50 ns
        profile_step.OpEvent("loop", "t0", 200.0, 300.0),  # encloses c
        profile_step.OpEvent("c", "t0", 220.0, 260.0),
    ]
    wall, own = profile_step.attribute_wall_time(events)
    assert wall == pytest.approx({"a": 75.0, "b": 75.0, "loop": 60.0, "c": 40.0})
    assert own == pytest.approx({"a": 100.0, "b": 100.0, "loop": 60.0, "c": 40.0})


def test_missing_trace_gives_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"{tmp_path}: no \\*.xplane.pb"):
        profile_step.find_trace_file(tmp_path)
    missing = tmp_path / "run" / "host.xplane.pb"
    with pytest.raises(FileNotFoundError, match=f"{missing}: trace file not found"):
        profile_step.read_op_events(missing, "jit_train_step")


def test_bad_flags_are_named(capsys):
    with pytest.raises(SystemExit):
        profile_step.parse_args(["--image_size=100,640"])
    assert "--image_size=100,640: both sides must be positive multiples of 32" in (
        capsys.readouterr().err
    )
    with pytest.raises(SystemExit):
        profile_step.parse_args(["--num_steps=0"])
    assert "--num_steps=0: must be >= 1" in capsys.readouterr().err


def test_train_step_profile_sums_to_step_time(tmp_path):
    config = train_step.benchmark_config(1, (64, 96), "float32")
    step = train_step.JaxStep(config)
    # No warm-up call: the step is compiled ahead of time, and the 20% check must hold
    # even for a first call.
    result = profile_step.profile_jax(step, 1, str(tmp_path / "trace"))
    assert set(result.categories) == set(profile_step.CATEGORIES)
    print(f"ops {result.op_ms:.1f} ms, step {result.step_ms:.1f} ms")
    assert result.op_ms == pytest.approx(result.step_ms, rel=0.2)
    for name in ("conv_fwd", "conv_bwd_input", "conv_bwd_filter", "elementwise", "reduce"):
        assert result.categories[name].ms > 0, name
        assert result.categories[name].count >= 1, name
    # Forward conv FLOPs are half of the backward ones (input + filter gradients), up to
    # the first conv, whose input gradient is never computed. The band weight gradients
    # (damono_jax/models/conv.py) also multiply the explicit zero padding, which XLA leaves
    # out of its forward count: +14% at this size, whose bottleneck is 2x3.
    forward = result.categories["conv_fwd"].flops
    backward_filter = result.categories["conv_bwd_filter"].flops
    assert 0.9 * forward < backward_filter < 1.2 * forward
    assert len(result.top_ops) == profile_step.TOP_OPS
    # The conv/dot split by implementation covers exactly the conv and dot categories.
    flop_categories = [c for c in profile_step.CATEGORIES if c.startswith("conv") or c == "dot"]
    assert {category for category, _ in result.implementations} <= set(flop_categories)
    assert sum(row.ms for row in result.implementations.values()) == pytest.approx(
        sum(result.categories[c].ms for c in flop_categories)
    )
