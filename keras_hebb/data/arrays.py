"""A dataset split as numpy arrays, from whichever source holds it."""

import numpy as np

from keras_hebb.data.local_files import (
    _fashion_mnist_installed,
    load_cifar10_sample,
    load_fashion_mnist,
)
from keras_hebb.data.specs import dataset_spec
from keras_hebb.data.tfds_source import _tfds_split, tfds_builder


def _check_limit(limit):
    if limit is not None and (
        isinstance(limit, bool) or not isinstance(limit, (int, np.integer))
        or limit <= 0
    ):
        raise ValueError(
            "Invalid value for `limit`: expected a positive int or None. "
            f"Received: limit={limit!r}"
        )


def load_uint8_arrays(name, split="train", limit=None, data_dir=None,
                      download=True):
    """`(images uint8 NHWC, labels int64)` of a split, as stored.

    Arguments as for `load_arrays`; `make_dataset` turns the result into
    a pipeline.
    """
    dataset_spec(name)
    _check_limit(limit)
    if name == "cifar10_sample":
        images, labels = load_cifar10_sample(split)
    elif name == "fashion_mnist" and _fashion_mnist_installed():
        images, labels = load_fashion_mnist(split)
    else:
        import tensorflow_datasets as tfds

        builder = tfds_builder(name, data_dir, download)
        dataset = builder.as_dataset(
            _tfds_split(split, limit), batch_size=-1, as_supervised=True,
            shuffle_files=False,
        )
        images, labels = tfds.as_numpy(dataset)
        labels = labels.astype(np.int64)
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    return images, labels


def load_arrays(name, split="train", limit=None, data_dir=None, download=True):
    """`(images float32 in [0, 1] NHWC, labels int64)` of a dataset split.

    Args:
        name: one of `DATASETS`: `"fashion_mnist"`, `"mnist"`,
            `"cifar10"`, `"svhn_cropped"`, `"cifar10_sample"`.
        split: `"train"` or `"test"` (tfds datasets accept any tfds split,
            e.g. `"train[:10%]"`). Defaults to `"train"`.
        limit: keep only the first `limit` examples. Defaults to `None`.
        data_dir: tfds data directory (ignored by the offline datasets).
        download: whether a missing tfds dataset may be downloaded.

    Raises:
        ValueError: unknown dataset, split or limit.
        DatasetUnavailableError, FileNotFoundError: the data is not here
            and cannot be fetched; the message says how to get it.
    """
    dataset_spec(name)
    images, labels = load_uint8_arrays(name, split, limit, data_dir, download)
    return images.astype(np.float32) / 255.0, labels
