"""Helpers shared by the test modules (import as `from tests import helpers`)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import jax
import numpy as np
import pytest
from PIL import Image

from configs import synthetic
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


# The tiny training setup of the train-step, train-loop, state and schedule tests.
TINY_SIZE = 64
TINY_BATCH = 2


def tiny_config(variant: str = "full", **overrides):
    """configs/synthetic.py at 64x64, batch 2, 4 steps, with dotted-key `overrides`."""
    config = synthetic.get_config(variant)
    config.data.image_size = (TINY_SIZE, TINY_SIZE)
    config.data.data_dir = "/nonexistent/in-memory"  # the tests pass their own data
    config.batch_size = TINY_BATCH
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


def make_batch(index: int, batch: int = TINY_BATCH, size: int = TINY_SIZE, nan: bool = False):
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


def truncate_data_files(step_dir):
    """Cuts every array data file of an Orbax checkpoint folder to half its size."""
    for path in step_dir.rglob("*"):
        if path.is_file() and "/d/" in path.as_posix():
            with open(path, "r+b") as handle:
                handle.truncate(path.stat().st_size // 2)


def suite_cache_environment() -> dict[str, str]:
    """Environment variables that give a script outside `cli.run` (a `python -c` subprocess)
    the suite's compilation cache (tests/conftest.py), or none when it is off."""
    from damono_jax import compile_cache

    folder = compile_cache.resolve()
    if folder is None:
        return {}
    return {"JAX_COMPILATION_CACHE_DIR": folder,
            "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}


@contextlib.contextmanager
def small_filesystem(path: str | os.PathLike, size_bytes: int) -> Iterator[Path]:
    """A tmpfs of `size_bytes` mounted at `path` (created) for the body, unmounted after.

    Mounting needs root (or CAP_SYS_ADMIN): elsewhere the test is skipped, with the reason.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("a full-disk test mounts a small tmpfs, which needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_bytes}", "tmpfs",
                              str(path)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "--lazy", str(path)], check=True)


def fill_filesystem(path: str | os.PathLike, leave_bytes: int = 0) -> None:
    """Shrinks the tmpfs mounted at `path` to what its files use now plus `leave_bytes`
    (rounded up to pages): the next larger write fails with ENOSPC."""
    usage = os.statvfs(path)
    used = (usage.f_blocks - usage.f_bfree) * usage.f_frsize
    page = os.sysconf("SC_PAGE_SIZE")
    size = max(page, -(-(used + leave_bytes) // page) * page)
    subprocess.run(["mount", "-o", f"remount,size={size}", str(path)], check=True)


def random_gt(rng: np.random.Generator, height: int, width: int, density: float = 0.3):
    gt = rng.uniform(0.5, 90.0, size=(height, width)).astype(np.float32)
    gt[rng.random((height, width)) > density] = 0.0
    return gt


def make_folder(root: Path, *, labelled: bool, splits: dict[str, int], fx: float = 60.0,
                widths: tuple[int, ...] = (96, 128), height: int = 48,
                seed: int = 0) -> dict[str, dict]:
    """Writes `root/{split}/image|depth|label/frame_NNNN.*` and one intrinsics.json per split.

    Widths alternate over `widths`; depth alternates between uint16 PNG and float32 .npy.
    Returns `name -> {"image", "depth", "label"}` arrays, as the builder should store them.
    """
    rng = np.random.default_rng(seed)
    expected = {}
    for split, count in splits.items():
        for index in range(count):
            width = widths[index % len(widths)]
            stem = f"frame_{index:04d}"
            image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
            save_png(root / split / "image" / f"{stem}.png", image)
            record = {"image": image}
            if labelled:
                raw = rng.integers(0, 20_000, (height, width)).astype(np.uint16)
                raw[0, :3] = 0  # invalid pixels
                if index % 2:
                    depth = raw.astype(np.float32) / 256.0
                    path = root / split / "depth" / f"{stem}.npy"
                    path.parent.mkdir(parents=True, exist_ok=True)
                    np.save(path, depth)
                else:
                    save_png(root / split / "depth" / f"{stem}.png", raw)
                    depth = raw.astype(np.float32) / np.float32(256.0)
                label = rng.integers(0, 19, (height, width), dtype=np.uint8)
                label[-1] = 255
                save_png(root / split / "label" / f"{stem}.png", label)
                record.update(depth=depth, label=label)
            expected[f"{split}/{stem}"] = record
        camera = {"fx": fx, "fy": fx, "cx": widths[0] / 2, "cy": height / 2}
        (root / split / "intrinsics.json").write_text(json.dumps(camera))
    return expected


def save_png(path: Path, array: np.ndarray) -> None:
    """Writes `array` as an image file at `path`, creating its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def write_video(path: Path, frames: list[np.ndarray], fps: int = 10, codec: str = "libx264",
                container: str | None = None, options: dict[str, str] | None = None) -> None:
    """Encodes uint8 RGB frames with PyAV (a test's own video, as a user's camera would);
    `options` are the muxer's (`{"movflags": "faststart"}`: the mp4's index first)."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format=container, options=options or {}) as output:
        stream = output.add_stream(codec, rate=fps)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p" if codec == "libx264" else "yuvj420p"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                output.mux(packet)
        for packet in stream.encode():
            output.mux(packet)


def decoded_frames(path: Path) -> list[np.ndarray]:
    """Every frame of a video as uint8 RGB, decoded by PyAV."""
    import av

    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]



def cut_video(path: Path, fraction: float = 0.7) -> Path:
    """A copy of the video `path` cut to `fraction` of its bytes, named `cut_<name>`."""
    cut = path.with_name(f"cut_{path.name}")
    data = path.read_bytes()
    cut.write_bytes(data[: int(len(data) * fraction)])
    return cut


def corrupt_middle(path: Path, name: str) -> Path:
    """A copy of `path` whose middle fifth of bytes is scrambled (its middle packets)."""
    data = bytearray(path.read_bytes())
    for index in range(len(data) * 2 // 5, len(data) * 3 // 5, 7):
        data[index] = (data[index] * 31 + 7) % 256
    corrupt = path.with_name(name)
    corrupt.write_bytes(bytes(data))
    return corrupt
