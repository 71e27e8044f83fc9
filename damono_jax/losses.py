"""DA-Monodepth training losses (paper eq. 1-6), with Monodepth2's SSIM and smoothness.

Conventions (docs/design.md): images NHWC float32 in [0, 1]; depth in metres with 0 meaning
"no ground truth"; labels int32 Cityscapes train ids with 255 = ignore.

Ground-truth disparity. The depth decoder predicts `sigma` in (0, 1) and metric depth is
`geometry.disp_to_depth(sigma, min_depth, max_depth)` (Monodepth2). The depth loss therefore
supervises `sigma` with `gt_sigma = geometry.depth_to_disp(gt_depth, min_depth, max_depth)`,
its exact inverse, so a perfect prediction converts back to the ground-truth metres.

Masking. A pixel is valid when `0 < gt_depth <= max_gt_depth` (`config.data.max_depth`, 80 m in
the paper). SSIM and L1 maps are averaged over valid pixels only. Invalid pixels carry a GT
disparity of 0 (infinitely far) so that the 3x3 SSIM windows next to them stay finite; their
own SSIM/L1 values are excluded. The smoothness term has no ground truth: it regularises the
prediction against the clean image everywhere, as in Monodepth2.

Scales. Monodepth2 averages the per-scale losses over the four scales
(`loss = sum_s loss_s / num_scales`); the segmentation loss is averaged over scales the same
way, so the paper's lambda weights keep their meaning whatever the number of scales.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from damono_jax import geometry
from damono_jax.labels import IGNORE_LABEL
from damono_jax.models.upsample import upsample_bilinear_to

SSIM_C1 = 0.01**2
SSIM_C2 = 0.03**2
# Added to the per-image mean before mean-normalising the disparity (Monodepth2 trainer.py).
DISP_NORM_EPS = 1e-7
# Adversarial loss of a domain classifier at chance (one of the two GRL collapse modes).
LN2 = math.log(2.0)

Array = jax.Array



def _at_least_float32(x: jax.Array) -> jnp.dtype:
    """float32 for bfloat16 or float32 inputs; float64 stays (the float64 data-parallel check)."""
    return jnp.promote_types(x.dtype, jnp.float32)

def masked_mean(values: Array, mask: Array) -> Array:
    """Mean of `values` over the pixels where `mask` is true; 0 when no pixel is valid.

    `mask` broadcasts against `values`. The zero-valid case returns 0 with a zero gradient
    instead of a NaN, so a batch without any ground truth contributes nothing.
    """
    mask = jnp.broadcast_to(mask, values.shape).astype(values.dtype)
    total = jnp.sum(values * mask)
    count = jnp.sum(mask)
    return total / jnp.maximum(count, 1.0)


def ssim_loss_map(x: Array, y: Array) -> Array:
    """Monodepth2's per-pixel SSIM loss `clamp((1 - SSIM) / 2, 0, 1)` for NHWC inputs.

    3x3 average pooling (stride 1) on reflection-padded inputs, C1 = 0.01**2, C2 = 0.03**2,
    computed per channel; the output has the input's shape. Written here rather than with
    `dm_pix.ssim` because pix clips the variances and covariance before combining them, which
    changes the result near flat regions; Monodepth2 does not clip.
    """
    pad = ((0, 0), (1, 1), (1, 1), (0, 0))
    x = jnp.pad(x, pad, mode="reflect")
    y = jnp.pad(y, pad, mode="reflect")

    def pool(z: Array) -> Array:
        return nn.avg_pool(z, window_shape=(3, 3), strides=(1, 1), padding="VALID")

    mu_x = pool(x)
    mu_y = pool(y)
    sigma_x = pool(x * x) - mu_x**2
    sigma_y = pool(y * y) - mu_y**2
    sigma_xy = pool(x * y) - mu_x * mu_y
    numerator = (2 * mu_x * mu_y + SSIM_C1) * (2 * sigma_xy + SSIM_C2)
    denominator = (mu_x**2 + mu_y**2 + SSIM_C1) * (sigma_x + sigma_y + SSIM_C2)
    return jnp.clip((1 - numerator / denominator) / 2, 0.0, 1.0)


def valid_depth_mask(gt_depth: Array, max_gt_depth: float) -> Array:
    """Boolean (B, H, W, 1) mask of pixels with ground truth: `0 < depth <= max_gt_depth`."""
    if gt_depth.ndim == 3:
        gt_depth = gt_depth[..., None]
    return (gt_depth > 0) & (gt_depth <= max_gt_depth)


def gt_disparity(gt_depth: Array, mask: Array, min_depth: float, max_depth: float) -> Array:
    """GT in the network's sigmoid space (`geometry.depth_to_disp`), 0 at invalid pixels."""
    if gt_depth.ndim == 3:
        gt_depth = gt_depth[..., None]
    safe_depth = jnp.where(mask, gt_depth, 1.0)
    return jnp.where(mask, geometry.depth_to_disp(safe_depth, min_depth, max_depth), 0.0)


