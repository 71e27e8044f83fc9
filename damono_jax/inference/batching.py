"""The one way images reach a jitted network: fixed-size batches, the last one zero-padded.

A fixed batch shape means the network compiles once, whatever the number of images.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sequence
from typing import TypeVar

import numpy as np

T = TypeVar("T")


def batches(items: Iterable[T], batch_size: int) -> Iterator[list[T]]:
    """Consecutive lists of `batch_size` items; the last one may be shorter."""
    iterator = iter(items)
    while batch := list(itertools.islice(iterator, batch_size)):
        yield batch


def stack_padded(images: Sequence[np.ndarray], batch_size: int) -> np.ndarray:
    """float32 (batch_size, H, W, C): `images` first, zeros after them."""
    stacked = np.zeros((batch_size, *np.shape(images[0])), np.float32)
    for index, image in enumerate(images):
        stacked[index] = image
    return stacked
