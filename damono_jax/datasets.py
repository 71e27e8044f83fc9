"""The built TFDS datasets: loading them with clear errors, their records, stored cameras."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from absl import logging


def hide_gpus_from_tf() -> None:
    """Keeps TF off the accelerators (JAX owns their memory); a no-op once TF has initialised."""
    try:
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError:
        pass  # TF's devices are already initialised; with tensorflow-cpu there is no GPU


def _build_command(name: str, data_dir: str, builder_cls: type) -> str:
    needs_manual_dir = getattr(builder_cls, "MANUAL_DOWNLOAD_INSTRUCTIONS", None)
    manual = " --manual_dir=SRC" if needs_manual_dir else ""
    return f"python -m data_prep.build {name} --data_dir={data_dir}{manual}"


def load_builder(data_dir: str | None, name: str, key: str) -> tfds.core.DatasetBuilder:
    """The built TFDS dataset `name` ("name" or "name/config") in `data_dir`.

    `key` says where the name came from (`config.data.source`, `--dataset`) in the errors:
    `ValueError` if `data_dir` is unset or the name is unknown, `FileNotFoundError` (naming
    the path and the build command) if the dataset is not built there.
    """
    import data_prep  # noqa: F401  (registers the project's builders)

    if not data_dir:
        raise ValueError(
            "config.data.data_dir is not set: pass --config.data.data_dir=DIR, the TFDS "
            "data_dir the datasets were built into (python -m data_prep.build NAME "
            "--data_dir=DIR)"
        )
    try:
        builder = tfds.builder(name, data_dir=os.fspath(data_dir))
    except (tfds.core.registered.DatasetNotFoundError, ValueError) as error:
        raise ValueError(f"{key}: cannot load dataset {name!r}: {error}") from error
    if not builder.is_prepared():
        raise FileNotFoundError(
            f"{key}: dataset {name!r} is not built in {data_dir} (no "
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
            f"{key}: dataset {name!r} at {builder.data_dir} lacks feature(s) "
            f"{missing} needed here; it has {available}"
        )


def _check_split(builder: tfds.core.DatasetBuilder, key: str, name: str, split: str) -> None:
    if split not in builder.info.splits:
        raise ValueError(
            f"{key}: dataset {name!r} at {builder.data_dir} has no split "
            f"{split!r}; it has {sorted(builder.info.splits.keys())}"
        )
    if builder.info.splits[split].num_examples == 0:
        raise ValueError(f"{key}: split {split!r} of dataset {name!r} is empty")


def checked_builder(data_dir: str | None, name: str, key: str, *, features: Sequence[str],
                    split: str) -> tfds.core.DatasetBuilder:
    """`load_builder`, then the `features` a reader needs and a non-empty `split` (errors name
    `key`)."""
    builder = load_builder(data_dir, name, key)
    _check_features(builder, key, name, features)
    _check_split(builder, key, name, split)
    return builder


def read_records(builder: tfds.core.DatasetBuilder, split: str) -> tuple[tf.data.Dataset, int]:
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


def decoder(builder: tfds.core.DatasetBuilder, features: Sequence[str]):
    """A function serialized record -> dict of the decoded `features` only."""
    subset = tfds.features.FeaturesDict({name: builder.info.features[name] for name in features})
    return subset.deserialize_example


def focal_x_normalized(data_dir: str, dataset: str, split: str, *, key: str,
                       max_examples: int = 64) -> float:
    """The camera's fx / image width from the stored `intrinsics` of `dataset`'s `split`.

    The median over the first `max_examples` examples (a split mixing cameras logs their
    range). `export` records it, so that `predict --focal` can rescale depth for any source.
    """
    hide_gpus_from_tf()
    builder = checked_builder(data_dir, dataset, key, features=("image", "intrinsics"),
                              split=split)
    decode = decoder(builder, ("image", "intrinsics"))
    records, _ = read_records(builder, split)

    def fx_over_width(serialized: tf.Tensor) -> tf.Tensor:
        example = decode(serialized)
        return example["intrinsics"][0] / tf.cast(tf.shape(example["image"])[1], tf.float32)

    ratios = records.take(max_examples).map(fx_over_width)
    values = np.fromiter(ratios.as_numpy_iterator(), np.float64)
    if values.min() <= 0 or not np.isfinite(values).all():
        raise ValueError(f"{key}: dataset {dataset!r} stores a non-positive or non-finite fx")
    if values.max() > 1.01 * values.min():
        logging.warning("%s: fx / width of %s/%s ranges over [%.4f, %.4f]; exporting the "
                        "median", key, dataset, split, values.min(), values.max())
    return float(np.median(values))
