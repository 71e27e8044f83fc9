"""tf.data input pipelines: the source/target training stream and the evaluation stream.

Training (`create_train_iterator`) yields per-process numpy batches::

    source_image        (b, H, W, 3) float32 in [0, 1], flipped + colour-jittered
    source_image_clean  (b, H, W, 3) float32 in [0, 1], flipped like the rest, no jitter
    source_depth        (b, H, W)    float32 metres, 0 = invalid
    source_label        (b, H, W)    int32 Cityscapes train ids, 255 = ignore
    target_image        (b, H, W, 3) float32 in [0, 1] (only when the variant is "full" or
                        config.data.fda_beta > 0: `config_utils.uses_target_images`)

with `b = config.batch_size // jax.process_count()` and `(H, W) = config.data.image_size`.

Each stream reads this process's part of its split (`tfds.split_for_jax_process`, equal
parts, remainder dropped) as serialized records and then:

1. shuffles per epoch with a buffer of `config.data.shuffle_buffer` records and a seed
   derived from (config.seed, stream, process, epoch), so source and target are shuffled
   independently and every epoch differently;
2. numbers the records of the endless stream (`enumerate`) and skips the first
   `start_step * b` of them (whole epochs are skipped without reading them, the rest of an
   epoch by reading only the serialized bytes), so resuming is cheap;
3. decodes and resizes (bilinear with antialiasing for images, nearest for depth and
   labels) and augments (`config.data.augment`) with stateless random ops seeded by
   (config.seed, stream, process, record number): horizontal flip with p = 0.5, the same
   for image, depth and labels, then Monodepth2's colour jitter with p = 0.5;
4. batches with `drop_remainder`, zips source and target batches and prefetches.

Because all randomness is a function of the record number, the batches after
`create_train_iterator(config, start_step=k)` are exactly the batches from step k of
`create_train_iterator(config)`.

Colour jitter follows Monodepth2 (torchvision `ColorJitter(brightness=(0.8, 1.2),
contrast=(0.8, 1.2), saturation=(0.8, 1.2), hue=(-0.1, 0.1))`, sampled once per example):
the four factors are drawn uniformly and the four operations are applied in a random order
(a random permutation per example, as torchvision <= 0.7's `get_params` did), each with
torchvision's formula (see `color_jitter`).

Evaluation (`create_eval_dataset`) yields one example at a time (see its docstring).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from damono_jax import config_utils

# Features each stream reads. Missing ones are an error naming the dataset.
SOURCE_FEATURES = ("image", "depth", "label")
TARGET_FEATURES = ("image",)
EVAL_FEATURES = ("image", "depth")

# Monodepth2's augmentation (mono_dataset.py): p = 0.5 each, ColorJitter ranges.
FLIP_PROBABILITY = 0.5
JITTER_PROBABILITY = 0.5
BRIGHTNESS_RANGE = (0.8, 1.2)
CONTRAST_RANGE = (0.8, 1.2)
SATURATION_RANGE = (0.8, 1.2)
HUE_RANGE = (-0.1, 0.1)
# torchvision's rgb_to_grayscale weights (ITU-R 601-2 luma), also tf.image.rgb_to_grayscale's.
_GRAY_WEIGHTS = (0.2989, 0.587, 0.114)

_STREAM_CODES = {"source": 1, "target": 2}
_INT64_MAX = np.iinfo(np.int64).max


# --------------------------------------------------------------------------- datasets


def _hide_gpus_from_tf() -> None:
    """Keeps TF off the accelerators (jax_stack.md §3); a no-op once TF has initialised."""
    try:
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError:
        pass  # TF's devices are already initialised; with tensorflow-cpu there is no GPU


def _build_command(name: str, data_dir: str, builder_cls: type) -> str:
    needs_manual_dir = getattr(builder_cls, "MANUAL_DOWNLOAD_INSTRUCTIONS", None)
    manual = " --manual_dir=SRC" if needs_manual_dir else ""
    return f"python -m data_prep.build {name} --data_dir={data_dir}{manual}"


def load_builder(config: Any, key: str) -> tfds.core.DatasetBuilder:
    """The built TFDS dataset named by `config.data.<key>` ("name" or "name/config").

    Raises `ValueError` if `config.data.data_dir` is unset or the name is unknown, and
    `FileNotFoundError` (naming the path and the build command) if it is not built there.
    """
    import data_prep  # noqa: F401  (registers the project's builders)

    data_dir = config.data.data_dir
    if not data_dir:
        raise ValueError(
            "config.data.data_dir is not set: pass --config.data.data_dir=DIR, the TFDS "
            "data_dir the datasets were built into (python -m data_prep.build NAME "
            "--data_dir=DIR)"
        )
    name = config.data[key]
    try:
        builder = tfds.builder(name, data_dir=os.fspath(data_dir))
    except (tfds.core.registered.DatasetNotFoundError, ValueError) as error:
        raise ValueError(f"config.data.{key}: cannot load dataset {name!r}: {error}") from error
    if not builder.is_prepared():
        raise FileNotFoundError(
            f"config.data.{key}: dataset {name!r} is not built in {data_dir} (no "
            f"{os.path.join(os.fspath(builder.data_dir), 'dataset_info.json')}); build it "
            f"with: {_build_command(name, os.fspath(data_dir), type(builder))}"
        )
    return builder


def _check_features(builder: tfds.core.DatasetBuilder, key: str, name: str,
                    required: Sequence[str]) -> None:
    available = list(builder.info.features.keys())
    missing = [feature for feature in required if feature not in available]
    if missing:
        raise ValueError(
            f"config.data.{key}: dataset {name!r} at {builder.data_dir} lacks feature(s) "
            f"{missing} needed here; it has {available}"
        )


def _check_split(builder: tfds.core.DatasetBuilder, key: str, name: str, split: str) -> None:
    if split not in builder.info.splits:
        raise ValueError(
            f"config.data.{key}: dataset {name!r} at {builder.data_dir} has no split "
            f"{split!r}; it has {sorted(builder.info.splits.keys())}"
        )
    if builder.info.splits[split].num_examples == 0:
        raise ValueError(f"config.data.{key}: split {split!r} of dataset {name!r} is empty")


def _image_size(config: Any) -> tuple[int, int]:
    size = tuple(config.data.image_size)
    if len(size) != 2 or not all(isinstance(v, int | np.integer) and v > 0 for v in size):
        raise ValueError(
            f"config.data.image_size: expected (height, width) positive ints, got "
            f"{config.data.image_size!r}"
        )
    return int(size[0]), int(size[1])


def _read_records(builder: tfds.core.DatasetBuilder, split: str) -> tuple[tf.data.Dataset, int]:
    """Serialized records of `split` (a split name or sub-split) in file order, and count."""
    split_info = builder.info.splits[split]
    instructions = split_info.file_instructions
    filenames = [os.fspath(instruction.filename) for instruction in instructions]
    skips = [int(instruction.skip) for instruction in instructions]
    takes = [int(instruction.take) for instruction in instructions]
    instructions_ds = tf.data.Dataset.from_tensor_slices(
        (tf.constant(filenames, tf.string), tf.constant(skips, tf.int64),
         tf.constant(takes, tf.int64))
    )
    records = instructions_ds.flat_map(
        lambda filename, skip, take: tf.data.TFRecordDataset(filename).skip(skip).take(take)
    )
    return records, int(split_info.num_examples)


def _decoder(builder: tfds.core.DatasetBuilder, features: Sequence[str]):
    """A function serialized record -> dict of the decoded `features` only."""
    subset = tfds.features.FeaturesDict({name: builder.info.features[name] for name in features})
    return subset.deserialize_example


def _stream_seeds(seed: int, stream: str, process_index: int) -> tuple[int, int]:
    """(shuffle seed, augmentation seed) of one stream of one process."""
    if seed < 0:
        raise ValueError(f"config.seed must be >= 0, got {seed}")
    state = np.random.SeedSequence([seed, _STREAM_CODES[stream], process_index])
    shuffle_seed, augment_seed = state.generate_state(2, dtype=np.uint32)
    return int(shuffle_seed), int(augment_seed)


# ------------------------------------------------------------------------ preprocessing


def resize_image(image: tf.Tensor, size: tuple[int, int]) -> tf.Tensor:
    """uint8 (h, w, 3) -> float32 (H, W, 3) in [0, 1], bilinear with antialiasing.

    Antialiasing only changes downsampling; when neither side shrinks the plain bilinear
    kernel gives the same values (to 1e-7) about 4x faster, so it is used instead.
    """
    image = tf.image.convert_image_dtype(image, tf.float32)
    shrinks = tf.reduce_any(tf.shape(image)[:2] > tf.constant(size, tf.int32))
    resized = tf.cond(
        shrinks,
        lambda: tf.image.resize(image, size, method="bilinear", antialias=True),
        lambda: tf.image.resize(image, size, method="bilinear", antialias=False),
    )
    return tf.clip_by_value(resized, 0.0, 1.0)


def resize_nearest(values: tf.Tensor, size: tuple[int, int]) -> tf.Tensor:
    """(h, w) or (h, w, 1) -> (H, W), nearest neighbour (depth, labels), dtype kept."""
    if values.shape.rank == 2:
        values = values[..., None]
    return tf.image.resize(values, size, method="nearest")[..., 0]


def _grayscale(image: tf.Tensor) -> tf.Tensor:
    return tf.reduce_sum(image * tf.constant(_GRAY_WEIGHTS, image.dtype), axis=-1, keepdims=True)


def adjust_brightness(image: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
    """torchvision `adjust_brightness` for float images: clip(factor * image)."""
    return tf.clip_by_value(image * factor, 0.0, 1.0)


def adjust_contrast(image: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
    """torchvision `adjust_contrast`: blend with the mean of the grayscale image.

    `tf.image.adjust_contrast` uses per-channel means instead, hence our own version.
    """
    mean = tf.reduce_mean(_grayscale(image))
    return tf.clip_by_value(factor * image + (1.0 - factor) * mean, 0.0, 1.0)


def adjust_saturation(image: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
    """torchvision `adjust_saturation`: blend with the grayscale image.

    `tf.image.adjust_saturation` scales S in HSV instead, hence our own version.
    """
    return tf.clip_by_value(factor * image + (1.0 - factor) * _grayscale(image), 0.0, 1.0)


def adjust_hue(image: tf.Tensor, delta: tf.Tensor) -> tf.Tensor:
    """torchvision `adjust_hue`: rotate the HSV hue by `delta` turns (= tf.image.adjust_hue)."""
    return tf.image.adjust_hue(image, delta)


def color_jitter(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Monodepth2's colour jitter with all randomness from the stateless `seed` (shape (2,)).

    Factors: brightness, contrast, saturation ~ U(0.8, 1.2), hue ~ U(-0.1, 0.1); the four
    operations run in a random order.
    """
    seeds = tf.random.experimental.stateless_split(seed, num=5)
    brightness = tf.random.stateless_uniform([], seeds[0], *BRIGHTNESS_RANGE)
    contrast = tf.random.stateless_uniform([], seeds[1], *CONTRAST_RANGE)
    saturation = tf.random.stateless_uniform([], seeds[2], *SATURATION_RANGE)
    hue = tf.random.stateless_uniform([], seeds[3], *HUE_RANGE)
    order = tf.argsort(tf.random.stateless_uniform([4], seeds[4]))
    for position in range(4):
        image = tf.switch_case(
            order[position],
            branch_fns=[
                lambda img=image: adjust_brightness(img, brightness),
                lambda img=image: adjust_contrast(img, contrast),
                lambda img=image: adjust_saturation(img, saturation),
                lambda img=image: adjust_hue(img, hue),
            ],
        )
    return image


