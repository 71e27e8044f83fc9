"""damono_jax.train.state: the optimiser, and the abstract state that restores need."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from damono_jax.train import state as state_lib
from tests.helpers import lowest_optimisation, tiny_config


def test_learning_rate_step_decay_at_three_quarters():
    lr = state_lib.OptimizerSettings.from_config(
        tiny_config(num_train_steps=100)).learning_rate_schedule()
    assert float(lr(0)) == pytest.approx(1e-4)
    assert float(lr(74)) == pytest.approx(1e-4)
    assert float(lr(75)) == pytest.approx(1e-5)
    assert float(lr(99)) == pytest.approx(1e-5)


def test_separate_discriminator_lr_and_clipping():
    config = tiny_config(**{"optim.discriminator_learning_rate": 1e-2,
                            "optim.grad_clip_norm": 1.0})
    tx = state_lib.create_optimizer(state_lib.OptimizerSettings.from_config(config))
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


def test_constant_discriminator_rate_keeps_its_own_adam_without_the_step_decay():
    config = tiny_config(num_train_steps=4, **{"optim.discriminator_lr_decay": False})
    settings = state_lib.OptimizerSettings.from_config(config)
    tx, lr = state_lib.create_optimizer(settings), settings.learning_rate_schedule()
    params = {"encoder": {"w": jnp.zeros(2)}, "domain_classifier_3": {"w": jnp.zeros(2)},
              "domain_classifier_output": {"w": jnp.zeros(2)}}
    grads = jax.tree.map(lambda p: jnp.array([1.0, -1.0]), params)
    opt_state = tx.init(params)
    for _ in range(4):  # the main rate decays x0.1 from step 3 (75% of 4)
        updates, opt_state = tx.update(grads, opt_state, params)
    np.testing.assert_allclose(updates["encoder"]["w"], [-1e-5, 1e-5], rtol=1e-3)
    for name in ("domain_classifier_3", "domain_classifier_output"):
        np.testing.assert_allclose(updates[name]["w"], [-1e-4, 1e-4], rtol=1e-3)
    assert float(lr(3)) == pytest.approx(1e-5)


@lowest_optimisation()
def test_init_from_a_checkpoint_loads_the_shared_weights_and_keeps_new_heads_fresh(tmp_path):
    from damono_jax import checkpointing

    mesh = state_lib.create_mesh()
    source_config = tiny_config("baseline", seed=3)
    source_model = state_lib.create_model(source_config)
    source = state_lib.create_train_state(source_config, source_model, mesh)
    with checkpointing.TrainCheckpointer(str(tmp_path / "source"), 1) as checkpointer:
        checkpointer.save(7, source, {"step": 7, "data_position": 7})
    config = tiny_config("full", **{"init_from": str(tmp_path / "source")})
    fresh = state_lib.create_train_state(tiny_config("full"), state_lib.create_model(config),
                                         mesh)
    warm = state_lib.create_train_state(config, state_lib.create_model(config), mesh)
    for part in ("encoder", "shared_block", "depth_decoder"):
        jax.tree.map(np.testing.assert_array_equal, warm.params[part], source.params[part])
    jax.tree.map(np.testing.assert_array_equal, warm.batch_stats, source.batch_stats)
    for part in ("semantic_decoder", "domain_classifier"):
        jax.tree.map(np.testing.assert_array_equal, warm.params[part], fresh.params[part])
    assert int(warm.step) == 0


def test_abstract_state_has_the_initialised_state_shapes_and_reads_no_encoder_file():
    config = tiny_config("full", **{"model.encoder_init": "/nonexistent/resnet18.pth"})
    model = state_lib.create_model(config)
    mesh = state_lib.create_mesh()
    abstract = state_lib.abstract_train_state(config, model, mesh)
    config.model.encoder_init = "scratch"
    concrete = state_lib.create_train_state(config, model, mesh)
    abstract_leaves = jax.tree_util.tree_leaves_with_path(abstract)
    concrete_leaves = jax.tree_util.tree_leaves_with_path(concrete)
    assert len(abstract_leaves) == len(concrete_leaves) > 100
    for (path_a, a), (path_c, c) in zip(abstract_leaves, concrete_leaves, strict=True):
        assert path_a == path_c
        assert isinstance(a, jax.ShapeDtypeStruct)
        assert (a.shape, a.dtype, a.sharding) == (c.shape, c.dtype, c.sharding), path_a
