"""PyTorch twin of DA-Monodepth: the identical network, loss and train step, for benchmarks.

The twin mirrors `damono_jax.models.DAMonodepth` and `damono_jax.losses` operation by
operation, so that (a) a parity test can check the JAX model against an independent
implementation, and (b) `benchmarks/train_step.py` can time the same computation in PyTorch:

* ResNet-18 encoder with torchvision's module layout and state-dict names (written out here:
  torchvision is not a dependency of the project), Monodepth2's `(x - 0.45) / 0.225` input
  normalisation, one pass over the concatenated [source; target] batch;
* the decoder block i = 4 shared by the depth and the semantic decoders, blocks 3..0 per
  decoder, reflection-padded 3x3 convs + ELU, bilinear x2 upsampling (`align_corners=False`,
  equal to `jax.image.resize(..., "linear")` for upsampling);
* the gradient reversal layer as a `torch.autograd.Function`;
* the PatchGAN domain classifier (3x3 stride-2 convs + LeakyReLU(0.2), 3x3 logit conv);
* the loss: multi-scale SSIM + L1 on disparities upsampled to the input size, edge-aware
  smoothness at native scale against a Lanczos-3 image pyramid, cross entropy with ignore
  label 255, patch BCE, weighted as in `losses.compute_loss_terms`.

Tensors are NCHW here (PyTorch's convention); `load_jax_variables` converts a Flax variable
tree (HWIO kernels) into the twin. Parameters names follow the Flax tree, e.g.
`encoder.layer2.0.downsample.0.weight` <- `params/encoder/layer2_0/downsample_conv/kernel`,
`depth_decoder.block_3.conv_0.weight` <- `params/depth_decoder/block_3/conv_0/kernel`.

Known, deliberate difference: PyTorch's BatchNorm updates `running_var` with the unbiased
batch variance and Flax with the biased one, so running statistics drift apart by a factor
n / (n - 1) after training steps; train-mode outputs and losses are identical.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from damono_jax.labels import IGNORE_LABEL
from damono_jax.losses import DISP_NORM_EPS, SSIM_C1, SSIM_C2
from damono_jax.models.da_monodepth import VARIANTS
from damono_jax.models.decoders import DECODER_CHANNELS, NUM_SCALES, UPSAMPLE_MODES
from damono_jax.models.discriminator import LEAKY_RELU_SLOPE
from damono_jax.models.resnet import (
    ENCODER_CHANNELS,
    MONODEPTH2_INPUT_MEAN,
    MONODEPTH2_INPUT_STD,
)

BN_MOMENTUM = 0.1  # PyTorch convention; Flax momentum 0.9
BN_EPSILON = 1e-5  # torchvision's, as models.resnet



# ---------------------------------------------------------------------------- layers


class GradientReversal(torch.autograd.Function):
    """Identity forward; multiplies the incoming gradient by `-scale` backwards."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(scale)
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (scale,) = ctx.saved_tensors
        return -scale.to(grad.dtype) * grad, None


def gradient_reversal(x: torch.Tensor, scale: torch.Tensor | float) -> torch.Tensor:
    """`GradientReversal.apply` with the scale as a 0-d float32 tensor on `x`'s device."""
    scale = torch.as_tensor(scale, dtype=torch.float32, device=x.device)
    if scale.ndim != 0:
        raise ValueError(
            f"gradient_reversal: scale must be a scalar, got shape {tuple(scale.shape)}"
        )
    return GradientReversal.apply(x, scale)


def upsample2x(x: torch.Tensor, mode: str) -> torch.Tensor:
    """x2 upsampling of NCHW `x`: nearest (Monodepth2) or bilinear, align_corners=False."""
    if mode == "nearest":
        return F.interpolate(x, scale_factor=2, mode="nearest")
    if mode == "bilinear":
        return F.interpolate(
            x, size=(2 * x.shape[2], 2 * x.shape[3]), mode="bilinear", align_corners=False
        )
    raise ValueError(f"upsample mode must be one of {UPSAMPLE_MODES}, got {mode!r}")


