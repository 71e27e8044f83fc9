"""damono_jax.inference.batching: fixed-size batches, the last one zero-padded."""

import numpy as np

from damono_jax.inference import batching


def test_batches_and_padding():
    assert list(batching.batches(range(5), 2)) == [[0, 1], [2, 3], [4]]
    assert list(batching.batches([], 3)) == []
    images = [np.full((2, 3, 1), value, np.uint8) for value in (1, 2)]
    stacked = batching.stack_padded(images, 4)
    assert stacked.shape == (4, 2, 3, 1) and stacked.dtype == np.float32
    np.testing.assert_array_equal(stacked[:, 0, 0, 0], [1.0, 2.0, 0.0, 0.0])
