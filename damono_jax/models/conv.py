"""A 2-D convolution whose weight gradient XLA:CPU computes at matrix-multiply speed.

XLA's autodiff writes the weight gradient of a KxK convolution as another convolution whose
*window* is the whole output feature map, whose output is KxK, and whose contracted
feature dimension is the batch (2-4 images). XLA:CPU (YNNPACK or Eigen) runs that at
3-25 GFLOP/s on the DA-Monodepth shapes, against ~200 GFLOP/s for a matrix multiply; it
was 56% of the CPU train step (BENCHMARKS.md, section "Convolution weight gradients on CPU").

`conv2d_band_wgrad` keeps XLA's forward convolution and input gradient and computes the
weight gradient band by band: for each kernel row `kh`, the input rows that meet that tap
(a strided slice of the padded input: B*Ho rows of width Wp and Cin channels) and the
gradient for the KW taps of that row form a 1-D convolution along the width whose
contracted feature dimension is B*Ho (hundreds) instead of B; the KH bands run as one
convolution. The same FLOPs plus the taps over the explicit zero padding, the same result
up to float summation order; 1.05-7.5x faster per layer on CPU where it is used
(BENCHMARKS.md, same section).

`conv_general_dilated` is the drop-in Flax takes (`nn.Conv(conv_general_dilated=...)`):
it routes NHWC/HWIO convolutions without dilation or feature groups to
`conv2d_band_wgrad`, except those with at most `XLA_MAX_CHANNELS` input and output
channels, where XLA's own weight gradient measured faster; it raises on anything else.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax

Padding = tuple[tuple[int, int], tuple[int, int]]
_NHWC = ("NHWC", "HWIO", "NHWC")
# The named scope of the band's convolutions (benchmarks/profile_step.py finds them by it).
BAND_SCOPE = "band_weight_gradient"
# Convolutions with at most this many input *and* output channels keep XLA's weight
# gradient: at 192x640 with 16 -> 16 and 16 -> 1 channels it was 1.6-1.8x faster than the
# band (benchmarks/conv_backward.py --weight_gradient_only --with_heads; BENCHMARKS.md).
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
    """d(sum(conv(x, k) * grad_out)) / dk, shape (KH, KW, Cin, Cout), band by band.

    Traced under the named scope `BAND_SCOPE`.
    """
    with jax.named_scope(BAND_SCOPE):
        return _band_weight_gradient(x, grad_out, kernel_size, stride, padding)


def _band_weight_gradient(
    x: jax.Array, grad_out: jax.Array, kernel_size: tuple[int, int], stride: int,
    padding: Padding,
) -> jax.Array:
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


WEIGHT_GRADIENTS = ("xla", "band")


def conv_general_dilated_for(weight_gradient: str):
    """The `conv_general_dilated` to give `nn.Conv` for a weight-gradient formulation.

    "xla": None (Flax's default, `lax.conv_general_dilated` and XLA's autodiff);
    "band": this module's `conv_general_dilated`.
    """
    if weight_gradient == "xla":
        return None
    if weight_gradient == "band":
        return conv_general_dilated
    raise ValueError(
        f"weight_gradient must be one of {WEIGHT_GRADIENTS}, got {weight_gradient!r}"
    )