def _augmentation_seeds(augment_seed: int, index: tf.Tensor) -> tuple[tf.Tensor, ...]:
    """Stateless seeds (flip decision, jitter decision, jitter parameters) of one record."""
    seed = tf.stack([tf.constant(augment_seed, tf.int64), index])
    return tuple(tf.unstack(tf.random.experimental.stateless_split(seed, num=3)))


def _flip_and_jitter(index: tf.Tensor, images: dict[str, tf.Tensor],
                     others: dict[str, tf.Tensor], augment_seed: int,
                     jittered_key: str) -> dict[str, tf.Tensor]:
    """Flips every tensor (width axis 1) together with p = 0.5, then jitters one image."""
    flip_seed, jitter_decision_seed, jitter_seed = _augmentation_seeds(augment_seed, index)
    flip = tf.random.stateless_uniform([], flip_seed) < FLIP_PROBABILITY
    outputs = {
        key: tf.cond(flip, lambda value=value: tf.reverse(value, axis=[1]),
                     lambda value=value: value)
        for key, value in {**images, **others}.items()
    }
    do_jitter = tf.random.stateless_uniform([], jitter_decision_seed) < JITTER_PROBABILITY
    image = outputs[jittered_key]
    outputs[jittered_key] = tf.cond(
        do_jitter, lambda: color_jitter(image, jitter_seed), lambda: image
    )
    return outputs