class ReflectionConv3x3(nn.Conv2d):
    """Monodepth2's `Conv3x3`: reflection pad 1, then a 3x3 conv with bias."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(in_channels, out_channels, kernel_size=3, padding=0, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, (1, 1, 1, 1), mode="reflect"))


class BasicBlock(nn.Module):
    """torchvision BasicBlock: conv3x3-BN-ReLU-conv3x3-BN, plus (projected) identity, ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels, eps=BN_EPSILON, momentum=BN_MOMENTUM)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels, eps=BN_EPSILON, momentum=BN_MOMENTUM)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels, eps=BN_EPSILON, momentum=BN_MOMENTUM),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        residual = x if self.downsample is None else self.downsample(x)
        return F.relu(y + residual)


class ResNet18Encoder(nn.Module):
    """ResNet-18 with torchvision's names; returns the five Monodepth2 features (NCHW)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64, eps=BN_EPSILON, momentum=BN_MOMENTUM)
        in_channels = 64
        for stage in range(4):
            out_channels = ENCODER_CHANNELS[stage + 1]
            stride = 1 if stage == 0 else 2
            blocks = [
                BasicBlock(in_channels, out_channels, stride),
                BasicBlock(out_channels, out_channels, 1),
            ]
            setattr(self, f"layer{stage + 1}", nn.Sequential(*blocks))
            in_channels = out_channels

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        x = (images - MONODEPTH2_INPUT_MEAN) / MONODEPTH2_INPUT_STD
        x = F.relu(self.bn1(self.conv1(x)))
        features = [x]
        x = F.max_pool2d(x, 3, 2, padding=1)
        for stage in range(1, 5):
            x = getattr(self, f"layer{stage}")(x)
            features.append(x)
        return features


class UpBlock(nn.Module):
    """Decoder block: conv_0 + ELU, upsample x2, concat the skip, conv_1 + ELU."""

    def __init__(self, in_channels: int, features: int, skip_channels: int, upsample_mode: str):
        super().__init__()
        if upsample_mode not in UPSAMPLE_MODES:
            raise ValueError(f"upsample_mode {upsample_mode!r} is not one of {UPSAMPLE_MODES}")
        self.upsample_mode = upsample_mode
        self.conv_0 = ReflectionConv3x3(in_channels, features)
        self.conv_1 = ReflectionConv3x3(features + skip_channels, features)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
        x = upsample2x(F.elu(self.conv_0(x)), self.upsample_mode)
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        return F.elu(self.conv_1(x))


class MultiScaleDecoder(nn.Module):
    """Blocks 3..0 after the shared block and an output conv at each scale (scale 0 first)."""

    def __init__(self, num_output_channels: int, output_activation: str, upsample_mode: str):
        super().__init__()
        if output_activation not in ("sigmoid", "none"):
            raise ValueError(f"output_activation {output_activation!r}: 'sigmoid' or 'none'")
        self.output_activation = output_activation
        for i in range(3, -1, -1):
            in_channels = DECODER_CHANNELS[i + 1]
            skip = ENCODER_CHANNELS[i - 1] if i > 0 else 0
            setattr(
                self, f"block_{i}", UpBlock(in_channels, DECODER_CHANNELS[i], skip, upsample_mode)
            )
            setattr(
                self,
                f"output_conv_{i}",
                ReflectionConv3x3(DECODER_CHANNELS[i], num_output_channels),
            )

    def forward(self, x: torch.Tensor, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        outputs: list[torch.Tensor | None] = [None] * NUM_SCALES
        for i in range(3, -1, -1):
            x = getattr(self, f"block_{i}")(x, features[i - 1] if i > 0 else None)
            y = getattr(self, f"output_conv_{i}")(x).float()
            outputs[i] = torch.sigmoid(y) if self.output_activation == "sigmoid" else y
        return outputs  # type: ignore[return-value]


class PatchDiscriminator(nn.Module):
    """PatchGAN domain classifier: stride-2 3x3 convs + LeakyReLU(0.2), 3x3 logit conv."""

    def __init__(self, in_channels: int, features: Sequence[int]):
        super().__init__()
        if not features or any(int(f) <= 0 for f in features):
            raise ValueError(f"discriminator features must be positive widths, got {features}")
        self.num_layers = len(features)
        for index, width in enumerate(features):
            setattr(self, f"conv_{index}", nn.Conv2d(in_channels, int(width), 3, 2, padding=1))
            in_channels = int(width)
        self.logits = nn.Conv2d(in_channels, 1, 3, 1, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for index in range(self.num_layers):
            x = F.leaky_relu(getattr(self, f"conv_{index}")(x), LEAKY_RELU_SLOPE)
        return self.logits(x).float()


class TwinDAMonodepth(nn.Module):
    """The PyTorch twin of `damono_jax.models.DAMonodepth` (NCHW in, NCHW out)."""

    def __init__(
        self,
        num_classes: int = 19,
        upsample_mode: str = "bilinear",
        use_semantic: bool = True,
        use_domain_classifier: bool = True,
        discriminator_features: Sequence[int] = (256, 128),
    ):
        super().__init__()
        self.use_semantic = use_semantic
        self.use_domain_classifier = use_domain_classifier
        self.encoder = ResNet18Encoder()
        self.shared_block = UpBlock(
            ENCODER_CHANNELS[4], DECODER_CHANNELS[4], ENCODER_CHANNELS[3], upsample_mode
        )
        self.depth_decoder = MultiScaleDecoder(1, "sigmoid", upsample_mode)
        if use_semantic:
            self.semantic_decoder = MultiScaleDecoder(num_classes, "none", upsample_mode)
        if use_domain_classifier:
            self.domain_classifier = PatchDiscriminator(ENCODER_CHANNELS[4], discriminator_features)

    @classmethod
    def from_config(cls, config: Any) -> TwinDAMonodepth:
        """Builds the twin of `config.variant` from `config.model` (like `state.create_model`)."""
        return cls(
            num_classes=config.model.num_classes,
            upsample_mode=config.model.upsample_mode,
            **VARIANTS[config.variant],
            discriminator_features=tuple(config.model.discriminator_features),
        )

    def forward(
        self,
        source_images: torch.Tensor,
        target_images: torch.Tensor | None = None,
        grl_scale: torch.Tensor | float = 1.0,
    ) -> dict[str, Any]:
        """The JAX model's outputs in NCHW: disp (B, 1, H/2^s, W/2^s), seg_logits, domain_logits."""
        if self.use_domain_classifier:
            if target_images is None:
                raise ValueError("target_images is None but use_domain_classifier is True")
            images = torch.cat([source_images, target_images], dim=0)
        else:
            images = source_images
        num_source = source_images.shape[0]
        features = self.encoder(images)
        source_features = [f[:num_source] for f in features]
        x = self.shared_block(source_features[4], source_features[3])
        outputs: dict[str, Any] = {
            "disp": self.depth_decoder(x, source_features),
            "seg_logits": None,
            "domain_logits": None,
        }
        if self.use_semantic:
            outputs["seg_logits"] = self.semantic_decoder(x, source_features)
        if self.use_domain_classifier:
            logits = self.domain_classifier(gradient_reversal(features[4], grl_scale))
            outputs["domain_logits"] = {
                "source": logits[:num_source],
                "target": logits[num_source:],
            }
        return outputs


