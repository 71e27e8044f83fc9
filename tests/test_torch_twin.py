"""Parity of the PyTorch twin (tests/torch_twin.py) with the JAX model and losses.

Same weights (copied from the Flax tree with `load_jax_variables`), same batch, 64x96 images:
forward outputs, loss terms and all parameter gradients must agree to 1e-4 relative error.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from benchmarks import timing
from configs import default
from damono_jax import labels, losses, models
from tests import torch_twin as tt

BATCH, HEIGHT, WIDTH = 2, 64, 96
GRL_SCALE = 0.5
TOLERANCE = 1e-4


def _nchw_to_nhwc(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().permute(0, 2, 3, 1).numpy()


@pytest.fixture(scope="module")
def setup():
    """The shared JAX/twin fixture (see `build_setup`)."""
    return build_setup()


def _random_variables(model, rng):
    """Variables with the model's tree and shapes (from `jax.eval_shape`, so no slow init).

    Kernels ~ N(0, 1/fan_in), BatchNorm scales ~ U(0.5, 1.5), biases and running means
    ~ U(-0.1, 0.1), running variances ~ U(0.5, 1.5): non-trivial values everywhere, so that
    every leaf's mapping into the twin matters.
    """
    image = jax.ShapeDtypeStruct((BATCH, HEIGHT, WIDTH, 3), jnp.float32)
    shapes = jax.eval_shape(
        lambda key, source, target: model.init(key, source, target, grl_scale=0.0, train=False),
        jax.random.key(0),
        image,
        image,
    )

    def fill(path, leaf):
        name = path[-1].key
        if name == "kernel":
            fan_in = int(np.prod(leaf.shape[:-1]))
            return rng.normal(0.0, 1.0 / np.sqrt(fan_in), leaf.shape).astype(np.float32)
        if name in ("scale", "var"):
            return rng.uniform(0.5, 1.5, leaf.shape).astype(np.float32)
        return rng.uniform(-0.1, 0.1, leaf.shape).astype(np.float32)

    return jax.tree_util.tree_map_with_path(fill, shapes)


def build_setup():
    """JAX model, random variables, a batch, and the JAX outputs / terms / gradients."""
    config = default.get_config()
    model = models.DAMonodepth.from_config(config.model, "full")
    rng = np.random.default_rng(0)
    variables = _random_variables(model, rng)
    source = rng.uniform(size=(BATCH, HEIGHT, WIDTH, 3)).astype(np.float32)
    target = rng.uniform(size=(BATCH, HEIGHT, WIDTH, 3)).astype(np.float32)
    depth = rng.uniform(0.5, 90.0, size=(BATCH, HEIGHT, WIDTH)).astype(np.float32)
    depth[:, :5] = 0.0  # no ground truth; beyond 80 m is masked too
    label = rng.integers(0, config.model.num_classes, size=(BATCH, HEIGHT, WIDTH, 1))
    label[:, :, :4] = labels.IGNORE_LABEL
    batch = {
        "source_image": source,
        "target_image": target,
        "source_image_clean": np.clip(source * 0.9 + 0.05, 0.0, 1.0),
        "source_depth": depth,
        "source_label": label.astype(np.int32),
    }

    def reference(variables):
        def loss_fn(params):
            outputs, _ = model.apply(
                {"params": params, "batch_stats": variables["batch_stats"]},
                batch["source_image"],
                batch["target_image"],
                grl_scale=jnp.float32(GRL_SCALE),
                train=True,
                mutable=["batch_stats"],
            )
            settings = losses.LossSettings.from_config(config)
            terms = losses.compute_loss_terms(outputs, batch, settings)
            return terms["total"], (terms, outputs)

        grads, (terms, train_outputs) = jax.grad(loss_fn, has_aux=True)(variables["params"])
        eval_outputs = model.apply(
            variables, batch["source_image"], batch["target_image"], grl_scale=0.0, train=False
        )
        grads = models.combine_shared_block_grads(grads, "mean")
        return grads, terms, train_outputs, eval_outputs

    # One compilation for everything, with XLA's default options. Not at
    # xla_backend_optimization_level 0 (half the compile time): on an AVX2-only x86 host
    # XLA:CPU 0.10.2 miscompiles this program at level 0, and the encoder's layer1-3
    # gradients come out up to 12% off (float64 twin as reference; level >= 1 agrees to 1e-5).
    grads, terms, train_outputs, eval_outputs = jax.jit(reference)(variables)
    return {
        "config": config,
        "variables": variables,
        "batch": batch,
        "train_outputs": train_outputs,
        "eval_outputs": eval_outputs,
        "terms": terms,
        "grads": grads,
    }


def _twin(setup):
    """A fresh twin with the fixture's weights (tests must not share BN running stats)."""
    twin = tt.TwinDAMonodepth.from_config(setup["config"])
    tt.load_jax_variables(twin, setup["variables"])
    return twin


