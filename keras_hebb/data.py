"""Datasets as arrays and as `tf.data` pipelines (images in [0, 1], NHWC).

Fashion-MNIST is read offline from Debian's `dataset-fashion-mnist` files.
(The data issue extends this module with tfds datasets and pipelines.)
"""

import gzip
import os

import numpy as np

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
_FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def _read_idx(path):
    """Reads an IDX file (optionally gzipped) into a numpy array."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if data[:2] != b"\x00\x00" or data[2] != 0x08:
        raise ValueError(f"{path} is not an IDX file of unsigned bytes.")
    ndim = data[3]
    shape = tuple(
        int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)
    )
    array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    return array.reshape(shape)


def load_fashion_mnist(split="train", directory=None):
    """Fashion-MNIST as `(images uint8 (N, 28, 28, 1), labels int64 (N,))`."""
    if split not in _FASHION_MNIST_FILES:
        raise ValueError(
            f"Invalid value for `split`: expected 'train' or 'test'. "
            f"Received: split={split!r}"
        )
    directory = directory or os.environ.get("FASHION_MNIST_DIR", FASHION_MNIST_DIR)
    image_file, label_file = (
        os.path.join(directory, name) for name in _FASHION_MNIST_FILES[split]
    )
    if not os.path.exists(image_file):
        raise FileNotFoundError(
            f"Fashion-MNIST not found at {directory}: install the Debian "
            "package `dataset-fashion-mnist` (sudo apt-get install "
            "dataset-fashion-mnist) or set FASHION_MNIST_DIR."
        )
    images = _read_idx(image_file)[..., None]
    labels = _read_idx(label_file).astype(np.int64)
    return images, labels


def load_arrays(name, split="train", limit=None):
    """`(images float32 in [0, 1] NHWC, labels int64)` of a dataset split."""
    if name != "fashion_mnist":
        raise ValueError(f"Unknown dataset {name!r}.")
    images, labels = load_fashion_mnist(split)
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    return images.astype(np.float32) / 255.0, labels
