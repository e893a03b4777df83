"""Datasets: real Fashion-MNIST offline, the 20 real CIFAR-10 images, tfds
failing fast and clearly offline, reproducible pipelines."""

import time

import numpy as np
import pytest

from keras_hebb import data

# The labels of the first 20 CIFAR-10 test images (3 = cat, 8 = ship, ...).
CIFAR10_TEST_LABELS = [3, 8, 8, 0, 6, 6, 1, 6, 3, 1, 0, 9, 5, 7, 9, 8, 5, 7, 8, 6]


def test_fashion_mnist_loads_offline_with_the_real_counts_and_range():
    train_images, train_labels = data.load_fashion_mnist("train")
    test_images, test_labels = data.load_fashion_mnist("test")
    assert train_images.shape == (60000, 28, 28, 1)
    assert test_images.shape == (10000, 28, 28, 1)
    assert train_images.dtype == np.uint8 and train_labels.dtype == np.int64
    # Every class equally represented, as published.
    assert np.bincount(train_labels).tolist() == [6000] * 10
    assert np.bincount(test_labels).tolist() == [1000] * 10
    images, labels = data.load_arrays("fashion_mnist", "test", limit=500)
    assert images.shape == (500, 28, 28, 1) and images.dtype == np.float32
    assert images.min() == 0.0 and images.max() == 1.0
    np.testing.assert_array_equal(labels, test_labels[:500])


def test_cifar10_sample_is_the_20_real_images_with_their_labels():
    images, labels = data.load_arrays("cifar10_sample", "test")
    assert images.shape == (20, 32, 32, 3) and images.dtype == np.float32
    assert labels.tolist() == CIFAR10_TEST_LABELS
    assert 0.0 <= images.min() and images.max() <= 1.0
    # Real photographs: rich in values, not constant or synthetic.
    assert all(len(np.unique(image)) > 100 for image in images)


def test_unprepared_tfds_dataset_fails_fast_with_one_sentence(tmp_path):
    start = time.monotonic()
    with pytest.raises(data.DatasetUnavailableError) as caught:
        data.load_arrays("cifar10", "test", data_dir=str(tmp_path))
    # tfds alone retries the download for minutes before it gives up.
    assert time.monotonic() - start < 30
    message = str(caught.value)
    assert "\n" not in message and message.endswith(".")
    assert "'cifar10'" in message and str(tmp_path) in message
    assert "download_and_prepare" in message


def test_unprepared_tfds_dataset_without_downloads_fails_at_once(tmp_path):
    with pytest.raises(data.DatasetUnavailableError, match="downloads are off"):
        data.load_dataset("svhn_cropped", data_dir=str(tmp_path), download=False)


def test_unknown_dataset_and_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="name='imagenet'"):
        data.load_arrays("imagenet")
    with pytest.raises(ValueError, match="split='validation'"):
        data.load_arrays("fashion_mnist", "validation")
    with pytest.raises(ValueError, match="limit=-3"):
        data.load_arrays("fashion_mnist", "test", limit=-3)
    with pytest.raises(ValueError, match="batch_size=0"):
        data.load_dataset("cifar10_sample", "test", batch_size=0)


def _batches(dataset):
    return [(x.numpy(), y.numpy()) for x, y in dataset]


def _same(a, b):
    return len(a) == len(b) and all(
        np.array_equal(xa, xb) and np.array_equal(ya, yb)
        for (xa, ya), (xb, yb) in zip(a, b)
    )


def test_pipeline_is_batched_in_range_and_reproducible_from_the_seed():
    def make(seed):
        return data.load_dataset("fashion_mnist", "test", batch_size=64,
                                 shuffle=True, augment=True, seed=seed, limit=200)

    dataset = make(7)
    first, second = _batches(dataset), _batches(dataset)
    assert [len(y) for _, y in first] == [64, 64, 64, 8]
    x = first[0][0]
    assert x.shape == (64, 28, 28, 1) and x.dtype == np.float32
    assert 0.0 <= x.min() and x.max() <= 1.0
    # Each pass is a new epoch (new order and crops) ...
    assert not _same(first, second)
    # ... the same ones for every dataset made with that seed.
    again = make(7)
    assert _same(first, _batches(again)) and _same(second, _batches(again))
    assert not _same(first, _batches(make(8)))
    # A shuffled epoch holds every example once.
    _, labels = data.load_arrays("fashion_mnist", "test", limit=200)
    assert sorted(np.concatenate([y for _, y in first])) == sorted(labels)


def test_epochs_dataset_resumed_at_an_epoch_sees_the_same_data():
    def make(initial_epoch):
        return _batches(data.load_dataset(
            "cifar10_sample", "train", batch_size=8, shuffle=True, augment=True,
            seed=3, epochs=3, initial_epoch=initial_epoch))

    whole, resumed = make(0), make(2)
    assert len(whole) == 9 and len(resumed) == 3  # 8 + 8 + 4 per epoch
    assert _same(whole[6:], resumed)


def test_noise_augmentation_adds_seeded_unclipped_gaussian_noise():
    def make(noise_sigma, seed=5):
        return _batches(data.load_dataset(
            "fashion_mnist", "test", batch_size=100, seed=seed, limit=200,
            noise_sigma=noise_sigma, epochs=2))

    clean, noisy = make(0.0), make(0.25)
    noise = np.concatenate([n - c for (n, _), (c, _) in zip(noisy, clean)])
    assert abs(noise.mean()) < 0.005 and abs(noise.std() - 0.25) < 0.005
    assert noise.min() < -0.5 and noise.max() > 0.5  # not clipped
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(noisy, clean))
    # A fresh draw per epoch, the same draws for the same seed.
    assert not np.array_equal(noisy[0][0] - clean[0][0], noisy[2][0] - clean[2][0])
    assert _same(noisy, make(0.25)) and not _same(noisy, make(0.25, seed=6))
    with pytest.raises(ValueError, match="noise_sigma=-1"):
        data.load_dataset("cifar10_sample", "test", noise_sigma=-1)


def test_augmentation_is_a_padded_crop_and_flip_of_the_image():
    images, _ = data.load_uint8_arrays("cifar10_sample", "test", limit=1)
    image = images[0]
    spec = data.DATASETS["cifar10_sample"]
    padded = np.pad(image, [(4, 4), (4, 4), (0, 0)])
    # Every augmented version is a 32x32 window of the padded image,
    # possibly mirrored; over many seeds both flips and shifts occur.
    flips, shifts = set(), set()
    for s in range(40):
        out = data.augment_image(image, np.array([1, s]), spec).numpy()
        found = [
            (dy, dx, flip)
            for dy in range(9) for dx in range(9) for flip in (False, True)
            if np.array_equal(
                out[:, ::-1] if flip else out, padded[dy:dy + 32, dx:dx + 32])
        ]
        assert found, f"seed {s}: not a crop of the padded image"
        flips.add(found[0][2])
        shifts.add(found[0][:2])
    assert flips == {False, True} and len(shifts) > 10
    # Digits are not flipped (a mirrored 3 is not a 3).
    assert not data.DATASETS["mnist"].flip and not data.DATASETS["svhn_cropped"].flip


def test_default_dataset_of_an_image_shape_is_the_first_listed():
    assert data.default_dataset((28, 28, 1)) == "fashion_mnist"
    assert data.default_dataset([32, 32, 3]) == "cifar10"
    assert data.default_dataset((64, 64, 3)) is None
