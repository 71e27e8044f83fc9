"""Tests of damono_jax.models: shapes, GRL, shared-block gradients, domain classifier."""

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import default
from damono_jax import losses
from damono_jax.models import (
    BasicBlock,
    DAMonodepth,
    DepthNet,
    PatchDiscriminator,
    ResNet18Encoder,
    UpBlock,
    combine_shared_block_grads,
    depth_net_variables,
    gradient_reversal,
    patch_map_size,
)
from damono_jax.models.resnet import batch_norm
from tests.helpers import lowest_optimisation

LARGE_SIZES = [(192, 640), (320, 1024), (256, 512)]


def _model_config(**overrides) -> ml_collections.ConfigDict:
    """configs/default.py's model block (Monodepth2's 0.1 m near plane) with `overrides`."""
    config = default.get_config().model
    config.min_depth = 0.1
    config.update(overrides)
    return config


def _abstract_init(model, *args, **kwargs):
    """Abstract variables of `model` (shapes/dtypes only); `args` may be ShapeDtypeStructs."""
    return jax.eval_shape(lambda *a: model.init(jax.random.key(0), *a, **kwargs), *args)


def _random_variables(abstract, seed: int = 0):
    """Random float32 values for an abstract variable tree (no XLA init compile needed).

    Kernels ~ N(0, 1/fan_in); BN scales and running variances ~ U(0.5, 1.5); biases,
    BN offsets and running means ~ N(0, 0.1).
    """
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        name = path[-1].key
        shape = leaf.shape
        if name == "kernel":
            values = rng.normal(0.0, 1.0 / math.sqrt(np.prod(shape[:-1])), shape)
        elif name in ("scale", "var"):
            values = rng.uniform(0.5, 1.5, shape)
        else:
            values = rng.normal(0.0, 0.1, shape)
        return jnp.asarray(values, jnp.float32)

    return jax.tree_util.tree_map_with_path(fill, abstract)


def _max_relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    """max |actual - expected| / max |expected| (robust to entries near zero)."""
    return float(np.max(np.abs(actual - expected)) / np.max(np.abs(expected)))


def _count(tree) -> int:
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


