"""Image preprocessing of the input pipeline: resizing and Monodepth2's augmentation (tf ops).

Colour jitter follows Monodepth2 (torchvision `ColorJitter(brightness=(0.8, 1.2),
contrast=(0.8, 1.2), saturation=(0.8, 1.2), hue=(-0.1, 0.1))`, sampled once per example):
the four factors are drawn uniformly and the four operations are applied in a random order
(a random permutation per example, as torchvision <= 0.7's `get_params` did), each with
torchvision's formula (see `color_jitter`).
"""

from __future__ import annotations

import tensorflow as tf

# Monodepth2's augmentation (mono_dataset.py): p = 0.5 each, ColorJitter ranges.
FLIP_PROBABILITY = 0.5
JITTER_PROBABILITY = 0.5
BRIGHTNESS_RANGE = (0.8, 1.2)
CONTRAST_RANGE = (0.8, 1.2)
SATURATION_RANGE = (0.8, 1.2)
HUE_RANGE = (-0.1, 0.1)
# torchvision's rgb_to_grayscale weights (ITU-R 601-2 luma), also tf.image.rgb_to_grayscale's.
_GRAY_WEIGHTS = (0.2989, 0.587, 0.114)

def resize_image(image: tf.Tensor, size: tuple[int, int]) -> tf.Tensor:
    """uint8 (h, w, 3) -> float32 (H, W, 3) in [0, 1], bilinear with antialiasing.

    Antialiasing only changes downsampling; when neither side shrinks the plain bilinear
    kernel gives the same values (to 1e-7) in less time, so it is used instead.
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


def flip_and_jitter(index: tf.Tensor, images: dict[str, tf.Tensor],
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