# ---------------------------------------------------------------------------- training


def _parallel_calls(config: Any) -> int:
    value = int(config.data.num_parallel_calls)
    if value == -1:
        return tf.data.AUTOTUNE
    if value < 1:
        raise ValueError(
            f"config.data.num_parallel_calls: must be >= 1 or -1 (AUTOTUNE), got {value}"
        )
    return value


def _process_split(split: str, process_index: int, process_count: int) -> str:
    if process_count == 1:
        return split
    return tfds.split_for_jax_process(
        split, process_index=process_index, process_count=process_count, drop_remainder=True
    )


def _train_stream(config: Any, key: str, split: str, stream: str, features: Sequence[str],
                  batch_size: int, start_step: int, process_index: int,
                  process_count: int) -> tf.data.Dataset:
    """One endless, batched, augmented stream (source or target) of this process."""
    name = config.data[key]
    builder = load_builder(config, key)
    _check_features(builder, key, name, features)
    _check_split(builder, key, name, split)
    records, count = _read_records(builder, _process_split(split, process_index, process_count))
    if count == 0:
        raise ValueError(
            f"config.data.{key}: split {split!r} of {name!r} has fewer examples than "
            f"processes ({process_count})"
        )
    size = _image_size(config)
    decode = _decoder(builder, features)
    shuffle_seed, augment_seed = _stream_seeds(int(config.seed), stream, process_index)
    num_parallel_calls = _parallel_calls(config)

    def decode_and_resize(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
        example = decode(serialized)
        outputs = {"image": resize_image(example["image"], size)}
        if "depth" in features:
            outputs["depth"] = resize_nearest(example["depth"], size)
        if "label" in features:
            outputs["label"] = tf.cast(resize_nearest(example["label"], size), tf.int32)
        return outputs

    if config.data.cache:
        # Decoded, resized examples are cached; shuffling, skipping and augmentation act on
        # them exactly as on records, so the stream is the same as without the cache.
        examples = records.map(decode_and_resize, num_parallel_calls=num_parallel_calls).cache()
    else:
        examples = records
    if int(config.data.shuffle_buffer) < 1:
        raise ValueError(
            f"config.data.shuffle_buffer: must be >= 1, got {config.data.shuffle_buffer}"
        )
    # A buffer larger than the split shuffles exactly like one the size of the split.
    buffer = min(int(config.data.shuffle_buffer), count)

    def shuffled_epoch(epoch: tf.Tensor) -> tf.data.Dataset:
        epoch_seed = tf.cast(shuffle_seed, tf.int64) * 1_000_003 + epoch
        return examples.shuffle(buffer, seed=epoch_seed, reshuffle_each_iteration=False)

    start = start_step * batch_size
    first_epoch = start // count
    stream_ds = tf.data.Dataset.range(first_epoch, _INT64_MAX).flat_map(shuffled_epoch)
    stream_ds = stream_ds.enumerate(start=first_epoch * count).skip(start - first_epoch * count)

    augment = bool(config.data.augment)
    prefix = f"{stream}_"

    def preprocess(index: tf.Tensor, element: Any) -> dict[str, tf.Tensor]:
        example = element if config.data.cache else decode_and_resize(element)
        others = {k: v for k, v in example.items() if k != "image"}
        if stream == "source":
            images = {"image": example["image"], "image_clean": example["image"]}
        else:
            images = {"image": example["image"]}
        if augment:
            outputs = _flip_and_jitter(index, images, others, augment_seed, "image")
        else:
            outputs = {**images, **others}
        return {prefix + k: v for k, v in outputs.items()}

    stream_ds = stream_ds.map(preprocess, num_parallel_calls=num_parallel_calls)
    return stream_ds.batch(batch_size, drop_remainder=True)


def create_train_dataset(config: Any, start_step: int = 0, *, process_index: int | None = None,
                         process_count: int | None = None) -> tf.data.Dataset:
    """The endless training `tf.data.Dataset` of this process (see the module docstring).

    `process_index` / `process_count` default to `jax.process_index()` /
    `jax.process_count()`; pass them to build another process's stream (tests, tools).
    """
    _hide_gpus_from_tf()
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} not in [0, {process_count})")
    if start_step < 0:
        raise ValueError(f"start_step must be >= 0, got {start_step}")
    if config.batch_size <= 0 or config.batch_size % process_count:
        raise ValueError(
            f"config.batch_size: {config.batch_size} is not a positive multiple of the "
            f"process count {process_count}"
        )
    batch_size = config.batch_size // process_count
    common = dict(batch_size=batch_size, start_step=start_step, process_index=process_index,
                  process_count=process_count)
    source = _train_stream(config, "source", config.data.source_split, "source",
                           SOURCE_FEATURES, **common)
    if config_utils.uses_target_images(config):
        target = _train_stream(config, "target", config.data.target_split, "target",
                               TARGET_FEATURES, **common)
        dataset = tf.data.Dataset.zip(source, target).map(lambda s, t: {**s, **t})
    else:
        dataset = source
    options = tf.data.Options()
    options.deterministic = True
    dataset = dataset.with_options(options)
    prefetch = int(config.data.prefetch)
    if prefetch < -1:
        raise ValueError(
            f"config.data.prefetch: must be >= 0 or -1 (AUTOTUNE), got {config.data.prefetch}"
        )
    return dataset.prefetch(prefetch) if prefetch else dataset


