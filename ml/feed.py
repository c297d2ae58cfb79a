"""Feed `model.fit`, `evaluate` and `predict` from the memory-mapped image cache, one batch at a time.

Only the rows of the batch in hand are copied out of the memmap, so a training process needs no
more memory for 60,000 images than for 2,000 (beyond the page cache of the file).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf


def batches(
    images: np.ndarray,
    labels: np.ndarray,
    indices: np.ndarray,
    *,
    batch_size: int,
    shuffle: bool,
    seed: int,
) -> tf.data.Dataset:
    """(uint8 images, int32 labels) batches of the rows `indices` of `images` (a memmap).

    With `shuffle` the rows are reshuffled every epoch, the same way for the same seed; without it
    they come in the order of `indices`.
    """
    if images.ndim != 4 or images.dtype != np.uint8:
        raise ValueError(
            f"images must be uint8 of shape (N, height, width, channels), not {images.dtype} {images.shape}"
        )
    if len(labels) != len(images):
        raise ValueError(f"images and labels differ in length ({len(images)} and {len(labels)})")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, not {batch_size}")
    indices = np.asarray(indices, dtype=np.int64).reshape(-1)
    if len(indices) and (indices.min() < 0 or indices.max() >= len(images)):
        raise ValueError(f"indices must lie between 0 and {len(images) - 1}")
    labels = np.asarray(labels, dtype=np.int32)

    def gather(batch_indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if shuffle:
            # The order within a shuffled batch does not matter; reading rows in file order does.
            batch_indices = np.sort(batch_indices)
        return images[batch_indices], labels[batch_indices]

    def load(batch_indices: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        batch_images, batch_labels = tf.numpy_function(gather, [batch_indices], [tf.uint8, tf.int32], stateful=False)
        batch_images = tf.ensure_shape(batch_images, (None, *images.shape[1:]))
        batch_labels = tf.ensure_shape(batch_labels, (None,))
        return batch_images, batch_labels

    dataset = tf.data.Dataset.from_tensor_slices(indices)
    if shuffle:
        dataset = dataset.shuffle(max(1, len(indices)), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size)
    dataset = dataset.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.prefetch(tf.data.AUTOTUNE)
