"""Tests of damono_jax.models.conv: the band weight gradient against XLA's autodiff."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from configs import default
from damono_jax import config_utils
from damono_jax.models import DAMonodepth
from damono_jax.models.conv import (
    XLA_MAX_CHANNELS,
    BandConv,
    band_weight_gradient,
    conv2d_band_wgrad,
    conv_general_dilated,
    conv_module,
)
from damono_jax.train import state as state_lib

_NHWC = ("NHWC", "HWIO", "NHWC")


def _reference(x, kernel, stride, padding):
    return lax.conv_general_dilated(x, kernel, (stride, stride), padding, dimension_numbers=_NHWC)


def _max_relative_error(actual, expected) -> float:
    actual, expected = np.asarray(actual), np.asarray(expected)
    return float(np.max(np.abs(actual - expected)) / np.max(np.abs(expected)))


# Every convolution kind of the network: ResNet stem 7x7/2, 3x3/2 and 1x1/2 projections,
# 3x3/1 decoder convs on reflection-padded input (padding 0), odd sizes, asymmetric pads.
CASES = [
    # batch, height, width, in, out, kernel, stride, padding
    (2, 16, 24, 3, 8, 7, 2, ((3, 3), (3, 3))),
    (2, 16, 24, 8, 16, 1, 2, ((0, 0), (0, 0))),
    (2, 16, 24, 8, 16, 3, 2, ((1, 1), (1, 1))),
    (2, 9, 13, 4, 3, 3, 2, ((1, 1), (1, 1))),
    (3, 8, 12, 8, 5, 3, 1, ((1, 1), (1, 1))),
    (2, 10, 14, 16, 1, 3, 1, ((0, 0), (0, 0))),
    (1, 7, 11, 4, 19, 3, 1, ((0, 2), (1, 0))),
]


@pytest.mark.parametrize("batch,height,width,cin,cout,size,stride,padding", CASES)
def test_band_gradients_equal_xla_autodiff(batch, height, width, cin, cout, size, stride, padding):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((batch, height, width, cin)), jnp.float32)
    kernel = jnp.asarray(rng.standard_normal((size, size, cin, cout)), jnp.float32)
    out = _reference(x, kernel, stride, padding)
    cotangent = jnp.asarray(rng.standard_normal(out.shape), jnp.float32)

    def grads(conv):
        loss = lambda x_, k_: jnp.sum(conv(x_, k_, stride, padding) * cotangent)  # noqa: E731
        return jax.jit(jax.grad(loss, argnums=(0, 1)))(x, kernel)

    want_x, want_kernel = grads(_reference)
    got_x, got_kernel = grads(conv2d_band_wgrad)
    np.testing.assert_array_equal(
        np.asarray(conv2d_band_wgrad(x, kernel, stride, padding)), np.asarray(out)
    )
    np.testing.assert_array_equal(np.asarray(got_x), np.asarray(want_x))  # XLA's own
    assert got_kernel.shape == kernel.shape
    assert _max_relative_error(got_kernel, want_kernel) <= 1e-5
    direct = band_weight_gradient(x, cotangent, (size, size), stride, padding)
    assert _max_relative_error(direct, want_kernel) <= 1e-5


def test_band_keeps_bfloat16():
    x = jnp.ones((2, 8, 8, 4), jnp.bfloat16)
    kernel = jnp.ones((3, 3, 4, 2), jnp.bfloat16)
    padding = ((1, 1), (1, 1))
    loss = lambda k: jnp.sum(conv2d_band_wgrad(x, k, 1, padding).astype(jnp.float32))  # noqa: E731
    grad = jax.grad(loss)(kernel)
    assert grad.dtype == jnp.bfloat16
    # Every tap of a ones-input/ones-cotangent gradient counts the in-bounds products:
    # the centre tap sees all 2*8*8 pixels, a corner tap 2*7*7.
    assert float(grad[1, 1, 0, 0]) == 128.0
    assert float(grad[0, 0, 0, 0]) == 98.0


def test_flax_conv_with_band_equals_default_conv():
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.standard_normal((2, 12, 20, 6)), jnp.float32)
    kwargs = dict(features=7, kernel_size=(3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    plain = nn.Conv(**kwargs)
    band = BandConv(**kwargs)
    variables = plain.init(jax.random.key(0), x)

    def grads(module):
        return jax.grad(lambda v: jnp.sum(jnp.sin(module.apply(v, x))))(variables)

    np.testing.assert_array_equal(
        np.asarray(band.apply(variables, x)), np.asarray(plain.apply(variables, x))
    )
    got, want = grads(band)["params"], grads(plain)["params"]
    assert _max_relative_error(got["kernel"], want["kernel"]) <= 1e-5
    np.testing.assert_allclose(np.asarray(got["bias"]), np.asarray(want["bias"]), rtol=1e-6)


def test_model_routes_every_convolution_through_the_chosen_formulation():
    """Tracing only: with "band" each conv kernel of the DA model is one custom_vjp call
    (numerics: the tests above, and the train-step parity tests against the PyTorch twin)."""
    source = jax.ShapeDtypeStruct((2, 64, 64, 3), jnp.float32)
    counts = {}
    for choice in ("xla", "band"):
        model = DAMonodepth(num_classes=19, conv=conv_module(choice))
        variables = jax.eval_shape(
            lambda s, t, m=model: m.init(jax.random.key(0), s, t), source, source
        )

        def forward(v, s, t, m=model):
            return m.apply(v, s, t, grl_scale=0.5, train=True, mutable=["batch_stats"])

        jaxpr = str(jax.make_jaxpr(forward)(variables, source, source))
        counts[choice] = jaxpr.count("custom_vjp_call"), jaxpr.count("conv_general_dilated")
    kernels = [
        leaf.shape
        for path, leaf in jax.tree_util.tree_leaves_with_path(variables["params"])
        if jax.tree_util.keystr(path).endswith("['kernel']")
    ]
    # encoder 20, shared block 2, each decoder 4 blocks x 2 + 4 output convs, classifier 3
    assert len(kernels) == 20 + 2 + 2 * 12 + 3
    # 16 -> 16 block_0.conv_1 of both decoders and the 16 -> 1 full-resolution disparity
    # conv keep XLA's gradient.
    few_channels = [s for s in kernels if s[2] <= XLA_MAX_CHANNELS and s[3] <= XLA_MAX_CHANNELS]
    assert sorted(few_channels) == [(3, 3, 16, 1), (3, 3, 16, 16), (3, 3, 16, 16)]
    # The gradient reversal layer is the one custom_vjp of the "xla" model.
    assert counts["xla"] == (1, len(kernels))
    assert counts["band"][0] == len(kernels) - len(few_channels) + 1


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(lhs_dilation=(2, 2)), r"dilation lhs=\(2, 2\)"),
        (dict(rhs_dilation=(1, 2)), r"dilation lhs=None rhs=\(1, 2\)"),
        (dict(feature_group_count=2), "groups feature=2 batch=1"),
        (dict(padding="SAME"), "padding 'SAME' \\(pass explicit pads or 'VALID'\\)"),
        (dict(window_strides=(1, 2)), r"strides \(1, 2\) \(needs equal strides\)"),
        (dict(dimension_numbers=("NCHW", "OIHW", "NCHW")), "dimension_numbers"),
        (dict(precision=lax.Precision.HIGHEST), "precision=.*HIGHEST"),
    ],
)
def test_conv_general_dilated_rejects_what_it_does_not_cover(kwargs, message):
    call = dict(
        lhs=jnp.ones((1, 8, 8, 4)),
        rhs=jnp.ones((3, 3, 4, 4)),
        window_strides=(1, 1),
        padding=((1, 1), (1, 1)),
        dimension_numbers=_NHWC,
    )
    call.update(kwargs)
    with pytest.raises(ValueError, match="conv2d_band_wgrad does not support: " + message):
        conv_general_dilated(**call)


def test_valid_padding_string_is_accepted():
    x, kernel = jnp.ones((1, 6, 6, 2)), jnp.ones((3, 3, 2, 1))
    out = conv_general_dilated(x, kernel, (1, 1), "VALID", dimension_numbers=_NHWC)
    np.testing.assert_array_equal(np.asarray(out), np.full((1, 4, 4, 1), 18.0))


def test_weight_gradient_choices():
    assert conv_module("xla") is nn.Conv
    assert conv_module("band") is BandConv
    assert BandConv.keywords == {"conv_general_dilated": conv_general_dilated}
    with pytest.raises(ValueError, match=r"weight_gradient must be one of \('xla', 'band'\)"):
        conv_module("im2col")
    # One BandConv object: two models built with it are equal (the step cache's key).
    model = DAMonodepth.from_config(default.get_config().model, "full", "float32", BandConv)
    assert model == DAMonodepth.from_config(default.get_config().model, "full", "float32",
                                            conv_module("band"))


def test_config_auto_resolves_per_backend_and_is_validated(tmp_path):
    config = default.get_config()
    config.data.data_dir = str(tmp_path)
    assert config.conv_weight_gradient == "auto"
    assert state_lib.resolve_weight_gradient(config.conv_weight_gradient, "cpu") == "band"
    assert state_lib.resolve_weight_gradient(config.conv_weight_gradient, "gpu") == "xla"
    assert state_lib.resolve_weight_gradient(config.conv_weight_gradient, "tpu") == "xla"
    config.conv_weight_gradient = "xla"
    assert state_lib.resolve_weight_gradient(config.conv_weight_gradient, "cpu") == "xla"
    assert state_lib.create_model(config).conv is nn.Conv
    config.conv_weight_gradient = "im2col"
    with pytest.raises(ValueError, match="config.conv_weight_gradient: unknown value 'im2col'"):
        config_utils.check(config)