# ------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("height,width", LARGE_SIZES)
def test_full_model_output_shapes(height, width):
    model = DAMonodepth()
    source = jax.ShapeDtypeStruct((2, height, width, 3), jnp.float32)
    target = jax.ShapeDtypeStruct((3, height, width, 3), jnp.float32)
    variables = _abstract_init(model, source, target, grl_scale=jnp.float32(0))
    out, updates = jax.eval_shape(
        lambda v, s, t: model.apply(
            v, s, t, grl_scale=jnp.float32(0.5), train=True, mutable=["batch_stats"]
        ),
        variables,
        source,
        target,
    )
    for scale in range(4):
        size = (height // 2**scale, width // 2**scale)
        assert out["disp"][scale].shape == (2, *size, 1)
        assert out["seg_logits"][scale].shape == (2, *size, 19)
        assert out["disp"][scale].dtype == jnp.float32
    patches = (math.ceil(height / 32 / 4), math.ceil(width / 32 / 4))
    assert out["domain_logits"][4]["source"].shape == (2, *patches, 1)
    assert out["domain_logits"][4]["target"].shape == (3, *patches, 1)
    assert set(variables["params"]) == {
        "encoder",
        "shared_block",
        "depth_decoder",
        "semantic_decoder",
        "domain_classifier",
    }
    assert set(variables["batch_stats"]) == {"encoder"}
    assert set(updates["batch_stats"]) == {"encoder"}


@pytest.mark.parametrize("height,width", LARGE_SIZES)
def test_depth_net_and_encoder_shapes(height, width):
    images = jax.ShapeDtypeStruct((1, height, width, 3), jnp.float32)
    depth_net = DepthNet()
    variables = _abstract_init(depth_net, images)
    disps = jax.eval_shape(depth_net.apply, variables, images)
    assert [d.shape for d in disps] == [
        (1, height // 2**s, width // 2**s, 1) for s in range(4)
    ]
    encoder = ResNet18Encoder()
    features = jax.eval_shape(encoder.apply, _abstract_init(encoder, images), images)
    assert [f.shape for f in features] == [
        (1, height // stride, width // stride, channels)
        for stride, channels in zip((2, 4, 8, 16, 32), (64, 64, 128, 256, 512), strict=True)
    ]


def test_depth_net_shares_the_da_parameter_subtrees():
    images = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
    da_variables = _abstract_init(DAMonodepth(), images, images, grl_scale=jnp.float32(0))
    net_variables = _abstract_init(DepthNet(), images)
    selected = depth_net_variables(da_variables)
    assert jax.tree.structure(selected) == jax.tree.structure(net_variables)
    assert jax.tree.map(lambda a: a.shape, selected) == jax.tree.map(
        lambda a: a.shape, net_variables
    )


@pytest.mark.parametrize(
    "height,width,patches",
    [(32, 32, (1, 1)), (64, 96, (1, 1)), (192, 640, (2, 5)), (320, 1024, (3, 8))],
)
def test_discriminator_patch_map_is_never_empty(height, width, patches):
    bottleneck = jax.ShapeDtypeStruct((2, height // 32, width // 32, 512), jnp.float32)
    discriminator = PatchDiscriminator(features=(256, 128))
    variables = _abstract_init(discriminator, bottleneck)
    logits = jax.eval_shape(discriminator.apply, variables, bottleneck)
    assert logits.shape == (2, *patches, 1)
    assert logits.dtype == jnp.float32
    assert patches == (patch_map_size(height // 32, 2), patch_map_size(width // 32, 2))
    # Three stride-2 layers still leave at least one patch.
    deeper = PatchDiscriminator(features=(256, 128, 64))
    logits = jax.eval_shape(deeper.apply, _abstract_init(deeper, bottleneck), bottleneck)
    assert logits.shape[1] >= 1 and logits.shape[2] >= 1


def test_discriminator_parameter_count():
    bottleneck = jax.ShapeDtypeStruct((1, 6, 20, 512), jnp.float32)
    variables = _abstract_init(PatchDiscriminator(features=(256, 128)), bottleneck)
    expected = (9 * 512 * 256 + 256) + (9 * 256 * 128 + 128) + (9 * 128 * 1 + 1)
    assert _count(variables["params"]) == expected == 1_476_097


def test_bfloat16_compute_keeps_float32_params_and_outputs():
    model = DAMonodepth.from_config(_model_config(), "full", dtype="bfloat16")
    assert model.dtype == jnp.bfloat16
    images = jax.ShapeDtypeStruct((2, 64, 96, 3), jnp.float32)
    variables = _abstract_init(model, images, images, grl_scale=jnp.float32(0))
    assert {leaf.dtype for leaf in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
    out, _ = jax.eval_shape(
        lambda v, i: model.apply(
            v, i, i, grl_scale=jnp.float32(1), train=True, mutable=["batch_stats"]
        ),
        variables,
        images,
    )
    assert {leaf.dtype for leaf in jax.tree.leaves(out)} == {jnp.dtype(jnp.float32)}


# ------------------------------------------------------------------- from_config


@pytest.mark.parametrize(
    "variant,parts",
    [
        ("baseline", {"encoder", "shared_block", "depth_decoder"}),
        ("seg", {"encoder", "shared_block", "depth_decoder", "semantic_decoder"}),
        (
            "full",
            {"encoder", "shared_block", "depth_decoder", "semantic_decoder", "domain_classifier"},
        ),
    ],
)
def test_from_config_variants(variant, parts):
    model = DAMonodepth.from_config(_model_config(num_classes=7), variant)
    images = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
    target = images if variant == "full" else None
    variables = _abstract_init(model, images, target, grl_scale=jnp.float32(0))
    assert set(variables["params"]) == parts
    out = jax.eval_shape(
        lambda v, i, t: model.apply(v, i, t, grl_scale=jnp.float32(0)), variables, images, target
    )
    assert (out["seg_logits"] is None) == (variant == "baseline")
    if out["seg_logits"] is not None:
        assert out["seg_logits"][0].shape == (1, 64, 64, 7)
    assert (out["domain_logits"] is None) == (variant != "full")


def test_depth_net_from_config():
    net = DepthNet.from_config(_model_config(upsample_mode="nearest"), dtype="float32")
    assert net.upsample_mode == "nearest" and net.dtype == jnp.float32


def test_input_errors():
    images = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
    full = DAMonodepth()
    with pytest.raises(ValueError, match="target_images is None but use_domain_classifier"):
        _abstract_init(full, images, None)
    baseline = DAMonodepth(use_semantic=False, use_domain_classifier=False)
    with pytest.raises(ValueError, match="target_images given but use_domain_classifier"):
        _abstract_init(baseline, images, images)
    odd = jax.ShapeDtypeStruct((1, 48, 64, 3), jnp.float32)
    with pytest.raises(ValueError, match="source_images: image size 48x64 is not a positive"):
        _abstract_init(baseline, odd)
    with pytest.raises(ValueError, match="target_images .* differ"):
        _abstract_init(full, images, jax.ShapeDtypeStruct((1, 64, 96, 3), jnp.float32))
    with pytest.raises(ValueError, match=r"images: expected NHWC RGB images"):
        _abstract_init(DepthNet(), jax.ShapeDtypeStruct((1, 64, 64, 1), jnp.float32))


# --------------------------------------------------------------------------- GRL


@pytest.mark.parametrize("scale", [0.0, 0.5, 1.0])
def test_gradient_reversal_forward_and_backward(scale):
    x = jnp.array([1.0, -2.0, 3.0, 0.25], jnp.float32)
    cotangent = jnp.array([0.3, -1.5, 2.0, 7.0], jnp.float32)
    y, vjp = jax.vjp(gradient_reversal, x, jnp.float32(scale))
    np.testing.assert_array_equal(np.asarray(y), np.asarray(x))
    grad_x, grad_scale = vjp(cotangent)
    np.testing.assert_array_equal(np.asarray(grad_x), np.asarray(-scale * cotangent))
    assert float(grad_scale) == 0.0
    # Through a loss: d/dx sum(grl(x)^2) = -scale * 2x.
    grad = jax.grad(lambda v: jnp.sum(gradient_reversal(v, scale) ** 2))(x)
    np.testing.assert_array_equal(np.asarray(grad), np.asarray(-scale * 2.0 * x))


def test_gradient_reversal_compiles_once_for_changing_scales():
    @jax.jit
    def grad_fn(x, scale):
        return jax.grad(lambda v: jnp.sum(gradient_reversal(v, scale) * 3.0))(x)

    x = jnp.ones((5,), jnp.float32)
    for scale in (0.0, 0.25, 0.5, 1.0):
        np.testing.assert_array_equal(
            np.asarray(grad_fn(x, jnp.float32(scale))), np.full(5, -3.0 * scale, np.float32)
        )
    assert grad_fn._cache_size() == 1


def test_gradient_reversal_keeps_bfloat16_cotangents():
    x = jnp.ones((3,), jnp.bfloat16)
    _, vjp = jax.vjp(gradient_reversal, x, jnp.float32(0.5))
    grad_x, _ = vjp(jnp.full((3,), 2.0, jnp.bfloat16))
    assert grad_x.dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(grad_x, np.float32), np.full(3, -1.0, np.float32))
    with pytest.raises(ValueError, match="scale must be a scalar"):
        gradient_reversal(x, jnp.ones((2,)))


# ------------------------------------------------------- shared-block gradients


def test_combine_shared_block_grads():
    grads = {"encoder": {"w": jnp.ones(3)}, "shared_block": {"w": jnp.full(2, 4.0)}}
    mean = combine_shared_block_grads(grads, "mean")
    np.testing.assert_array_equal(np.asarray(mean["shared_block"]["w"]), [2.0, 2.0])
    np.testing.assert_array_equal(np.asarray(mean["encoder"]["w"]), [1.0, 1.0, 1.0])
    np.testing.assert_array_equal(np.asarray(grads["shared_block"]["w"]), [4.0, 4.0])
    summed = combine_shared_block_grads(grads, "sum")
    np.testing.assert_array_equal(np.asarray(summed["shared_block"]["w"]), [4.0, 4.0])
    with pytest.raises(KeyError, match="no 'shared_block' in the gradient tree"):
        combine_shared_block_grads({"params": grads}, "mean")


def test_training_forward_gradients_and_batch_stats():
    """One compiled train-mode pass of the full model at 32x32 (bottleneck 1x1).

    Checks: the shared block's gradient equals the sum of the depth and the semantic
    branch's gradients (computed separately), and `mean` halves it; the domain loss
    reaches the encoder scaled by -scale (GRL) and the classifier unscaled; BatchNorm
    statistics are taken over source and target together; one compilation for all scales.
    """
    model = DAMonodepth(num_classes=5)
    source = jax.random.uniform(jax.random.key(1), (2, 32, 32, 3))
    target = jax.random.uniform(jax.random.key(2), (2, 32, 32, 3)) * 0.5
    abstract = _abstract_init(model, source, target, grl_scale=jnp.float32(0))
    variables = _random_variables(abstract, seed=3)
    batch_stats = variables["batch_stats"]

    def branch_losses(params, scale):
        out, updates = model.apply(
            {"params": params, "batch_stats": batch_stats},
            source,
            target,
            grl_scale=scale,
            train=True,
            mutable=["batch_stats"],
        )
        depth = sum(jnp.mean(d * jnp.arange(d.size).reshape(d.shape)) for d in out["disp"])
        seg = sum(jnp.mean(jnp.sin(s)) for s in out["seg_logits"])
        domain = jnp.mean(out["domain_logits"][4]["source"]) - jnp.mean(
            out["domain_logits"][4]["target"]
        )
        return jnp.stack([depth, seg, domain]), (out, updates)

    @jax.jit
    def gradients(params, scale, loss_weights):
        """Gradient of loss_weights . (depth, seg, domain); one executable for every call."""

        def weighted(p):
            losses, aux = branch_losses(p, scale)
            return jnp.dot(loss_weights, losses), aux

        return jax.grad(weighted, has_aux=True)(params)

    def branch(weights, scale=1.0):
        return gradients(variables["params"], jnp.float32(scale), jnp.array(weights, jnp.float32))

    depth_g, (out, updates) = branch([1, 0, 0])
    seg_g, _ = branch([0, 1, 0])
    total_g, _ = branch([1, 1, 0])
    domain_g, _ = branch([0, 0, 1])
    domain_half, _ = branch([0, 0, 1], scale=0.5)
    domain_zero, _ = branch([0, 0, 1], scale=0.0)
    assert gradients._cache_size() == 1

    # Outputs at 32x32: disparities in (0, 1), one patch per image.
    assert out["domain_logits"][4]["source"].shape == (2, 1, 1, 1)
    for disp in out["disp"]:
        assert np.all((np.asarray(disp) > 0) & (np.asarray(disp) < 1))

    # Shared block: total gradient == depth branch + semantic branch; mean halves it.
    expected_sum = jax.tree.map(jnp.add, depth_g["shared_block"], seg_g["shared_block"])
    for got, want in zip(
        jax.tree.leaves(total_g["shared_block"]), jax.tree.leaves(expected_sum), strict=True
    ):
        assert _max_relative_error(np.asarray(got), np.asarray(want)) <= 1e-5
    assert max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(seg_g["shared_block"])) > 0
    mean = combine_shared_block_grads(total_g, "mean")
    for got, want in zip(
        jax.tree.leaves(mean["shared_block"]), jax.tree.leaves(total_g["shared_block"]),
        strict=True,
    ):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want) * 0.5)
    # Each decoder gets only its own branch's gradient.
    assert all(not np.any(np.asarray(g)) for g in jax.tree.leaves(depth_g["semantic_decoder"]))
    assert all(not np.any(np.asarray(g)) for g in jax.tree.leaves(seg_g["depth_decoder"]))

    # GRL: the encoder's domain gradient scales with the GRL scale, the classifier's does not.
    # (XLA's threaded conv reductions are not bitwise reproducible: compare to 1e-5 of the max.)
    for half, full in zip(
        jax.tree.leaves(domain_half["encoder"]), jax.tree.leaves(domain_g["encoder"]), strict=True
    ):
        assert _max_relative_error(np.asarray(half), 0.5 * np.asarray(full)) <= 1e-5
    assert all(not np.any(np.asarray(g)) for g in jax.tree.leaves(domain_zero["encoder"]))
    for zero, full in zip(
        jax.tree.leaves(domain_zero["domain_classifier"]),
        jax.tree.leaves(domain_g["domain_classifier"]),
        strict=True,
    ):
        np.testing.assert_array_equal(np.asarray(zero), np.asarray(full))
    assert all(not np.any(np.asarray(g)) for g in jax.tree.leaves(domain_g["depth_decoder"]))

    # BatchNorm statistics over [source; target]: recompute bn1's running mean from conv1.
    normalised = (jnp.concatenate([source, target]) - 0.45) / 0.225
    conv1 = jax.lax.conv_general_dilated(
        normalised,
        variables["params"]["encoder"]["conv1"]["kernel"],
        (2, 2),
        ((3, 3), (3, 3)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )
    expected_mean = 0.9 * batch_stats["encoder"]["bn1"]["mean"] + 0.1 * conv1.mean((0, 1, 2))
    np.testing.assert_allclose(
        np.asarray(updates["batch_stats"]["encoder"]["bn1"]["mean"]),
        np.asarray(expected_mean),
        rtol=1e-4,
        atol=1e-5,
    )


# --------------------------------------------------------------------- init


def test_initialisers_follow_pytorch():
    """Decoder convs: U(+-1/sqrt(fan_in)) kernel and bias; encoder convs: N(0, 2/fan_out)."""
    x = jnp.zeros((1, 4, 4, 256))
    block = UpBlock(128, "nearest")
    params = jax.jit(block.init)(jax.random.key(0), x, None)["params"]
    bound = 1.0 / math.sqrt(9 * 256)
    for leaf in (params["conv_0"]["kernel"], params["conv_0"]["bias"]):
        values = np.asarray(leaf)
        assert values.max() <= bound and values.min() >= -bound
        assert values.max() > 0.9 * bound and values.min() < -0.9 * bound
    # A layer4-like block (the encoder's init, without compiling all 20 convs' RNG).
    block = BasicBlock(512, batch_norm(train=False, num_source=None, dtype=jnp.float32))
    variables = jax.jit(block.init)(
        jax.random.key(0), jnp.zeros((1, 2, 2, 512))
    )
    kernel = np.asarray(variables["params"]["conv2"]["kernel"])
    np.testing.assert_allclose(kernel.std(), math.sqrt(2.0 / (9 * 512)), rtol=0.02)
    np.testing.assert_array_equal(
        np.asarray(variables["params"]["bn1"]["scale"]), np.ones(512, np.float32)
    )
    np.testing.assert_array_equal(
        np.asarray(variables["batch_stats"]["bn1"]["var"]), np.ones(512, np.float32)
    )
    np.testing.assert_array_equal(
        np.asarray(variables["batch_stats"]["bn1"]["mean"]), np.zeros(512, np.float32)
    )


@pytest.mark.parametrize(
    "shape, factors",
    [
        ((2, 3, 5, 4), (2, 2)),
        ((1, 6, 10, 19), (8, 8)),
        ((2, 4, 7, 1), (4, 2)),
        ((1, 1, 1, 3), (2, 2)),
    ],
)
def test_upsample_bilinear_equals_jax_image_resize_and_torch(shape, factors):
    import torch
    import torch.nn.functional as F

    from damono_jax.models.upsample import upsample_bilinear

    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    out_shape = (shape[0], shape[1] * factors[0], shape[2] * factors[1], shape[3])
    ours = np.asarray(upsample_bilinear(jnp.asarray(x), *factors))
    reference = np.asarray(jax.image.resize(jnp.asarray(x), out_shape, "linear"))
    torch_out = F.interpolate(
        torch.from_numpy(x).permute(0, 3, 1, 2), size=out_shape[1:3], mode="bilinear",
        align_corners=False,
    ).permute(0, 2, 3, 1).numpy()
    assert ours.shape == out_shape
    np.testing.assert_allclose(ours, reference, atol=1e-6)
    np.testing.assert_allclose(ours, torch_out, atol=1e-6)


def test_upsample_bilinear_rejects_bad_factors():
    from damono_jax.models.upsample import upsample_bilinear, upsample_bilinear_to

    with pytest.raises(ValueError, match="factor_w must be a positive int, got 0"):
        upsample_bilinear(jnp.zeros((1, 2, 2, 1)), 2, 0)
    with pytest.raises(ValueError, match="12x20 is not an integer multiple of the input 8x10"):
        upsample_bilinear_to(jnp.zeros((1, 8, 10, 1)), 12, 20)


# ------------------------------------------------------- alignment at several levels


def test_every_aligned_level_has_its_own_classifier():
    model = DAMonodepth.from_config(_model_config(align_levels=(4, 0, 2)), "full")
    assert model.align_levels == (0, 2, 4)
    source = jax.ShapeDtypeStruct((2, 64, 96, 3), jnp.float32)
    target = jax.ShapeDtypeStruct((3, 64, 96, 3), jnp.float32)
    variables = _abstract_init(model, source, target, grl_scale=jnp.float32(0))
    assert {"domain_classifier", "domain_classifier_0", "domain_classifier_2"} <= set(
        variables["params"]
    )
    # Level 0 has 64 input channels, level 2 128, the bottleneck 512.
    assert variables["params"]["domain_classifier_0"]["conv_0"]["kernel"].shape == (3, 3, 64, 256)
    assert variables["params"]["domain_classifier_2"]["conv_0"]["kernel"].shape[2] == 128
    out = jax.eval_shape(lambda v, s, t: model.apply(v, s, t, grl_scale=jnp.float32(1)),
                         variables, source, target)
    logits = out["domain_logits"]
    assert sorted(logits) == [0, 2, 4]
    # Level 0 is H/2 x W/2 = 32x48, two stride-2 layers: 8x12 patches.
    assert logits[0]["source"].shape == (2, 8, 12, 1)
    assert logits[0]["target"].shape == (3, 8, 12, 1)
    assert logits[4]["target"].shape == (3, 1, 1, 1)


def test_a_classifier_on_an_early_level_reverses_gradients_into_the_layers_below_it_only():
    model = DAMonodepth(align_levels=(0,), discriminator_features=(8,))
    rng = np.random.default_rng(0)
    source = jnp.asarray(rng.uniform(0, 1, (2, 32, 32, 3)), jnp.float32)
    target = jnp.asarray(rng.uniform(0, 1, (2, 32, 32, 3)), jnp.float32)
    variables = _random_variables(_abstract_init(model, source, target, grl_scale=0.0))

    def adv_loss(params, scale):
        out = model.apply({**variables, "params": params}, source, target, grl_scale=scale,
                          train=False)
        logits = out["domain_logits"][0]
        return losses.adversarial_loss(logits["source"], logits["target"])

    forward = jax.grad(adv_loss)(variables["params"], 1.0)
    half = jax.grad(adv_loss)(variables["params"], -0.5)
    conv1 = np.asarray(forward["encoder"]["conv1"]["kernel"])
    assert np.abs(conv1).max() > 1e-6
    # GRL: -scale * g into the encoder; the classifier's own gradient is not reversed.
    np.testing.assert_allclose(np.asarray(half["encoder"]["conv1"]["kernel"]), -0.5 * conv1,
                               rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(
        np.asarray(half["domain_classifier_0"]["logits"]["kernel"]),
        np.asarray(forward["domain_classifier_0"]["logits"]["kernel"]), rtol=1e-6)
    # layer4 does not feed level 0.
    assert np.abs(np.asarray(forward["encoder"]["layer4_1"]["conv2"]["kernel"])).max() == 0.0


# ------------------------------------------------------------- domain-specific BN


def test_domain_batch_norm_normalises_each_domain_with_its_own_statistics():
    from damono_jax.models.resnet import BN_MOMENTUM, DomainBatchNorm

    rng = np.random.default_rng(0)
    source = rng.normal(2.0, 3.0, (2, 4, 5, 6)).astype(np.float32)
    target = rng.normal(-1.0, 0.5, (3, 4, 5, 6)).astype(np.float32)
    x = jnp.asarray(np.concatenate([source, target]))
    norm = DomainBatchNorm(use_running_average=False, num_source=2)
    variables = norm.init(jax.random.key(0), x)
    assert set(variables["batch_stats"]) == {"mean", "var", "source_mean", "source_var"}
    y, updates = norm.apply(variables, x, mutable=["batch_stats"])
    for part, rows in ((source, slice(0, 2)), (target, slice(2, 5))):
        mean, var = part.mean(axis=(0, 1, 2)), part.var(axis=(0, 1, 2))
        np.testing.assert_allclose(np.asarray(y[rows]), (part - mean) / np.sqrt(var + 1e-5),
                                   rtol=1e-4, atol=1e-5)
    stats = updates["batch_stats"]
    np.testing.assert_allclose(stats["mean"], (1 - BN_MOMENTUM) * target.mean(axis=(0, 1, 2)),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats["source_var"],
                               BN_MOMENTUM + (1 - BN_MOMENTUM) * source.var(axis=(0, 1, 2)),
                               rtol=1e-5)
    # Inference normalises with the target's running statistics.
    inference = DomainBatchNorm(use_running_average=True, num_source=2)
    out = inference.apply({**variables, "batch_stats": stats}, x)
    expected = (np.asarray(x) - stats["mean"]) / np.sqrt(stats["var"] + 1e-5)
    np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-4, atol=1e-5)


def test_domain_specific_bn_model_exports_the_target_statistics_under_depth_net_names():
    model = DAMonodepth.from_config(_model_config(domain_specific_bn=True), "full")
    assert model.domain_specific_bn
    source = jax.ShapeDtypeStruct((2, 64, 64, 3), jnp.float32)
    variables = _abstract_init(model, source, source, grl_scale=jnp.float32(0))
    encoder_stats = variables["batch_stats"]["encoder"]
    assert set(encoder_stats["bn1"]) == {"mean", "var", "source_mean", "source_var"}
    assert set(encoder_stats["layer2_0"]["downsample_bn"]) == {
        "mean", "var", "source_mean", "source_var"}
    net_variables = depth_net_variables(variables)
    expected = _abstract_init(DepthNet(), source)
    assert jax.tree.structure(net_variables) == jax.tree.structure(expected)
    # Without the domain classifier (variant seg) the option changes nothing.
    seg = DAMonodepth.from_config(_model_config(domain_specific_bn=True), "seg")
    seg_stats = _abstract_init(seg, source, None, grl_scale=jnp.float32(0))["batch_stats"]
    assert set(seg_stats["encoder"]["bn1"]) == {"mean", "var"}


def test_spectral_norm_divides_each_classifier_kernel_by_its_largest_singular_value():
    discriminator = PatchDiscriminator(features=(8,), spectral_norm=True)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 4, 4, 5)), jnp.float32)
    variables = discriminator.init(jax.random.key(0), x)
    train_call = jax.jit(lambda v: discriminator.apply(v, x, train=True,
                                                       mutable=["batch_stats"])[1])
    for _ in range(500):  # power iterations, one per training call
        variables = {"params": variables["params"],
                     "batch_stats": train_call(variables)["batch_stats"]}
    for name in ("conv_0", "logits"):
        kernel = np.asarray(variables["params"][name]["kernel"])
        sigma = variables["batch_stats"][f"spectral_norm_{name}"][f"{name}/kernel/sigma"]
        top = np.linalg.svd(kernel.reshape(-1, kernel.shape[-1]), compute_uv=False)[0]
        np.testing.assert_allclose(float(sigma), top, rtol=1e-4)
    # At evaluation the stored statistics are used as they are, and nothing changes.
    plain = PatchDiscriminator(features=(8,))
    scaled = jax.tree.map(lambda k: k, variables["params"])
    for name in ("conv_0", "logits"):
        sigma = variables["batch_stats"][f"spectral_norm_{name}"][f"{name}/kernel/sigma"]
        scaled[name] = {**scaled[name], "kernel": scaled[name]["kernel"] / sigma}
    np.testing.assert_allclose(discriminator.apply(variables, x, train=False),
                               plain.apply({"params": scaled}, x), rtol=1e-4, atol=1e-6)


def _adaptation_inputs(batch: int = 2, size: tuple[int, int] = (32, 32)):
    rng = np.random.default_rng(1)
    source = jnp.asarray(rng.uniform(size=(batch, *size, 3)), jnp.float32)
    target = jnp.asarray(rng.uniform(size=(batch, *size, 3)), jnp.float32)
    return source, target


def _reversed_gradient(model, variables, source, target, term, parts):
    """Gradients of `term(outputs)` w.r.t. `parts` at GRL scales 1 and -1 (plain backprop)."""
    def loss(params, scale):
        out, _ = model.apply({**variables, "params": params}, source, target, grl_scale=scale,
                             train=True, mutable=["batch_stats"])
        return term(out)
    gradient = jax.jit(jax.grad(loss))
    grads = [gradient(variables["params"], jnp.float32(scale)) for scale in (1.0, -1.0)]
    return [{part: g[part] for part in parts} for g in grads]


@pytest.fixture(scope="module")
def output_space():
    """The full model with output-space alignment alone, its inputs and variables."""
    model = DAMonodepth.from_config(
        _model_config(output_alignment=True, align_levels=(),
                      output_discriminator_features=(8, 8)), "full")
    source, target = _adaptation_inputs()
    with lowest_optimisation():
        variables = jax.jit(model.init)(jax.random.key(0), source, target)
    return model, source, target, variables


@lowest_optimisation()
def test_output_space_alignment_classifies_disparity_and_softmax_of_both_domains(output_space):
    model, source, target, variables = output_space
    assert "domain_classifier" not in variables["params"]
    # Input channels: 1 disparity + 19 class probabilities.
    assert variables["params"]["domain_classifier_output"]["conv_0"]["kernel"].shape == (
        3, 3, 20, 8)
    out = jax.jit(model.apply)(variables, source, target)
    assert out["domain_logits"] is None
    assert out["output_domain_logits"]["source"].shape == (2, 8, 8, 1)
    assert out["output_domain_logits"]["target"].shape == (2, 8, 8, 1)
    assert out["disp"][0].shape == (2, 32, 32, 1)
    # The decoders' source half is what the model without output alignment computes.
    plain = DAMonodepth.from_config(_model_config(), "seg")
    params = {k: v for k, v in variables["params"].items() if not k.startswith("domain")}
    expected = jax.jit(plain.apply)({"params": params, "batch_stats": variables["batch_stats"]},
                                    jnp.concatenate([source, target]))
    np.testing.assert_allclose(out["disp"][0], expected["disp"][0][:2], rtol=1e-5, atol=1e-6)


@lowest_optimisation()
def test_output_space_loss_reaches_both_decoders_reversed_and_its_classifier_plainly(
        output_space):
    model, source, target, variables = output_space

    def term(out):
        return losses.adversarial_loss(out["output_domain_logits"]["source"],
                                       out["output_domain_logits"]["target"])

    parts = ("depth_decoder", "semantic_decoder", "encoder", "domain_classifier_output")
    reversed_grads, plain_grads = _reversed_gradient(model, variables, source, target, term,
                                                     parts)
    for part in ("depth_decoder", "semantic_decoder", "encoder"):
        total = sum(float(jnp.sum(jnp.abs(g))) for g in jax.tree.leaves(plain_grads[part]))
        assert total > 0, part
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, -b, rtol=1e-5, atol=1e-9),
                     reversed_grads[part], plain_grads[part])
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-9),
                 reversed_grads["domain_classifier_output"],
                 plain_grads["domain_classifier_output"])


