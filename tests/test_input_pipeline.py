"""Tests of damono_jax.input_pipeline on a tiny synthetic_driving build (6 frames a split)."""

from __future__ import annotations

import itertools
import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import data_prep  # noqa: F401  (registers the builders)
from configs import default
from damono_jax import config_utils, input_pipeline
from data_prep.synthetic_driving import render

NUM_EXAMPLES = 6  # per split
NATIVE = (96, 320)
SIZE = (32, 96)
TRAIN_IDS = {0, 1, 2, 5, 8, 9, 10, 13}


class PipelineTestImagesOnly(tfds.core.GeneratorBasedBuilder):
    """A dataset with images but neither depth nor labels (for the missing-feature error)."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(None, None, 3), dtype=np.uint8),
            }),
        )

    def _split_generators(self, dl_manager):
        del dl_manager
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        for index in range(2):
            yield index, {"image": np.full((8, 16, 3), index, dtype=np.uint8)}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> str:
    """synthetic_driving source and target with 6 examples per split, built once."""
    path = os.fspath(tmp_path_factory.mktemp("tfds"))
    download_config = tfds.download.DownloadConfig(max_examples_per_split=NUM_EXAMPLES)
    for name in ("synthetic_driving/source", "synthetic_driving/target",
                 "pipeline_test_images_only"):
        tfds.builder(name, data_dir=path).download_and_prepare(download_config=download_config)
    return path


def make_config(data_dir: str | None, **data_overrides):
    config = default.get_config()
    config.data.data_dir = data_dir
    config.data.source = "synthetic_driving/source"
    config.data.target = "synthetic_driving/target"
    config.data.eval = "synthetic_driving/target"
    config.data.eval_split = "test"
    config.data.image_size = SIZE
    config.data.shuffle_buffer = NUM_EXAMPLES
    config.data.prefetch = 1
    config.batch_size = 2
    for key, value in data_overrides.items():
        config.data[key] = value
    return config


def train_iterator(config, start_step: int = 0, **process):
    """`create_train_iterator` with the arguments the training loop passes."""
    return input_pipeline.create_train_iterator(
        config.data, batch_size=config.batch_size, seed=config.seed,
        use_target_images=config_utils.uses_target_images(config), start_step=start_step,
        **process,
    )


def eval_examples(config, split=None, max_examples=None):
    """`create_eval_dataset` with the arguments the training loop passes."""
    data = config.data
    return input_pipeline.create_eval_dataset(
        data.data_dir, data.eval, split or data.eval_split, data.image_size, max_examples
    )


def take(iterator, count: int) -> list[dict[str, np.ndarray]]:
    return list(itertools.islice(iterator, count))


def assert_batches_equal(first, second):
    assert len(first) == len(second)
    for a, b in zip(first, second, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def numpy_nearest(values: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Independent nearest resize with half-pixel centres (TF2's convention)."""
    rows = np.minimum(((np.arange(size[0]) + 0.5) * values.shape[0] / size[0]).astype(int),
                      values.shape[0] - 1)
    cols = np.minimum(((np.arange(size[1]) + 0.5) * values.shape[1] / size[1]).astype(int),
                      values.shape[1] - 1)
    return values[rows][:, cols]


def test_train_batches_shapes_dtypes_ranges(data_dir):
    batches = take(train_iterator(make_config(data_dir)), 4)
    expected = {
        "source_image": ((2, *SIZE, 3), np.float32),
        "source_image_clean": ((2, *SIZE, 3), np.float32),
        "source_depth": ((2, *SIZE), np.float32),
        "source_label": ((2, *SIZE), np.int32),
        "target_image": ((2, *SIZE, 3), np.float32),
    }
    for batch in batches:
        assert {key: (value.shape, value.dtype) for key, value in batch.items()} == expected
        for key in ("source_image", "source_image_clean", "target_image"):
            assert 0.0 <= batch[key].min() and batch[key].max() <= 1.0
        assert batch["source_depth"].min() >= 0.0
        assert 0.0 < batch["source_depth"].max() < 1000.0
        assert set(np.unique(batch["source_label"]).tolist()) <= TRAIN_IDS
        # Depth is invalid (0) exactly on sky pixels, even after nearest resizing.
        np.testing.assert_array_equal(batch["source_depth"] == 0, batch["source_label"] == 10)


