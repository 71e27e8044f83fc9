"""Shared helpers for the dataset builders: clear errors and strict image readers."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from damono_jax.errors import DataError


def numbered_lines(text: str) -> list[tuple[int, str]]:
    """`(line number, line)` of a text file without its trailing blank lines.

    Files edited by hand or re-saved by tools often end with an empty line; blank lines
    elsewhere are kept, for the parser to reject with their number.
    """
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    return list(enumerate(lines, start=1))


def require_dir(path: str | os.PathLike, expected: Iterable[str] = ()) -> None:
    """Raises `DataError` if `path` is not a directory, listing what was expected there."""
    if not os.path.isdir(path):
        hint = ""
        expected = list(expected)
        if expected:
            hint = "; expected it to contain: " + ", ".join(expected)
        raise DataError(path, f"directory not found{hint}")


def _open_image(path: str | os.PathLike) -> Image.Image:
    if not os.path.isfile(path):
        raise DataError(path, "file not found")
    try:
        image = Image.open(path)
        image.load()  # forces a full decode, so truncated files fail here
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise DataError(path, f"corrupt or truncated image ({error})") from error
    return image


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """Reads an 8-bit RGB PNG/JPEG as uint8 (H, W, 3); corrupt files raise `DataError`."""
    image = _open_image(path)
    if image.mode not in ("RGB", "RGBA", "P", "L"):
        raise DataError(path, f"expected an 8-bit colour image, got PIL mode {image.mode}")
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def stored_image(path: str | os.PathLike, image: np.ndarray) -> bytes | np.ndarray:
    """What a builder stores for the RGB frame `image` read from `path`.

    An 8-bit RGB PNG or JPEG is stored byte for byte, once TensorFlow's decoder (the one the
    input pipeline uses) has decoded it to `image`'s size (and, for PNG, to `image` exactly);
    a file PIL reads but TensorFlow does not (e.g. a PNG whose end is cut) raises `DataError`.
    Other files are stored as the decoded array, which TFDS re-encodes as PNG.
    """
    with Image.open(path) as opened:
        file_format, mode = opened.format, opened.mode
    if mode != "RGB" or file_format not in ("PNG", "JPEG"):
        return image
    import tensorflow as tf

    with open(path, "rb") as handle:
        data = handle.read()
    try:
        decoded = tf.io.decode_image(data, channels=3, expand_animations=False).numpy()
    except tf.errors.InvalidArgumentError as error:
        problem = error.message.strip().splitlines()[-1]
        raise DataError(
            path, f"TensorFlow's {file_format} decoder rejects it ({problem}); the file is "
            "probably truncated"
        ) from error
    if decoded.shape != image.shape or (file_format == "PNG" and
                                        not np.array_equal(decoded, image)):
        raise DataError(path, "TensorFlow decodes it differently from PIL (corrupt file?)")
    return data


def check_same_size(path: str | os.PathLike, array: np.ndarray, image_path: str | os.PathLike,
                    image_shape: tuple[int, ...]) -> None:
    """Raises `DataError` for `path` if `array` is not the image's size (`image_shape[:2]`)."""
    if array.shape[:2] != tuple(image_shape[:2]):
        height, width = array.shape[:2]
        raise DataError(
            path,
            f"size {width}x{height} does not match the image {image_path} "
            f"({image_shape[1]}x{image_shape[0]})",
        )


def require_valid_depth(path: str | os.PathLike, depth: np.ndarray, frame: str) -> None:
    """A frame whose ground truth has no valid (> 0) pixel is an error naming it and `path`."""
    if not (depth > 0).any():
        raise DataError(path, f"frame {frame}: no valid depth pixel (every value is 0)")


def read_uint16(path: str | os.PathLike) -> np.ndarray:
    """Reads a 16-bit single-channel PNG exactly as uint16 (H, W)."""
    image = _open_image(path)
    if image.mode not in ("I;16", "I;16B", "I;16L", "I"):
        raise DataError(path, f"expected a 16-bit grayscale PNG, got PIL mode {image.mode}")
    array = np.asarray(image)
    if array.dtype != np.uint16:
        if array.min() < 0 or array.max() > 65535:
            raise DataError(path, "16-bit PNG holds values outside 0..65535")
        array = array.astype(np.uint16)
    return array


def read_uint8_gray(path: str | os.PathLike, *, palette: bool = False) -> np.ndarray:
    """Reads an 8-bit single-channel PNG (e.g. Cityscapes labelIds) as uint8 (H, W).

    With `palette`, a palette PNG (mode P) is read as its indices too (label tools save them).
    """
    image = _open_image(path)
    modes = ("L", "P") if palette else ("L",)
    if image.mode not in modes:
        raise DataError(path, f"expected an 8-bit single-channel PNG (mode "
                              f"{' or '.join(modes)}), got {image.mode}")
    return np.asarray(image, dtype=np.uint8)


def require_subdirs(root: str | os.PathLike, expected: Mapping[str, str]) -> None:
    """Raises `DataError` for `root` naming every missing subfolder of `expected`.

    `expected` maps a subfolder name to what it should hold; the message lists all of them,
    e.g. `missing subfolder(s) disparity; expected in this folder: leftImg8bit/ holding ...`.
    """
    require_dir(root, [f"{name}/ ({what})" for name, what in expected.items()])
    missing = [name for name in expected if not os.path.isdir(os.path.join(root, name))]
    if missing:
        listing = "; ".join(f"{name}/ holding {what}" for name, what in expected.items())
        raise DataError(
            root,
            f"missing subfolder(s) {', '.join(missing)}; expected in this folder: {listing}",
        )


def manual_dir_of(dl_manager: Any, expected: Mapping[str, str]) -> str:
    """`dl_manager.manual_dir` as a str; a missing or empty one raises `DataError`.

    tfds raises a bare AssertionError there and keeps the configured folder only in the
    private `_manual_dir` attribute, which is read to name the folder in the error.
    """
    try:
        return os.fspath(dl_manager.manual_dir)
    except AssertionError as error:
        folder = os.fspath(dl_manager._manual_dir)
        listing = "; ".join(f"{name}/ holding {what}" for name, what in expected.items())
        raise DataError(
            folder, f"manual_dir does not exist or is empty; expected in it: {listing}"
        ) from error
