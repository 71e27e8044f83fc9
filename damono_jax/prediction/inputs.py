"""What prediction reads: the input list of `--input` and the images themselves (video
frames: `video`)."""

from __future__ import annotations

import glob
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from damono_jax.errors import PredictError
from damono_jax.video import VIDEO_EXTENSIONS

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".tif", ".tiff", ".webp")


def list_inputs(pattern: str) -> list[Path]:
    """Expands an image or video path, a folder (its images and videos, sorted, not
    recursive) or a glob."""
    path = Path(pattern)
    if path.is_file():
        return [path]
    if path.is_dir():
        known = IMAGE_EXTENSIONS + VIDEO_EXTENSIONS
        found = sorted(p for p in path.iterdir() if p.suffix.lower() in known)
        if not found:
            raise PredictError(f"{path}: folder has no images or videos ({', '.join(known)})")
        return found
    matches = sorted(Path(p) for p in glob.glob(pattern) if Path(p).is_file())
    if not matches:
        raise PredictError(f"--input={pattern}: no such file or folder, and the glob matches "
                           "no files")
    return matches


# PIL modes read as they are (8-bit), and 16-bit grayscale modes scaled to 8 bits.
_EIGHT_BIT_MODES = ("RGB", "RGBA", "RGBX", "L", "LA", "P", "PA", "CMYK", "YCbCr", "1")
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N")


def read_image(path: Path) -> np.ndarray:
    """Reads an image file as uint8 RGB (H, W, 3); errors name the file.

    8-bit colour, grayscale, palette and RGBA images are converted to RGB (alpha dropped);
    16-bit grayscale is scaled to 8 bits (`round(v / 257)`, so 65535 -> 255), not clipped.
    Other modes (32-bit integer or float) are refused.
    """
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode in _SIXTEEN_BIT_MODES:
                gray = np.asarray(image).astype(np.float64)
                gray8 = np.round(gray / 257.0).astype(np.uint8)
                return np.repeat(gray8[..., None], 3, axis=-1)
            if image.mode not in _EIGHT_BIT_MODES:
                raise PredictError(
                    f"{path}: unsupported image mode {image.mode!r} (expected 8-bit RGB, RGBA, "
                    "grayscale or palette, or 16-bit grayscale)"
                )
            return np.asarray(image.convert("RGB"), dtype=np.uint8)
    except PredictError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
        raise PredictError(f"{path}: cannot read image: {error}") from error