def create_train_iterator(config: Any, start_step: int = 0, *, process_index: int | None = None,
                          process_count: int | None = None) -> Iterator[dict[str, np.ndarray]]:
    """Endless iterator of this process's numpy training batches, from step `start_step`.

    Keys, shapes and dtypes are in the module docstring. Deterministic for `config.seed`:
    `create_train_iterator(config, k)` yields exactly what `create_train_iterator(config)`
    yields from its k-th batch on.
    """
    dataset = create_train_dataset(config, start_step, process_index=process_index,
                                   process_count=process_count)
    return dataset.as_numpy_iterator()


# -------------------------------------------------------------------------- evaluation


def create_eval_dataset(config: Any, split: str | None = None,
                        max_examples: int | None = None) -> Iterator[dict[str, Any]]:
    """Iterator over `config.data.eval`'s `split` (default `config.data.eval_split`).

    Yields one numpy dict per example, in the dataset's file order, unbatched:

        image       (H, W, 3) float32 in [0, 1], resized to config.data.image_size
                    (bilinear, antialiased); add the batch axis yourself
        depth       (h, w) float32 ground truth in metres at the dataset's full resolution
                    (shapes differ between examples, e.g. KITTI dates), 0 = invalid
        label       (h, w) int32 full-resolution train ids (only if the dataset has labels)
        intrinsics  (4,) float32 fx, fy, cx, cy of the full-resolution image (if present)
        name        str

    Every process gets the whole split. `max_examples` None or -1 means all examples.
    Call again to iterate again.
    """
    _hide_gpus_from_tf()
    split = split or config.data.eval_split
    name = config.data.eval
    builder = load_builder(config, "eval")
    _check_features(builder, "eval", name, EVAL_FEATURES)
    _check_split(builder, "eval", name, split)
    if max_examples is not None and max_examples != -1 and max_examples <= 0:
        raise ValueError(f"max_examples must be positive, -1 or None, got {max_examples}")
    available = builder.info.features.keys()
    features = list(EVAL_FEATURES) + [k for k in ("label", "intrinsics", "name") if k in available]
    decode = _decoder(builder, features)
    size = _image_size(config)

    def preprocess(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
        example = decode(serialized)
        outputs = dict(example)
        outputs["image"] = resize_image(example["image"], size)
        if "label" in outputs:
            outputs["label"] = tf.cast(outputs["label"][..., 0], tf.int32)
        return outputs

    records, _ = _read_records(builder, split)
    if max_examples not in (None, -1):
        records = records.take(max_examples)
    dataset = records.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE)
    dataset = dataset.prefetch(2)
    return _as_numpy_examples(dataset)


