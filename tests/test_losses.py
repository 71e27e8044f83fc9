"""Loss terms against independent torch (Monodepth2-style) and numpy computations."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from damono_jax import geometry, losses

MIN_DEPTH, MAX_DEPTH, MAX_GT_DEPTH = 0.1, 100.0, 80.0


# ------------------------------------------------------------ torch references (Monodepth2)


class TorchSSIM(torch.nn.Module):
    """nianticlabs/monodepth2 layers.SSIM, re-typed from the reference description."""

    def __init__(self):
        super().__init__()
        self.mu_x_pool = torch.nn.AvgPool2d(3, 1)
        self.mu_y_pool = torch.nn.AvgPool2d(3, 1)
        self.sig_x_pool = torch.nn.AvgPool2d(3, 1)
        self.sig_y_pool = torch.nn.AvgPool2d(3, 1)
        self.sig_xy_pool = torch.nn.AvgPool2d(3, 1)
        self.refl = torch.nn.ReflectionPad2d(1)
        self.C1 = 0.01**2
        self.C2 = 0.03**2

    def forward(self, x, y):
        x = self.refl(x)
        y = self.refl(y)
        mu_x = self.mu_x_pool(x)
        mu_y = self.mu_y_pool(y)
        sigma_x = self.sig_x_pool(x**2) - mu_x**2
        sigma_y = self.sig_y_pool(y**2) - mu_y**2
        sigma_xy = self.sig_xy_pool(x * y) - mu_x * mu_y
        n = (2 * mu_x * mu_y + self.C1) * (2 * sigma_xy + self.C2)
        d = (mu_x**2 + mu_y**2 + self.C1) * (sigma_x + sigma_y + self.C2)
        return torch.clamp((1 - n / d) / 2, 0, 1)


def torch_smooth_loss(disp, img):
    """Monodepth2 get_smooth_loss (NCHW) after the trainer's mean normalisation."""
    mean_disp = disp.mean(2, True).mean(3, True)
    disp = disp / (mean_disp + 1e-7)
    grad_disp_x = torch.abs(disp[:, :, :, :-1] - disp[:, :, :, 1:])
    grad_disp_y = torch.abs(disp[:, :, :-1, :] - disp[:, :, 1:, :])
    grad_img_x = torch.mean(torch.abs(img[:, :, :, :-1] - img[:, :, :, 1:]), 1, keepdim=True)
    grad_img_y = torch.mean(torch.abs(img[:, :, :-1, :] - img[:, :, 1:, :]), 1, keepdim=True)
    grad_disp_x *= torch.exp(-grad_img_x)
    grad_disp_y *= torch.exp(-grad_img_y)
    return grad_disp_x.mean() + grad_disp_y.mean()


def nchw(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2)))).double()


def torch_supervision(disp_nhwc, gt_depth, l1_weight):
    """Masked (1 - w) SSIM + w L1 against the GT disparity, upsampled to the GT size."""
    gt = torch.from_numpy(gt_depth).double()[:, None]
    valid = (gt > 0) & (gt <= MAX_GT_DEPTH)
    min_disp, max_disp = 1 / MAX_DEPTH, 1 / MIN_DEPTH
    target = torch.where(valid, (1 / torch.where(valid, gt, 1.0) - min_disp) /
                         (max_disp - min_disp), torch.zeros_like(gt))
    disp = F.interpolate(nchw(disp_nhwc), size=gt.shape[-2:], mode="bilinear",
                         align_corners=False)
    per_pixel = (1 - l1_weight) * TorchSSIM()(disp, target).mean(1, True) + l1_weight * (
        disp - target).abs().mean(1, True)
    return (per_pixel * valid).sum() / valid.sum()


# --------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(scope="module")
def depth_inputs(rng):
    batch, height, width = 2, 32, 48
    disps = [
        rng.uniform(0.01, 0.99, (batch, height >> s, width >> s, 1)).astype(np.float32)
        for s in range(4)
    ]
    gt = rng.uniform(0.5, 120.0, (batch, height, width)).astype(np.float32)
    gt[rng.random(gt.shape) < 0.2] = 0.0  # holes; values > 80 m are masked too
    image = rng.random((batch, height, width, 3)).astype(np.float32)
    return disps, gt, image


# ------------------------------------------------------------------------------------ tests


