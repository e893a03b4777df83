"""Gaussian-noise training: the share of each batch that gets noise."""

import numpy as np
import pytest

from keras_hebb import data


def _batches(dataset):
    return [(x.numpy(), y.numpy()) for x, y in dataset]


def make(noise_sigma, noise_fraction=1.0, batch_size=16):
    images, labels = data.load_uint8_arrays("fashion_mnist", "test", 40)
    return _batches(data.make_dataset(
        images, labels, "fashion_mnist", batch_size=batch_size, shuffle=True,
        seed=3, epochs=2, noise_sigma=noise_sigma, noise_fraction=noise_fraction))


def test_noise_fraction_noises_that_share_of_every_batch_with_the_same_draws():
    clean, mixed, noisy = make(0.0), make(0.25, 0.5), make(0.25)
    counts = []
    for (c, _), (m, _), (n, _) in zip(clean, mixed, noisy):
        changed = np.abs(m - c).reshape(len(c), -1).max(axis=1) > 1e-6
        counts.append(int(changed.sum()))
        # Noisy examples carry the noise_fraction=1 draw; the others are clean.
        np.testing.assert_array_equal(m[changed], n[changed])
        np.testing.assert_array_equal(m[~changed], c[~changed])
    # Batches of 16, 16, 8 in each of the two epochs: half of each.
    assert counts == [8, 8, 4, 8, 8, 4]
    # The noisy half is a random subset (the epoch's shuffled order).
    first_labels = [y[:8].tolist() for _, y in mixed[:2]]
    assert first_labels != [y[:8].tolist() for _, y in mixed[3:5]]


def test_noise_fraction_rounds_to_whole_examples_and_rejects_bad_values():
    counts = [int((np.abs(m - c).reshape(len(c), -1).max(axis=1) > 1e-6).sum())
              for (c, _), (m, _) in zip(make(0.0, batch_size=10), make(0.3, 0.25, 10))]
    assert counts == [3, 3, 3, 3] * 2  # 0.25 * 10 = 2.5, rounded half up
    with pytest.raises(ValueError, match="noise_fraction=0"):
        make(0.25, 0)
    with pytest.raises(ValueError, match="noise_fraction=1.5"):
        make(0.25, 1.5)
