"""A command for tests/test_compile_cache.py: compiles, runs and records what came out.

    python -m tests.compile_cache_probe --output=OUT.json [--model] [--compilation_cache=...]

Runs through `cli.run`, as every command does, so the cache is turned on (or not) exactly as
there. With `--model`: one train step of the tiny full model and one prediction of a random
DepthNet; without: one small jitted function. OUT.json holds the sha256 of every output's bytes
and how many programs were read from and written to the cache.
"""

from __future__ import annotations

import hashlib
import json

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from damono_jax import cli, compile_cache

FLAGS = flags.FLAGS


def _sha256(tree) -> str:
    digest = hashlib.sha256()
    for leaf in jax.tree.leaves(jax.device_get(tree)):
        digest.update(np.ascontiguousarray(leaf).tobytes())
    return digest.hexdigest()


def _model_outputs() -> dict[str, str]:
    from benchmarks import inference
    from damono_jax.train import state as state_lib
    from damono_jax.train import step as step_lib
    from tests.helpers import make_batch, tiny_config

    # XLA's cheaper options, as the suite's self-comparisons use (tests/helpers.py): the runs
    # compare a program with itself, loaded from the cache or compiled.
    jax.config.update("jax_disable_most_optimizations", True)
    config = tiny_config("full")
    model = state_lib.create_model(config)
    mesh = state_lib.create_mesh()
    state = state_lib.create_train_state(config, model, mesh)
    step_fn = step_lib.make_train_step(config, model, mesh)
    state, _, terms = step_fn(state, step_lib.shard_batch(make_batch(0), mesh), np.float32(0.1))
    depth = inference.random_model(64, 64).predict_depth(make_batch(1)["source_image"])
    return {"train_step": _sha256((state.params, state.batch_stats, terms)),
            "prediction": _sha256(depth)}


def _small_outputs() -> dict[str, str]:
    x = jnp.linspace(-1.0, 1.0, 64 * 64, dtype=jnp.float32).reshape(64, 64)
    return {"small": _sha256(jax.jit(lambda a: jnp.tanh(a @ a.T) + jnp.sin(a))(x))}


def main(argv: list[str]) -> None:
    del argv
    outputs = _model_outputs() if FLAGS.model else _small_outputs()
    outputs.update(read=compile_cache.COUNTS.read, written=compile_cache.COUNTS.written,
                   cache=jax.config.jax_compilation_cache_dir
                   if jax.config.jax_enable_compilation_cache else None)
    with open(FLAGS.output, "w") as handle:
        json.dump(outputs, handle)


if __name__ == "__main__":
    flags.DEFINE_string("output", None, "JSON file of the outputs' hashes.", required=True)
    flags.DEFINE_boolean("model", False, "The tiny model's train step and a prediction.")
    cli.run(main)