def test_ssim_matches_monodepth2(rng):
    x = rng.random((2, 9, 11, 3)).astype(np.float32)
    y = np.clip(x + rng.normal(0, 0.2, x.shape), 0, 1).astype(np.float32)
    ours = np.asarray(losses.ssim_loss_map(jnp.asarray(x), jnp.asarray(y)))
    ref = TorchSSIM()(nchw(x), nchw(y)).numpy().transpose(0, 2, 3, 1)
    assert ours.shape == x.shape
    np.testing.assert_allclose(ours, ref, atol=1e-5)  # float32 vs float64
    # Identical images: SSIM 1, loss 0.
    same = np.asarray(losses.ssim_loss_map(jnp.asarray(x), jnp.asarray(x)))
    assert float(np.abs(same).max()) < 1e-5


def test_gt_disparity_round_trips_to_metres(rng):
    depth = rng.uniform(0.5, 80.0, (1, 4, 5)).astype(np.float32)
    mask = losses.valid_depth_mask(jnp.asarray(depth), MAX_GT_DEPTH)
    sigma = losses.gt_disparity(jnp.asarray(depth), mask, MIN_DEPTH, MAX_DEPTH)
    _, back = geometry.disp_to_depth(np.asarray(sigma, np.float64), MIN_DEPTH, MAX_DEPTH)
    np.testing.assert_allclose(back[..., 0], depth, rtol=1e-4)


def test_valid_mask_excludes_holes_and_far_pixels():
    depth = jnp.asarray([[[0.0, 1.0, 80.0, 80.5, -1.0]]])
    mask = np.asarray(losses.valid_depth_mask(depth, MAX_GT_DEPTH))[..., 0]
    assert mask.tolist() == [[[False, True, True, False, False]]]


def test_supervision_term_matches_torch(depth_inputs):
    disps, gt, _ = depth_inputs
    height, width = gt.shape[1:]
    mask = losses.valid_depth_mask(jnp.asarray(gt), MAX_GT_DEPTH)
    target = losses.gt_disparity(jnp.asarray(gt), mask, MIN_DEPTH, MAX_DEPTH)
    for disp in disps:
        ours = losses.disparity_supervision_loss(
            losses.upsample_to(jnp.asarray(disp), height, width), target, mask, 0.15
        )
        ref = torch_supervision(disp, gt, 0.15)
        np.testing.assert_allclose(float(ours), float(ref), rtol=2e-5)


def test_smoothness_matches_monodepth2(depth_inputs):
    disps, _, image = depth_inputs
    disp = disps[1]
    small = image[:, ::2, ::2]
    ours = losses.smoothness_loss(jnp.asarray(disp), jnp.asarray(small))
    ref = torch_smooth_loss(nchw(disp), nchw(small))
    np.testing.assert_allclose(float(ours), float(ref), rtol=1e-5)


def test_image_pyramid_close_to_pil_lanczos(rng):
    image = (rng.random((1, 32, 48, 3)) * 255).astype(np.uint8)
    pyramid = losses.image_pyramid(jnp.asarray(image, jnp.float32) / 255.0, 2)
    assert [p.shape for p in pyramid] == [(1, 32, 48, 3), (1, 16, 24, 3)]
    pil = np.asarray(Image.fromarray(image[0]).resize((24, 16), Image.LANCZOS), np.float32)
    diff = np.abs(np.asarray(pyramid[1][0]) * 255.0 - pil)
    assert diff.mean() < 1.5  # PIL rounds to uint8 and clips; noise is the worst case


def test_depth_loss_matches_torch(depth_inputs):
    disps, gt, image = depth_inputs
    ours = losses.depth_loss(
        [jnp.asarray(d) for d in disps], jnp.asarray(image), jnp.asarray(gt),
        min_depth=MIN_DEPTH, max_depth=MAX_DEPTH, max_gt_depth=MAX_GT_DEPTH,
        l1_weight=0.15, smoothness_weight=1e-3,
    )
    pyramid = [np.asarray(p) for p in losses.image_pyramid(jnp.asarray(image), 4)]
    total = 0.0
    for scale, disp in enumerate(disps):
        total += float(torch_supervision(disp, gt, 0.15))
        total += 1e-3 / 2**scale * float(torch_smooth_loss(nchw(disp), nchw(pyramid[scale])))
    np.testing.assert_allclose(float(ours), total / 4, rtol=2e-5)