def create_image_batches(data_dir: str, dataset: str, split: str, image_size: Sequence[int],
                         batch_size: int, max_examples: int | None = None
                         ) -> Iterator[np.ndarray]:
    """Batches of images of `dataset`/`split` in file order, for statistics (AdaBN).

    Yields float32 (b, H, W, 3) arrays in [0, 1] resized to `image_size` exactly as the
    evaluation stream does; every batch has `batch_size` images except possibly the last.
    Reads only the `image` feature, so unlabelled (target) datasets work. `max_examples`
    None means the whole split.
    """
    _hide_gpus_from_tf()
    config = eval_config(data_dir, dataset, split, image_size)
    builder = load_builder(config, "eval")
    _check_features(builder, "eval", dataset, TARGET_FEATURES)
    _check_split(builder, "eval", dataset, split)
    if batch_size < 1:
        raise ValueError(f"batch_size: must be >= 1, got {batch_size}")
    if max_examples is not None and max_examples < 1:
        raise ValueError(f"max_examples: must be >= 1 or None, got {max_examples}")
    decode = _decoder(builder, TARGET_FEATURES)
    size = _image_size(config)
    records, _ = _read_records(builder, split)
    if max_examples is not None:
        records = records.take(max_examples)
    images = records.map(lambda serialized: resize_image(decode(serialized)["image"], size),
                         num_parallel_calls=tf.data.AUTOTUNE)
    return images.batch(batch_size).prefetch(2).as_numpy_iterator()


def eval_config(data_dir: str, dataset: str, split: str, image_size: Sequence[int]) -> Any:
    """The minimal config `create_eval_dataset` and `load_builder(config, "eval")` read."""
    config = ml_collections.ConfigDict()
    config.data = ml_collections.ConfigDict()
    config.data.data_dir = os.fspath(data_dir)
    config.data.eval = dataset
    config.data.eval_split = split
    config.data.image_size = tuple(int(side) for side in image_size)
    return config


def _as_numpy_examples(dataset: tf.data.Dataset) -> Iterator[dict[str, Any]]:
    for example in dataset.as_numpy_iterator():
        if "name" in example:
            example["name"] = example["name"].decode("utf-8")
        yield example
