"""The semantic label space of every dataset: the 19 Cityscapes train ids and the ignore label.

The names and colours come from `cityscapesscripts`, the dataset's own definition; they are
read on first use, so that the losses (which need only `IGNORE_LABEL`) import without it.
"""

from __future__ import annotations

import functools

NUM_CLASSES = 19
IGNORE_LABEL = 255


@functools.cache
def _train_labels() -> tuple:
    from cityscapesscripts.helpers.labels import labels

    return tuple(sorted((label for label in labels if 0 <= label.trainId < NUM_CLASSES),
                        key=lambda label: label.trainId))


def train_id_names() -> tuple[str, ...]:
    """The names of train ids 0..18 ("road", "sidewalk", ...)."""
    return tuple(label.name for label in _train_labels())


def train_id_colors() -> tuple[tuple[int, int, int], ...]:
    """The RGB colours of train ids 0..18, as Cityscapes draws them."""
    return tuple(tuple(label.color) for label in _train_labels())
