"""PatchGAN-style domain classifier on the 512-channel encoder bottleneck (paper §4.1).

pix2pix's PatchGAN uses 4x4 stride-2 convs; three of them shrink the 6x20 bottleneck of a
192x640 input to nothing (6 -> 3 -> 1 -> 0). Here every downsampling conv is 3x3, stride 2,
padding 1, which maps a side n to ceil(n / 2) >= 1, so any input whose sides are multiples of
32 (bottleneck >= 1x1) gives a non-empty patch map. Output side after k stride-2 layers:
ceil(n / 2**k); e.g. 192x640 -> bottleneck 6x20 -> 2x5 patches with the default two layers.
"""

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from damono_jax.models.conv import ModuleDef

# pix2pix initialises its discriminator with N(0, 0.02) weights and zero biases.
_patchgan_init = nn.initializers.normal(stddev=0.02)
LEAKY_RELU_SLOPE = 0.2


def patch_map_size(bottleneck_size: int, num_downsampling_layers: int) -> int:
    """Side of the patch-logit map for a bottleneck side `bottleneck_size`: ceil(n / 2**k)."""
    size = bottleneck_size
    for _ in range(num_downsampling_layers):
        size = (size + 1) // 2
    return size


class PatchDiscriminator(nn.Module):
    """Maps features (B, h, w, C) to patch logits (B, ceil(h/2**k), ceil(w/2**k), 1).

    `features` are the output widths of the k stride-2 3x3 conv + LeakyReLU(0.2) layers (the
    first reads the bottleneck); a final 3x3 stride-1 conv gives one logit per patch. There is
    no normalisation layer: source and target are classified in one batch, and BatchNorm
    would let the classifier (and the encoder, through the GRL) use batch statistics. The
    logits are returned in float32 (feed them to a sigmoid BCE, label 1 = source).
    """

    features: Sequence[int] = (256, 128)
    dtype: jnp.dtype = jnp.float32
    conv: ModuleDef = nn.Conv  # or conv.BandConv (damono_jax.models.conv)
    # Spectral normalisation of every conv (flax `nn.SpectralNorm`, one power iteration a
    # call; its `u` and `sigma` live in `batch_stats` and are updated when `train`).
    spectral_norm: bool = False

    def _layer(self, x: jax.Array, width: int, stride: int, name: str, train: bool
               ) -> jax.Array:
        layer = self.conv(
            width,
            (3, 3),
            strides=(stride, stride),
            padding=((1, 1), (1, 1)),
            kernel_init=_patchgan_init,
            bias_init=nn.initializers.zeros,
            dtype=self.dtype,
            param_dtype=jnp.float32,
            name=name,
        )
        if self.spectral_norm:
            return nn.SpectralNorm(layer, name=f"spectral_norm_{name}")(x, update_stats=train)
        return layer(x)

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        if len(self.features) == 0 or any(int(f) <= 0 for f in self.features):
            raise ValueError(
                f"discriminator features must be a non-empty sequence of positive widths, "
                f"got {tuple(self.features)}"
            )
        x = x.astype(self.dtype)
        for index, width in enumerate(self.features):
            x = nn.leaky_relu(self._layer(x, int(width), 2, f"conv_{index}", train),
                              LEAKY_RELU_SLOPE)
        logits = self._layer(x, 1, 1, "logits", train)
        return logits.astype(jnp.promote_types(self.dtype, jnp.float32))  # float64 stays