def upsample_to(x: Array, height: int, width: int) -> Array:
    """Bilinear upsampling of NHWC `x` to (height, width), torch `align_corners=False`.

    Every scale's output is an integer fraction of the input size (sizes are multiples of 32).
    """
    return upsample_bilinear_to(x, height, width)


def disparity_supervision_loss(
    disp: Array, target_disp: Array, mask: Array, l1_weight: float
) -> Array:
    """`(1 - l1_weight) * SSIM + l1_weight * L1` averaged over valid pixels (paper eq. 2, 4)."""
    ssim = jnp.mean(ssim_loss_map(disp, target_disp), axis=-1, keepdims=True)
    l1 = jnp.mean(jnp.abs(disp - target_disp), axis=-1, keepdims=True)
    per_pixel = (1.0 - l1_weight) * ssim + l1_weight * l1
    return masked_mean(per_pixel, mask)


def smoothness_loss(disp: Array, image: Array) -> Array:
    """Monodepth2's edge-aware smoothness of a disparity map against an image (paper eq. 3).

    `disp` (B, h, w, 1) is mean-normalised per image here; `image` (B, h, w, 3) is at the same
    scale. The x and y terms are separate means over their own (h, w-1) and (h-1, w) shapes.
    """
    mean_disp = jnp.mean(disp, axis=(1, 2), keepdims=True)
    norm_disp = disp / (mean_disp + DISP_NORM_EPS)
    grad_disp_x = jnp.abs(norm_disp[:, :, :-1, :] - norm_disp[:, :, 1:, :])
    grad_disp_y = jnp.abs(norm_disp[:, :-1, :, :] - norm_disp[:, 1:, :, :])
    grad_img_x = jnp.mean(jnp.abs(image[:, :, :-1, :] - image[:, :, 1:, :]), -1, keepdims=True)
    grad_img_y = jnp.mean(jnp.abs(image[:, :-1, :, :] - image[:, 1:, :, :]), -1, keepdims=True)
    return jnp.mean(grad_disp_x * jnp.exp(-grad_img_x)) + jnp.mean(
        grad_disp_y * jnp.exp(-grad_img_y)
    )