def test_variants_without_domain_classifier_have_no_target_stream(data_dir):
    config = make_config(data_dir)
    config.variant = "seg"
    batch = next(train_iterator(config))
    assert "target_image" not in batch
    assert set(batch) == {"source_image", "source_image_clean", "source_depth", "source_label"}


def test_unaugmented_stream_is_resized_dataset(data_dir):
    """Without augmentation every example is the stored frame resized, clean == image."""
    config = make_config(data_dir, augment="none")
    references = [render.render_example("source", 0, "train", index, *NATIVE)
                  for index in range(NUM_EXAMPLES)]
    expected_depths = [numpy_nearest(ref["depth"], SIZE) for ref in references]
    seen = []
    for batch in take(train_iterator(config), NUM_EXAMPLES // 2):
        np.testing.assert_array_equal(batch["source_image"], batch["source_image_clean"])
        for depth, label, image in zip(batch["source_depth"], batch["source_label"],
                                       batch["source_image"], strict=True):
            matches = [i for i, ref in enumerate(expected_depths) if np.array_equal(ref, depth)]
            assert len(matches) == 1
            index = matches[0]
            seen.append(index)
            np.testing.assert_array_equal(
                label, numpy_nearest(references[index]["label"][..., 0], SIZE)
            )
            reference_image = tf.image.resize(
                references[index]["image"].astype(np.float32) / 255.0, SIZE,
                method="bilinear", antialias=True,
            ).numpy()
            np.testing.assert_allclose(image, reference_image, atol=1e-6)
    # One epoch of 6 examples in 3 batches of 2: a permutation of the split.
    assert sorted(seen) == list(range(NUM_EXAMPLES))


def test_flip_is_shared_by_image_depth_and_labels(data_dir):
    plain = take(train_iterator(make_config(data_dir, augment="none")), 6)
    augmented = take(train_iterator(make_config(data_dir)), 6)
    flipped_count = jittered_count = 0
    for batch_plain, batch_aug in zip(plain, augmented, strict=True):
        for k in range(2):
            plain_example = {key: value[k] for key, value in batch_plain.items()}
            aug_example = {key: value[k] for key, value in batch_aug.items()}
            flipped = not np.array_equal(aug_example["source_depth"],
                                         plain_example["source_depth"])
            transform = (lambda x: x[:, ::-1]) if flipped else (lambda x: x)
            for key in ("source_depth", "source_label", "source_image_clean"):
                np.testing.assert_array_equal(aug_example[key], transform(plain_example[key]),
                                              err_msg=key)
            flipped_count += flipped
            jitter = not np.array_equal(aug_example["source_image"],
                                        aug_example["source_image_clean"])
            jittered_count += jitter
            if not jitter:
                np.testing.assert_array_equal(aug_example["source_image"],
                                              transform(plain_example["source_image"]))
    # p = 0.5 each over 12 examples; the seed is fixed, so these counts are too.
    assert 0 < flipped_count < 12
    assert 0 < jittered_count < 12


def test_stream_is_deterministic_and_resumable(data_dir):
    config = make_config(data_dir)
    reference = take(train_iterator(config), 7)
    assert_batches_equal(reference, take(train_iterator(config), 7))
    # 3 steps per epoch: step 4 resumes inside the second epoch, step 6 at the third.
    for start_step in (4, 6):
        resumed = take(train_iterator(config, start_step),
                       7 - start_step)
        assert_batches_equal(reference[start_step:], resumed)
    # Epochs are reshuffled and the two streams are shuffled independently.
    first_epoch = np.concatenate([b["source_depth"] for b in reference[:3]])
    second_epoch = np.concatenate([b["source_depth"] for b in reference[3:6]])
    assert not np.array_equal(first_epoch, second_epoch)
    other_seed = make_config(data_dir)
    other_seed.seed = 1
    assert not np.array_equal(
        next(train_iterator(other_seed))["source_depth"],
        reference[0]["source_depth"],
    )


def test_cache_gives_the_same_stream(data_dir):
    reference = take(train_iterator(make_config(data_dir)), 4)
    cached = take(train_iterator(make_config(data_dir, cache=True)), 4)
    assert_batches_equal(reference, cached)


def test_processes_read_disjoint_halves(data_dir):
    config = make_config(data_dir, augment="none")
    config.batch_size = 4
    depths = []
    for process_index in range(2):
        batches = take(train_iterator(
            config, process_index=process_index, process_count=2), 3)
        assert batches[0]["source_depth"].shape == (2, *SIZE)
        epoch = np.concatenate([b["source_depth"] for b in batches[:3]])
        unique = {depth.tobytes() for depth in epoch}
        assert len(unique) == NUM_EXAMPLES // 2  # 3 examples per process, each epoch
        depths.append(unique)
    assert not depths[0] & depths[1]


def test_eval_dataset_yields_full_resolution_ground_truth(data_dir):
    examples = list(eval_examples(make_config(data_dir)))
    assert sorted(example["name"] for example in examples) == [
        f"test_{i:06d}" for i in range(NUM_EXAMPLES)
    ]
    for example in examples:
        index = int(example["name"].split("_")[1])
        reference = render.render_example("target", 0, "test", index, *NATIVE)
        assert example["image"].shape == (*SIZE, 3) and example["image"].dtype == np.float32
        assert example["depth"].shape == NATIVE and example["depth"].dtype == np.float32
        np.testing.assert_array_equal(example["depth"], reference["depth"])
        np.testing.assert_array_equal(example["label"], reference["label"][..., 0])
        np.testing.assert_array_equal(example["intrinsics"], reference["intrinsics"])
    limited = list(eval_examples(make_config(data_dir), split="val", max_examples=2))
    assert len(limited) == 2 and all(e["name"].startswith("val_") for e in limited)


def test_errors_name_the_problem(data_dir, tmp_path):
    with pytest.raises(ValueError, match="config.data.data_dir is not set"):
        train_iterator(make_config(None))
    empty = os.fspath(tmp_path / "empty")
    with pytest.raises(FileNotFoundError) as error:
        train_iterator(make_config(empty))
    message = str(error.value)
    assert "'synthetic_driving/source' is not built in " + empty in message
    assert os.path.join(empty, "synthetic_driving", "source", "1.1.0") in message
    assert f"python -m data_prep.build synthetic_driving/source --data_dir={empty}" in message
    with pytest.raises(ValueError, match="config.batch_size: 3 is not a positive multiple of "
                                         "the process count 2"):
        config = make_config(data_dir)
        config.batch_size = 3
        train_iterator(config, process_index=0, process_count=2)
    with pytest.raises(ValueError, match=r"config.data.source: dataset "
                                         r"'pipeline_test_images_only' at .* lacks feature\(s\) "
                                         r"\['depth', 'label'\]"):
        train_iterator(make_config(data_dir,
                                                         source="pipeline_test_images_only"))
    with pytest.raises(ValueError, match=r"config.data.target: .* has no split 'training'; "
                                         r"it has \['test', 'train', 'val'\]"):
        train_iterator(make_config(data_dir, target_split="training"))
    with pytest.raises(ValueError, match="config.data.eval: cannot load dataset 'no_such_set'"):
        list(eval_examples(make_config(data_dir, eval="no_such_set")))