def test_masked_mean_without_valid_pixels_is_zero_with_finite_grad():
    values = jnp.ones((2, 3, 3, 1))
    mask = jnp.zeros((2, 3, 3, 1), bool)
    assert float(losses.masked_mean(values, mask)) == 0.0
    grad = jax.grad(lambda v: losses.masked_mean(v, mask))(values)
    assert np.all(np.asarray(grad) == 0.0)
    # All GT invalid: the depth loss is just the smoothness term, finite.
    disps = [jnp.full((1, 16 >> s, 16 >> s, 1), 0.5) for s in range(4)]
    value = losses.depth_loss(
        disps, jnp.zeros((1, 16, 16, 3)), jnp.zeros((1, 16, 16)), min_depth=MIN_DEPTH,
        max_depth=MAX_DEPTH, max_gt_depth=MAX_GT_DEPTH, l1_weight=0.15, smoothness_weight=1e-3,
    )
    assert float(value) == 0.0


def test_segmentation_loss_matches_torch(rng):
    labels = rng.integers(0, 5, (2, 16, 24)).astype(np.int32)
    labels[rng.random(labels.shape) < 0.25] = 255
    logits = [rng.normal(0, 2, (2, 16 >> s, 24 >> s, 5)).astype(np.float32) for s in range(4)]
    ours = losses.segmentation_loss([jnp.asarray(x) for x in logits], jnp.asarray(labels))
    ref = 0.0
    for x in logits:
        up = F.interpolate(nchw(x), size=(16, 24), mode="bilinear", align_corners=False)
        ref += float(F.cross_entropy(up, torch.from_numpy(labels).long(), ignore_index=255))
    np.testing.assert_allclose(float(ours), ref / 4, rtol=1e-5)


def test_adversarial_loss_and_accuracy_match_torch(rng):
    source = rng.normal(0.5, 1.0, (3, 2, 4, 1)).astype(np.float32)
    target = rng.normal(-0.5, 1.0, (3, 2, 4, 1)).astype(np.float32)
    ours = losses.adversarial_loss(jnp.asarray(source), jnp.asarray(target))
    logits = torch.from_numpy(np.concatenate([source, target]).ravel()).double()
    labels = torch.cat([torch.ones(source.size), torch.zeros(target.size)]).double()
    ref = F.binary_cross_entropy_with_logits(logits, labels)
    np.testing.assert_allclose(float(ours), float(ref), rtol=1e-6)
    zero = jnp.zeros((2, 3, 3, 1))
    np.testing.assert_allclose(float(losses.adversarial_loss(zero, zero)), math.log(2), rtol=1e-6)
    acc_source, acc_target = losses.domain_accuracy(jnp.asarray(source), jnp.asarray(target))
    assert float(acc_source) == pytest.approx(np.mean(source > 0))
    assert float(acc_target) == pytest.approx(np.mean(target <= 0))


def _loss_settings() -> losses.LossSettings:
    return losses.LossSettings(
        min_depth=MIN_DEPTH, max_depth=MAX_DEPTH, max_gt_depth=MAX_GT_DEPTH, depth_weight=1.0,
        seg_weight=0.1, adv_weight=0.2, l1_weight=0.15, smoothness_weight=1e-3,
        output_adv_weight=0.01,
    )


def test_total_is_the_weighted_sum(depth_inputs, rng):
    disps, gt, image = depth_inputs
    logits = [jnp.asarray(rng.normal(size=d.shape[:3] + (4,)), jnp.float32) for d in disps]
    labels = rng.integers(0, 4, gt.shape).astype(np.int32)
    domain = {"source": jnp.ones((2, 1, 2, 1)), "target": -jnp.ones((2, 1, 2, 1))}
    outputs = {"disp": [jnp.asarray(d) for d in disps], "seg_logits": logits,
               "domain_logits": {4: domain}}
    batch = {"source_image_clean": jnp.asarray(image), "source_depth": jnp.asarray(gt),
             "source_label": jnp.asarray(labels)}
    terms = losses.compute_loss_terms(outputs, batch, _loss_settings())
    expected = 0.2 * terms["adv"] + 1.0 * terms["depth"] + 0.1 * terms["seg"]
    np.testing.assert_allclose(float(terms["total"]), float(expected), rtol=1e-6)
    np.testing.assert_allclose(float(terms["adv"]), math.log1p(math.exp(-1.0)), rtol=1e-6)
    assert float(terms["domain_acc_source"]) == 1.0
    assert float(terms["domain_acc_target"]) == 1.0
    baseline = losses.compute_loss_terms(
        {"disp": outputs["disp"], "seg_logits": None, "domain_logits": None}, batch,
        _loss_settings(),
    )
    assert float(baseline["seg"]) == 0.0 and float(baseline["adv"]) == 0.0
    np.testing.assert_allclose(float(baseline["total"]), float(terms["depth"]), rtol=1e-6)