def _compare_outputs(jax_outputs, twin_outputs):
    errors = {}
    for scale in range(4):
        errors[f"disp{scale}"] = timing.relative_error(
            _nchw_to_nhwc(twin_outputs["disp"][scale]), jax_outputs["disp"][scale]
        )
        errors[f"seg{scale}"] = timing.relative_error(
            _nchw_to_nhwc(twin_outputs["seg_logits"][scale]), jax_outputs["seg_logits"][scale]
        )
    for domain in ("source", "target"):
        errors[f"domain_{domain}"] = timing.relative_error(
            _nchw_to_nhwc(twin_outputs["domain_logits"][domain]),
            jax_outputs["domain_logits"][4][domain],
        )
    return errors


def test_train_mode_forward_matches_jax(setup):
    batch = tt.nhwc_batch_to_torch(setup["batch"])
    twin = _twin(setup).train()
    with torch.no_grad():
        twin_outputs = twin(batch["source_image"], batch["target_image"], GRL_SCALE)
    assert [tuple(d.shape) for d in twin_outputs["disp"]] == [
        (BATCH, 1, HEIGHT // 2**s, WIDTH // 2**s) for s in range(4)
    ]
    assert tuple(twin_outputs["domain_logits"]["target"].shape) == (BATCH, 1, 1, 1)
    errors = _compare_outputs(setup["train_outputs"], twin_outputs)
    assert max(errors.values()) <= TOLERANCE, errors


def test_eval_mode_forward_matches_jax(setup):
    batch = tt.nhwc_batch_to_torch(setup["batch"])
    twin = _twin(setup).eval()
    with torch.no_grad():
        twin_outputs = twin(batch["source_image"], batch["target_image"], 0.0)
    errors = _compare_outputs(setup["eval_outputs"], twin_outputs)
    assert max(errors.values()) <= TOLERANCE, errors


def test_loss_terms_and_gradients_match_jax(setup):
    twin = _twin(setup)
    trainer = tt.TwinTrainer(twin, setup["config"])
    twin_terms = trainer.backward(tt.nhwc_batch_to_torch(setup["batch"]), torch.tensor(GRL_SCALE))
    for name in ("depth", "seg", "adv", "total"):
        expected = float(setup["terms"][name])
        assert expected > 0, name
        assert float(twin_terms[name]) == pytest.approx(expected, rel=TOLERANCE), name

    twin_grads = {name: p.grad for name, p in twin.named_parameters()}
    jax_grads = tt._flatten(setup["grads"])
    assert len(jax_grads) == len(twin_grads) == len(list(twin.parameters()))
    errors = {}
    for path, grad in jax_grads.items():
        grad = np.asarray(grad)
        if path[-1] == "kernel":
            grad = grad.transpose(3, 2, 0, 1)
        name = tt._torch_name(path)
        errors[name] = timing.relative_error(twin_grads[name].numpy(), grad)
    worst = sorted(errors.items(), key=lambda item: -item[1])[:3]
    assert worst[0][1] <= TOLERANCE, worst


def test_gradient_reversal_flips_and_scales_the_gradient():
    x = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    (tt.gradient_reversal(x, 0.5) ** 2).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [-1.0, -2.0, -3.0])
    with pytest.raises(ValueError, match="scale must be a scalar"):
        tt.gradient_reversal(x, torch.ones(2))


def test_lanczos_pyramid_matches_jax():
    image = np.random.default_rng(1).uniform(size=(1, 32, 64, 3)).astype(np.float32)
    expected = losses.image_pyramid(jnp.asarray(image), 3)
    actual = tt.image_pyramid(torch.from_numpy(image).permute(0, 3, 1, 2), 3)
    for level in range(3):
        assert timing.relative_error(_nchw_to_nhwc(actual[level]), expected[level]) <= 1e-6


def test_load_jax_variables_rejects_bad_trees(setup):
    twin = tt.TwinDAMonodepth.from_config(setup["config"])
    params = setup["variables"]["params"]
    stats = setup["variables"]["batch_stats"]
    extra = {**params, "decoder_x": {"kernel": np.zeros((3, 3, 1, 1), np.float32)}}
    with pytest.raises(KeyError, match="params/decoder_x/kernel has no twin tensor"):
        tt.load_jax_variables(twin, {"params": extra, "batch_stats": stats})
    wrong = jax.tree.map(lambda x: x, params)
    wrong["shared_block"] = {
        **wrong["shared_block"],
        "conv_0": {
            "kernel": np.zeros((3, 3, 512, 7), np.float32),
            "bias": params["shared_block"]["conv_0"]["bias"],
        },
    }
    with pytest.raises(ValueError, match=r"shared_block/conv_0/kernel -> shared_block.conv_0"):
        tt.load_jax_variables(twin, {"params": wrong, "batch_stats": stats})
    without_classifier = {k: v for k, v in params.items() if k != "domain_classifier"}
    with pytest.raises(KeyError, match="twin tensors without a Flax value.*domain_classifier"):
        tt.load_jax_variables(twin, {"params": without_classifier, "batch_stats": stats})
    with pytest.raises(KeyError, match="no 'batch_stats'"):
        tt.load_jax_variables(twin, {"params": params})
