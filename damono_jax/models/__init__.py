"""DA-Monodepth networks: ResNet-18 encoder, decoders, gradient reversal, domain classifier."""

from damono_jax.models.conv import BandConv, ModuleDef, conv_module
from damono_jax.models.da_monodepth import (
    DEPTH_NET_PARTS,
    DOMAIN_CLASSIFIER,
    VARIANTS,
    DAMonodepth,
    DepthNet,
    combine_shared_block_grads,
    depth_net_variables,
)
from damono_jax.models.decoders import (
    DECODER_CHANNELS,
    UPSAMPLE_MODES,
    DepthDecoder,
    MultiScaleDecoder,
    SemanticDecoder,
    SharedBlock,
    UpBlock,
    upsample2x,
)
from damono_jax.models.discriminator import PatchDiscriminator, patch_map_size
from damono_jax.models.grl import gradient_reversal
from damono_jax.models.resnet import ENCODER_CHANNELS, BasicBlock, ResNet18Encoder

__all__ = [
    "BandConv",
    "BasicBlock",
    "DAMonodepth",
    "DECODER_CHANNELS",
    "DEPTH_NET_PARTS",
    "DOMAIN_CLASSIFIER",
    "DepthDecoder",
    "DepthNet",
    "ENCODER_CHANNELS",
    "ModuleDef",
    "MultiScaleDecoder",
    "PatchDiscriminator",
    "ResNet18Encoder",
    "SemanticDecoder",
    "SharedBlock",
    "UPSAMPLE_MODES",
    "UpBlock",
    "VARIANTS",
    "combine_shared_block_grads",
    "conv_module",
    "depth_net_variables",
    "gradient_reversal",
    "patch_map_size",
    "upsample2x",
]
