"""tf.data input pipelines: the source/target training stream and the evaluation stream.

Training (`create_train_iterator(config.data, batch_size=, seed=, use_target_images=)`)
yields per-process numpy batches::

    source_image        (b, H, W, 3) float32 in [0, 1], flipped + colour-jittered
    source_image_clean  (b, H, W, 3) float32 in [0, 1], flipped like the rest, no jitter
    source_depth        (b, H, W)    float32 metres, 0 = invalid
    source_label        (b, H, W)    int32 Cityscapes train ids, 255 = ignore
    target_image        (b, H, W, 3) float32 in [0, 1] (only with `use_target_images`: the
                        variant is "full" or data.fda_beta > 0, `config_utils.uses_target_images`)

with `b = batch_size // jax.process_count()` and `(H, W) = data.image_size`, where `data` is
`config.data` (validated by `config_utils.check` at the entry point).

Each stream reads this process's part of its split (`tfds.split_for_jax_process`, equal
parts, remainder dropped) as serialized records and then:

1. shuffles per epoch with a buffer of `data.shuffle_buffer` records and a seed
   derived from (seed, stream, process, epoch), so source and target are shuffled
   independently and every epoch differently;
2. numbers the records of the endless stream (`enumerate`) and skips the first
   `start_step * b` of them (whole epochs are skipped without reading them, the rest of an
   epoch by reading only the serialized bytes), so resuming is cheap;
3. decodes and resizes (bilinear with antialiasing for images, nearest for depth and
   labels) and augments (`data.augment`) with stateless random ops seeded by
   (seed, stream, process, record number): horizontal flip with p = 0.5, the same
   for image, depth and labels, then Monodepth2's colour jitter with p = 0.5 (or, with
   `data.augment="strong"`, SimCLR's colour distortion and a Gaussian blur);
4. batches with `drop_remainder`, zips source and target batches and prefetches.

Because all randomness is a function of the record number, the batches after
`start_step=k` are exactly the batches from step k of `start_step=0`.

Resizing and augmentation are `damono_jax.preprocessing`.

Evaluation (`create_eval_dataset`) yields one example at a time (see its docstring).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import jax
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from damono_jax import datasets
from damono_jax.preprocessing import flip_and_jitter, resize_image, resize_nearest

# Features each stream reads. Missing ones are an error naming the dataset.
SOURCE_FEATURES = ("image", "depth", "label")
TARGET_FEATURES = ("image",)
EVAL_FEATURES = ("image", "depth")

_STREAM_CODES = {"source": 1, "target": 2}
_INT64_MAX = np.iinfo(np.int64).max


def check_datasets(data: Any, *, mode: str, use_target_images: bool) -> None:
    """The streams `mode` reads are built, with their features and splits (before a run).

    "train" reads source, target (if `use_target_images`) and eval; "eval" the eval stream.
    Errors name the config key, as `datasets.checked_builder` does.
    """
    streams = {"source": SOURCE_FEATURES, "target": TARGET_FEATURES}
    if mode != "train":
        streams = {}
    elif not use_target_images:
        streams.pop("target")
    for stream, features in {**streams, "eval": EVAL_FEATURES}.items():
        key = f"config.data.{stream}"
        datasets.checked_builder(data.data_dir, data[stream], key, features=features,
                                 split=data[f"{stream}_split"])


def _stream_seeds(seed: int, stream: str, process_index: int) -> tuple[int, int]:
    """(shuffle seed, augmentation seed) of one stream of one process."""
    state = np.random.SeedSequence([seed, _STREAM_CODES[stream], process_index])
    shuffle_seed, augment_seed = state.generate_state(2, dtype=np.uint32)
    return int(shuffle_seed), int(augment_seed)


# ---------------------------------------------------------------------------- training


def _parallel_calls(value: int) -> int:
    """`data.num_parallel_calls`, with -1 as tf.data's AUTOTUNE."""
    return tf.data.AUTOTUNE if value == -1 else value


def _process_split(split: str, process_index: int, process_count: int) -> str:
    if process_count == 1:
        return split
    return tfds.split_for_jax_process(
        split, process_index=process_index, process_count=process_count, drop_remainder=True
    )


