"""Datasets read from files on this machine, no download: Fashion-MNIST's
IDX files (Debian's `dataset-fashion-mnist`) and the 20 CIFAR-10 images of
the `foolbox` wheel."""

import gzip
import importlib.util
import os
import re

import numpy as np

from keras_hebb import _backends
from keras_hebb.data.specs import DatasetUnavailableError

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


def _fashion_mnist_dir(directory=None):
    return directory or os.environ.get("FASHION_MNIST_DIR", FASHION_MNIST_DIR)


def _fashion_mnist_installed(directory=None):
    directory = _fashion_mnist_dir(directory)
    return all(
        os.path.exists(os.path.join(directory, name))
        for files in _FASHION_MNIST_FILES.values() for name in files
    )


def load_fashion_mnist(split="train", directory=None):
    """Fashion-MNIST as `(images uint8 (N, 28, 28, 1), labels int64 (N,))`."""
    if split not in _FASHION_MNIST_FILES:
        raise ValueError(
            f"Invalid value for `split`: expected 'train' or 'test'. "
            f"Received: split={split!r}"
        )
    directory = _fashion_mnist_dir(directory)
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


def foolbox_data_dir():
    """The `data` folder of the installed `foolbox` wheel (not imported)."""
    spec = importlib.util.find_spec("foolbox")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetUnavailableError(
            "Dataset 'cifar10_sample' needs the foolbox wheel, which holds "
            "its 20 CIFAR-10 images: pip install foolbox==3.3.4 (or "
            "pip install 'keras-hebb[data]')."
        )
    return os.path.join(list(spec.submodule_search_locations)[0], "data")


def load_cifar10_sample(split="test"):
    """The 20 CIFAR-10 test images of the foolbox wheel, in file order.

    Returns:
        `(images uint8 (20, 32, 32, 3), labels int64 (20,))`; the labels
        are the true CIFAR-10 labels, read from the file names
        `cifar10_<index>_<label>.png`.
    """
    if split not in ("train", "test"):
        raise ValueError(
            "Invalid value for `split` of 'cifar10_sample': expected 'test' "
            f"(or 'train', the same 20 images). Received: split={split!r}"
        )
    tf = _backends.import_tensorflow("the 'cifar10_sample' dataset (PNG decoding)")

    directory = foolbox_data_dir()
    pattern = re.compile(r"^cifar10_(\d+)_(\d)\.png$")
    found = sorted(
        (int(match[1]), int(match[2]), name)
        for name in os.listdir(directory)
        if (match := pattern.match(name))
    )
    if len(found) != 20:
        raise DatasetUnavailableError(
            f"Expected the 20 CIFAR-10 images cifar10_NN_LABEL.png in "
            f"{directory}, found {len(found)}: reinstall foolbox==3.3.4."
        )
    images = np.stack([
        tf.io.decode_png(tf.io.read_file(os.path.join(directory, name)),
                         channels=3).numpy()
        for _, _, name in found
    ])
    labels = np.array([label for _, label, _ in found], dtype=np.int64)
    return images, labels
