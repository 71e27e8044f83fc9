"""Micro-benchmarks of convolution backward passes: XLA's autodiff vs matmul formulations.

XLA's HLO dump of the DA train step on CPU shows the backward convolutions dominating:

* the weight gradient of a KxK convolution is itself a convolution whose *window* is the
  whole output feature map and whose output is KxK; XLA:CPU runs it on the generic
  (Eigen spatial-convolution) path, far from matmul speed;
* the input gradient of a stride-2 convolution is a convolution with `lhs_dilation=2`,
  so three quarters of the multiplications are by inserted zeros.

This module defines drop-in alternatives for `lax.conv_general_dilated` (NHWC / HWIO, no
dilation, one feature group) that keep the backward pass on the matmul path, checks that
they agree with XLA's gradients, and times them against XLA's autodiff and PyTorch
(oneDNN) on the layer shapes of the DA-Monodepth network, interleaving all variants in
one run so machine load affects them equally:

* `conv_matmul_vjp`: `jax.custom_vjp` convolution; forward is XLA's convolution, the
  weight gradient is an im2col matrix multiply and the input gradient is one matrix
  multiply followed by a col2im that adds the K*K shifted taps (phase by phase for
  stride 2, so no zeros are ever multiplied);
* `conv_space_to_depth`: a stride-2 KxK convolution rewritten as a stride-1
  ceil(K/2)xceil(K/2) convolution on the space-to-depth input (kernel zero-padded to an
  even size), whose autodiff input gradient needs no lhs dilation;
* `band_wgrad`: the model's own formulation (`damono_jax.models.conv.conv2d_band_wgrad`):
  XLA's forward and input gradient, the weight gradient as one 1-D convolution per kernel
  row with B*Ho contracted features.

Run: `python -m benchmarks.conv_backward --batch_size=4 --image_size=192,640`; add
`--weight_gradient_only --with_heads` to time just the kernel gradients of every
convolution shape, output convs and domain classifier included.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import timing  # noqa: E402
from damono_jax.models.conv import conv2d_band_wgrad  # noqa: E402

Padding = tuple[tuple[int, int], tuple[int, int]]
ConvFn = Callable[[jax.Array, jax.Array, int, Padding], jax.Array]
_DIMENSION_NUMBERS = ("NHWC", "HWIO", "NHWC")


# Captured at import, so `flax_conv_override` can replace the function Flax calls without
# the formulations below (which call this one) recursing into themselves.
_LAX_CONV_GENERAL_DILATED = lax.conv_general_dilated


def conv_lax(x: jax.Array, kernel: jax.Array, stride: int, padding: Padding) -> jax.Array:
    """Reference: `lax.conv_general_dilated` in NHWC/HWIO, gradients from XLA autodiff."""
    return _LAX_CONV_GENERAL_DILATED(
        x, kernel, (stride, stride), padding, dimension_numbers=_DIMENSION_NUMBERS
    )


# ---------------------------------------------------------------------------- im2col helpers


def _output_size(size: int, kernel: int, stride: int, pad: tuple[int, int]) -> int:
    return (size + pad[0] + pad[1] - kernel) // stride + 1


def _taps(
    padded: jax.Array, kernel_hw: tuple[int, int], stride: int, out_hw: tuple[int, int]
) -> list[jax.Array]:
    """The KH*KW strided views of a padded NHWC input that meet each kernel tap."""
    kernel_h, kernel_w = kernel_hw
    out_h, out_w = out_hw
    views = []
    for tap_h in range(kernel_h):
        for tap_w in range(kernel_w):
            views.append(
                lax.slice(
                    padded,
                    (0, tap_h, tap_w, 0),
                    (
                        padded.shape[0],
                        tap_h + stride * (out_h - 1) + 1,
                        tap_w + stride * (out_w - 1) + 1,
                        padded.shape[3],
                    ),
                    (1, stride, stride, 1),
                )
            )
    return views


def _col2im(
    columns: jax.Array, padded_hw: tuple[int, int], stride: int, out_hw: tuple[int, int]
) -> jax.Array:
    """Adds per-tap columns `(B, Ho, Wo, KH, KW, C)` back onto the padded input grid.

    For stride s, tap k = s*q + r lands on output row s*(i + q) + r: every tap of phase r
    is a shift by q of a low-resolution grid. The phases are summed separately and then
    interleaved (depth-to-space), so the work is additions only.
    """
    batch, out_h, out_w, kernel_h, kernel_w, channels = columns.shape
    padded_h, padded_w = padded_hw
    low_h = math.ceil(padded_h / stride)
    low_w = math.ceil(padded_w / stride)
    phase_rows = []
    for phase_h in range(stride):
        phase_cols = []
        for phase_w in range(stride):
            total = jnp.zeros((batch, low_h, low_w, channels), columns.dtype)
            for tap_h in range(phase_h, kernel_h, stride):
                for tap_w in range(phase_w, kernel_w, stride):
                    shift_h, shift_w = tap_h // stride, tap_w // stride
                    total = total + jnp.pad(
                        columns[:, :, :, tap_h, tap_w, :],
                        (
                            (0, 0),
                            (shift_h, low_h - out_h - shift_h),
                            (shift_w, low_w - out_w - shift_w),
                            (0, 0),
                        ),
                    )
            phase_cols.append(total)
        phase_rows.append(jnp.stack(phase_cols, axis=3))  # (B, low_h, low_w, s, C)
    grid = jnp.stack(phase_rows, axis=2)  # (B, low_h, s, low_w, s, C)
    grid = grid.reshape(batch, low_h * stride, low_w * stride, channels)
    return grid[:, :padded_h, :padded_w, :]


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv_matmul_vjp(x: jax.Array, kernel: jax.Array, stride: int, padding: Padding) -> jax.Array:
    """`conv_lax` with a backward pass made of matrix multiplies (see the module doc)."""
    return conv_lax(x, kernel, stride, padding)


def _conv_matmul_vjp_fwd(x, kernel, stride, padding):
    return conv_lax(x, kernel, stride, padding), (x, kernel)


def _conv_matmul_vjp_bwd(stride, padding, residuals, grad_out):
    x, kernel = residuals
    kernel_h, kernel_w, in_channels, out_channels = kernel.shape
    batch, out_h, out_w, _ = grad_out.shape
    padded = jnp.pad(x, ((0, 0), padding[0], padding[1], (0, 0)))
    grad_rows = grad_out.reshape(batch * out_h * out_w, out_channels)
    # Weight gradient: im2col (B*Ho*Wo, KH*KW*Cin) transposed times the output gradient.
    patches = jnp.concatenate(_taps(padded, (kernel_h, kernel_w), stride, (out_h, out_w)), -1)
    patches = patches.reshape(batch * out_h * out_w, kernel_h * kernel_w * in_channels)
    grad_kernel = (patches.T @ grad_rows).reshape(kernel.shape)
    # Input gradient: output gradient times the kernel, then col2im onto the padded grid.
    columns = grad_rows @ kernel.reshape(-1, out_channels).T
    columns = columns.reshape(batch, out_h, out_w, kernel_h, kernel_w, in_channels)
    grad_padded = _col2im(columns, padded.shape[1:3], stride, (out_h, out_w))
    (top, _), (left, _) = padding
    grad_x = grad_padded[:, top : top + x.shape[1], left : left + x.shape[2], :]
    return grad_x, grad_kernel


conv_matmul_vjp.defvjp(_conv_matmul_vjp_fwd, _conv_matmul_vjp_bwd)


def _xla_input_grad(x, kernel, stride, padding, grad_out):
    """XLA's own input gradient (the transposed convolution autodiff would emit)."""
    _, vjp = jax.vjp(lambda x_: conv_lax(x_, kernel, stride, padding), x)
    return vjp(grad_out)[0]


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv_wgrad_im2col(x: jax.Array, kernel: jax.Array, stride: int, padding: Padding) -> jax.Array:
    """`conv_lax`; backward: XLA's input gradient, im2col-matmul weight gradient."""
    return conv_lax(x, kernel, stride, padding)


