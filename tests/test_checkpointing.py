"""Orbax checkpointing: round trip of a full train state, keep-last-N, torn writes ignored."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from damono_jax import checkpointing
from damono_jax.train import state as state_lib
from tests.helpers import truncate_data_files


def _state(seed: int) -> state_lib.TrainState:
    params = {
        "encoder": {"kernel": jnp.full((3, 2), float(seed))},
        "domain_classifier": {"bias": jnp.arange(4.0) + seed},
    }
    return state_lib.TrainState.create(
        apply_fn=lambda *a, **k: None,
        params=params,
        tx=optax.adam(1e-3),
        batch_stats={"encoder": {"mean": jnp.ones((2,)) * seed}},
        rng=jax.random.PRNGKey(seed),
    )


def _assert_trees_equal(a, b):
    leaves_a, tree_a = jax.tree.flatten(a)
    leaves_b, tree_b = jax.tree.flatten(b)
    assert tree_a == tree_b
    for x, y in zip(leaves_a, leaves_b, strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_round_trip_keeps_full_state_and_meta(tmp_path):
    state = _state(3)
    # One Adam update so the optimiser state is not all zeros.
    grads = jax.tree.map(jnp.ones_like, state.params)
    state = state.apply_gradients(grads=grads)
    meta = {"step": 1, "data_position": 1, "config": {"seed": 3}}
    with checkpointing.TrainCheckpointer(str(tmp_path), keep=2) as checkpointer:
        checkpointer.save(1, state, meta)
    with checkpointing.TrainCheckpointer(str(tmp_path), keep=2) as checkpointer:
        assert checkpointer.latest_step() == 1
        restored = checkpointer.restore_latest(checkpointing.abstract_like(_state(0)))
    assert restored is not None and restored.step == 1
    assert restored.meta == meta
    assert int(restored.state.step) == 1
    for field in ("params", "batch_stats", "opt_state", "rng"):
        _assert_trees_equal(getattr(restored.state, field), getattr(state, field))


def test_keeps_last_n_and_ignores_torn_writes(tmp_path):
    with checkpointing.TrainCheckpointer(str(tmp_path), keep=2) as checkpointer:
        for step in (1, 2, 3):
            checkpointer.save(step, _state(step), {"step": step, "data_position": step})
    directory = tmp_path / checkpointing.CHECKPOINT_SUBDIR
    # What a SIGKILL during a save leaves behind: Orbax's temporary directory, never renamed.
    for name in ("4.orbax-checkpoint-tmp", "5.orbax-checkpoint-tmp-1234567"):
        torn = directory / name
        (torn / "state").mkdir(parents=True)
        (torn / "state" / "garbage").write_bytes(b"\0" * 10)
    with checkpointing.TrainCheckpointer(str(tmp_path), keep=2) as checkpointer:
        assert checkpointer.all_steps() == [2, 3]
        assert checkpointer.latest_step() == 3
        restored = checkpointer.restore_latest(checkpointing.abstract_like(_state(0)))
    assert restored.meta["data_position"] == 3
    np.testing.assert_array_equal(
        np.asarray(restored.state.params["encoder"]["kernel"]), np.full((3, 2), 3.0)
    )
    committed = sorted(p for p in os.listdir(directory) if p.isdigit())
    assert committed == ["2", "3"]


def test_empty_directory_restores_nothing(tmp_path):
    with checkpointing.TrainCheckpointer(str(tmp_path), keep=1) as checkpointer:
        assert checkpointer.latest_step() is None
        assert checkpointer.restore_latest(checkpointing.abstract_like(_state(0))) is None



def test_a_checkpoint_that_does_not_restore_is_named_or_skipped(tmp_path, capfd):
    with checkpointing.TrainCheckpointer(str(tmp_path), keep=3) as checkpointer:
        for step in (1, 2):
            checkpointer.save(step, _state(step), {"step": step, "data_position": step})
    directory = tmp_path / checkpointing.CHECKPOINT_SUBDIR
    truncate_data_files(directory / "2")
    abstract = checkpointing.abstract_like(_state(0))
    with checkpointing.TrainCheckpointer(str(tmp_path), keep=3) as checkpointer:
        with pytest.raises(checkpointing.CheckpointError) as refused:
            checkpointer.restore_latest(abstract)  # eval / export: refuse, one line
        assert str(refused.value).startswith(
            f"{directory}/2: checkpoint does not restore: {directory}/2/state/d/")
        assert str(refused.value).endswith(" is truncated or corrupt (OUT_OF_RANGE)") or str(
            refused.value).endswith(" is truncated or corrupt (DATA_LOSS)")
        assert "\n" not in str(refused.value) and "<bound method" not in str(refused.value)
        assert (directory / "2").is_dir()
        restored = checkpointer.restore_latest(abstract, fall_back=True)  # training
        assert restored.step == 1 and checkpointer.all_steps() == [1]
        _assert_trees_equal(restored.state.params, _state(1).params)
        checkpointer.save(2, _state(5), {"step": 2, "data_position": 2})  # the step is free
    assert (tmp_path / checkpointing.UNRESTORABLE_SUBDIR / "2").is_dir()
    assert "Event loop is closed" not in capfd.readouterr().err  # Orbax's reader threads
