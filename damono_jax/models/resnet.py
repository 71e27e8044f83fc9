"""ResNet-18 encoder laid out like torchvision's, returning Monodepth2's five features.

Parameter names mirror torchvision's state-dict keys so that `damono_jax.pretrained` can map
them one to one: `conv1`, `bn1`, `layer{1..4}_{0,1}` (each with `conv1`, `bn1`, `conv2`, `bn2`
and, for the first block of layers 2-4, `downsample_conv` / `downsample_bn`).
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from damono_jax.models.conv import ModuleDef

# Monodepth2 normalises its [0, 1] input with these constants (not ImageNet's mean/std);
# reproduced on purpose so that imported Monodepth2 weights see the inputs they were trained on.
MONODEPTH2_INPUT_MEAN = 0.45
MONODEPTH2_INPUT_STD = 0.225

ENCODER_CHANNELS = (64, 64, 128, 256, 512)
RESNET18_STAGE_SIZES = (2, 2, 2, 2)  # BasicBlocks in layer1..layer4

# torchvision initialises convolutions with kaiming_normal_(mode="fan_out", nonlinearity="relu"),
# an untruncated normal with variance 2 / fan_out.
_torchvision_conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")

# BatchNorm as in torchvision: eps 1e-5, PyTorch momentum 0.1 == Flax momentum 0.9. No
# axis_name: under jit with sharded inputs the batch statistics are already global.
BN_MOMENTUM = 0.9
_BN_EPSILON = 1e-5


def _symmetric_padding(pad: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """Explicit torch-style padding; 'SAME' pads asymmetrically for stride 2."""
    return ((pad, pad), (pad, pad))


class DomainBatchNorm(nn.Module):
    """BatchNorm with separate statistics for the source and the target part of a batch.

    Domain-specific statistics (after Chang et al., "Domain-Specific Batch Normalization",
    2019) with ONE scale and bias: in training the first `num_source` images are normalised
    with their own batch statistics and the rest with theirs. The running `mean`/`var` are
    the target's (what an export deploys on the target domain, under nn.BatchNorm's names);
    `source_mean`/`source_var` the source's. Inference normalises with the target's.
    """

    use_running_average: bool
    num_source: int
    momentum: float = BN_MOMENTUM
    epsilon: float = _BN_EPSILON
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        features = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (features,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (features,), jnp.float32)
        stats = {
            name: self.variable("batch_stats", name, init, (features,), jnp.float32)
            for name, init in (("mean", jnp.zeros), ("var", jnp.ones),
                               ("source_mean", jnp.zeros), ("source_var", jnp.ones))
        }
        x32 = x.astype(jnp.float32)
        if self.use_running_average:
            y = (x32 - stats["mean"].value) * jax.lax.rsqrt(stats["var"].value + self.epsilon)
        else:
            parts = []
            for prefix, part in (("source_", x32[: self.num_source]), ("", x32[self.num_source:])):
                mean = jnp.mean(part, axis=(0, 1, 2))
                var = jnp.maximum(jnp.mean(jnp.square(part), axis=(0, 1, 2)) - mean**2, 0.0)
                if not self.is_initializing():
                    for name, value in (("mean", mean), ("var", var)):
                        old = stats[prefix + name]
                        old.value = self.momentum * old.value + (1 - self.momentum) * value
                parts.append((part - mean) * jax.lax.rsqrt(var + self.epsilon))
            y = jnp.concatenate(parts, axis=0)
        return (y * scale + bias).astype(self.dtype)


def batch_norm(train: bool, num_source: int | None, dtype: jnp.dtype) -> ModuleDef:
    """The encoder's norm, handed down like `conv`: torchvision's BatchNorm, or
    DomainBatchNorm when the batch is [source; target] with `num_source` source images."""
    if num_source is not None:
        return functools.partial(DomainBatchNorm, use_running_average=not train,
                                 num_source=num_source, dtype=dtype)
    return functools.partial(nn.BatchNorm, use_running_average=not train, momentum=BN_MOMENTUM,
                             epsilon=_BN_EPSILON, dtype=dtype, param_dtype=jnp.float32)


class BasicBlock(nn.Module):
    """torchvision BasicBlock: conv3x3-BN-ReLU-conv3x3-BN, plus (projected) identity, ReLU."""

    features: int
    norm: ModuleDef  # `batch_norm(...)`: the encoder decides train mode and domain statistics
    stride: int = 1
    dtype: jnp.dtype = jnp.float32
    conv: ModuleDef = nn.Conv  # or conv.BandConv (damono_jax.models.conv)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        conv = functools.partial(
            self.conv, use_bias=False, kernel_init=_torchvision_conv_init, dtype=self.dtype,
            param_dtype=jnp.float32,
        )

        def conv_layer(features: int, kernel: int, stride: int, pad: int, name: str
                       ) -> nn.Module:
            return conv(features, (kernel, kernel), strides=(stride, stride),
                        padding=_symmetric_padding(pad), name=name)

        residual = x
        y = conv_layer(self.features, 3, self.stride, 1, "conv1")(x)
        y = nn.relu(self.norm(name="bn1")(y))
        y = conv_layer(self.features, 3, 1, 1, "conv2")(y)
        y = self.norm(name="bn2")(y)
        if self.stride != 1 or x.shape[-1] != self.features:
            residual = conv_layer(self.features, 1, self.stride, 0, "downsample_conv")(x)
            residual = self.norm(name="downsample_bn")(residual)
        return nn.relu(y + residual)


class ResNet18Encoder(nn.Module):
    """ResNet-18 feature extractor (torchvision layout, no avgpool/fc).

    Takes float32 NHWC RGB images in [0, 1], normalises them as `(x - 0.45) / 0.225`
    (Monodepth2) and returns the five features of strides 2, 4, 8, 16, 32 with
    64, 64, 128, 256, 512 channels: relu(bn1(conv1)), layer1, layer2, layer3, layer4.
    """

    dtype: jnp.dtype = jnp.float32
    conv: ModuleDef = nn.Conv  # or conv.BandConv (damono_jax.models.conv)
    # When set, the batch is [source; target] with this many source images and every BatchNorm
    # keeps statistics per domain (DomainBatchNorm); None is torchvision's BatchNorm.
    num_source: int | None = None

    @nn.compact
    def __call__(self, images: jax.Array, train: bool = False) -> list[jax.Array]:
        x = images.astype(jnp.promote_types(images.dtype, jnp.float32))
        x = (x - MONODEPTH2_INPUT_MEAN) / MONODEPTH2_INPUT_STD
        x = x.astype(self.dtype)
        x = self.conv(
            64,
            (7, 7),
            strides=(2, 2),
            padding=_symmetric_padding(3),
            use_bias=False,
            kernel_init=_torchvision_conv_init,
            dtype=self.dtype,
            param_dtype=jnp.float32,
            name="conv1",
        )(x)
        norm = batch_norm(train, self.num_source, self.dtype)
        x = norm(name="bn1")(x)
        x = nn.relu(x)
        features = [x]
        # torch's MaxPool2d(3, 2, padding=1): pad with -inf, then pool without padding. The
        # padding is explicit because jax2onnx's max_pool reads only "SAME"/"VALID" strings.
        x = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-jnp.inf)
        x = nn.max_pool(x, window_shape=(3, 3), strides=(2, 2), padding="VALID")
        for stage, num_blocks in enumerate(RESNET18_STAGE_SIZES):
            width = ENCODER_CHANNELS[stage + 1]
            for block in range(num_blocks):
                stride = 2 if stage > 0 and block == 0 else 1
                x = BasicBlock(
                    width,
                    norm,
                    stride,
                    dtype=self.dtype,
                    conv=self.conv,
                    name=f"layer{stage + 1}_{block}",
                )(x)
            features.append(x)
        return features