def _conv_wgrad_im2col_bwd(stride, padding, residuals, grad_out):
    x, kernel = residuals
    kernel_h, kernel_w, in_channels, out_channels = kernel.shape
    batch, out_h, out_w, _ = grad_out.shape
    padded = jnp.pad(x, ((0, 0), padding[0], padding[1], (0, 0)))
    patches = jnp.concatenate(_taps(padded, (kernel_h, kernel_w), stride, (out_h, out_w)), -1)
    patches = patches.reshape(batch * out_h * out_w, kernel_h * kernel_w * in_channels)
    grad_rows = grad_out.reshape(batch * out_h * out_w, out_channels)
    grad_kernel = (patches.T @ grad_rows).reshape(kernel.shape)
    return _xla_input_grad(x, kernel, stride, padding, grad_out), grad_kernel


conv_wgrad_im2col.defvjp(_conv_matmul_vjp_fwd, _conv_wgrad_im2col_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv_wgrad_taps(x: jax.Array, kernel: jax.Array, stride: int, padding: Padding) -> jax.Array:
    """`conv_lax`; backward: XLA's input gradient, weight gradient as one matmul per tap.

    Unlike im2col this never materialises the KH*KW-times larger patch matrix: tap
    (kh, kw) of the weight gradient is `view(kh, kw)^T @ grad_out` over B*Ho*Wo rows.
    """
    return conv_lax(x, kernel, stride, padding)


def _conv_wgrad_taps_bwd(stride, padding, residuals, grad_out):
    x, kernel = residuals
    kernel_h, kernel_w, _, _ = kernel.shape
    _, out_h, out_w, _ = grad_out.shape
    padded = jnp.pad(x, ((0, 0), padding[0], padding[1], (0, 0)))
    views = _taps(padded, (kernel_h, kernel_w), stride, (out_h, out_w))
    grad_kernel = jnp.stack(
        [jnp.einsum("bhwi,bhwo->io", view, grad_out) for view in views]
    ).reshape(kernel.shape)
    return _xla_input_grad(x, kernel, stride, padding, grad_out), grad_kernel


conv_wgrad_taps.defvjp(_conv_matmul_vjp_fwd, _conv_wgrad_taps_bwd)


def space_to_depth(x: jax.Array, block: int) -> jax.Array:
    """(B, H, W, C) -> (B, H/b, W/b, b*b*C), channel order (row phase, col phase, C)."""
    batch, height, width, channels = x.shape
    if height % block or width % block:
        raise ValueError(f"space_to_depth: spatial size {height}x{width} not divisible by {block}")
    x = x.reshape(batch, height // block, block, width // block, block, channels)
    x = x.transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(batch, height // block, width // block, block * block * channels)


def conv_space_to_depth(
    x: jax.Array,
    kernel: jax.Array,
    stride: int,
    padding: Padding,
    inner_conv: ConvFn = conv_lax,
) -> jax.Array:
    """A stride-2 convolution as a stride-1 convolution on the space-to-depth input.

    The KxK kernel is zero-padded to 2*ceil(K/2) and the padded input to an even size;
    tap k = 2q + r of the kernel becomes tap q of phase r. `inner_conv` computes the
    stride-1 convolution (and stride-1 calls are passed straight to it).
    """
    if stride == 1:
        return inner_conv(x, kernel, stride, padding)
    if stride != 2:
        raise ValueError(f"conv_space_to_depth: stride {stride} unsupported (1 or 2)")
    kernel_h, kernel_w, in_channels, out_channels = kernel.shape
    out_h = _output_size(x.shape[1], kernel_h, 2, padding[0])
    out_w = _output_size(x.shape[2], kernel_w, 2, padding[1])
    half_h, half_w = math.ceil(kernel_h / 2), math.ceil(kernel_w / 2)
    need_h, need_w = 2 * (out_h - 1 + half_h), 2 * (out_w - 1 + half_w)
    extra_h = need_h - x.shape[1] - padding[0][0]
    extra_w = need_w - x.shape[2] - padding[1][0]
    if extra_h < 0 or extra_w < 0:
        raise ValueError(f"conv_space_to_depth: padding {padding} too large for {x.shape}")
    padded = jnp.pad(x, ((0, 0), (padding[0][0], extra_h), (padding[1][0], extra_w), (0, 0)))
    kernel = jnp.pad(
        kernel, ((0, 2 * half_h - kernel_h), (0, 2 * half_w - kernel_w), (0, 0), (0, 0))
    )
    # (2q + r, 2p + t, C, O) -> (q, p, (r, t, C), O), matching space_to_depth's channel order.
    kernel = kernel.reshape(half_h, 2, half_w, 2, in_channels, out_channels)
    kernel = kernel.transpose(0, 2, 1, 3, 4, 5)
    kernel = kernel.reshape(half_h, half_w, 4 * in_channels, out_channels)
    return inner_conv(space_to_depth(padded, 2), kernel, 1, ((0, 0), (0, 0)))


def conv_space_to_depth_matmul_vjp(
    x: jax.Array, kernel: jax.Array, stride: int, padding: Padding
) -> jax.Array:
    """`conv_space_to_depth` whose stride-1 convolution is `conv_matmul_vjp`."""
    return conv_space_to_depth(x, kernel, stride, padding, inner_conv=conv_matmul_vjp)


# Output pixels per image up to which `conv_selective` uses the matmul backward pass.
SELECTIVE_MAX_OUTPUT_PIXELS = 480


def conv_selective(x: jax.Array, kernel: jax.Array, stride: int, padding: Padding) -> jax.Array:
    """`conv_matmul_vjp` where it won in the per-layer micro-benchmark, XLA elsewhere.

    The matmul backward pass beat XLA's on every stride-2 convolution and on the
    low-resolution stride-1 ones (at most `SELECTIVE_MAX_OUTPUT_PIXELS` output pixels per
    image: ResNet layers 3-4 at 192x640), and lost on the high-resolution, few-channel
    decoder convolutions, where im2col is memory bound.
    """
    out_h = _output_size(x.shape[1], kernel.shape[0], stride, padding[0])
    out_w = _output_size(x.shape[2], kernel.shape[1], stride, padding[1])
    if stride > 1 or out_h * out_w <= SELECTIVE_MAX_OUTPUT_PIXELS:
        return conv_matmul_vjp(x, kernel, stride, padding)
    return conv_lax(x, kernel, stride, padding)


VARIANTS: dict[str, ConvFn] = {
    "xla_autodiff": conv_lax,
    "band_wgrad": conv2d_band_wgrad,
    "matmul_vjp": conv_matmul_vjp,
    "wgrad_im2col": conv_wgrad_im2col,
    "wgrad_taps": conv_wgrad_taps,
    "selective": conv_selective,
    "space_to_depth": conv_space_to_depth,
    "s2d+matmul_vjp": conv_space_to_depth_matmul_vjp,
}


# ---------------------------------------------------------------------------- Flax override


class _LaxWithConvOverride:
    """Stands in for `jax.lax` inside `flax.linen.linear`; only the convolution differs."""

    def __init__(self, conv: ConvFn):
        self._conv = conv

    def __getattr__(self, name: str):
        return getattr(lax, name)

    def conv_general_dilated(
        self,
        lhs,
        rhs,
        window_strides,
        padding,
        lhs_dilation=None,
        rhs_dilation=None,
        dimension_numbers=None,
        feature_group_count=1,
        precision=None,
        **kwargs,
    ):
        strides = tuple(window_strides)
        if isinstance(padding, str) and padding == "VALID":
            padding = ((0, 0),) * len(strides)
        nhwc = lax.conv_dimension_numbers(lhs.shape, rhs.shape, _DIMENSION_NUMBERS)
        supported = (
            len(strides) == 2
            and strides[0] == strides[1]
            and not isinstance(padding, str)
            and all(d in (None, 1) for d in (lhs_dilation or ()) + (rhs_dilation or ()))
            and feature_group_count == 1
            and not kwargs
            and lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers) == nhwc
        )
        if not supported:
            return _LAX_CONV_GENERAL_DILATED(
                lhs,
                rhs,
                window_strides,
                padding,
                lhs_dilation,
                rhs_dilation,
                dimension_numbers,
                feature_group_count,
                precision=precision,
                **kwargs,
            )
        padding = tuple((int(lo), int(hi)) for lo, hi in padding)
        return self._conv(lhs, rhs, strides[0], padding)


@contextlib.contextmanager
def flax_conv_override(variant: str):
    """Makes every `flax.linen.Conv` (NHWC, undilated) use `VARIANTS[variant]` while active.

    The override acts at trace time: build, lower and compile the step inside the `with`
    (JAX's trace caches are cleared on entry and exit, so nothing traced outside leaks in).
    It exists to measure a formulation in the real train step without editing the model;
    integrating one for real means passing `conv_general_dilated=` to the model's convs.
    """
    if variant not in VARIANTS:
        raise ValueError(
            f"flax_conv_override: unknown variant {variant!r}; one of {sorted(VARIANTS)}"
        )
    from flax.linen import linear

    original = linear.lax
    # JAX caches traces by function identity; the override is invisible to those keys.
    jax.clear_caches()
    linear.lax = _LaxWithConvOverride(VARIANTS[variant])
    try:
        yield
    finally:
        linear.lax = original
        jax.clear_caches()


# ---------------------------------------------------------------------------- layer shapes


class ConvSpec(NamedTuple):
    """One convolution of the network: input (batch, height, width, in_channels)."""

    name: str
    batch: int
    height: int
    width: int
    in_channels: int
    out_channels: int
    kernel: int
    stride: int

    @property
    def padding(self) -> Padding:
        pad = self.kernel // 2
        return ((pad, pad), (pad, pad))

    def forward_flops(self) -> float:
        """Multiply-adds x 2 of the forward convolution."""
        out_h = _output_size(self.height, self.kernel, self.stride, self.padding[0])
        out_w = _output_size(self.width, self.kernel, self.stride, self.padding[1])
        return (
            2.0
            * self.batch
            * out_h
            * out_w
            * self.kernel**2
            * self.in_channels
            * (self.out_channels)
        )


def network_conv_specs(batch: int, height: int, width: int) -> list[ConvSpec]:
    """Distinct convolution shapes of DA-Monodepth (ResNet-18 encoder on source + target,
    i.e. 2 * batch images, and the depth decoder on the source batch); one entry per shape.
    """
    if height % 32 or width % 32:
        raise ValueError(f"image size {height}x{width}: both must be multiples of 32")
    encoder_batch = 2 * batch
    specs = [ConvSpec("enc.conv1 7x7/2", encoder_batch, height, width, 3, 64, 7, 2)]
    channels = [64, 64, 128, 256, 512]
    for layer in range(1, 5):
        size_h, size_w = height // 2 ** (layer + 1), width // 2 ** (layer + 1)
        out_c = channels[layer]
        if layer == 1:
            specs.append(ConvSpec("enc.layer1 3x3", encoder_batch, size_h, size_w, 64, 64, 3, 1))
            continue
        in_c = channels[layer - 1]
        specs += [
            ConvSpec(f"enc.layer{layer} 3x3/2", encoder_batch, size_h, size_w, in_c, out_c, 3, 2),
            ConvSpec(f"enc.layer{layer} 1x1/2", encoder_batch, size_h, size_w, in_c, out_c, 1, 2),
            ConvSpec(
                f"enc.layer{layer} 3x3", encoder_batch, size_h // 2, size_w // 2, out_c, out_c, 3, 1
            ),
        ]
    decoder_channels = [16, 32, 64, 128, 256]
    encoder_channels = [64, 64, 128, 256, 512]
    for level in range(4, -1, -1):
        in_h, in_w = height // 2 ** (level + 1), width // 2 ** (level + 1)
        in_c = 512 if level == 4 else decoder_channels[level + 1]
        out_c = decoder_channels[level]
        specs.append(ConvSpec(f"dec.{level}.0 3x3", batch, in_h, in_w, in_c, out_c, 3, 1))
        skip = encoder_channels[level - 1] if level > 0 else 0
        specs.append(
            ConvSpec(f"dec.{level}.1 3x3", batch, 2 * in_h, 2 * in_w, out_c + skip, out_c, 3, 1)
        )
    return specs


def head_conv_specs(batch: int, height: int, width: int) -> list[ConvSpec]:
    """The output convs of both decoders (disparity: 1 channel, semantics: 19) at scales
    3..0 and the domain classifier's convs (on the 2 * batch bottlenecks)."""
    decoder_channels = [16, 32, 64, 128, 256]
    specs = []
    for level in range(3, -1, -1):
        size_h, size_w = height // 2**level, width // 2**level
        for out_c, what in ((1, "disp"), (19, "seg")):
            specs.append(
                ConvSpec(
                    f"{what}_head.{level} 3x3", batch, size_h, size_w,
                    decoder_channels[level], out_c, 3, 1,
                )
            )
    bottleneck_h, bottleneck_w = height // 32, width // 32
    specs += [
        ConvSpec("classifier.0 3x3/2", 2 * batch, bottleneck_h, bottleneck_w, 512, 256, 3, 2),
        ConvSpec(
            "classifier.1 3x3/2", 2 * batch, -(-bottleneck_h // 2), -(-bottleneck_w // 2),
            256, 128, 3, 2,
        ),
        ConvSpec(
            "classifier.logits 3x3", 2 * batch, -(-bottleneck_h // 4), -(-bottleneck_w // 4),
            128, 1, 3, 1,
        ),
    ]
    return specs


# ---------------------------------------------------------------------------- timing


def _jax_train_like_step(conv: ConvFn, spec: ConvSpec) -> Callable[..., tuple[jax.Array, ...]]:
    """jit of forward + backward: d/d(x, kernel) of sum(conv(x, kernel) * cotangent)."""

    def loss(x, kernel, cotangent):
        return jnp.sum(conv(x, kernel, spec.stride, spec.padding) * cotangent)

    return jax.jit(jax.grad(loss, argnums=(0, 1)))


def _jax_weight_gradient_step(conv: ConvFn, spec: ConvSpec) -> Callable[..., jax.Array]:
    """jit of the weight gradient alone: d/d(kernel) of sum(conv(x, kernel) * cotangent)."""

    def loss(x, kernel, cotangent):
        return jnp.sum(conv(x, kernel, spec.stride, spec.padding) * cotangent)

    return jax.jit(jax.grad(loss, argnums=1))


def _spec_arrays(spec: ConvSpec, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((spec.batch, spec.height, spec.width, spec.in_channels), np.float32)
    kernel = rng.standard_normal(
        (spec.kernel, spec.kernel, spec.in_channels, spec.out_channels), np.float32
    ) / math.sqrt(spec.kernel**2 * spec.in_channels)
    out_h = _output_size(spec.height, spec.kernel, spec.stride, spec.padding[0])
    out_w = _output_size(spec.width, spec.kernel, spec.stride, spec.padding[1])
    cotangent = rng.standard_normal((spec.batch, out_h, out_w, spec.out_channels), np.float32)
    return x, kernel, cotangent


def check_variant_gradients(spec: ConvSpec, conv: ConvFn, tolerance: float = 1e-4) -> float:
    """Max relative error of a variant's (grad_x, grad_kernel) against XLA autodiff.

    Raises:
      AssertionError: if the error exceeds `tolerance`.
    """
    x, kernel, cotangent = _spec_arrays(spec)
    reference = _jax_train_like_step(conv_lax, spec)(x, kernel, cotangent)
    actual = _jax_train_like_step(conv, spec)(x, kernel, cotangent)
    error = max(timing.relative_error(a, r) for a, r in zip(actual, reference, strict=True))
    if error > tolerance:
        raise AssertionError(f"{spec.name}: gradient relative error {error:.2e} > {tolerance:.0e}")
    return error


def _torch_step(
    spec: ConvSpec, channels_last: bool, weight_gradient_only: bool = False
) -> Callable[[], None]:
    import torch

    x, kernel, cotangent = _spec_arrays(spec)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    x_t = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(memory_format=memory_format)
    x_t.requires_grad_(not weight_gradient_only)
    kernel_t = torch.from_numpy(kernel).permute(3, 2, 0, 1).contiguous(memory_format=memory_format)
    kernel_t.requires_grad_(True)
    cotangent_t = (
        torch.from_numpy(cotangent).permute(0, 3, 1, 2).contiguous(memory_format=memory_format)
    )

    def step() -> None:
        x_t.grad = None
        kernel_t.grad = None
        out = torch.nn.functional.conv2d(
            x_t, kernel_t, stride=spec.stride, padding=spec.kernel // 2
        )
        out.backward(cotangent_t)

    return step


def benchmark_spec(
    spec: ConvSpec,
    variants: Sequence[str],
    num_steps: int,
    with_torch: bool,
    weight_gradient_only: bool = False,
) -> dict[str, timing.StepTimes]:
    """Times forward+backward of one layer shape for every variant, interleaved (with
    `weight_gradient_only`, just the kernel gradient: the forward result is dead code)."""
    x, kernel, cotangent = (jnp.asarray(a) for a in _spec_arrays(spec))
    steps: dict[str, Callable[[], object]] = {}
    make_step = _jax_weight_gradient_step if weight_gradient_only else _jax_train_like_step
    for name in variants:
        if name != "xla_autodiff" and spec.stride == 1 and name.startswith("space_to_depth"):
            continue  # identical to xla_autodiff for stride 1
        if name == "s2d+matmul_vjp" and spec.stride == 1:
            continue  # identical to matmul_vjp for stride 1
        fn = make_step(VARIANTS[name], spec)
        steps[name] = functools.partial(
            lambda f: jax.block_until_ready(f(x, kernel, cotangent)), fn
        )
    if with_torch:
        steps["torch_eager"] = _torch_step(spec, False, weight_gradient_only)
    return timing.time_interleaved(steps, num_warmup=2, num_steps=num_steps)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch_size", type=int, default=2, help="source (= target) batch")
    parser.add_argument("--image_size", default="192,640", help="height,width")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated")
    parser.add_argument("--layers", default="", help="substring filter on layer names")
    parser.add_argument("--num_steps", type=int, default=timing.MIN_TIMED_STEPS)
    parser.add_argument("--no_torch", action="store_true", help="skip the PyTorch reference")
    parser.add_argument(
        "--weight_gradient_only",
        action="store_true",
        help="time only the kernel gradient (no forward, no input gradient)",
    )
    parser.add_argument(
        "--with_heads",
        action="store_true",
        help="also the decoders' output convs and the domain classifier's convs",
    )
    parser.add_argument("--output", default="", help="write the markdown table to this file")
    args = parser.parse_args(argv)
    try:
        height, width = (int(v) for v in args.image_size.split(","))
    except ValueError:
        parser.error(f"--image_size={args.image_size!r}: expected 'height,width', e.g. 192,640")
    variants = [v for v in args.variants.split(",") if v]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        parser.error(f"--variants: unknown {unknown}; choose from {sorted(VARIANTS)}")
    if "xla_autodiff" not in variants:
        parser.error("--variants must include xla_autodiff (the baseline of every ratio)")
    all_specs = network_conv_specs(args.batch_size, height, width)
    if args.with_heads:
        all_specs += head_conv_specs(args.batch_size, height, width)
    specs = [s for s in all_specs if args.layers in s.name]
    if not specs:
        parser.error(f"--layers={args.layers!r} matches no layer")

    header = ["layer", "GFLOP fwd", *[f"{v} ms" for v in variants]]
    if not args.no_torch:
        header.append("torch_eager ms")
    header += [f"xla/{v}" for v in variants if v != "xla_autodiff"]
    rows = []
    totals: dict[str, float] = {}
    for spec in specs:
        for name in variants:
            if name != "xla_autodiff":
                check_variant_gradients(spec, VARIANTS[name])
        results = benchmark_spec(
            spec, variants, args.num_steps, not args.no_torch, args.weight_gradient_only
        )
        medians = {name: result.median_s for name, result in results.items()}
        for name in [*variants, "torch_eager"]:
            fallback = medians.get("matmul_vjp" if name == "s2d+matmul_vjp" else "xla_autodiff")
            value = medians.get(name, fallback)
            if value is not None:
                totals[name] = totals.get(name, 0.0) + value
        row = [spec.name, f"{spec.forward_flops() / 1e9:.2f}"]
        row += [f"{medians[v] * 1e3:.1f}" if v in medians else "=" for v in variants]
        if not args.no_torch:
            row.append(f"{medians['torch_eager'] * 1e3:.1f}")
        row += [
            f"{medians['xla_autodiff'] / medians[v]:.2f}" if v in medians else "-"
            for v in variants
            if v != "xla_autodiff"
        ]
        rows.append(row)
        print(" | ".join(row), flush=True)
    total_row = ["sum of layers", ""]
    total_row += [f"{totals[v] * 1e3:.1f}" for v in variants]
    if not args.no_torch:
        total_row.append(f"{totals['torch_eager'] * 1e3:.1f}")
    total_row += [
        f"{totals['xla_autodiff'] / totals[v]:.2f}" for v in variants if v != "xla_autodiff"
    ]
    rows.append(total_row)
    table = timing.markdown_table(header, rows)
    print(table)
    if args.output:
        Path(args.output).write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
