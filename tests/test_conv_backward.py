"""The convolution formulations of benchmarks/conv_backward.py and the timing helpers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import conv_backward, timing

# (height, width, in, out, kernel, stride, pad): every kind of convolution in the network,
# plus an odd-sized input for the stride-2 phase bookkeeping.
SHAPES = [
    (12, 20, 5, 7, 3, 1, 1),
    (12, 20, 5, 7, 3, 2, 1),
    (16, 20, 3, 4, 7, 2, 3),
    (12, 20, 5, 7, 1, 2, 0),
    (11, 13, 5, 7, 3, 2, 1),
]


@pytest.mark.parametrize("name", [n for n in conv_backward.VARIANTS if n != "xla_autodiff"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_variant_matches_xla_forward_and_gradients(name, shape):
    height, width, in_c, out_c, kernel, stride, pad = shape
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(2, height, width, in_c)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(kernel, kernel, in_c, out_c)), jnp.float32)
    padding = ((pad, pad), (pad, pad))
    conv = conv_backward.VARIANTS[name]
    expected, expected_vjp = jax.vjp(
        lambda a, b: conv_backward.conv_lax(a, b, stride, padding), x, w
    )
    actual, actual_vjp = jax.vjp(lambda a, b: conv(a, b, stride, padding), x, w)
    assert actual.shape == expected.shape
    assert timing.relative_error(actual, expected) <= 1e-5
    cotangent = jnp.asarray(rng.normal(size=expected.shape), jnp.float32)
    for got, want in zip(actual_vjp(cotangent), expected_vjp(cotangent), strict=True):
        assert timing.relative_error(got, want) <= 1e-5


def test_space_to_depth_layout_and_errors():
    x = jnp.arange(2 * 4 * 6 * 3, dtype=jnp.float32).reshape(2, 4, 6, 3)
    y = conv_backward.space_to_depth(x, 2)
    assert y.shape == (2, 2, 3, 12)
    # Channel order (row phase, col phase, C): element (1, 0) of block (0, 1) is x[0, 1, 2].
    np.testing.assert_array_equal(y[0, 0, 1, 6:9], x[0, 1, 2])
    with pytest.raises(ValueError, match="5x6 not divisible by 2"):
        conv_backward.space_to_depth(jnp.zeros((1, 5, 6, 1)), 2)
    with pytest.raises(ValueError, match="stride 3 unsupported"):
        conv_backward.conv_space_to_depth(
            jnp.zeros((1, 6, 6, 1)),
            jnp.zeros((3, 3, 1, 1)),
            3,
            (
                (1, 1),
                (1, 1),
            ),
        )


def test_network_conv_specs_cover_the_model():
    specs = conv_backward.network_conv_specs(batch=2, height=192, width=640)
    names = [spec.name for spec in specs]
    assert len(names) == len(set(names)) == 21
    conv1 = specs[0]
    assert (conv1.batch, conv1.kernel, conv1.stride) == (4, 7, 2)  # source + target
    assert conv1.forward_flops() == pytest.approx(2 * 4 * 96 * 320 * 49 * 3 * 64)
    last = specs[-1]
    assert (last.name, last.batch, last.height, last.in_channels) == ("dec.0.1 3x3", 2, 192, 16)
    with pytest.raises(ValueError, match="190x640: both must be multiples of 32"):
        conv_backward.network_conv_specs(2, 190, 640)


def test_time_interleaved_protocol_and_errors():
    calls = []
    result = timing.time_interleaved(
        {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")},
        num_warmup=1,
        num_steps=20,
    )
    assert calls[:4] == ["a", "b", "a", "b"] and len(calls) == 42
    assert len(result["a"].times_s) == 20 and result["a"].median_s >= 0
    with pytest.raises(ValueError, match="num_steps=5; the protocol needs >= 20"):
        timing.time_interleaved({"a": lambda: None}, num_steps=5)
    smoke = timing.time_interleaved({"a": lambda: None}, num_warmup=1, num_steps=2, smoke=True)
    assert len(smoke["a"].times_s) == 2
    with pytest.raises(ValueError, match=r"num_steps=0; .* \(>= 1 for a smoke run\)"):
        timing.time_interleaved({"a": lambda: None}, num_steps=0, smoke=True)
    with pytest.raises(ValueError, match="`steps` is empty"):
        timing.time_interleaved({})


def test_xla_flops_counts_a_matmul():
    compiled = jax.jit(lambda a, b: a @ b).lower(jnp.ones((8, 16)), jnp.ones((16, 4))).compile()
    assert timing.xla_flops(compiled) == pytest.approx(2 * 8 * 16 * 4)
    assert timing.model_flops_utilisation(100.0, 2.0, 100.0) == pytest.approx(0.5)


def test_write_markdown_section_replaces_only_its_section(tmp_path):
    path = tmp_path / "BENCHMARKS.md"
    path.write_text("# Benchmarks\n\nother text\n")
    timing.write_markdown_section(path, "train_step", "first")
    timing.write_markdown_section(path, "other", "kept")
    timing.write_markdown_section(path, "train_step", "second")
    text = path.read_text()
    assert text.startswith("# Benchmarks\n\nother text\n")
    assert "first" not in text and text.count("second") == 1 and "kept" in text
    assert text.index("second") < text.index("kept")  # replaced in place
    path.write_text(text.replace("<!-- other:end -->", ""))
    with pytest.raises(ValueError, match="markers for 'other' are unbalanced"):
        timing.write_markdown_section(path, "other", "x")
    assert [p.name for p in tmp_path.iterdir()] == ["BENCHMARKS.md"]  # no temp files left


def test_host_peak_memory_sees_a_large_allocation():
    timing.reset_host_peak_memory()
    before = timing.host_current_memory_bytes()
    block = np.ones(64 << 20, np.uint8)  # 64 MiB, touched
    assert timing.host_peak_memory_bytes() - before >= 60 << 20
    del block


def test_flax_conv_override_routes_convs_and_keeps_the_numbers():
    import flax.linen as nn

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.Conv(6, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))(x)
            return nn.Conv(4, (3, 3), padding="VALID")(jnp.tanh(x))

    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 12, 16, 3)), jnp.float32)
    net = Net()
    params = net.init(jax.random.key(0), x)

    def loss(params):
        return jnp.sum(net.apply(params, x) ** 2)

    expected_loss, expected_grads = jax.value_and_grad(loss)(params)
    jaxpr = str(jax.make_jaxpr(loss)(params))
    assert "custom_vjp_call" not in jaxpr
    with conv_backward.flax_conv_override("matmul_vjp"):
        assert "custom_vjp_call" in str(jax.make_jaxpr(loss)(params))
        actual_loss, actual_grads = jax.value_and_grad(loss)(params)
    assert float(actual_loss) == pytest.approx(float(expected_loss), rel=1e-6)
    leaves = zip(jax.tree.leaves(actual_grads), jax.tree.leaves(expected_grads), strict=True)
    for got, want in leaves:
        assert timing.relative_error(got, want) <= 1e-5
    with pytest.raises(ValueError, match="unknown variant 'fft'"):
        with conv_backward.flax_conv_override("fft"):
            pass


def test_head_conv_specs_cover_the_output_convs_and_the_classifier():
    specs = conv_backward.head_conv_specs(batch=2, height=192, width=640)
    by_name = {spec.name: spec for spec in specs}
    assert len(by_name) == len(specs) == 11
    assert by_name["seg_head.0 3x3"][1:] == (2, 192, 640, 16, 19, 3, 1)
    assert by_name["disp_head.3 3x3"][1:] == (2, 24, 80, 128, 1, 3, 1)
    # The classifier sees source + target bottlenecks (6x20), then 3x10, then 2x5.
    assert by_name["classifier.0 3x3/2"][1:] == (4, 6, 20, 512, 256, 3, 2)
    assert by_name["classifier.logits 3x3"][1:] == (4, 2, 5, 128, 1, 3, 1)


def test_weight_gradient_only_step_equals_the_kernel_part_of_the_full_step():
    spec = conv_backward.ConvSpec("t", 2, 8, 12, 4, 5, 3, 2)
    x, kernel, cotangent = conv_backward._spec_arrays(spec)
    for name in ("xla_autodiff", "band_wgrad"):
        conv = conv_backward.VARIANTS[name]
        full = conv_backward._jax_train_like_step(conv, spec)(x, kernel, cotangent)
        alone = conv_backward._jax_weight_gradient_step(conv, spec)(x, kernel, cotangent)
        assert alone.shape == kernel.shape
        assert timing.relative_error(alone, full[1]) <= 1e-6
