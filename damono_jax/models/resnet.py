"""ResNet-18 encoder laid out like torchvision's, returning Monodepth2's five features.

Parameter names mirror torchvision's state-dict keys so that `damono_jax.pretrained` can map
them one to one: `conv1`, `bn1`, `layer{1..4}_{0,1}` (each with `conv1`, `bn1`, `conv2`, `bn2`
and, for the first block of layers 2-4, `downsample_conv` / `downsample_bn`).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from damono_jax.models.conv import conv_general_dilated_for

# Monodepth2 normalises its [0, 1] input with these constants (not ImageNet's mean/std);
# reproduced on purpose so that imported Monodepth2 weights see the inputs they were trained on.
MONODEPTH2_INPUT_MEAN = 0.45
MONODEPTH2_INPUT_STD = 0.225

ENCODER_CHANNELS = (64, 64, 128, 256, 512)
RESNET18_STAGE_SIZES = (2, 2, 2, 2)  # BasicBlocks in layer1..layer4
ENCODER_STRIDES = (2, 4, 8, 16, 32)

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


class BasicBlock(nn.Module):
    """torchvision BasicBlock: conv3x3-BN-ReLU-conv3x3-BN, plus (projected) identity, ReLU."""

    features: int
    stride: int = 1
    dtype: jnp.dtype = jnp.float32
    weight_gradient: str = "xla"  # see damono_jax.models.conv

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        conv = lambda features, kernel, stride, pad, name: nn.Conv(  # noqa: E731
            features,
            (kernel, kernel),
            strides=(stride, stride),
            padding=_symmetric_padding(pad),
            use_bias=False,
            kernel_init=_torchvision_conv_init,
            dtype=self.dtype,
            param_dtype=jnp.float32,
            conv_general_dilated=conv_general_dilated_for(self.weight_gradient),
            name=name,
        )
        norm = lambda name: nn.BatchNorm(  # noqa: E731
            use_running_average=not train,
            momentum=BN_MOMENTUM,
            epsilon=_BN_EPSILON,
            dtype=self.dtype,
            param_dtype=jnp.float32,
            name=name,
        )
        residual = x
        y = conv(self.features, 3, self.stride, 1, "conv1")(x)
        y = nn.relu(norm("bn1")(y))
        y = conv(self.features, 3, 1, 1, "conv2")(y)
        y = norm("bn2")(y)
        if self.stride != 1 or x.shape[-1] != self.features:
            residual = conv(self.features, 1, self.stride, 0, "downsample_conv")(x)
            residual = norm("downsample_bn")(residual)
        return nn.relu(y + residual)


class ResNet18Encoder(nn.Module):
    """ResNet-18 feature extractor (torchvision layout, no avgpool/fc).

    Takes float32 NHWC RGB images in [0, 1], normalises them as `(x - 0.45) / 0.225`
    (Monodepth2) and returns the five features of strides 2, 4, 8, 16, 32 with
    64, 64, 128, 256, 512 channels: relu(bn1(conv1)), layer1, layer2, layer3, layer4.
    """

    dtype: jnp.dtype = jnp.float32
    weight_gradient: str = "xla"  # see damono_jax.models.conv

    @nn.compact
    def __call__(self, images: jax.Array, train: bool = False) -> list[jax.Array]:
        x = (images.astype(jnp.float32) - MONODEPTH2_INPUT_MEAN) / MONODEPTH2_INPUT_STD
        x = x.astype(self.dtype)
        x = nn.Conv(
            64,
            (7, 7),
            strides=(2, 2),
            padding=_symmetric_padding(3),
            use_bias=False,
            kernel_init=_torchvision_conv_init,
            dtype=self.dtype,
            param_dtype=jnp.float32,
            conv_general_dilated=conv_general_dilated_for(self.weight_gradient),
            name="conv1",
        )(x)
        x = nn.BatchNorm(
            use_running_average=not train,
            momentum=BN_MOMENTUM,
            epsilon=_BN_EPSILON,
            dtype=self.dtype,
            param_dtype=jnp.float32,
            name="bn1",
        )(x)
        x = nn.relu(x)
        features = [x]
        # flax max_pool pads with -inf, like torch's MaxPool2d(3, 2, padding=1).
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=_symmetric_padding(1))
        for stage, num_blocks in enumerate(RESNET18_STAGE_SIZES):
            width = ENCODER_CHANNELS[stage + 1]
            for block in range(num_blocks):
                stride = 2 if stage > 0 and block == 0 else 1
                x = BasicBlock(
                    width,
                    stride,
                    dtype=self.dtype,
                    weight_gradient=self.weight_gradient,
                    name=f"layer{stage + 1}_{block}",
                )(x, train)
            features.append(x)
        return features