def test_output_space_term_has_its_own_weight_and_joins_the_accuracies(depth_inputs):
    """The output-space classifier's BCE enters the total with loss.output_adv_weight, the
    feature classifiers' with adv_weight; accuracies average over all classifiers."""
    disps, gt, image = depth_inputs
    feature = {"source": jnp.ones((2, 1, 2, 1)), "target": -jnp.ones((2, 1, 2, 1))}
    output = {"source": -jnp.ones((2, 4, 4, 1)), "target": -jnp.ones((2, 4, 4, 1))}
    batch = {"source_image_clean": jnp.asarray(image), "source_depth": jnp.asarray(gt)}
    common = {"disp": [jnp.asarray(d) for d in disps], "seg_logits": None}
    terms = losses.compute_loss_terms(
        {**common, "domain_logits": {4: feature}, "output_domain_logits": output}, batch,
        _loss_settings())
    expected_output = 0.5 * (math.log1p(math.exp(1.0)) + math.log1p(math.exp(-1.0)))
    np.testing.assert_allclose(float(terms["adv_output"]), expected_output, rtol=1e-6)
    np.testing.assert_allclose(float(terms["adv"]), math.log1p(math.exp(-1.0)), rtol=1e-6)
    np.testing.assert_allclose(
        float(terms["total"]),
        float(terms["depth"]) + 0.2 * float(terms["adv"]) + 0.01 * expected_output, rtol=1e-6)
    # Feature classifier right on both domains, output classifier right on the target only.
    assert float(terms["domain_acc_source"]) == 0.5
    assert float(terms["domain_acc_target"]) == 1.0
    alone = losses.compute_loss_terms(
        {**common, "domain_logits": None, "output_domain_logits": output}, batch,
        _loss_settings())
    assert float(alone["adv"]) == 0.0
    np.testing.assert_allclose(float(alone["total"]),
                               float(terms["depth"]) + 0.01 * expected_output, rtol=1e-6)


def test_adversarial_terms_average_the_aligned_levels():
    rng = np.random.default_rng(3)
    per_level = {
        level: {"source": jnp.asarray(rng.normal(size=(2, h, h, 1)), jnp.float32),
                "target": jnp.asarray(rng.normal(size=(2, h, h, 1)), jnp.float32)}
        for level, h in ((0, 4), (4, 1))
    }
    config = losses.LossSettings(
        min_depth=1.0, max_depth=100.0, max_gt_depth=80.0, l1_weight=0.15,
        smoothness_weight=1e-3, depth_weight=1.0, seg_weight=0.1, adv_weight=0.1,
        output_adv_weight=0.001,
    )
    batch = {"source_image_clean": jnp.full((2, 8, 8, 3), 0.5, jnp.float32),
             "source_depth": jnp.full((2, 8, 8), 10.0, jnp.float32)}
    disp = [jnp.full((2, 8 // 2**s, 8 // 2**s, 1), 0.1, jnp.float32) for s in range(4)]
    terms = losses.compute_loss_terms(
        {"disp": disp, "seg_logits": None, "domain_logits": per_level}, batch, config)
    expected = [losses.adversarial_loss(v["source"], v["target"]) for v in per_level.values()]
    np.testing.assert_allclose(float(terms["adv"]), float(np.mean(expected)), rtol=1e-6)
    accuracy = [losses.domain_accuracy(v["source"], v["target"])[1] for v in per_level.values()]
    np.testing.assert_allclose(float(terms["domain_acc_target"]), float(np.mean(accuracy)))
    single = losses.compute_loss_terms(
        {"disp": disp, "seg_logits": None, "domain_logits": {4: per_level[4]}}, batch, config)
    np.testing.assert_allclose(float(single["adv"]), float(expected[1]), rtol=1e-6)
