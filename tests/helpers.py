"""Helpers shared by the test modules (import as `from tests import helpers`)."""

from __future__ import annotations

import contextlib
import os

import jax
import numpy as np
import pytest

from damono_jax.models import DepthNet


def random_depth_net_variables(input_size: tuple[int, int], seed: int = 0) -> dict:
    """DepthNet variables with random values, built from `eval_shape` (no slow init compile).

    Kernels ~ N(0, 1/fan_in), BN running variances ~ U(0.5, 1.5), other leaves ~ N(0, 1).
    """
    images = jax.ShapeDtypeStruct((1, *input_size, 3), np.float32)
    abstract = jax.eval_shape(lambda x: DepthNet().init(jax.random.key(0), x), images)
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        if "var" in jax.tree_util.keystr(path):
            return rng.uniform(0.5, 1.5, leaf.shape).astype(np.float32)
        fan_in = int(np.prod(leaf.shape[:-1])) if len(leaf.shape) > 1 else 1
        return (rng.standard_normal(leaf.shape) / np.sqrt(fan_in)).astype(np.float32)

    return jax.tree_util.tree_map_with_path(fill, abstract)


def random_resnet18_state(seed: int = 0) -> dict:
    """torchvision-named ResNet-18 state dict with random weights and BN running stats."""
    import math

    import torch

    generator = torch.Generator().manual_seed(seed)
    state: dict = {}

    def conv(name, out_channels, in_channels, kernel):
        std = math.sqrt(2.0 / (in_channels * kernel * kernel))
        state[f"{name}.weight"] = (
            torch.randn(out_channels, in_channels, kernel, kernel, generator=generator) * std
        )

    def batch_norm(name, channels):
        state[f"{name}.weight"] = torch.rand(channels, generator=generator) + 0.5
        state[f"{name}.bias"] = torch.randn(channels, generator=generator) * 0.1
        state[f"{name}.running_mean"] = torch.randn(channels, generator=generator) * 0.1
        state[f"{name}.running_var"] = torch.rand(channels, generator=generator) + 0.5
        state[f"{name}.num_batches_tracked"] = torch.tensor(7, dtype=torch.long)

    conv("conv1", 64, 3, 7)
    batch_norm("bn1", 64)
    widths = [(64, 64), (64, 128), (128, 256), (256, 512)]
    for layer, (in_width, width) in enumerate(widths, start=1):
        for block in range(2):
            prefix = f"layer{layer}.{block}"
            conv(f"{prefix}.conv1", width, in_width if block == 0 else width, 3)
            batch_norm(f"{prefix}.bn1", width)
            conv(f"{prefix}.conv2", width, width, 3)
            batch_norm(f"{prefix}.bn2", width)
            if layer > 1 and block == 0:
                conv(f"{prefix}.downsample.0", width, in_width, 1)
                batch_norm(f"{prefix}.downsample.1", width)
    state["fc.weight"] = torch.randn(1000, 512, generator=generator) * 0.01
    state["fc.bias"] = torch.zeros(1000)
    return state


def build_tiny_dataset(directory: str | os.PathLike, name: str, num_examples: int) -> str:
    """Builds TFDS dataset `name` (a project builder) with `num_examples` per split into
    `directory`; returns the data_dir."""
    import tensorflow_datasets as tfds

    import data_prep  # noqa: F401 (registers the builders)

    path = os.fspath(directory)
    download_config = tfds.download.DownloadConfig(max_examples_per_split=num_examples)
    tfds.builder(name, data_dir=path).download_and_prepare(download_config=download_config)
    return path


@contextlib.contextmanager
def lowest_optimisation():
    """`fast_compilation` for the body of one `with` block (the same caveats)."""
    previous = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    try:
        yield
    finally:
        jax.config.update("jax_disable_most_optimizations", previous)


@pytest.fixture(scope="module", autouse=True)
def fast_compilation():
    """Cheaper XLA compilation for tiny programs (as flax's examples' tests do).

    Import it into a test module (`from tests.helpers import fast_compilation`) to apply it
    to every test there. Only for tests that compare a program with itself (resume, loss
    going down, shapes): it compiles at XLA backend optimisation level 0, which on AVX2-only
    hosts miscompiles the full model's backward pass (encoder gradients up to 12% off, see
    tests/test_torch_twin.py). Comparisons with references use XLA's default options.
    """
    previous = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", previous)