def image_pyramid(image: Array, num_scales: int) -> list[Array]:
    """Scales 0..num_scales-1 of an NHWC image, each half the size of the previous one.

    Monodepth2 builds its pyramid with PIL LANCZOS, each scale resized from the previous one;
    `jax.image.resize('lanczos3', antialias=True)` is within one grey level of PIL.
    """
    pyramid = [image]
    for _ in range(1, num_scales):
        previous = pyramid[-1]
        batch, height, width, channels = previous.shape
        pyramid.append(
            jax.image.resize(
                previous, (batch, height // 2, width // 2, channels), "lanczos3", antialias=True
            )
        )
    return pyramid


def depth_loss(
    disps: Sequence[Array],
    clean_image: Array,
    gt_depth: Array,
    *,
    min_depth: float,
    max_depth: float,
    max_gt_depth: float,
    l1_weight: float,
    smoothness_weight: float,
) -> Array:
    """Multi-scale depth loss: supervision at input size plus smoothness at native scale.

    For each scale s: `disp_s` is upsampled bilinearly to the input size and compared with the
    GT disparity (SSIM + L1, valid pixels only); the smoothness term on the native `disp_s`
    against the clean image at scale s is weighted `smoothness_weight / 2**s`. The result is
    the mean over scales (Monodepth2).
    """
    _, height, width, _ = clean_image.shape
    mask = valid_depth_mask(gt_depth, max_gt_depth)
    target = gt_disparity(gt_depth, mask, min_depth, max_depth)
    images = image_pyramid(clean_image, len(disps))
    total = jnp.float32(0.0)
    for scale, disp in enumerate(disps):
        disp = disp.astype(_at_least_float32(disp))
        supervised = disparity_supervision_loss(
            upsample_to(disp, height, width), target, mask, l1_weight
        )
        smooth = smoothness_loss(disp, images[scale])
        total = total + supervised + smoothness_weight / (2**scale) * smooth
    return total / len(disps)


def segmentation_loss(seg_logits: Sequence[Array], labels: Array) -> Array:
    """Cross entropy with ignore label 255, each scale's logits upsampled to the label size.

    Averaged over non-ignored pixels, then over scales (paper eq. 5).
    """
    if labels.ndim == 4:
        labels = labels[..., 0]
    labels = labels.astype(jnp.int32)
    _, height, width = labels.shape
    valid = labels != IGNORE_LABEL
    safe_labels = jnp.where(valid, labels, 0)
    total = jnp.float32(0.0)
    for logits in seg_logits:
        logits = upsample_to(logits.astype(_at_least_float32(logits)), height, width)
        per_pixel = optax.softmax_cross_entropy_with_integer_labels(logits, safe_labels)
        total = total + masked_mean(per_pixel, valid)
    return total / len(seg_logits)


def adversarial_loss(source_logits: Array, target_logits: Array) -> Array:
    """Binary cross entropy of the domain classifier's patch logits: source 1, target 0.

    The mean over all source and target patches (equal batch sizes), so a classifier at chance
    scores ln 2. The encoder sees this loss through the gradient reversal layer (paper eq. 1).
    """
    source_logits = source_logits.astype(_at_least_float32(source_logits))
    target_logits = target_logits.astype(_at_least_float32(target_logits))
    source = optax.sigmoid_binary_cross_entropy(source_logits, jnp.ones_like(source_logits))
    target = optax.sigmoid_binary_cross_entropy(target_logits, jnp.zeros_like(target_logits))
    return 0.5 * (jnp.mean(source) + jnp.mean(target))


def domain_accuracy(source_logits: Array, target_logits: Array) -> tuple[Array, Array]:
    """Fractions of source patches classified as source and of target patches as target."""
    return (
        jnp.mean((source_logits > 0).astype(jnp.float32)),
        jnp.mean((target_logits <= 0).astype(jnp.float32)),
    )


@dataclasses.dataclass(frozen=True)
class LossSettings:
    """Every constant of the total loss (paper eq. 6), explicit and hashable, so that jitted
    code takes it instead of the config. `from_config` reads `config.model`, `.data`, `.loss`.
    """

    min_depth: float
    max_depth: float
    max_gt_depth: float
    l1_weight: float
    smoothness_weight: float
    depth_weight: float
    seg_weight: float
    adv_weight: float
    output_adv_weight: float

    @classmethod
    def from_config(cls, config: Any) -> LossSettings:
        return cls(
            min_depth=float(config.model.min_depth),
            max_depth=float(config.model.max_depth),
            max_gt_depth=float(config.data.max_depth),
            l1_weight=float(config.loss.l1_weight),
            smoothness_weight=float(config.loss.smoothness_weight),
            depth_weight=float(config.loss.depth_weight),
            seg_weight=float(config.loss.seg_weight),
            adv_weight=float(config.loss.adv_weight),
            output_adv_weight=float(config.loss.output_adv_weight),
        )


def compute_loss_terms(
    outputs: Mapping[str, Any], batch: Mapping[str, Array], settings: LossSettings
) -> dict[str, Array]:
    """All loss terms and the weighted total for one batch (paper eq. 6).

    `outputs` is the model's dict (`disp`, `seg_logits`, `domain_logits` and
    `output_domain_logits`, the last three None when the variant lacks them); `batch` holds
    `source_image_clean`, `source_depth`, `source_label`. Returns float32 scalars: `depth`,
    `seg`, `adv` (mean over the feature classifiers, one per aligned level), `adv_output`
    (the output-space classifier), `total` (absent terms 0), plus `domain_acc_source` /
    `domain_acc_target`, the mean accuracies over every domain classifier (0 without one).
    """
    zero = jnp.float32(0.0)
    terms = {
        "depth": depth_loss(
            outputs["disp"],
            batch["source_image_clean"],
            batch["source_depth"],
            min_depth=settings.min_depth,
            max_depth=settings.max_depth,
            max_gt_depth=settings.max_gt_depth,
            l1_weight=settings.l1_weight,
            smoothness_weight=settings.smoothness_weight,
        ),
        "seg": zero,
        "adv": zero,
        "adv_output": zero,
        "domain_acc_source": zero,
        "domain_acc_target": zero,
    }
    if outputs.get("seg_logits") is not None:
        terms["seg"] = segmentation_loss(outputs["seg_logits"], batch["source_label"])
    classifiers = []
    if outputs.get("domain_logits") is not None:
        per_level = list(outputs["domain_logits"].values())
        for logits in per_level:
            terms["adv"] = terms["adv"] + adversarial_loss(logits["source"], logits["target"])
        terms["adv"] = terms["adv"] / len(per_level)
        classifiers += per_level
    if outputs.get("output_domain_logits") is not None:
        logits = outputs["output_domain_logits"]
        terms["adv_output"] = adversarial_loss(logits["source"], logits["target"])
        classifiers.append(logits)
    for logits in classifiers:
        acc_source, acc_target = domain_accuracy(logits["source"], logits["target"])
        terms["domain_acc_source"] = terms["domain_acc_source"] + acc_source / len(classifiers)
        terms["domain_acc_target"] = terms["domain_acc_target"] + acc_target / len(classifiers)
    terms["total"] = (
        settings.adv_weight * terms["adv"]
        + settings.output_adv_weight * terms["adv_output"]
        + settings.depth_weight * terms["depth"]
        + settings.seg_weight * terms["seg"]
    )
    return terms