def _train_stream(data: Any, stream: str, features: Sequence[str], *, seed: int,
                  batch_size: int, start_step: int, process_index: int,
                  process_count: int) -> tf.data.Dataset:
    """One endless, batched, augmented stream ("source" or "target") of this process."""
    name, split, key = data[stream], data[f"{stream}_split"], f"config.data.{stream}"
    builder = datasets.checked_builder(data.data_dir, name, key, features=features, split=split)
    records, count = datasets.read_records(
        builder, _process_split(split, process_index, process_count))
    if count == 0:
        raise ValueError(
            f"{key}: split {split!r} of {name!r} has fewer examples than "
            f"processes ({process_count})"
        )
    size = tuple(data.image_size)
    decode = datasets.decoder(builder, features)
    shuffle_seed, augment_seed = _stream_seeds(seed, stream, process_index)
    num_parallel_calls = _parallel_calls(data.num_parallel_calls)

    def decode_and_resize(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
        example = decode(serialized)
        outputs = {"image": resize_image(example["image"], size)}
        if "depth" in features:
            outputs["depth"] = resize_nearest(example["depth"], size)
        if "label" in features:
            outputs["label"] = tf.cast(resize_nearest(example["label"], size), tf.int32)
        return outputs

    if data.cache:
        # Decoded, resized examples are cached; shuffling, skipping and augmentation act on
        # them exactly as on records, so the stream is the same as without the cache.
        examples = records.map(decode_and_resize, num_parallel_calls=num_parallel_calls).cache()
    else:
        examples = records
    # A buffer larger than the split shuffles exactly like one the size of the split.
    buffer = min(int(data.shuffle_buffer), count)

    def shuffled_epoch(epoch: tf.Tensor) -> tf.data.Dataset:
        epoch_seed = tf.cast(shuffle_seed, tf.int64) * 1_000_003 + epoch
        return examples.shuffle(buffer, seed=epoch_seed, reshuffle_each_iteration=False)

    start = start_step * batch_size
    first_epoch = start // count
    stream_ds = tf.data.Dataset.range(first_epoch, _INT64_MAX).flat_map(shuffled_epoch)
    stream_ds = stream_ds.enumerate(start=first_epoch * count).skip(start - first_epoch * count)

    augment = data.augment
    prefix = f"{stream}_"

    def preprocess(index: tf.Tensor, element: Any) -> dict[str, tf.Tensor]:
        example = element if data.cache else decode_and_resize(element)
        others = {k: v for k, v in example.items() if k != "image"}
        if stream == "source":
            images = {"image": example["image"], "image_clean": example["image"]}
        else:
            images = {"image": example["image"]}
        if augment != "none":
            outputs = flip_and_jitter(index, images, others, augment_seed, "image", augment)
        else:
            outputs = {**images, **others}
        return {prefix + k: v for k, v in outputs.items()}

    stream_ds = stream_ds.map(preprocess, num_parallel_calls=num_parallel_calls)
    return stream_ds.batch(batch_size, drop_remainder=True)


def create_train_dataset(data: Any, *, batch_size: int, seed: int, use_target_images: bool,
                         start_step: int = 0, process_index: int | None = None,
                         process_count: int | None = None) -> tf.data.Dataset:
    """The endless training `tf.data.Dataset` of this process (see the module docstring).

    `data` is `config.data`; `batch_size` the global batch. `process_index` /
    `process_count` default to `jax.process_index()` / `jax.process_count()`; pass them to
    build another process's stream (tests, tools).
    """
    datasets.hide_gpus_from_tf()
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} not in [0, {process_count})")
    if start_step < 0:
        raise ValueError(f"start_step must be >= 0, got {start_step}")
    if batch_size <= 0 or batch_size % process_count:
        raise ValueError(
            f"config.batch_size: {batch_size} is not a positive multiple of the "
            f"process count {process_count}"
        )
    common = dict(seed=seed, batch_size=batch_size // process_count, start_step=start_step,
                  process_index=process_index, process_count=process_count)
    dataset = _train_stream(data, "source", SOURCE_FEATURES, **common)
    if use_target_images:
        target = _train_stream(data, "target", TARGET_FEATURES, **common)
        dataset = tf.data.Dataset.zip(dataset, target).map(lambda s, t: {**s, **t})
    options = tf.data.Options()
    options.deterministic = True
    dataset = dataset.with_options(options)
    return dataset.prefetch(data.prefetch)