# ---------------------------------------------------------------------------- weights


def _torch_name(flax_path: Sequence[str]) -> str:
    """Flax module path + leaf name -> the twin's state-dict key."""
    leaf_names = {
        "kernel": "weight",
        "scale": "weight",
        "mean": "running_mean",
        "var": "running_var",
    }
    parts: list[str] = []
    for name in flax_path[:-1]:
        if name.startswith("layer") and "_" in name:
            parts.extend(name.split("_"))  # layer2_0 -> layer2.0
        elif name == "downsample_conv":
            parts.extend(["downsample", "0"])
        elif name == "downsample_bn":
            parts.extend(["downsample", "1"])
        else:
            parts.append(name)
    parts.append(leaf_names.get(flax_path[-1], flax_path[-1]))
    return ".".join(parts)


def _flatten(tree: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    flat: dict[tuple[str, ...], Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, (*prefix, key)))
        else:
            flat[(*prefix, key)] = value
    return flat


def load_jax_variables(twin: TwinDAMonodepth, variables: Mapping[str, Any]) -> None:
    """Copies a Flax variable tree (`params`, `batch_stats`) into the twin, in place.

    Conv kernels go HWIO -> OIHW. Every twin parameter and BatchNorm buffer (except
    `num_batches_tracked`) must receive exactly one value with the right shape.

    Raises:
      KeyError: a Flax leaf has no twin counterpart, or a twin tensor got no value.
      ValueError: a shape does not match.
    """
    for collection in ("params", "batch_stats"):
        if collection not in variables:
            raise KeyError(
                f"load_jax_variables: variables have no {collection!r} ({sorted(variables)})"
            )
    state = twin.state_dict()
    expected = {name for name in state if not name.endswith("num_batches_tracked")}
    assigned: set[str] = set()
    for collection in ("params", "batch_stats"):
        for path, value in _flatten(variables[collection]).items():
            name = _torch_name(path)
            flax_key = f"{collection}/{'/'.join(path)}"
            if name not in state:
                raise KeyError(f"load_jax_variables: {flax_key} has no twin tensor {name!r}")
            array = np.asarray(value, dtype=np.float32)
            if path[-1] == "kernel":
                array = array.transpose(3, 2, 0, 1)
            if tuple(array.shape) != tuple(state[name].shape):
                raise ValueError(
                    f"load_jax_variables: {flax_key} -> {name}: shape {array.shape} "
                    f"!= twin {tuple(state[name].shape)}"
                )
            with torch.no_grad():
                state[name].copy_(torch.from_numpy(np.array(array, copy=True)))
            assigned.add(name)
    missing = sorted(expected - assigned)
    if missing:
        raise KeyError(f"load_jax_variables: twin tensors without a Flax value: {missing[:5]}")


