"""DA-Monodepth (paper §3, Fig. 3) and its inference-only part `DepthNet`.

Parameter tree (`variables["params"]`): `encoder` (ResNet-18), `shared_block` (decoder block
i = 4, used by both decoders), `depth_decoder`, `semantic_decoder`, `domain_classifier`.
Batch statistics exist only under `encoder`. `DepthNet` uses the same names for the three
parts it has, so `depth_net_variables(variables)` is all an export needs.

One encoder pass over both domains: when the domain classifier is on, the encoder runs ONCE
on the concatenation [source; target]. Its BatchNorm statistics (in training) are therefore
taken over both domains, which is also what the running averages used at inference on the
target domain describe. The decoders see the source half only (only the source has labels);
the gradient reversal layer and the domain classifier see both bottlenecks.
"""

from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from damono_jax.models.conv import ModuleDef
from damono_jax.models.decoders import (
    DepthDecoder,
    SemanticDecoder,
    SharedBlock,
)
from damono_jax.models.discriminator import PatchDiscriminator
from damono_jax.models.grl import gradient_reversal
from damono_jax.models.resnet import ResNet18Encoder

# Rows of the paper's ablation (Tables 3/4): which optional heads the model has.
VARIANTS: dict[str, dict[str, bool]] = {
    "baseline": {"use_semantic": False, "use_domain_classifier": False},
    "seg": {"use_semantic": True, "use_domain_classifier": False},
    "full": {"use_semantic": True, "use_domain_classifier": True},
}
# Encoder features a domain classifier can read: 0 = relu(bn1(conv1)), 1-4 = layer1-layer4
# (4 is the bottleneck, the paper's only alignment point).
ALIGN_LEVELS = (0, 1, 2, 3, 4)
BOTTLENECK_LEVEL = 4
# Parameter subtree of the bottleneck classifier; other levels append "_<level>", the
# output-space classifier "_output". Every subtree starting with it is a domain classifier.
DOMAIN_CLASSIFIER = "domain_classifier"
OUTPUT_CLASSIFIER = f"{DOMAIN_CLASSIFIER}_output"
# What conditions the bottleneck classifier: nothing (the paper) or CDAN's randomized
# multilinear map of the bottleneck and the semantic softmax (Long et al. 2018).
DOMAIN_CONDITIONINGS = ("none", "cdan")
# CDAN's random matrices are fixed Gaussians, drawn from this key (never trained).
CDAN_KEY = 0
SHARED_BLOCK_GRAD_MODES = ("mean", "sum")
DEPTH_NET_PARTS = ("encoder", "shared_block", "depth_decoder")
# Compute dtypes by config name; parameters are always float32.
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
# Encoder stride: image sides must be multiples of this so every decoder skip lines up.
INPUT_SIZE_MULTIPLE = 32


def _check_images(images: jax.Array, argument: str) -> None:
    """Raises ValueError unless `images` is (B, H, W, 3) with H, W multiples of 32."""
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"{argument}: expected NHWC RGB images (B, H, W, 3), got {images.shape}")
    height, width = images.shape[1:3]
    if height % INPUT_SIZE_MULTIPLE or width % INPUT_SIZE_MULTIPLE or height == 0 or width == 0:
        raise ValueError(
            f"{argument}: image size {height}x{width} is not a positive multiple of "
            f"{INPUT_SIZE_MULTIPLE} in both sides"
        )


def _compute_dtype(dtype: Any) -> Any:
    """A jnp dtype from a config name ("float32", "bfloat16") or a jnp dtype."""
    return DTYPES[dtype] if isinstance(dtype, str) else dtype


