"""`tf.data` pipelines: the paper's augmentation, shuffling by (seed,
epoch), batching, prefetching."""

import numpy as np

from keras_hebb import _backends
from keras_hebb.data.arrays import load_uint8_arrays
from keras_hebb.data.specs import dataset_spec


def augment_image(image, seed, spec):
    """The paper's augmentation of one uint8 HWC image, from a seed.

    Random crop after zero padding by `spec.crop_padding` pixels, then a
    random horizontal flip if `spec.flip`. `seed` is a stateless seed
    (shape `(2,)` int), so the result is a function of image and seed.
    """
    tf = _backends.import_tensorflow("keras_hebb.data.augment_image")

    pad = spec.crop_padding
    crop_seed, flip_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, num=2)
    )
    if pad:
        padded = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]])
        image = tf.image.stateless_random_crop(padded, spec.shape, seed=crop_seed)
    if spec.flip:
        image = tf.image.stateless_random_flip_left_right(image, seed=flip_seed)
    return image


def load_dataset(
    name,
    split="train",
    batch_size=128,
    shuffle=False,
    augment=False,
    seed=None,
    data_dir=None,
    limit=None,
    drop_remainder=False,
    download=True,
    epochs=None,
    initial_epoch=0,
    noise_sigma=0.0,
    noise_fraction=1.0,
):
    """A batched `tf.data.Dataset` of `(images float32 [0, 1] NHWC, labels)`.

    The order of the examples and the augmentation of each one in an epoch
    are a function of `(seed, epoch)` alone. By default the dataset is one
    epoch long and each pass over it (each `fit` epoch) is the next epoch
    of a seeded sequence. With `epochs`, it holds epochs `initial_epoch`,
    ..., `epochs - 1` back to back (use it with `fit(steps_per_epoch=...)`):
    a run resumed at epoch `initial_epoch` then sees exactly the data an
    uninterrupted run would have seen. Batches never straddle two epochs.

    Example:

    >>> train = load_dataset("fashion_mnist", "train", batch_size=128,
    ...                      shuffle=True, augment=True, seed=2022)
    >>> images, labels = next(iter(train))   # (128, 28, 28, 1), (128,)

    Args:
        name: one of `DATASETS`.
        split: `"train"` or `"test"` (tfds datasets accept any tfds split).
            Defaults to `"train"`.
        batch_size: examples per batch. Defaults to `128`.
        shuffle: shuffle the examples every epoch. Defaults to `False`.
        augment: random crop with zero padding, and horizontal flip where
            it keeps the label (see `DATASETS`). Defaults to `False`.
        seed: int seed of shuffling and augmentation; `None` picks one at
            random. Defaults to `None`.
        data_dir: tfds data directory. Defaults to tfds's default.
        limit: use only the first `limit` examples. Defaults to `None`.
        drop_remainder: drop a last, smaller batch of each epoch.
            Defaults to `False`.
        download: whether a missing tfds dataset may be downloaded.
            Defaults to `True`.
        epochs: if given, the dataset holds the epochs `initial_epoch` to
            `epochs - 1`. Defaults to `None` (one epoch per pass).
        initial_epoch: first epoch when `epochs` is given. Defaults to `0`.
        noise_sigma: standard deviation of Gaussian noise added to every
            image (pixels in [0, 1]), a fresh draw per example and epoch,
            seeded like the augmentation and not clipped: Gaussian data
            augmentation, as Cohen et al. (2019) train the base classifiers
            of randomized smoothing (`keras_hebb.robustness.smoothing`
            adds its noise unclipped too). Defaults to `0.0` (none).
        noise_fraction: the share of each batch that gets the noise: the
            first `round(noise_fraction * batch)` examples of a batch (in
            the epoch's shuffled order, so a random subset), the others
            stay clean; a noisy example carries the same draw as with
            `noise_fraction=1`. `0.5` keeps batch-norm statistics and the
            clean accuracy close to clean training (Rusak et al. 2020
            train on 50% noisy batches for that reason). Defaults to `1.0`
            (every image, as Cohen et al.).

    Raises:
        ValueError: unknown dataset or bad argument.
        DatasetUnavailableError, FileNotFoundError: the data is not here
            and cannot be fetched; the message says how to get it.
    """
    images, labels = load_uint8_arrays(name, split, limit, data_dir, download)
    return make_dataset(
        images, labels, name, batch_size=batch_size, shuffle=shuffle,
        augment=augment, seed=seed, drop_remainder=drop_remainder,
        epochs=epochs, initial_epoch=initial_epoch, noise_sigma=noise_sigma,
        noise_fraction=noise_fraction,
    )