# ---------------------------------------------------------------------------- losses


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of `values` where `mask` is true; 0 when no pixel is valid."""
    mask = torch.broadcast_to(mask, values.shape).to(values.dtype)
    return torch.sum(values * mask) / torch.clamp(torch.sum(mask), min=1.0)


def ssim_loss_map(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Monodepth2's per-pixel `clamp((1 - SSIM) / 2, 0, 1)`, NCHW, same size as the input."""
    x = F.pad(x, (1, 1, 1, 1), mode="reflect")
    y = F.pad(y, (1, 1, 1, 1), mode="reflect")
    mu_x = F.avg_pool2d(x, 3, 1)
    mu_y = F.avg_pool2d(y, 3, 1)
    sigma_x = F.avg_pool2d(x * x, 3, 1) - mu_x**2
    sigma_y = F.avg_pool2d(y * y, 3, 1) - mu_y**2
    sigma_xy = F.avg_pool2d(x * y, 3, 1) - mu_x * mu_y
    numerator = (2 * mu_x * mu_y + SSIM_C1) * (2 * sigma_xy + SSIM_C2)
    denominator = (mu_x**2 + mu_y**2 + SSIM_C1) * (sigma_x + sigma_y + SSIM_C2)
    return torch.clamp((1 - numerator / denominator) / 2, 0.0, 1.0)


