"""benchmarks/conv_backward.py: the band weight gradient against XLA's, and the layer shapes."""

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