def create_train_iterator(data: Any, *, batch_size: int, seed: int, use_target_images: bool,
                          start_step: int = 0, process_index: int | None = None,
                          process_count: int | None = None) -> Iterator[dict[str, np.ndarray]]:
    """Endless iterator of this process's numpy training batches, from step `start_step`.

    Keys, shapes and dtypes are in the module docstring. Deterministic for `seed`: with
    `start_step=k` it yields exactly what `start_step=0` yields from its k-th batch on.
    """
    dataset = create_train_dataset(
        data, batch_size=batch_size, seed=seed, use_target_images=use_target_images,
        start_step=start_step, process_index=process_index, process_count=process_count,
    )
    return dataset.as_numpy_iterator()


# -------------------------------------------------------------------------- evaluation


def create_eval_dataset(data_dir: str, dataset: str, split: str, image_size: Sequence[int],
                        max_examples: int | None = None, *, key: str = "config.data.eval"
                        ) -> Iterator[dict[str, Any]]:
    """Iterator over `dataset`'s `split` in `data_dir`; `key` names the dataset in errors.

    Yields one numpy dict per example, in the dataset's file order, unbatched:

        image       (H, W, 3) float32 in [0, 1], resized to `image_size`
                    (bilinear, antialiased); add the batch axis yourself
        depth       (h, w) float32 ground truth in metres at the dataset's full resolution
                    (shapes differ between examples, e.g. KITTI dates), 0 = invalid
        label       (h, w) int32 full-resolution train ids (only if the dataset has labels)
        intrinsics  (4,) float32 fx, fy, cx, cy of the full-resolution image (if present)
        name        str

    Every process gets the whole split. `max_examples` None or -1 means all examples.
    Call again to iterate again.
    """
    datasets.hide_gpus_from_tf()
    builder = datasets.checked_builder(data_dir, dataset, key, features=EVAL_FEATURES,
                                       split=split)
    if max_examples is not None and max_examples != -1 and max_examples <= 0:
        raise ValueError(f"max_examples must be positive, -1 or None, got {max_examples}")
    available = builder.info.features.keys()
    features = list(EVAL_FEATURES) + [k for k in ("label", "intrinsics", "name") if k in available]
    decode = datasets.decoder(builder, features)
    size = tuple(int(side) for side in image_size)

    def preprocess(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
        example = decode(serialized)
        outputs = dict(example)
        outputs["image"] = resize_image(example["image"], size)
        if "label" in outputs:
            outputs["label"] = tf.cast(outputs["label"][..., 0], tf.int32)
        return outputs

    records, _ = datasets.read_records(builder, split)
    if max_examples not in (None, -1):
        records = records.take(max_examples)
    examples = records.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE)
    return _as_numpy_examples(examples.prefetch(2))


def create_image_batches(data_dir: str, dataset: str, split: str, image_size: Sequence[int],
                         batch_size: int, max_examples: int | None = None
                         ) -> Iterator[np.ndarray]:
    """Batches of images of `dataset`/`split` in file order, for statistics (AdaBN).

    Yields float32 (b, H, W, 3) arrays in [0, 1] resized to `image_size` exactly as the
    evaluation stream does; every batch has `batch_size` images except possibly the last.
    Reads only the `image` feature, so unlabelled (target) datasets work. `max_examples`
    None means the whole split.
    """
    datasets.hide_gpus_from_tf()
    key = "--dataset"
    builder = datasets.checked_builder(data_dir, dataset, key, features=TARGET_FEATURES,
                                       split=split)
    if batch_size < 1:
        raise ValueError(f"batch_size: must be >= 1, got {batch_size}")
    if max_examples is not None and max_examples < 1:
        raise ValueError(f"max_examples: must be >= 1 or None, got {max_examples}")
    decode = datasets.decoder(builder, TARGET_FEATURES)
    size = tuple(int(side) for side in image_size)
    records, _ = datasets.read_records(builder, split)
    if max_examples is not None:
        records = records.take(max_examples)
    images = records.map(lambda serialized: resize_image(decode(serialized)["image"], size),
                         num_parallel_calls=tf.data.AUTOTUNE)
    return images.batch(batch_size).prefetch(2).as_numpy_iterator()


def _as_numpy_examples(dataset: tf.data.Dataset) -> Iterator[dict[str, Any]]:
    for example in dataset.as_numpy_iterator():
        if "name" in example:
            example["name"] = example["name"].decode("utf-8")
        yield example
