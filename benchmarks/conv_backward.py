"""Micro-benchmark of convolution weight gradients: XLA's autodiff vs the band formulation.

`band_wgrad` is the model's own formulation (`damono_jax.models.conv.conv2d_band_wgrad`,
what `config.conv_weight_gradient="band"` uses): XLA's forward and input gradient, the
weight gradient as one 1-D convolution per kernel row with B*Ho contracted features.
`xla_autodiff` is `lax.conv_general_dilated` differentiated by XLA. Both are checked against
each other and timed, interleaved, with PyTorch (oneDNN) as a reference, on the layer shapes
of the DA-Monodepth network.

Run: `python -m benchmarks.conv_backward --batch_size=4 --image_size=192,640`; add
`--weight_gradient_only --with_heads` to time just the kernel gradients of every
convolution shape, output convs and domain classifier included.
"""

from __future__ import annotations

import argparse
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

from benchmarks import timing
from damono_jax.models.conv import conv2d_band_wgrad

Padding = tuple[tuple[int, int], tuple[int, int]]
ConvFn = Callable[[jax.Array, jax.Array, int, Padding], jax.Array]
_DIMENSION_NUMBERS = ("NHWC", "HWIO", "NHWC")


def conv_lax(x: jax.Array, kernel: jax.Array, stride: int, padding: Padding) -> jax.Array:
    """Reference: `lax.conv_general_dilated` in NHWC/HWIO, gradients from XLA autodiff."""
    return lax.conv_general_dilated(
        x, kernel, (stride, stride), padding, dimension_numbers=_DIMENSION_NUMBERS
    )


VARIANTS: dict[str, ConvFn] = {"xla_autodiff": conv_lax, "band_wgrad": conv2d_band_wgrad}


def _output_size(size: int, kernel: int, stride: int, pad: tuple[int, int]) -> int:
    return (size + pad[0] + pad[1] - kernel) // stride + 1


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
    height, width = timing.parse_image_size(parser, args.image_size)
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
        for name, value in medians.items():
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