class DAMonodepth(nn.Module):
    """Encoder, shared decoder block, depth decoder, semantic decoder and domain classifier.

    Attributes:
      num_classes: K, the number of semantic classes (19 Cityscapes train ids).
      upsample_mode: "bilinear" (paper) or "nearest" (Monodepth2).
      use_semantic: build the semantic decoder (variants "seg" and "full").
      use_domain_classifier: build the GRL + PatchGAN domain classifier (variant "full").
      discriminator_features: widths of the classifier's stride-2 conv layers.
      align_levels: encoder features (0-4, 4 = bottleneck) that each get a GRL and a
        PatchGAN classifier of their own; the paper aligns the bottleneck only, `(4,)`.
      domain_specific_bn: with the domain classifier, the encoder's BatchNorms keep source
        and target statistics apart (`resnet.DomainBatchNorm`); the paper shares them.
      discriminator_spectral_norm: spectral normalisation of every classifier's convs.
      output_alignment: the decoders also run on the target half, and a PatchGAN
        (`output_discriminator_features`) behind a GRL classifies the scale-0 disparity
        concatenated with the scale-0 semantic softmax (AdaptSegNet's output space).
      domain_conditioning: "none" (the paper) or "cdan": the bottleneck classifier reads
        CDAN's randomized multilinear map (`cdan_features` wide) of the bottleneck and the
        semantic decoder's softmax (scale 3, average-pooled to the bottleneck; no gradient
        flows into the softmax, as in CDAN). Needs the semantic decoder.
      dtype: compute dtype (float32 or bfloat16); parameters are always float32, and the
        disparities and logits are returned in float32.
      conv: the convolution module of every layer, `nn.Conv` (XLA's autodiff) or
        `conv.BandConv` (the band weight gradient, faster on CPU); the forward pass and the
        input gradients are the same either way.
    """

    num_classes: int = 19
    upsample_mode: str = "bilinear"
    use_semantic: bool = True
    use_domain_classifier: bool = True
    discriminator_features: Sequence[int] = (256, 128)
    align_levels: Sequence[int] = (BOTTLENECK_LEVEL,)
    domain_specific_bn: bool = False
    discriminator_spectral_norm: bool = False
    output_alignment: bool = False
    output_discriminator_features: Sequence[int] = (64, 128, 256, 512)
    domain_conditioning: str = "none"
    cdan_features: int = 1024
    dtype: Any = jnp.float32
    conv: ModuleDef = nn.Conv

    @classmethod
    def from_config(
        cls,
        model_config: Any,
        variant: str,
        dtype: Any = "float32",
        conv: ModuleDef = nn.Conv,
    ) -> "DAMonodepth":
        """Builds the model of one ablation row from `config.model`.

        Args:
          model_config: `config.model` (num_classes, upsample_mode, discriminator_features).
          variant: "baseline" (depth only), "seg" (+ semantic decoder) or "full"
            (+ semantic decoder, GRL and domain classifier); usually `config.variant`.
          dtype: compute dtype, "float32" / "bfloat16" (usually `config.dtype`) or a jnp dtype.
          conv: the convolution module (`conv.conv_module` of the resolved
            `config.conv_weight_gradient`).
        """
        return cls(
            num_classes=model_config.num_classes,
            upsample_mode=model_config.upsample_mode,
            **VARIANTS[variant],
            discriminator_features=tuple(model_config.discriminator_features),
            align_levels=tuple(sorted(model_config.align_levels)),
            domain_specific_bn=model_config.domain_specific_bn,
            discriminator_spectral_norm=model_config.discriminator_spectral_norm,
            output_alignment=model_config.output_alignment,
            output_discriminator_features=tuple(model_config.output_discriminator_features),
            domain_conditioning=model_config.domain_conditioning,
            cdan_features=model_config.cdan_features,
            dtype=_compute_dtype(dtype),
            conv=conv,
        )

    @nn.compact
    def __call__(
        self,
        source_images: jax.Array,
        target_images: jax.Array | None = None,
        *,
        grl_scale: jax.Array | float = 1.0,
        train: bool = False,
    ) -> dict[str, Any]:
        """Runs the network.

        Args:
          source_images: (B_s, H, W, 3) float32 RGB in [0, 1]; H, W multiples of 32.
          target_images: (B_t, H, W, 3) target-domain images, required iff
            `use_domain_classifier` (pass None otherwise).
          grl_scale: gradient reversal scale (a traced scalar: changing it never recompiles).
          train: BatchNorm uses batch statistics and updates `batch_stats` (pass
            `mutable=["batch_stats"]` to `apply`).

        Returns:
          dict with "disp": 4 arrays (B_s, H/2**s, W/2**s, 1), s = 0..3, sigmoid disparity;
          "seg_logits": 4 arrays (B_s, H/2**s, W/2**s, K) or None; "domain_logits":
          `{level: {"source": (B_s, h, w, 1), "target": (B_t, h, w, 1)}}`, the patch logits
          of the classifier on each of `align_levels` (the paper's model: level 4, the
          bottleneck, alone), or None (no feature classifier); "output_domain_logits": the
          output-space classifier's {"source", "target"} patch logits, or None. All float32.
        """
        _check_images(source_images, "source_images")
        if self.use_domain_classifier:
            if target_images is None:
                raise ValueError(
                    "target_images is None but use_domain_classifier is True (variant 'full')"
                )
            _check_images(target_images, "target_images")
            if target_images.shape[1:] != source_images.shape[1:]:
                raise ValueError(
                    f"target_images {target_images.shape} and source_images "
                    f"{source_images.shape} differ in H, W or C"
                )
            images = jnp.concatenate([source_images, target_images], axis=0)
        else:
            if target_images is not None:
                raise ValueError(
                    "target_images given but use_domain_classifier is False; pass None"
                )
            images = source_images

        num_source = source_images.shape[0]
        split_bn = self.domain_specific_bn and self.use_domain_classifier
        features = ResNet18Encoder(
            dtype=self.dtype,
            conv=self.conv,
            num_source=num_source if split_bn else None,
            name="encoder",
        )(images, train=train)
        source_features = [f[:num_source] for f in features]
        # Output alignment and CDAN read the decoders' outputs on the target half too. The
        # decoders have no batch statistics, so their source half is what it would be alone.
        decode_target = self.use_domain_classifier and (
            self.output_alignment or self.domain_conditioning == "cdan"
        )
        decoded = features if decode_target else source_features

        x = SharedBlock(
            upsample_mode=self.upsample_mode,
            dtype=self.dtype,
            conv=self.conv,
            name="shared_block",
        )(decoded[4], decoded[3])
        disp_all = DepthDecoder(
            upsample_mode=self.upsample_mode,
            dtype=self.dtype,
            conv=self.conv,
            name="depth_decoder",
        )(x, decoded)

        seg_all = None
        if self.use_semantic:
            seg_all = SemanticDecoder(
                num_output_channels=self.num_classes,
                upsample_mode=self.upsample_mode,
                dtype=self.dtype,
                conv=self.conv,
                name="semantic_decoder",
            )(x, decoded)

        def source_half(maps: list[jax.Array] | None) -> list[jax.Array] | None:
            if maps is None or not decode_target:
                return maps
            return [m[:num_source] for m in maps]

        def split(logits: jax.Array) -> dict[str, jax.Array]:
            return {"source": logits[:num_source], "target": logits[num_source:]}

        domain_logits = None
        output_domain_logits = None
        if self.use_domain_classifier:
            domain_logits = {}
            for level in self.align_levels:
                inputs = features[level]
                if level == BOTTLENECK_LEVEL and self.domain_conditioning == "cdan":
                    inputs = cdan_randomized_map(
                        inputs, bottleneck_softmax(seg_all[-1], inputs.shape[1:3]),
                        self.cdan_features,
                    )
                logits = PatchDiscriminator(
                    features=tuple(self.discriminator_features),
                    dtype=self.dtype,
                    conv=self.conv,
                    spectral_norm=self.discriminator_spectral_norm,
                    name=domain_classifier_name(level),
                )(gradient_reversal(inputs, grl_scale), train=train)
                domain_logits[level] = split(logits)
            if not domain_logits:
                domain_logits = None
            if self.output_alignment:
                outputs = [disp_all[0].astype(jnp.float32)]
                if seg_all is not None:
                    outputs.append(jax.nn.softmax(seg_all[0].astype(jnp.float32), axis=-1))
                logits = PatchDiscriminator(
                    features=tuple(self.output_discriminator_features),
                    dtype=self.dtype,
                    conv=self.conv,
                    spectral_norm=self.discriminator_spectral_norm,
                    name=OUTPUT_CLASSIFIER,
                )(gradient_reversal(jnp.concatenate(outputs, axis=-1), grl_scale), train=train)
                output_domain_logits = split(logits)

        return {"disp": source_half(disp_all), "seg_logits": source_half(seg_all),
                "domain_logits": domain_logits, "output_domain_logits": output_domain_logits}


