"""damono_jax.train.step: the jitted step on tiny in-memory batches (GRL, loss going down,
4 devices vs 1, bfloat16), and the batches and configs the other train tests share.

The real DAMonodepth at 64x64 is used throughout. `step` caches its jitted function per
(config, model, mesh), so the tests of one process reuse the step compiled by the first.
"""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from damono_jax import losses, models
from damono_jax.train import state as state_lib
from damono_jax.train import step as step_lib
from tests.helpers import (
    fast_compilation,  # noqa: F401 (autouse fixture)
    make_batch,
    suite_cache_environment,
    tiny_config,
)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# -------------------------------------------------------------------------- no-model units


def test_first_nonfinite_term_message():
    terms = {"depth": np.float32(1.0), "seg": np.float32(np.inf), "adv": np.float32(np.nan),
             "total": np.float32(np.nan)}
    assert step_lib.first_nonfinite_term(37, terms) == "step 37: loss term 'seg' is inf"
    terms["depth"] = np.float32(np.nan)
    assert step_lib.first_nonfinite_term(37, terms) == "step 37: loss term 'depth' is nan"
    finite = {name: np.float32(0.5) for name in step_lib.CHECKED_TERMS}
    assert step_lib.first_nonfinite_term(1, finite) is None


# ----------------------------------------------------------------------------- with the model


@pytest.fixture(scope="module")
def full_setup():
    config = tiny_config("full", num_train_steps=6)
    model = state_lib.create_model(config)
    mesh = state_lib.create_mesh()
    step_fn = step_lib.make_train_step(config, model, mesh)
    return config, model, mesh, step_fn


def test_grl_reverses_domain_gradient_into_encoder(monkeypatch):
    config = tiny_config("full")
    model = state_lib.create_model(config)
    batch = make_batch(0, batch=1)
    variables = jax.jit(
        lambda rng: model.init(rng, batch["source_image"], batch["target_image"],
                               grl_scale=0.0, train=False)
    )(jax.random.PRNGKey(0))

    def adv_grads(params, scale):
        def adv(params):
            out = model.apply({"params": params, "batch_stats": variables["batch_stats"]},
                              batch["source_image"], batch["target_image"], grl_scale=scale,
                              train=False)
            return losses.adversarial_loss(out["domain_logits"][4]["source"],
                                           out["domain_logits"][4]["target"])
        return jax.grad(adv)(params)

    reversed_fn = jax.jit(adv_grads)
    g_half = reversed_fn(variables["params"], jnp.float32(0.5))
    g_one = reversed_fn(variables["params"], jnp.float32(1.0))
    monkeypatch.setattr(models.da_monodepth, "gradient_reversal", lambda x, scale: x)
    # A new function object: jit would otherwise reuse the trace made before the patch.
    g_plain = jax.jit(lambda p, s: adv_grads(p, s))(variables["params"], jnp.float32(0.5))

    enc_half, enc_one, enc_plain = (
        np.concatenate([np.ravel(x) for x in jax.tree.leaves(g["encoder"])])
        for g in (g_half, g_one, g_plain)
    )
    assert np.abs(enc_plain).max() > 0
    np.testing.assert_allclose(enc_half, -0.5 * enc_plain, rtol=1e-4, atol=1e-9)
    np.testing.assert_allclose(enc_one, -1.0 * enc_plain, rtol=1e-4, atol=1e-9)
    # The classifier itself is trained normally (minimises the loss) whatever the scale.
    for g in (g_half, g_one):
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-9),
                     g["domain_classifier"], g_plain["domain_classifier"])
    # The decoders do not see the domain loss.
    assert all(float(jnp.abs(x).max()) == 0 for x in jax.tree.leaves(g_one["depth_decoder"]))


def test_short_run_lowers_the_loss(full_setup):
    config, model, mesh, step_fn = full_setup
    state = state_lib.create_train_state(config, model, mesh)
    batch = step_lib.shard_batch(make_batch(0), mesh)
    totals = []
    for step in range(8):
        state, _, terms = step_fn(state, batch, np.float32(0.1 * step))
        totals.append(float(terms["total"]))
        assert 0.0 < float(terms["disp_std"]) < 0.5  # sigmoid spread: neither constant nor absurd
        assert step_lib.first_nonfinite_term(step + 1, jax.device_get(terms)) is None
    assert int(state.step) == 8
    assert totals[-1] < 0.8 * totals[0], totals


@pytest.mark.parametrize("variant", ["full"])
def test_four_devices_match_one_device(variant):
    """One step on a 4-device mesh computes what the 1-device step computes.

    `full` holds every part of the step that another variant has (semantic decoder, shared
    block gradients, target half, classifier, GRL), so it alone is compared here;
    `python -m damono_jax.tools.data_parallel_check --variant=...` compares any other.

    Compared in float64 (`damono_jax.tools.data_parallel_check`: x64, the state, the batch,
    the model's outputs and the losses in float64), where reduction order changes results
    by ~1e-16: the gradients (Adam's first moment after the step), batch statistics,
    parameters and total loss agree to 1e-12 (measured 8e-16 / 2e-15 on an AMD EPYC with
    AVX-512). In float32 the same comparison measures float reduction-order noise amplified
    by the step's conditioning, which differs between CPU kinds (1e-6 here, up to 2e-3
    elsewhere: docs/design.md, "Data parallelism"); a wrong data-parallel computation
    differs in float64 as well. Compiled with XLA's default options.
    """
    script = textwrap.dedent("""
        import jax
        jax.config.update("jax_enable_x64", True)
        assert jax.device_count() == 4, jax.devices()
        from damono_jax.tools import data_parallel_check as check
        differences = check.compare(VARIANT, "float64", 1, jax.devices())
        print(check.format_differences(VARIANT, "float64", 1, 4, differences))
        assert differences.grads < 1e-12 and differences.batch_stats < 1e-12, differences
        assert differences.params < 1e-12 and differences.total_loss < 1e-12, differences
    """).replace("VARIANT", repr(variant))
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
               JAX_PLATFORMS="cpu", **suite_cache_environment())
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    assert f"{variant} float64, 4 devices x batch 1 vs 1 device" in result.stdout


def test_bfloat16_compute_keeps_float32_params():
    config = tiny_config("baseline", dtype="bfloat16")
    model = state_lib.create_model(config)
    assert model.dtype == jnp.bfloat16
    mesh = state_lib.create_mesh()
    state = state_lib.create_train_state(config, model, mesh)
    state, _, terms = step_lib.make_train_step(config, model, mesh)(
        state, step_lib.shard_batch(make_batch(0), mesh), np.float32(0.0))
    assert {x.dtype for x in jax.tree.leaves(state.params)} == {jnp.dtype(jnp.float32)}
    assert terms["depth"].dtype == jnp.float32
    assert step_lib.first_nonfinite_term(1, jax.device_get(terms)) is None
    assert float(terms["seg"]) == 0.0 and float(terms["adv"]) == 0.0  # baseline: depth only


def test_step_models_and_losses_import_without_tensorflow_tfds_clu_and_torch():
    """The GPU machine has jax, flax, optax and orbax only: `train.step` (with `train.state`),
    `models`, `losses` and the export loader must import there. A fresh process where the
    other libraries' imports fail."""
    script = textwrap.dedent("""
        import sys
        for name in ("tensorflow", "tensorflow_datasets", "clu", "torch", "cityscapesscripts",
                     "dm_pix", "matplotlib"):
            sys.modules[name] = None
        import damono_jax.inference.model, damono_jax.losses, damono_jax.models
        import damono_jax.train.step
        print(damono_jax.train.step.make_train_step.__name__)
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "make_train_step"