def test_cdan_map_is_the_randomized_multilinear_product():
    from damono_jax.models.da_monodepth import CDAN_KEY, cdan_randomized_map

    rng = np.random.default_rng(2)
    f = jnp.asarray(rng.normal(size=(2, 1, 2, 6)), jnp.float32)
    g = jax.nn.softmax(jnp.asarray(rng.normal(size=(2, 1, 2, 3)), jnp.float32))
    key_f, key_g = jax.random.split(jax.random.PRNGKey(CDAN_KEY))
    r_f = np.asarray(jax.random.normal(key_f, (6, 16)))
    r_g = np.asarray(jax.random.normal(key_g, (3, 16)))
    expected = (np.asarray(f) @ r_f) * (np.asarray(g) @ r_g) / 4.0
    np.testing.assert_allclose(cdan_randomized_map(f, g, 16), expected, rtol=1e-5, atol=1e-6)


@lowest_optimisation()
def test_cdan_classifier_reverses_the_encoder_gradient_and_leaves_the_softmax_alone():
    model = DAMonodepth.from_config(
        _model_config(domain_conditioning="cdan", cdan_features=32,
                      discriminator_features=(8,)), "full")
    source, target = _adaptation_inputs()
    variables = model.init(jax.random.key(0), source, target)
    assert variables["params"]["domain_classifier"]["conv_0"]["kernel"].shape == (3, 3, 32, 8)

    def term(out):
        return losses.adversarial_loss(out["domain_logits"][4]["source"],
                                       out["domain_logits"][4]["target"])

    reversed_grads, plain_grads = _reversed_gradient(
        model, variables, source, target, term, ("encoder", "semantic_decoder"))
    for grads in (reversed_grads, plain_grads):
        assert all(float(jnp.max(jnp.abs(g))) == 0.0
                   for g in jax.tree.leaves(grads["semantic_decoder"]))
    assert sum(float(jnp.sum(jnp.abs(g))) for g in jax.tree.leaves(plain_grads["encoder"])) > 0
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, -b, rtol=1e-5, atol=1e-9),
                 reversed_grads["encoder"], plain_grads["encoder"])