def bottleneck_softmax(seg_logits: jax.Array, size: tuple[int, int]) -> jax.Array:
    """Class probabilities of `seg_logits` (B, h, w, K) average-pooled to `size`, with no
    gradient (CDAN conditions on the prediction; the official code detaches it)."""
    probabilities = jax.nn.softmax(seg_logits.astype(jnp.float32), axis=-1)
    factor = (probabilities.shape[1] // size[0], probabilities.shape[2] // size[1])
    pooled = nn.avg_pool(probabilities, factor, strides=factor)
    return jax.lax.stop_gradient(pooled)


def cdan_randomized_map(features: jax.Array, probabilities: jax.Array, width: int) -> jax.Array:
    """CDAN's randomized multilinear map `(f R_f) * (g R_g) / sqrt(width)` per position.

    `features` (B, h, w, C), `probabilities` (B, h, w, K); R_f (C, width) and R_g (K, width)
    are fixed standard Gaussians drawn from `CDAN_KEY` (Long et al. 2018, section 3.2: the
    randomized form of f (x) g when C * K is large). Returns (B, h, w, width) in the
    features' dtype.
    """
    key_f, key_g = jax.random.split(jax.random.PRNGKey(CDAN_KEY))
    random_f = jax.random.normal(key_f, (features.shape[-1], width), jnp.float32)
    random_g = jax.random.normal(key_g, (probabilities.shape[-1], width), jnp.float32)
    mapped = (features.astype(jnp.float32) @ random_f) * (probabilities @ random_g)
    return (mapped / jnp.sqrt(jnp.float32(width))).astype(features.dtype)


def domain_classifier_name(level: int) -> str:
    """Parameter subtree of the classifier on encoder feature `level` ("domain_classifier"
    for the bottleneck, as in the paper's model; "domain_classifier_<level>" otherwise)."""
    return DOMAIN_CLASSIFIER if level == BOTTLENECK_LEVEL else f"{DOMAIN_CLASSIFIER}_{level}"


class DepthNet(nn.Module):
    """Inference network: encoder + shared block + depth decoder (no semantic, no classifier).

    Its parameter subtrees carry the same names as in `DAMonodepth`, so
    `depth_net_variables(da_variables)` can be applied directly.
    `__call__(images, train=False)` returns the 4 sigmoid disparities, scale 0 first,
    (B, H/2**s, W/2**s, 1) float32.
    """

    upsample_mode: str = "bilinear"
    dtype: Any = jnp.float32
    conv: ModuleDef = nn.Conv

    @classmethod
    def from_config(
        cls, model_config: Any, dtype: Any = "float32", conv: ModuleDef = nn.Conv
    ) -> "DepthNet":
        """Builds the inference network from `config.model` (upsample_mode), a dtype and the
        convolution module."""
        return cls(
            upsample_mode=model_config.upsample_mode, dtype=_compute_dtype(dtype), conv=conv
        )

    @nn.compact
    def __call__(self, images: jax.Array, train: bool = False) -> list[jax.Array]:
        _check_images(images, "images")
        features = ResNet18Encoder(dtype=self.dtype, conv=self.conv, name="encoder")(
            images, train=train
        )
        x = SharedBlock(
            upsample_mode=self.upsample_mode, dtype=self.dtype, conv=self.conv,
            name="shared_block",
        )(features[4], features[3])
        return DepthDecoder(
            upsample_mode=self.upsample_mode, dtype=self.dtype, conv=self.conv,
            name="depth_decoder",
        )(x, features)


def depth_net_variables(variables: Mapping[str, Any]) -> dict[str, Any]:
    """Selects DepthNet's variables (encoder, shared block, depth decoder, encoder BN stats)."""
    if "params" not in variables or "batch_stats" not in variables:
        raise KeyError(
            f"variables must have 'params' and 'batch_stats', got {sorted(variables)}"
        )
    params = variables["params"]
    missing = [part for part in DEPTH_NET_PARTS if part not in params]
    if missing or "encoder" not in variables["batch_stats"]:
        raise KeyError(
            f"variables lack DepthNet parts {missing or ['batch_stats/encoder']}; "
            f"params has {sorted(params)}"
        )
    return {
        "params": {part: params[part] for part in DEPTH_NET_PARTS},
        "batch_stats": {"encoder": _without_source_stats(variables["batch_stats"]["encoder"])},
    }


def _without_source_stats(tree: Mapping[str, Any]) -> dict[str, Any]:
    """Drops DomainBatchNorm's `source_mean`/`source_var`: inference uses the target's."""
    return {
        key: _without_source_stats(value) if isinstance(value, Mapping) else value
        for key, value in tree.items()
        if not str(key).startswith("source_")
    }


def combine_shared_block_grads(grads: Mapping[str, Any], mode: str) -> dict[str, Any]:
    """Applies `config.model.shared_block_grad` to a parameter-gradient tree.

    The shared block's gradient is already the SUM of the depth and semantic branches'
    gradients (one copy of the parameters, used twice). "mean" halves it (the paper's
    "average the summed gradient of two branches", §4.1); "sum" returns `grads` unchanged.
    Call it only when the semantic decoder is on.

    Args:
      grads: gradients w.r.t. `variables["params"]` (top-level key "shared_block").
      mode: "mean" or "sum".
    """
    if "shared_block" not in grads:
        raise KeyError(
            f"combine_shared_block_grads: no 'shared_block' in the gradient tree (keys "
            f"{sorted(grads)}); pass the gradients of variables['params']"
        )
    if mode == "sum":
        return dict(grads)
    halved = jax.tree.map(lambda g: g * jnp.asarray(0.5, g.dtype), grads["shared_block"])
    return {**grads, "shared_block": halved}
