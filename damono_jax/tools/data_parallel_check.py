"""One train step on 1 device and on N devices of this host: how far apart are the results?

    XLA_FLAGS=--xla_force_host_platform_device_count=4 JAX_PLATFORMS=cpu \
        python -m damono_jax.tools.data_parallel_check --variant=seg --dtype=float64

Data parallelism must compute the same function on every mesh. Float32 results differ by
reduction order, and where the step is ill-conditioned (BatchNorm's backward subtracts
means) that noise is amplified; a wrong computation differs in float64 too. So the tool
runs the step in `--dtype` (float64 enables `jax_enable_x64` and casts the whole state and
batch; the model's outputs and the losses then stay float64 too) and prints the relative
difference ||x_N - x_1|| / ||x_1|| of the gradients (Adam's first moment after one step,
(1 - b1) g), the batch statistics, the parameters and the total loss, overall and per
top-level module.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags

FLAGS = flags.FLAGS
IMAGE_SIZE = (64, 64)
GRL_SCALE = 0.7


@dataclasses.dataclass(frozen=True)
class Differences:
    """Relative differences between the 1-device and the N-device step."""

    grads: float
    batch_stats: float
    params: float
    total_loss: float
    grads_by_module: dict[str, float]


def relative_difference(reference: Any, other: Any) -> float:
    """||other - reference|| / ||reference|| over all leaves, in float64."""
    a = np.concatenate([np.ravel(x).astype(np.float64) for x in jax.tree.leaves(reference)])
    b = np.concatenate([np.ravel(x).astype(np.float64) for x in jax.tree.leaves(other)])
    return float(np.linalg.norm(b - a) / np.linalg.norm(a))


def random_batch(batch_size: int, num_classes: int, seed: int = 0) -> dict[str, np.ndarray]:
    """A deterministic batch of the training stream's keys at `IMAGE_SIZE`."""
    rng = np.random.default_rng(seed)
    height, width = IMAGE_SIZE
    images = rng.uniform(size=(batch_size, height, width, 3)).astype(np.float32)
    depth = rng.uniform(2.0, 70.0, size=(batch_size, height, width)).astype(np.float32)
    depth[:, : height // 4] = 0.0  # sky: no ground truth
    return {
        "source_image": images,
        "source_image_clean": images,
        "source_depth": depth,
        "source_label": rng.integers(0, num_classes, (batch_size, height, width)).astype(
            np.int32),
        "target_image": rng.uniform(size=(batch_size, height, width, 3)).astype(np.float32),
    }


def compare(variant: str, dtype: str, per_device_batch: int,
            devices: Sequence[Any]) -> Differences:
    """One step of `variant` on `devices[:1]` and on `devices`, from the same state."""
    from configs import synthetic
    from damono_jax import models
    from damono_jax.train import state as state_lib
    from damono_jax.train import step as step_lib

    config = synthetic.get_config(variant)
    config.data.image_size = IMAGE_SIZE
    config.batch_size = per_device_batch * len(devices)
    wide = dtype == "float64"
    conv = models.conv_module(state_lib.resolve_weight_gradient(config.conv_weight_gradient))
    model = models.DAMonodepth.from_config(
        config.model, config.variant, jnp.float64 if wide else dtype, conv)
    batch = random_batch(config.batch_size, config.model.num_classes)
    if wide:
        batch = {k: v.astype(np.float64) if v.dtype == np.float32 else v
                 for k, v in batch.items()}
    results = []
    for mesh_devices in (list(devices)[:1], list(devices)):
        mesh = state_lib.create_mesh(mesh_devices)
        state = state_lib.create_train_state(config, model, mesh)
        if wide:
            state = jax.tree.map(
                lambda x: x.astype(jnp.float64) if x.dtype == jnp.float32 else x, state)
        step_fn = step_lib.make_train_step(config, model, mesh)
        state, _, terms = step_fn(state, step_lib.shard_batch(batch, mesh),
                                  np.float32(GRL_SCALE))
        mu = optax.tree_utils.tree_get(state.opt_state, "mu")
        results.append(jax.device_get((state.params, state.batch_stats, terms, mu)))
    (params_1, stats_1, terms_1, mu_1), (params_n, stats_n, terms_n, mu_n) = results
    return Differences(
        grads=relative_difference(mu_1, mu_n),
        batch_stats=relative_difference(stats_1, stats_n),
        params=relative_difference(params_1, params_n),
        total_loss=abs(float(terms_n["total"]) - float(terms_1["total"]))
        / abs(float(terms_1["total"])),
        grads_by_module={part: relative_difference(mu_1[part], mu_n[part])
                         for part in sorted(mu_1)},
    )


def format_differences(variant: str, dtype: str, per_device_batch: int, num_devices: int,
                       differences: Differences) -> str:
    """The tool's report: one line overall, one per module."""
    lines = [f"{variant} {dtype}, {num_devices} devices x batch {per_device_batch} vs 1 device: "
             f"grads {differences.grads:.2e}, batch_stats {differences.batch_stats:.2e}, "
             f"params {differences.params:.2e}, total loss {differences.total_loss:.2e}"]
    lines += [f"  grads {part}: {value:.2e}"
              for part, value in differences.grads_by_module.items()]
    return "\n".join(lines)


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if FLAGS.dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    devices = jax.devices()[: FLAGS.devices]
    if len(devices) < FLAGS.devices:
        raise app.UsageError(
            f"--devices={FLAGS.devices}: JAX sees {len(jax.devices())} device(s); on CPU set "
            f"XLA_FLAGS=--xla_force_host_platform_device_count={FLAGS.devices}")
    differences = compare(FLAGS.variant, FLAGS.dtype, FLAGS.per_device_batch, devices)
    print(format_differences(FLAGS.variant, FLAGS.dtype, FLAGS.per_device_batch, len(devices),
                             differences), flush=True)


def define_flags() -> None:
    """This CLI's absl flags (only when run as a program: the tools share names)."""
    flags.DEFINE_enum("variant", "seg", ["baseline", "seg", "full"], "Model variant.")
    flags.DEFINE_enum("dtype", "float64", ["float32", "float64"], "Compute dtype of the step.")
    flags.DEFINE_integer("per_device_batch", 1, "Images per device (source and target each).")
    flags.DEFINE_integer("devices", 4, "Devices of the data-parallel mesh.")


if __name__ == "__main__":
    from damono_jax import cli

    define_flags()
    cli.run(main)
