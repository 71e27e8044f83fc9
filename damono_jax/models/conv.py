"""A 2-D convolution whose weight gradient XLA:CPU computes at matrix-multiply speed.

XLA's autodiff writes the weight gradient of a KxK convolution as another convolution whose
*window* is the whole output feature map, whose output is KxK, and whose contracted
feature dimension is the batch (2-4 images). XLA:CPU (YNNPACK or Eigen) runs that far below
matrix-multiply speed, and on CPU it dominated the train step.

`conv2d_band_wgrad` keeps XLA's forward convolution and input gradient and computes the
weight gradient band by band: for each kernel row `kh`, the input rows that meet that tap
(a strided slice of the padded input: B*Ho rows of width Wp and Cin channels) and the
gradient for the KW taps of that row form a 1-D convolution along the width whose
contracted feature dimension is B*Ho (hundreds) instead of B; the KH bands run as one
convolution. The same FLOPs plus the taps over the explicit zero padding, the same result
up to float summation order, and faster on CPU for every layer where it is used
(`benchmarks/conv_backward.py` measures it).

`conv_general_dilated` is the drop-in Flax takes (`nn.Conv(conv_general_dilated=...)`):
it routes NHWC/HWIO convolutions without dilation or feature groups to
`conv2d_band_wgrad`, except those with at most `XLA_MAX_CHANNELS` input and output
channels, where XLA's own weight gradient measured faster; it raises on anything else.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

Padding = tuple[tuple[int, int], tuple[int, int]]
_NHWC = ("NHWC", "HWIO", "NHWC")
# Convolutions with at most this many input *and* output channels keep XLA's weight
# gradient, which was faster than the band for the decoder's 16 -> 16 and 16 -> 1 convs
# (`benchmarks/conv_backward.py --weight_gradient_only --with_heads`).
XLA_MAX_CHANNELS = 16


def _conv(x: jax.Array, kernel: jax.Array, stride: int, padding: Padding) -> jax.Array:
    return lax.conv_general_dilated(
        x, kernel, (stride, stride), padding, dimension_numbers=_NHWC
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv2d_band_wgrad(
    x: jax.Array, kernel: jax.Array, stride: int, padding: Padding
) -> jax.Array:
    """NHWC x HWIO convolution (square stride, explicit padding); see the module doc."""
    return _conv(x, kernel, stride, padding)


def _band_wgrad_fwd(x, kernel, stride, padding):
    return _conv(x, kernel, stride, padding), (x, kernel)


def band_weight_gradient(
    x: jax.Array, grad_out: jax.Array, kernel_size: tuple[int, int], stride: int,
    padding: Padding,
) -> jax.Array:
    """d(sum(conv(x, k) * grad_out)) / dk, shape (KH, KW, Cin, Cout), band by band."""
    kernel_h, kernel_w = kernel_size
    batch, out_h, out_w, out_channels = grad_out.shape
    in_channels = x.shape[-1]
    padded = jnp.pad(x, ((0, 0), padding[0], padding[1], (0, 0)))
    # Rows and columns that any tap reaches; a stride-s conv can leave some unused.
    used_h = stride * (out_h - 1) + kernel_h
    used_w = stride * (out_w - 1) + kernel_w
    # (Cin, Wu, B, Hu): one transpose; each kernel row's band is then a slice of the minor
    # axis, and all KH bands go through one convolution as KH*Cin "batch" entries.
    transposed = padded[:, :used_h, :used_w, :].transpose(3, 2, 0, 1)
    rows = jnp.stack(
        [
            lax.slice_in_dim(transposed, kh, kh + stride * (out_h - 1) + 1, stride, axis=3)
            for kh in range(kernel_h)
        ]
    ).reshape(kernel_h * in_channels, used_w, batch * out_h)
    # (Wo, B*Ho, Cout), the rows in the same (b, oh) order as the bands' features.
    grad_rows = grad_out.transpose(2, 0, 1, 3).reshape(out_w, batch * out_h, out_channels)
    # lhs: batch = KH*Cin, width, feature = B*Ho; rhs: the output gradient as the kernel,
    # dilated by the stride -> (KH*Cin, KW, Cout).
    bands = lax.conv_general_dilated(
        rows,
        grad_rows,
        window_strides=(1,),
        padding=((0, 0),),
        rhs_dilation=(stride,),
        dimension_numbers=("NWC", "WIO", "NWC"),
    )
    bands = bands.reshape(kernel_h, in_channels, kernel_w, out_channels)
    return bands.transpose(0, 2, 1, 3).astype(x.dtype)


def _band_wgrad_bwd(stride, padding, residuals, grad_out):
    x, kernel = residuals
    _, input_vjp = jax.vjp(lambda x_: _conv(x_, kernel, stride, padding), x)
    grad_x = input_vjp(grad_out)[0]
    grad_kernel = band_weight_gradient(x, grad_out, kernel.shape[:2], stride, padding)
    return grad_x, grad_kernel.astype(kernel.dtype)


conv2d_band_wgrad.defvjp(_band_wgrad_fwd, _band_wgrad_bwd)


def conv_general_dilated(
    lhs: jax.Array,
    rhs: jax.Array,
    window_strides: Sequence[int],
    padding: str | Sequence[tuple[int, int]],
    lhs_dilation: Sequence[int] | None = None,
    rhs_dilation: Sequence[int] | None = None,
    dimension_numbers: lax.ConvDimensionNumbers | tuple[str, str, str] | None = None,
    feature_group_count: int = 1,
    batch_group_count: int = 1,
    precision: lax.PrecisionLike = None,
    preferred_element_type: jnp.dtype | None = None,
) -> jax.Array:
    """`lax.conv_general_dilated` for `nn.Conv`, with the band weight gradient.

    Raises:
      ValueError: for what `conv2d_band_wgrad` does not cover (not 2-D NHWC/HWIO, unequal
        strides, dilation, feature or batch groups, a padding string other than "VALID",
        a precision or preferred element type).
    """
    strides = tuple(int(s) for s in window_strides)
    problems = []
    if lhs.ndim != 4 or rhs.ndim != 4:
        problems.append(f"input rank {lhs.ndim} / kernel rank {rhs.ndim} (needs 4 / 4)")
    elif lax.conv_dimension_numbers(
        lhs.shape, rhs.shape, dimension_numbers
    ) != lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC):
        problems.append(f"dimension_numbers {dimension_numbers} (needs NHWC, HWIO, NHWC)")
    if len(set(strides)) != 1:
        problems.append(f"strides {strides} (needs equal strides)")
    if any(d != 1 for d in tuple(lhs_dilation or ()) + tuple(rhs_dilation or ())):
        problems.append(f"dilation lhs={lhs_dilation} rhs={rhs_dilation}")
    if feature_group_count != 1 or batch_group_count != 1:
        problems.append(f"groups feature={feature_group_count} batch={batch_group_count}")
    if precision is not None or preferred_element_type is not None:
        problems.append(f"precision={precision} preferred_element_type={preferred_element_type}")
    if isinstance(padding, str):
        if padding != "VALID":
            problems.append(f"padding {padding!r} (pass explicit pads or 'VALID')")
        padding = ((0, 0), (0, 0))
    if problems:
        raise ValueError("conv2d_band_wgrad does not support: " + "; ".join(problems))
    pads = tuple((int(lo), int(hi)) for lo, hi in padding)
    if lhs.shape[-1] <= XLA_MAX_CHANNELS and rhs.shape[-1] <= XLA_MAX_CHANNELS:
        return lax.conv_general_dilated(lhs, rhs, strides, pads, dimension_numbers=_NHWC)
    return conv2d_band_wgrad(lhs, rhs, strides[0], pads)


ModuleDef = Any
# `nn.Conv` with the band weight gradient. One module-level object, so that two models built
# with it compare equal (the compiled train step is cached per model).
BandConv = functools.partial(nn.Conv, conv_general_dilated=conv_general_dilated)
# The convolution module of each `config.conv_weight_gradient` ("auto" is resolved first).
CONV_MODULES: dict[str, ModuleDef] = {"xla": nn.Conv, "band": BandConv}
WEIGHT_GRADIENTS = tuple(CONV_MODULES)


def conv_module(weight_gradient: str) -> ModuleDef:
    """The convolution `ModuleDef` for a weight-gradient formulation, "xla" or "band"."""
    if weight_gradient not in CONV_MODULES:
        raise ValueError(
            f"weight_gradient must be one of {WEIGHT_GRADIENTS}, got {weight_gradient!r}"
        )
    return CONV_MODULES[weight_gradient]
