"""Image preprocessing of the input pipeline: resizing and the augmentations (tf ops).

`config.data.augment="monodepth2"`: colour jitter follows Monodepth2 (torchvision
`ColorJitter(brightness=(0.8, 1.2), contrast=(0.8, 1.2), saturation=(0.8, 1.2),
hue=(-0.1, 0.1))`, sampled once per example, applied with p 0.5): the four factors are drawn
uniformly and the four operations are applied in a random order (a random permutation per
example, as torchvision <= 0.7's `get_params` did), each with torchvision's formula (see
`color_jitter`).

`"strong"`: SimCLR's colour distortion (Chen et al. 2020, appendix A: `ColorJitter(0.8, 0.8,
0.8, 0.2)` with p 0.8, then grayscale with p 0.2) and Gaussian blur with p 0.5 and sigma
U(0.1, 2) px. Nothing in it imitates a particular camera or renderer. Both modes flip with
p 0.5 first.
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
JITTER_RANGES = (BRIGHTNESS_RANGE, CONTRAST_RANGE, SATURATION_RANGE, HUE_RANGE)
# SimCLR's colour distortion at strength 1: ColorJitter(0.8, 0.8, 0.8, 0.2) with p 0.8,
# grayscale with p 0.2; then Gaussian blur with p 0.5, sigma U(0.1, 2.0) px.
STRONG_JITTER_PROBABILITY = 0.8
STRONG_JITTER_RANGES = ((0.2, 1.8), (0.2, 1.8), (0.2, 1.8), (-0.2, 0.2))
GRAYSCALE_PROBABILITY = 0.2
BLUR_PROBABILITY = 0.5
BLUR_SIGMA_RANGE = (0.1, 2.0)
# Taps each side of the blur kernel: 3 sigma at the largest sigma.
BLUR_RADIUS = 6
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


def color_jitter(image: tf.Tensor, seed: tf.Tensor,
                 ranges: tuple[tuple[float, float], ...] = JITTER_RANGES) -> tf.Tensor:
    """Colour jitter with all randomness from the stateless `seed` (shape (2,)).

    Factors: brightness, contrast, saturation and hue drawn uniformly from `ranges`
    (Monodepth2's by default: U(0.8, 1.2) x 3, hue U(-0.1, 0.1)); the four operations run in
    a random order.
    """
    seeds = tf.random.experimental.stateless_split(seed, num=5)
    brightness = tf.random.stateless_uniform([], seeds[0], *ranges[0])
    contrast = tf.random.stateless_uniform([], seeds[1], *ranges[1])
    saturation = tf.random.stateless_uniform([], seeds[2], *ranges[2])
    hue = tf.random.stateless_uniform([], seeds[3], *ranges[3])
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


def gaussian_blur(image: tf.Tensor, sigma: tf.Tensor) -> tf.Tensor:
    """Separable Gaussian blur of an (H, W, 3) image, `2 * BLUR_RADIUS + 1` taps per axis,
    reflected borders; `sigma` in pixels."""
    offsets = tf.range(-BLUR_RADIUS, BLUR_RADIUS + 1, dtype=tf.float32)
    kernel = tf.exp(-0.5 * tf.square(offsets / sigma))
    kernel = kernel / tf.reduce_sum(kernel)
    channels = 3
    pad = [[0, 0], [BLUR_RADIUS, BLUR_RADIUS], [BLUR_RADIUS, BLUR_RADIUS], [0, 0]]
    x = tf.pad(image[None], pad, mode="REFLECT")
    horizontal = tf.tile(tf.reshape(kernel, (1, -1, 1, 1)), (1, 1, channels, 1))
    vertical = tf.tile(tf.reshape(kernel, (-1, 1, 1, 1)), (1, 1, channels, 1))
    x = tf.nn.depthwise_conv2d(x, horizontal, strides=[1, 1, 1, 1], padding="VALID")
    x = tf.nn.depthwise_conv2d(x, vertical, strides=[1, 1, 1, 1], padding="VALID")
    return tf.clip_by_value(x[0], 0.0, 1.0)


def strong_distortion(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """SimCLR's colour distortion and Gaussian blur (module docstring), from `seed` (2,)."""
    seeds = tf.random.experimental.stateless_split(seed, num=6)

    def draw(index: int) -> tf.Tensor:
        return tf.random.stateless_uniform([], seeds[index])

    image = tf.cond(
        draw(0) < STRONG_JITTER_PROBABILITY,
        lambda: color_jitter(image, seeds[1], STRONG_JITTER_RANGES), lambda: image,
    )
    image = tf.cond(
        draw(2) < GRAYSCALE_PROBABILITY,
        lambda: tf.tile(_grayscale(image), (1, 1, 3)), lambda: image,
    )
    sigma = tf.random.stateless_uniform([], seeds[4], *BLUR_SIGMA_RANGE)
    return tf.cond(draw(3) < BLUR_PROBABILITY, lambda: gaussian_blur(image, sigma),
                   lambda: image)


def _augmentation_seeds(augment_seed: int, index: tf.Tensor) -> tuple[tf.Tensor, ...]:
    """Stateless seeds (flip decision, jitter decision, jitter parameters) of one record."""
    seed = tf.stack([tf.constant(augment_seed, tf.int64), index])
    return tuple(tf.unstack(tf.random.experimental.stateless_split(seed, num=3)))


def flip_and_jitter(index: tf.Tensor, images: dict[str, tf.Tensor],
                     others: dict[str, tf.Tensor], augment_seed: int,
                     jittered_key: str, strength: str = "monodepth2") -> dict[str, tf.Tensor]:
    """Flips every tensor (width axis 1) together with p = 0.5, then distorts one image:
    Monodepth2's jitter (`strength="monodepth2"`) or `strong_distortion` ("strong")."""
    flip_seed, jitter_decision_seed, jitter_seed = _augmentation_seeds(augment_seed, index)
    flip = tf.random.stateless_uniform([], flip_seed) < FLIP_PROBABILITY
    outputs = {
        key: tf.cond(flip, lambda value=value: tf.reverse(value, axis=[1]),
                     lambda value=value: value)
        for key, value in {**images, **others}.items()
    }
    image = outputs[jittered_key]
    if strength == "strong":
        outputs[jittered_key] = strong_distortion(image, jitter_seed)
        return outputs
    if strength != "monodepth2":
        raise ValueError(f"augmentation strength {strength!r}: use 'monodepth2' or 'strong'")
    do_jitter = tf.random.stateless_uniform([], jitter_decision_seed) < JITTER_PROBABILITY
    outputs[jittered_key] = tf.cond(
        do_jitter, lambda: color_jitter(image, jitter_seed), lambda: image
    )
    return outputs
