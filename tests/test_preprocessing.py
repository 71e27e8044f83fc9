"""damono_jax.preprocessing: the colour ops against torchvision's formulas, the resize."""

import colorsys

import numpy as np
import pytest
import tensorflow as tf

from damono_jax import preprocessing


def _reference_gray(image: np.ndarray) -> np.ndarray:
    return image @ np.array([0.2989, 0.587, 0.114])


def test_colour_ops_match_torchvision_formulas():
    image = np.random.default_rng(0).random((5, 7, 3)).astype(np.float32)
    gray = _reference_gray(image.astype(np.float64))
    tensor = tf.constant(image)
    np.testing.assert_allclose(preprocessing.adjust_brightness(tensor, 1.15).numpy(),
                               np.clip(image * 1.15, 0, 1), atol=1e-6)
    np.testing.assert_allclose(preprocessing.adjust_contrast(tensor, 0.85).numpy(),
                               np.clip(0.85 * image + 0.15 * gray.mean(), 0, 1), atol=1e-6)
    np.testing.assert_allclose(preprocessing.adjust_saturation(tensor, 1.2).numpy(),
                               np.clip(1.2 * image - 0.2 * gray[..., None], 0, 1), atol=1e-6)
    expected_hue = np.array([
        colorsys.hsv_to_rgb((h + 0.07) % 1.0, s, v)
        for h, s, v in (colorsys.rgb_to_hsv(*pixel) for pixel in image.reshape(-1, 3))
    ]).reshape(image.shape)
    np.testing.assert_allclose(preprocessing.adjust_hue(tensor, 0.07).numpy(), expected_hue,
                               atol=1e-5)


def test_colour_jitter_is_seeded_and_bounded():
    image = tf.constant(np.random.default_rng(1).random((6, 8, 3)).astype(np.float32))
    seed = tf.constant([3, 4], tf.int64)
    first = preprocessing.color_jitter(image, seed).numpy()
    np.testing.assert_array_equal(first, preprocessing.color_jitter(image, seed).numpy())
    assert 0.0 <= first.min() and first.max() <= 1.0
    assert not np.allclose(first, image.numpy())
    other = preprocessing.color_jitter(image, tf.constant([3, 5], tf.int64)).numpy()
    assert not np.array_equal(first, other)


def test_gaussian_blur_is_the_normalised_kernel_and_keeps_flat_images():
    delta = np.zeros((21, 21, 3), np.float32)
    delta[10, 10] = 1.0
    blurred = preprocessing.gaussian_blur(tf.constant(delta), tf.constant(1.5)).numpy()
    taps = np.exp(-0.5 * (np.arange(-6, 7) / 1.5) ** 2)
    taps /= taps.sum()
    np.testing.assert_allclose(blurred[4:17, 4:17, 0], np.outer(taps, taps), atol=1e-6)
    flat = np.full((9, 12, 3), 0.4, np.float32)
    np.testing.assert_allclose(preprocessing.gaussian_blur(tf.constant(flat),
                                                           tf.constant(2.0)).numpy(), flat,
                               atol=1e-6)


def test_strong_distortion_rates_over_many_seeds():
    """Grayscale p 0.2 (channels equal), jitter p 0.8 and blur p 0.5 change the image."""
    rng = np.random.default_rng(2)
    image = tf.constant(rng.random((8, 8, 3)).astype(np.float32))
    outputs = [preprocessing.strong_distortion(image, tf.constant([7, k], tf.int64)).numpy()
               for k in range(300)]
    gray = np.mean([np.allclose(o[..., 0], o[..., 1], atol=1e-5)
                    and np.allclose(o[..., 1], o[..., 2], atol=1e-5) for o in outputs])
    unchanged = np.mean([np.allclose(o, image.numpy(), atol=1e-6) for o in outputs])
    # Binomial(300, p): 4 standard deviations around 0.2 and 0.2 * 0.8 * 0.5 = 0.08.
    assert abs(gray - 0.2) < 4 * np.sqrt(0.2 * 0.8 / 300), gray
    assert abs(unchanged - 0.08) < 4 * np.sqrt(0.08 * 0.92 / 300), unchanged
    assert all(0.0 <= o.min() and o.max() <= 1.0 for o in outputs)
    np.testing.assert_array_equal(
        outputs[5], preprocessing.strong_distortion(image, tf.constant([7, 5], tf.int64)).numpy())


@pytest.mark.parametrize("size", [(192, 640), (48, 160), (96, 160)])
def test_resize_image_is_antialiased_bilinear(size):
    image = np.random.default_rng(2).integers(0, 256, (96, 320, 3)).astype(np.uint8)
    reference = tf.image.resize(image.astype(np.float32) / 255.0, size, method="bilinear",
                                antialias=True).numpy()
    resized = preprocessing.resize_image(tf.constant(image), size).numpy()
    assert resized.shape == (*size, 3) and resized.dtype == np.float32
    np.testing.assert_allclose(resized, np.clip(reference, 0.0, 1.0), atol=1e-6)
