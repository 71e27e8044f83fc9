"""Monodepth2-style U-Net decoders: the shared first block, the depth and semantic decoders.

Monodepth2's DepthDecoder runs five blocks i = 4..0; block i is
`conv_0` (reflection-padded 3x3 conv + ELU) -> upsample x2 -> concat skip f_{i-1} (i > 0)
-> `conv_1` (3x3 conv + ELU), with `num_ch_dec = (16, 32, 64, 128, 256)`, and a 3x3 output
conv after blocks 3..0. DA-Monodepth shares block i = 4 between the depth and the semantic
decoder (paper §4.1): it lives once in the parameter tree as `shared_block` (`UpBlock`), and
each decoder (`MultiScaleDecoder`) holds blocks 3..0 (`block_3` ... `block_0`) and its output
convs (`output_conv_0` ... `output_conv_3`).
"""

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from damono_jax.models.conv import ModuleDef
from damono_jax.models.upsample import upsample_bilinear

DECODER_CHANNELS = (16, 32, 64, 128, 256)
UPSAMPLE_MODES = ("bilinear", "nearest")
NUM_SCALES = 4


def upsample2x(x: jax.Array, mode: str) -> jax.Array:
    """Upsamples NHWC `x` by 2 in H and W.

    "nearest" equals torch `F.interpolate(scale_factor=2, mode="nearest")` (Monodepth2);
    "bilinear" equals torch bilinear with `align_corners=False` (the paper's choice).
    """
    if mode == "nearest":
        return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
    if mode == "bilinear":
        return upsample_bilinear(x, 2, 2)
    raise ValueError(f"upsample mode must be one of {UPSAMPLE_MODES}, got {mode!r}")


def reflection_pad1(x: jax.Array) -> jax.Array:
    """Pads H and W of NHWC `x` by one pixel with reflection (torch `ReflectionPad2d(1)`).

    A 1-pixel-wide map (the bottleneck of a 32x32 input) is replicated instead; torch refuses
    that size, jnp.pad handles it.
    """
    return jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")


def _torch_default_bias_init(fan_in: int) -> nn.initializers.Initializer:
    """PyTorch's default Conv2d bias init: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in)

    def init(key: jax.Array, shape: tuple[int, ...], dtype: jnp.dtype = jnp.float32) -> jax.Array:
        return jax.random.uniform(key, shape, dtype, minval=-bound, maxval=bound)

    return init


def reflection_conv3x3(
    x: jax.Array, features: int, dtype: jnp.dtype, name: str, conv: ModuleDef = nn.Conv
) -> jax.Array:
    """Monodepth2's `Conv3x3`: reflection pad 1, then a 3x3 conv with bias.

    Must be called inside a compact method; the conv becomes the submodule `name` with
    params `kernel` (3, 3, C_in, features) and `bias`. Initialised like PyTorch's default
    (kaiming-uniform a=sqrt(5), i.e. U(+-1/sqrt(fan_in)) for the kernel and the bias), as
    Monodepth2's decoder is. `conv` is the convolution module (`damono_jax.models.conv`).
    """
    fan_in = 9 * x.shape[-1]
    # Reflection-pad H and W, then convolve with one zero column on each side and drop the
    # two extra output columns: the same numbers as a VALID conv of the padded map, in the
    # form XLA:CPU runs fastest (an output as wide as the input), for two extra columns.
    layer = conv(
        features,
        (3, 3),
        padding=((0, 0), (1, 1)),
        kernel_init=nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform"),
        bias_init=_torch_default_bias_init(fan_in),
        dtype=dtype,
        param_dtype=jnp.float32,
        name=name,
    )
    return layer(reflection_pad1(x))[:, :, 1:-1, :]


class UpBlock(nn.Module):
    """One decoder block: conv_0 + ELU, upsample x2, concat the skip, conv_1 + ELU."""

    features: int
    upsample_mode: str = "bilinear"
    dtype: jnp.dtype = jnp.float32
    conv: ModuleDef = nn.Conv  # or conv.BandConv (damono_jax.models.conv)

    @nn.compact
    def __call__(self, x: jax.Array, skip: jax.Array | None) -> jax.Array:
        conv = functools.partial(reflection_conv3x3, dtype=self.dtype, conv=self.conv)
        x = nn.elu(conv(x, self.features, name="conv_0"))
        x = upsample2x(x, self.upsample_mode)
        if skip is not None:
            x = jnp.concatenate([x, skip.astype(x.dtype)], axis=-1)
        return nn.elu(conv(x, self.features, name="conv_1"))


class SharedBlock(UpBlock):
    """Decoder block i = 4 (512 -> 256, skip f3), shared by the depth and semantic decoders."""

    features: int = DECODER_CHANNELS[4]


class MultiScaleDecoder(nn.Module):
    """Decoder blocks i = 3..0 after the shared block, with an output conv at scales 0..3.

    `__call__(x, features)` takes the shared block's output (stride 16, 256 channels) and
    the five encoder features, and returns `NUM_SCALES` float32 maps, scale 0 (full
    resolution) first: `outputs[s]` has shape (B, H / 2**s, W / 2**s, num_output_channels).
    `output_activation` is "sigmoid" (disparity) or "none" (logits).
    """

    num_output_channels: int
    output_activation: str = "none"
    upsample_mode: str = "bilinear"
    dtype: jnp.dtype = jnp.float32
    conv: ModuleDef = nn.Conv  # or conv.BandConv (damono_jax.models.conv)

    @nn.compact
    def __call__(self, x: jax.Array, features: list[jax.Array]) -> list[jax.Array]:
        if self.output_activation not in ("sigmoid", "none"):
            raise ValueError(
                f"output_activation must be 'sigmoid' or 'none', got {self.output_activation!r}"
            )
        if len(features) != 5:
            raise ValueError(f"expected the 5 encoder features, got {len(features)}")
        outputs: list[jax.Array | None] = [None] * NUM_SCALES
        for i in range(3, -1, -1):
            skip = features[i - 1] if i > 0 else None
            x = UpBlock(
                DECODER_CHANNELS[i],
                self.upsample_mode,
                dtype=self.dtype,
                conv=self.conv,
                name=f"block_{i}",
            )(x, skip)
            y = reflection_conv3x3(
                x, self.num_output_channels, self.dtype, f"output_conv_{i}", self.conv
            )
            y = y.astype(jnp.promote_types(self.dtype, jnp.float32))  # float64 stays
            outputs[i] = jax.nn.sigmoid(y) if self.output_activation == "sigmoid" else y
        return outputs


class DepthDecoder(MultiScaleDecoder):
    """Depth head: sigmoid disparity (B, H / 2**s, W / 2**s, 1) at scales s = 0..3."""

    num_output_channels: int = 1
    output_activation: str = "sigmoid"


class SemanticDecoder(MultiScaleDecoder):
    """Semantic head: K-class logits (B, H / 2**s, W / 2**s, K) at scales s = 0..3."""

    num_output_channels: int = 19
    output_activation: str = "none"
