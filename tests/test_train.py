"""Train step, optimiser, GRL, NaN handling and the training loop on tiny in-memory batches.

The real DAMonodepth at 64x64 is used throughout. `train` caches its jitted functions per
(config, model, mesh), so the loop tests reuse the step compiled by the first test.
"""

import glob
import math
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import synthetic
from damono_jax import checkpointing, losses, models, schedules, train
from tests.helpers import fast_compilation  # noqa: F401 (autouse fixture)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = 64
BATCH = 2


def tiny_config(variant: str = "full", **overrides):
    config = synthetic.get_config(variant)
    config.data.image_size = (SIZE, SIZE)
    config.data.data_dir = "/nonexistent/in-memory"  # the tests pass their own data
    config.batch_size = BATCH
    config.num_train_steps = 4
    config.log_every_steps = 2
    config.image_log_every_steps = 4
    config.eval_every_steps = 4
    config.checkpoint_every_steps = 2
    config.keep_checkpoints = 3
    config.grl.collapse_patience = 2
    for key, value in overrides.items():
        node = config
        *parents, leaf = key.split(".")
        for parent in parents:
            node = node[parent]
        node[leaf] = value
    return config


def make_batch(index: int, batch: int = BATCH, size: int = SIZE, nan: bool = False):
    """Deterministic batch number `index`: smooth images, depth growing with the row."""
    rng = np.random.default_rng(index)
    rows = np.linspace(0.0, 1.0, size, dtype=np.float32)[None, :, None]
    base = rng.uniform(0.2, 0.8, (batch, 1, 1, 3)).astype(np.float32)
    image = np.clip(base + 0.3 * rows[..., None] + rng.normal(0, 0.02, (batch, size, size, 3)),
                    0, 1).astype(np.float32)
    depth = np.broadcast_to(5.0 + 60.0 * (1.0 - rows), (batch, size, size)).astype(np.float32)
    depth = depth.copy()
    depth[:, : size // 8] = 0.0  # sky: no ground truth
    label = np.where(rows[..., 0] > 0.5, 0, 2).astype(np.int32)
    label = np.broadcast_to(label[:, :, None], (batch, size, size)).copy()
    label[:, : size // 8] = 255
    target = np.clip(1.0 - image + rng.normal(0, 0.05, image.shape), 0, 1).astype(np.float32)
    if nan:
        image = image.copy()
        image[0, 0, 0, 0] = np.nan
    return {
        "source_image": image,
        "source_image_clean": image,
        "source_depth": depth,
        "source_label": label,
        "target_image": target,
    }


def in_memory_iterator(nan_at_step: int | None = None):
    """train_iterator_fn: batch for step s (1-based) is make_batch(s - 1); resumes exactly."""

    def create(config, start_step):
        del config
        step = start_step
        while True:
            step += 1
            yield make_batch(step - 1, nan=step == nan_at_step)

    return create


def in_memory_eval(config):
    """eval_dataset_fn: unbatched examples like input_pipeline.create_eval_dataset."""
    del config
    batch = make_batch(100, batch=3)
    return [{"image": image, "depth": depth}
            for image, depth in zip(batch["source_image"], batch["source_depth"], strict=True)]


# -------------------------------------------------------------------------- no-model units


def test_grl_schedule_values():
    config = tiny_config(num_train_steps=100)
    schedule = schedules.create_grl_schedule(config)
    assert float(schedule(0)) == 0.0
    expected_half = 2.0 / (1.0 + math.exp(-5.0)) - 1.0
    np.testing.assert_allclose(float(schedule(50)), expected_half, rtol=1e-6)
    np.testing.assert_allclose(float(schedule(100)), 2.0 / (1.0 + math.exp(-10.0)) - 1.0,
                               rtol=1e-6)
    np.testing.assert_allclose(float(schedule(1000)), float(schedule(100)), rtol=1e-6)
    config.grl.schedule = "constant"
    config.grl.max_scale = 0.3
    constant = schedules.create_grl_schedule(config)
    assert float(constant(0)) == pytest.approx(0.3) and float(constant(99)) == pytest.approx(0.3)


def test_learning_rate_step_decay_at_three_quarters():
    config = tiny_config(num_train_steps=100)
    _, lr = train.create_optimizer(config)
    assert float(lr(0)) == pytest.approx(1e-4)
    assert float(lr(74)) == pytest.approx(1e-4)
    assert float(lr(75)) == pytest.approx(1e-5)
    assert float(lr(99)) == pytest.approx(1e-5)


def test_separate_discriminator_lr_and_clipping():
    config = tiny_config(**{"optim.discriminator_learning_rate": 1e-2,
                            "optim.grad_clip_norm": 1.0})
    tx, _ = train.create_optimizer(config)
    params = {"encoder": {"w": jnp.zeros(3)}, "domain_classifier": {"w": jnp.zeros(3)}}
    grads = {"encoder": {"w": jnp.array([10.0, -10.0, 10.0])},
             "domain_classifier": {"w": jnp.array([10.0, 10.0, -10.0])}}
    updates, _ = tx.update(grads, tx.init(params), params)
    # Adam's first step moves every coordinate by -lr * sign(g) (clipping keeps the signs).
    np.testing.assert_allclose(updates["encoder"]["w"], [-1e-4, 1e-4, -1e-4], rtol=1e-3)
    np.testing.assert_allclose(updates["domain_classifier"]["w"], [-1e-2, -1e-2, 1e-2],
                               rtol=1e-3)
    clipped = optax.clip_by_global_norm(1.0).update(grads, None)[0]
    assert float(optax.tree.norm(clipped)) == pytest.approx(1.0, rel=1e-5)


def test_first_nonfinite_term_message():
    terms = {"depth": np.float32(1.0), "seg": np.float32(np.inf), "adv": np.float32(np.nan),
             "total": np.float32(np.nan)}
    assert train.first_nonfinite_term(37, terms) == "step 37: loss term 'seg' is inf"
    terms["depth"] = np.float32(np.nan)
    assert train.first_nonfinite_term(37, terms) == "step 37: loss term 'depth' is nan"
    finite = {name: np.float32(0.5) for name in train.CHECKED_TERMS}
    assert train.first_nonfinite_term(1, finite) is None


def test_collapse_monitor_warns_after_patience():
    monitor = train.CollapseMonitor(patience_steps=30, log_every_steps=10)  # 3 logged steps
    monitor.update(10, adv_loss=0.2, acc_source=1.0, acc_target=0.995)
    monitor.update(20, adv_loss=0.2, acc_source=1.0, acc_target=0.995)
    assert monitor.warnings == []
    monitor.update(30, adv_loss=0.2, acc_source=1.0, acc_target=0.995)
    assert len(monitor.warnings) == 1 and "step 30: GRL collapse" in monitor.warnings[0]
    monitor.update(40, adv_loss=0.2, acc_source=1.0, acc_target=1.0)  # same streak: no repeat
    assert len(monitor.warnings) == 1
    for step in (50, 60, 70):
        monitor.update(step, adv_loss=math.log(2) + 0.005, acc_source=0.5, acc_target=0.5)
    assert len(monitor.warnings) == 2 and "ln 2" in monitor.warnings[1]
    monitor.update(80, adv_loss=0.5, acc_source=0.7, acc_target=0.6)
    monitor.update(90, adv_loss=math.log(2), acc_source=0.5, acc_target=0.5)
    assert len(monitor.warnings) == 2  # the streak was broken at step 80


def test_depth_collapse_monitor_warns_after_patience_and_names_the_fix():
    monitor = train.DepthCollapseMonitor(patience_steps=20, log_every_steps=10)  # 2 logged steps
    monitor.update(10, disp_std=0.05, min_depth=0.1, learning_rate=3e-4)
    monitor.update(20, disp_std=0.0, min_depth=0.1, learning_rate=3e-4)
    assert monitor.warnings == []
    monitor.update(30, disp_std=2e-6, min_depth=0.1, learning_rate=3e-4)
    assert len(monitor.warnings) == 1
    assert monitor.warnings[0].startswith(
        "step 30: depth collapse: the disparity output is constant"
    )
    assert "config.model.min_depth (now 0.1 m" in monitor.warnings[0]
    assert "config.optim.learning_rate (now 0.0003)" in monitor.warnings[0]
    monitor.update(40, disp_std=0.0, min_depth=0.1, learning_rate=3e-4)  # same streak
    assert len(monitor.warnings) == 1


# ----------------------------------------------------------------------------- with the model


@pytest.fixture(scope="module")
def full_setup():
    config = tiny_config("full", num_train_steps=6)
    model = train.create_model(config)
    mesh = train.create_mesh()
    step_fn = train.make_train_step(config, model, mesh)
    return config, model, mesh, step_fn


def test_grl_reverses_domain_gradient_into_encoder(monkeypatch):
    config = tiny_config("full")
    model = train.create_model(config)
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
            return losses.adversarial_loss(out["domain_logits"]["source"],
                                           out["domain_logits"]["target"])
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
    state = train.create_train_state(config, model, mesh)
    batch = train.shard_batch(make_batch(0), mesh)
    totals = []
    for step in range(8):
        state, _, terms = step_fn(state, batch, np.float32(0.1 * step))
        totals.append(float(terms["total"]))
        assert 0.0 < float(terms["disp_std"]) < 0.5  # sigmoid spread: neither constant nor absurd
        assert train.first_nonfinite_term(step + 1, jax.device_get(terms)) is None
    assert int(state.step) == 8
    assert totals[-1] < 0.8 * totals[0], totals


def test_nan_stops_the_run_and_the_restart_resumes_from_the_last_good_checkpoint(
    tmp_path, full_setup
):
    """NaN input at step 5 stops the run naming step and term; checkpoint 4 stays the newest
    and the restart resumes there and completes. (Bit-identity of a resumed run with an
    uninterrupted one is checked end to end in test_main.test_resume_after_sigkill.)"""
    config = full_setup[0]
    workdir = str(tmp_path / "run")
    with pytest.raises(train.NonFiniteLossError, match=r"^step 5: loss term 'depth' is nan"):
        train.train_and_evaluate(config, workdir, train_iterator_fn=in_memory_iterator(5),
                                 eval_dataset_fn=in_memory_eval)
    with checkpointing.TrainCheckpointer(workdir, keep=3) as checkpointer:
        assert checkpointer.all_steps() == [2, 4]
    resumed = train.train_and_evaluate(config, workdir, train_iterator_fn=in_memory_iterator(),
                                       eval_dataset_fn=in_memory_eval)
    assert int(resumed.step) == 6
    with checkpointing.TrainCheckpointer(workdir, keep=3) as checkpointer:
        assert checkpointer.all_steps() == [2, 4, 6]
        restored = checkpointer.restore_latest(checkpointing.abstract_like(resumed))
    assert restored.meta["data_position"] == 6 and restored.meta["step"] == 6
    assert restored.meta["config"]["variant"] == "full"
    for a, b in zip(jax.tree.leaves(restored.state), jax.tree.leaves(resumed), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(resumed.params))
    assert glob.glob(os.path.join(workdir, "events.out.tfevents.*"))


@pytest.mark.parametrize("variant", ["seg", "full"])
def test_four_devices_match_one_device(variant):
    """One step on a 4-device mesh equals the 1-device step (gradients, batch stats, params).

    Measured as ||x4 - x1|| / ||x1|| over whole trees, all to 1e-5: the gradients (read from
    Adam's first moment after the step, mu = (1 - b1) * g), the batch statistics, the
    parameters and the loss terms. Per element, Adam's first step `lr * g / (|g| + eps)`
    amplifies float reduction-order noise for gradients near eps, so an element-wise bound
    would test float summation order, not data parallelism (seg: params 1.9e-7 here).
    Compiled with XLA's default options, not at backend optimisation level 0
    (JAX_DISABLE_MOST_OPTIMIZATIONS), which miscompiles this model on AVX2-only hosts.
    """
    script = textwrap.dedent("""
        import numpy as np, jax, optax
        assert jax.device_count() == 4, jax.devices()
        from tests.test_train import tiny_config, make_batch
        from damono_jax import train
        config = tiny_config(VARIANT)
        config.batch_size = 4
        model = train.create_model(config)
        batch = make_batch(0, batch=4)
        results = []
        for devices in (jax.devices()[:1], jax.devices()):
            mesh = train.create_mesh(devices)
            state = train.create_train_state(config, model, mesh)
            step_fn = train.make_train_step(config, model, mesh)
            state, _, terms = step_fn(state, train.shard_batch(batch, mesh), np.float32(0.7))
            assert len(state.params["encoder"]["conv1"]["kernel"].sharding.device_set) == \\
                len(devices)
            mu = optax.tree_utils.tree_get(state.opt_state, "mu")
            results.append(jax.device_get((state.params, state.batch_stats, terms, mu)))
        def relative(tree_a, tree_b):
            a = np.concatenate([np.ravel(x).astype(np.float64) for x in jax.tree.leaves(tree_a)])
            b = np.concatenate([np.ravel(x).astype(np.float64) for x in jax.tree.leaves(tree_b)])
            return float(np.linalg.norm(a - b) / np.linalg.norm(a))

        (params_1, stats_1, terms_1, mu_1), (params_4, stats_4, terms_4, mu_4) = results
        grads_diff, stats_diff = relative(mu_1, mu_4), relative(stats_1, stats_4)
        params_diff = relative(params_1, params_4)
        print("RELATIVE_DIFFERENCE grads", grads_diff, "batch_stats", stats_diff,
              "params", params_diff)
        assert grads_diff < 1e-5 and stats_diff < 1e-5, (grads_diff, stats_diff)
        assert params_diff < 1e-5, params_diff
        for name in ("depth", "seg", "adv", "total"):
            np.testing.assert_allclose(terms_4[name], terms_1[name], rtol=1e-5)
    """).replace("VARIANT", repr(variant))
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
               JAX_PLATFORMS="cpu")
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    assert "RELATIVE_DIFFERENCE" in result.stdout


def test_bfloat16_compute_keeps_float32_params():
    config = tiny_config("baseline", dtype="bfloat16")
    model = train.create_model(config)
    assert model.dtype == jnp.bfloat16
    mesh = train.create_mesh()
    state = train.create_train_state(config, model, mesh)
    state, _, terms = train.make_train_step(config, model, mesh)(
        state, train.shard_batch(make_batch(0), mesh), np.float32(0.0))
    assert {x.dtype for x in jax.tree.leaves(state.params)} == {jnp.dtype(jnp.float32)}
    assert terms["depth"].dtype == jnp.float32
    assert train.first_nonfinite_term(1, jax.device_get(terms)) is None
    assert float(terms["seg"]) == 0.0 and float(terms["adv"]) == 0.0  # baseline: depth only