def make_dataset(
    images,
    labels,
    name,
    batch_size=128,
    shuffle=False,
    augment=False,
    seed=None,
    drop_remainder=False,
    epochs=None,
    initial_epoch=0,
    noise_sigma=0.0,
    noise_fraction=1.0,
):
    """The pipeline of `load_dataset` over arrays from `load_uint8_arrays`.

    Args:
        images: uint8 NHWC images.
        labels: int labels.
        name: the dataset's name in `DATASETS` (for its augmentation).
        Others: as for `load_dataset`.
    """
    tf = _backends.import_tensorflow("keras_hebb.data.make_dataset (a tf.data pipeline)")

    spec = dataset_spec(name)
    _check_pipeline_arguments(batch_size, initial_epoch, epochs, noise_sigma,
                              noise_fraction)
    if seed is None:
        seed = int(np.random.SeedSequence().generate_state(1)[0] >> 1)
    count = len(labels)
    # Images stay uint8 until batches are formed (4x less memory); each
    # epoch gathers them in a permutation drawn from (seed, epoch).
    one_epoch = _epoch_pipeline(
        tf.constant(images), tf.constant(labels), tf.constant(seed, tf.int64), spec,
        batch_size, shuffle, augment, drop_remainder, noise_sigma, noise_fraction)
    dataset = _epoch_numbers(seed, epochs, initial_epoch).flat_map(one_epoch)
    # flat_map hides the length; Keras needs it to end validation cleanly.
    per_epoch = steps_per_epoch(count, batch_size, drop_remainder)
    passes = 1 if epochs is None else epochs - initial_epoch
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(per_epoch * passes))
    if noise_sigma == 0:  # else the examples are float already
        dataset = dataset.map(
            lambda x, y: (tf.cast(x, tf.float32) / 255.0, y),
            num_parallel_calls=tf.data.AUTOTUNE, deterministic=True,
        )
    return dataset.prefetch(tf.data.AUTOTUNE)


def _check_pipeline_arguments(batch_size, initial_epoch, epochs, noise_sigma,
                              noise_fraction):
    for key, value, low in (("batch_size", batch_size, 1),
                            ("initial_epoch", initial_epoch, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(
                f"Invalid value for `{key}`: expected an int >= {low}. "
                f"Received: {key}={value!r}"
            )
    if epochs is not None and (
        isinstance(epochs, bool) or not isinstance(epochs, int)
        or epochs <= initial_epoch
    ):
        raise ValueError(
            "Invalid value for `epochs`: expected None or an int greater "
            f"than initial_epoch={initial_epoch}. Received: epochs={epochs!r}"
        )
    if (isinstance(noise_sigma, bool) or not isinstance(noise_sigma, (int, float))
            or not noise_sigma >= 0 or noise_sigma == float("inf")):
        raise ValueError(
            "Invalid value for `noise_sigma`: expected a finite number >= 0. "
            f"Received: noise_sigma={noise_sigma!r}"
        )
    if (isinstance(noise_fraction, bool) or not isinstance(noise_fraction, (int, float))
            or not 0 < noise_fraction <= 1):
        raise ValueError(
            "Invalid value for `noise_fraction`: expected a number in (0, 1]. "
            f"Received: noise_fraction={noise_fraction!r}"
        )


def _epoch_numbers(seed, epochs, initial_epoch):
    """The epochs the dataset runs: `initial_epoch .. epochs - 1`, or with
    `epochs=None` one pass whose number comes from a seeded stream that
    moves on every time the dataset is iterated again."""
    import tensorflow as tf

    if epochs is None:
        return tf.data.Dataset.random(
            seed=int(seed), rerandomize_each_iteration=True
        ).take(1).map(lambda n: n % (2 ** 31))
    return tf.data.Dataset.range(initial_epoch, epochs)


def _epoch_pipeline(images, labels, seed, spec, batch_size, shuffle, augment,
                    drop_remainder, noise_sigma, noise_fraction):
    """`epoch -> batched dataset of that epoch`: its order, crops, flips and
    noise are functions of (seed, epoch, position) only."""
    import tensorflow as tf

    count = int(labels.shape[0])

    def one_epoch(epoch):
        epoch = tf.cast(epoch, tf.int64)
        order = tf.range(count, dtype=tf.int64)
        if shuffle:
            order = tf.random.experimental.stateless_shuffle(
                order, seed=tf.stack([seed, epoch])
            )
        positions = tf.range(count, dtype=tf.int64) + epoch * count

        def example(index, position):
            image = tf.gather(images, index)
            if augment:
                # A stateless seed per (seed, epoch, position): the same
                # crops and flips in every run with this seed.
                image = augment_image(image, tf.stack([seed + 1, position]), spec)
            if noise_sigma > 0:
                noise = float(noise_sigma) * tf.random.stateless_normal(
                    tf.shape(image), seed=tf.stack([seed + 2, position]))
                if noise_fraction < 1:
                    noise *= tf.cast(_is_noisy(position - epoch * count), tf.float32)
                image = tf.cast(image, tf.float32) / 255.0 + noise
            return image, tf.gather(labels, index)

        def _is_noisy(index_in_epoch):
            # The first round(fraction * n) slots of each batch of n.
            slot = index_in_epoch % batch_size
            batch = tf.minimum(tf.cast(batch_size, tf.int64),
                               count - (index_in_epoch - slot))
            noisy = tf.cast(tf.floor(noise_fraction * tf.cast(batch, tf.float64) + 0.5),
                            tf.int64)
            return slot < noisy

        dataset = tf.data.Dataset.from_tensor_slices((order, positions)).map(
            example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
        )
        return dataset.batch(batch_size, drop_remainder=drop_remainder)

    return one_epoch


def steps_per_epoch(count, batch_size, drop_remainder=False):
    """Number of batches in one epoch of `count` examples."""
    return count // batch_size if drop_remainder else -(-count // batch_size)