def upsample_to(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bilinear resize of NCHW `x` to (height, width), align_corners=False."""
    return F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False)


# (size, device, dtype) -> the Lanczos halving matrix; filled outside any compiled region
# by `prepare_image_pyramid`, read by `image_pyramid` (torch.compile cannot trace JAX).
_HALVING_MATRICES: dict[tuple[int, str, torch.dtype], torch.Tensor] = {}


def _lanczos_halving_matrix(size: int) -> np.ndarray:
    """The (size // 2, size) matrix of `jax.image.resize(..., "lanczos3", antialias=True)`.

    PyTorch has no Lanczos resize. The resize is linear and separable, so its exact
    operator is read off by resizing an identity matrix along one axis with JAX (once
    per size); applying it with a matmul reproduces the JAX pyramid to float rounding.
    """
    import jax
    import jax.numpy as jnp

    identity = jnp.eye(size, dtype=jnp.float32)
    matrix = jax.image.resize(identity, (size // 2, size), "lanczos3", antialias=True)
    return np.array(matrix, dtype=np.float32, copy=True)  # writable: torch.from_numpy needs it


def prepare_image_pyramid(image: torch.Tensor, num_scales: int = NUM_SCALES) -> None:
    """Computes and caches the halving matrices `image_pyramid` needs for this image size.

    Call it outside `torch.compile`d code (`TwinTrainer` does); eager callers of
    `image_pyramid` need not, it prepares itself when not compiling.
    """
    height, width = image.shape[2:]
    for _ in range(1, num_scales):
        for size in (height, width):
            key = (size, str(image.device), image.dtype)
            if key not in _HALVING_MATRICES:
                matrix = torch.from_numpy(_lanczos_halving_matrix(size))
                _HALVING_MATRICES[key] = matrix.to(device=image.device, dtype=image.dtype)
        height, width = height // 2, width // 2


def image_pyramid(image: torch.Tensor, num_scales: int) -> list[torch.Tensor]:
    """Scales 0..num_scales-1 of an NCHW image, each the Lanczos-3 half of the previous."""
    if not torch.compiler.is_compiling():
        prepare_image_pyramid(image, num_scales)
    pyramid = [image]
    for _ in range(1, num_scales):
        previous = pyramid[-1]
        device, dtype = str(previous.device), previous.dtype
        rows = _HALVING_MATRICES[(previous.shape[2], device, dtype)]
        cols = _HALVING_MATRICES[(previous.shape[3], device, dtype)]
        pyramid.append(torch.einsum("hH,bcHW,wW->bchw", rows, previous, cols))
    return pyramid


def smoothness_loss(disp: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """Monodepth2's edge-aware smoothness of the mean-normalised disparity (NCHW)."""
    norm_disp = disp / (disp.mean(dim=(2, 3), keepdim=True) + DISP_NORM_EPS)
    grad_disp_x = torch.abs(norm_disp[:, :, :, :-1] - norm_disp[:, :, :, 1:])
    grad_disp_y = torch.abs(norm_disp[:, :, :-1, :] - norm_disp[:, :, 1:, :])
    grad_img_x = torch.mean(torch.abs(image[:, :, :, :-1] - image[:, :, :, 1:]), 1, keepdim=True)
    grad_img_y = torch.mean(torch.abs(image[:, :, :-1, :] - image[:, :, 1:, :]), 1, keepdim=True)
    return torch.mean(grad_disp_x * torch.exp(-grad_img_x)) + torch.mean(
        grad_disp_y * torch.exp(-grad_img_y)
    )


def depth_loss(
    disps: Sequence[torch.Tensor],
    clean_image: torch.Tensor,
    gt_depth: torch.Tensor,
    *,
    min_depth: float,
    max_depth: float,
    max_gt_depth: float,
    l1_weight: float,
    smoothness_weight: float,
) -> torch.Tensor:
    """Multi-scale SSIM + L1 on upsampled disparities plus native-scale smoothness, / scales."""
    if gt_depth.ndim == 3:
        gt_depth = gt_depth[:, None]
    height, width = clean_image.shape[2:]
    mask = (gt_depth > 0) & (gt_depth <= max_gt_depth)
    safe_depth = torch.where(mask, gt_depth, torch.ones_like(gt_depth))
    min_disp, max_disp = 1.0 / max_depth, 1.0 / min_depth
    target = torch.where(
        mask, (1.0 / safe_depth - min_disp) / (max_disp - min_disp), torch.zeros_like(gt_depth)
    )
    images = image_pyramid(clean_image, len(disps))
    total = clean_image.new_zeros(())
    for scale, disp in enumerate(disps):
        disp = disp.float()
        upsampled = upsample_to(disp, height, width)
        ssim = torch.mean(ssim_loss_map(upsampled, target), 1, keepdim=True)
        l1 = torch.mean(torch.abs(upsampled - target), 1, keepdim=True)
        supervised = masked_mean((1.0 - l1_weight) * ssim + l1_weight * l1, mask)
        smooth = smoothness_loss(disp, images[scale])
        total = total + supervised + smoothness_weight / (2**scale) * smooth
    return total / len(disps)


def segmentation_loss(seg_logits: Sequence[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
    """Cross entropy (ignore 255) of logits upsampled to the label size, mean over scales."""
    if labels.ndim == 4:
        if labels.shape[1] != 1:
            raise ValueError(
                f"segmentation_loss: labels {tuple(labels.shape)} are not (B, 1, H, W)"
            )
        labels = labels[:, 0]
    if labels.ndim != 3:
        raise ValueError(f"segmentation_loss: labels {tuple(labels.shape)} are not (B, H, W)")
    labels = labels.long()
    height, width = labels.shape[1:]
    valid = labels != IGNORE_LABEL
    safe_labels = torch.where(valid, labels, torch.zeros_like(labels))
    total = seg_logits[0].new_zeros((), dtype=torch.float32)
    for logits in seg_logits:
        logits = upsample_to(logits.float(), height, width)
        per_pixel = F.cross_entropy(logits, safe_labels, reduction="none")
        total = total + masked_mean(per_pixel, valid)
    return total / len(seg_logits)


def adversarial_loss(source_logits: torch.Tensor, target_logits: torch.Tensor) -> torch.Tensor:
    """Patch BCE with logits, source label 1, target 0: 0.5 * (mean_s + mean_t)."""
    source = F.binary_cross_entropy_with_logits(source_logits, torch.ones_like(source_logits))
    target = F.binary_cross_entropy_with_logits(target_logits, torch.zeros_like(target_logits))
    return 0.5 * (source + target)


def compute_loss_terms(
    outputs: Mapping[str, Any], batch: Mapping[str, torch.Tensor], config: Any
) -> dict[str, torch.Tensor]:
    """`damono_jax.losses.compute_loss_terms` for NCHW twin outputs and an NCHW batch."""
    zero = batch["source_image_clean"].new_zeros(())
    terms = {
        "depth": depth_loss(
            outputs["disp"],
            batch["source_image_clean"],
            batch["source_depth"],
            min_depth=config.model.min_depth,
            max_depth=config.model.max_depth,
            max_gt_depth=config.data.max_depth,
            l1_weight=config.loss.l1_weight,
            smoothness_weight=config.loss.smoothness_weight,
        ),
        "seg": zero,
        "adv": zero,
    }
    if outputs.get("seg_logits") is not None:
        terms["seg"] = segmentation_loss(outputs["seg_logits"], batch["source_label"])
    if outputs.get("domain_logits") is not None:
        terms["adv"] = adversarial_loss(
            outputs["domain_logits"]["source"], outputs["domain_logits"]["target"]
        )
    terms["total"] = (
        config.loss.adv_weight * terms["adv"]
        + config.loss.depth_weight * terms["depth"]
        + config.loss.seg_weight * terms["seg"]
    )
    return terms


def nhwc_batch_to_torch(
    batch: Mapping[str, np.ndarray], device: torch.device | str = "cpu"
) -> dict[str, torch.Tensor]:
    """The JAX train step's NHWC numpy batch as NCHW torch tensors (labels as int64)."""
    converted = {}
    for key, value in batch.items():
        array = np.asarray(value)
        if array.ndim == 4:
            array = array.transpose(0, 3, 1, 2)
        tensor = torch.from_numpy(np.ascontiguousarray(array))
        if key == "source_label":
            tensor = tensor.long()
        converted[key] = tensor.to(device)
    return converted


# ---------------------------------------------------------------------------- train step


class TwinTrainer:
    """The twin's train step: forward, loss, backward, shared-block gradient mean, Adam.

    Mirrors `damono_jax.train.step.train_step` with a constant learning rate (`config.optim
    .learning_rate`; the step decay only matters after 3/4 of training). With `compile=True`
    the forward + loss function goes through `torch.compile`; the backward pass is then
    AOT-compiled by the same call. `autocast_dtype` (e.g. torch.bfloat16) runs the
    forward under `torch.autocast`, with float32 parameters. `compile_backend` is
    torch.compile's backend ("inductor"; "eager" traces with Dynamo only, for smoke runs).
    """

    def __init__(
        self,
        model: TwinDAMonodepth,
        config: Any,
        *,
        compile: bool = False,
        compile_backend: str = "inductor",
        autocast_dtype: torch.dtype | None = None,
    ):
        self.model = model
        self.config = config
        self.autocast_dtype = autocast_dtype
        if config.optim.discriminator_learning_rate is not None or (
            config.optim.grad_clip_norm is not None
        ):
            raise ValueError(
                "TwinTrainer: config.optim.discriminator_learning_rate and grad_clip_norm must "
                "be None (the twin times the default optimiser only)"
            )
        self.optimizer = torch.optim.Adam(
            model.parameters(),
            lr=config.optim.learning_rate,
            betas=(config.optim.b1, config.optim.b2),
            eps=1e-8,
        )
        self.halve_shared_block = model.use_semantic and config.model.shared_block_grad == "mean"
        if config.model.shared_block_grad not in ("mean", "sum"):
            raise ValueError(
                f"config.model.shared_block_grad: {config.model.shared_block_grad!r} "
                "is not 'mean' or 'sum'"
            )
        self._loss_fn = (
            torch.compile(self._forward_and_loss, backend=compile_backend) if compile
            else self._forward_and_loss
        )

    def _forward_and_loss(
        self, batch: Mapping[str, torch.Tensor], grl_scale: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        autocast = (
            contextlib.nullcontext()
            if self.autocast_dtype is None
            else torch.autocast(batch["source_image"].device.type, dtype=self.autocast_dtype)
        )
        with autocast:
            outputs = self.model(
                batch["source_image"],
                batch.get("target_image") if self.model.use_domain_classifier else None,
                grl_scale,
            )
        return compute_loss_terms(outputs, batch, self.config)

    def backward(
        self, batch: Mapping[str, torch.Tensor], grl_scale: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Forward, loss and backward in train mode; leaves the step's gradients in `.grad`.

        The shared block's gradient is halved for `shared_block_grad="mean"`, like
        `models.combine_shared_block_grads`. Returns the detached loss terms.
        """
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        prepare_image_pyramid(batch["source_image_clean"])
        terms = self._loss_fn(batch, grl_scale)
        terms["total"].backward()
        if self.halve_shared_block:
            for parameter in self.model.shared_block.parameters():
                if parameter.grad is not None:
                    parameter.grad.mul_(0.5)
        return {name: value.detach() for name, value in terms.items()}

    def step(
        self, batch: Mapping[str, torch.Tensor], grl_scale: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """One optimisation step (`backward` + Adam); returns the detached loss terms."""
        terms = self.backward(batch, grl_scale)
        self.optimizer.step()
        return terms
