"""Datasets as arrays and as `tf.data` pipelines (images in [0, 1], NHWC).

Five datasets, all 10-class image classification:

- `fashion_mnist`: read offline from the IDX files of Debian's
  `dataset-fashion-mnist` package (`/usr/share/datasets/fashion-mnist`, or
  `$FASHION_MNIST_DIR`); tensorflow-datasets is the fallback when they are
  not installed.
- `mnist`, `cifar10`, `svhn_cropped`: through tensorflow-datasets, from a
  prepared `data_dir` (default `$TFDS_DATA_DIR` or `~/tensorflow_datasets`)
  or downloaded there on first use on a machine with internet.
- `cifar10_sample`: the 20 real CIFAR-10 test images (with their true labels)
  shipped in the `foolbox` wheel, for real-data smoke tests without a
  download. It has one split, `test`; `train` names the same 20 images, so a
  training program can run on it as a smoke test.

`load_arrays` returns numpy arrays; `load_dataset` returns a batched
`tf.data.Dataset` with the paper's augmentation (random crop with zero
padding, horizontal flip where it fits the data), shuffling and augmentation
reproducible from a seed, and prefetching.
"""

import gzip
import importlib.util
import os
import re
import socket
import threading

import numpy as np

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
_FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


class DatasetSpec:
    """What a dataset looks like and how it is augmented.

    Args:
        shape: image shape `(height, width, channels)`.
        num_classes: number of labels.
        crop_padding: zero padding of the random-crop augmentation.
        flip: whether horizontal flips keep the label (not for digits).
        download_host: `(host, port)` tfds downloads from, or `None`.
    """

    def __init__(self, shape, num_classes, crop_padding, flip, download_host):
        self.shape = shape
        self.num_classes = num_classes
        self.crop_padding = crop_padding
        self.flip = flip
        self.download_host = download_host


#: The datasets `load_arrays` and `load_dataset` know, by name.
DATASETS = {
    "fashion_mnist": DatasetSpec(
        (28, 28, 1), 10, 2, True,
        ("fashion-mnist.s3-website.eu-central-1.amazonaws.com", 80)),
    "mnist": DatasetSpec((28, 28, 1), 10, 2, False, ("storage.googleapis.com", 443)),
    "cifar10": DatasetSpec((32, 32, 3), 10, 4, True, ("www.cs.toronto.edu", 443)),
    "svhn_cropped": DatasetSpec((32, 32, 3), 10, 4, False, ("ufldl.stanford.edu", 80)),
    "cifar10_sample": DatasetSpec((32, 32, 3), 10, 4, True, None),
}

class DatasetUnavailableError(RuntimeError):
    """A dataset is neither on this machine nor downloadable from here."""


def dataset_spec(name):
    """The `DatasetSpec` of a dataset name; `ValueError` if unknown."""
    if name not in DATASETS:
        raise ValueError(
            f"Unknown dataset: expected one of {sorted(DATASETS)}. "
            f"Received: name={name!r}"
        )
    return DATASETS[name]


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
    import tensorflow as tf

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


def _can_connect(host, port, timeout=5.0):
    """Whether a TCP connection to `host:port` opens within `timeout` s.

    Name resolution has no timeout of its own, so the attempt runs in a
    daemon thread that is abandoned if it takes too long.
    """
    result = []

    def attempt():
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


def tfds_builder(name, data_dir=None, download=True):
    """A prepared tensorflow-datasets builder of `name`.

    Prepares (downloads) it into `data_dir` when it is missing and the
    download server answers. tfds itself retries a failing download for
    minutes, so the server is probed first and a missing, undownloadable
    dataset fails at once with `DatasetUnavailableError`.

    Args:
        name: a tfds dataset name, e.g. `"cifar10"`.
        data_dir: tfds data directory; `None` is tfds's default
            (`$TFDS_DATA_DIR` or `~/tensorflow_datasets`).
        download: whether a missing dataset may be downloaded.
            Defaults to `True`.
    """
    import tensorflow_datasets as tfds

    builder = tfds.builder(name, data_dir=data_dir)
    if builder.is_prepared():
        return builder
    where = builder.data_dir_root
    how = (
        f"prepare it on a machine with internet (python -c \"import "
        f"tensorflow_datasets as tfds; tfds.builder('{name}', "
        f"data_dir='DIR').download_and_prepare()\") and copy DIR/{name} "
        f"into {where}, or pass the data_dir (config key `data_dir`, or "
        f"$TFDS_DATA_DIR) of a directory that holds it"
    )
    if not download:
        raise DatasetUnavailableError(
            f"Dataset {name!r} is not prepared in {where} and downloads are "
            f"off: {how}."
        )
    spec = DATASETS.get(name)
    host = spec.download_host if spec else None
    if host is not None and not _can_connect(*host):
        raise DatasetUnavailableError(
            f"Dataset {name!r} is not prepared in {where} and cannot be "
            f"downloaded from here (no connection to {host[0]}): {how}."
        )
    try:
        builder.download_and_prepare()
    except Exception as error:  # tfds raises many kinds; keep it one line.
        raise DatasetUnavailableError(
            f"Dataset {name!r} is not prepared in {where} and its download "
            f"failed ({type(error).__name__}: {str(error).splitlines()[0]}): "
            f"{how}."
        ) from error
    return builder


def _tfds_split(split, limit):
    return split if limit is None else f"{split}[:{int(limit)}]"


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


def augment_image(image, seed, spec):
    """The paper's augmentation of one uint8 HWC image, from a seed.

    Random crop after zero padding by `spec.crop_padding` pixels, then a
    random horizontal flip if `spec.flip`. `seed` is a stateless seed
    (shape `(2,)` int), so the result is a function of image and seed.
    """
    import tensorflow as tf

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
):
    """The pipeline of `load_dataset` over arrays from `load_uint8_arrays`.

    Args:
        images: uint8 NHWC images.
        labels: int labels.
        name: the dataset's name in `DATASETS` (for its augmentation).
        Others: as for `load_dataset`.
    """
    import tensorflow as tf

    spec = dataset_spec(name)
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
    if seed is None:
        seed = int(np.random.SeedSequence().generate_state(1)[0] >> 1)
    count = len(labels)
    # Images stay uint8 until batches are formed (4x less memory); each
    # epoch gathers them in a permutation drawn from (seed, epoch).
    images = tf.constant(images)
    labels = tf.constant(labels)
    seed = tf.constant(seed, tf.int64)

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
                image = tf.cast(image, tf.float32) / 255.0 + float(noise_sigma) * (
                    tf.random.stateless_normal(
                        tf.shape(image), seed=tf.stack([seed + 2, position])))
            return image, tf.gather(labels, index)

        dataset = tf.data.Dataset.from_tensor_slices((order, positions)).map(
            example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
        )
        return dataset.batch(batch_size, drop_remainder=drop_remainder)

    if epochs is None:
        # One epoch per pass; the pass number comes from a seeded stream
        # that moves on every time the dataset is iterated again.
        epoch_numbers = tf.data.Dataset.random(
            seed=int(tf.get_static_value(seed)), rerandomize_each_iteration=True
        ).take(1).map(lambda n: n % (2 ** 31))
    else:
        epoch_numbers = tf.data.Dataset.range(initial_epoch, epochs)
    dataset = epoch_numbers.flat_map(one_epoch)
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


def steps_per_epoch(count, batch_size, drop_remainder=False):
    """Number of batches in one epoch of `count` examples."""
    return count // batch_size if drop_remainder else -(-count // batch_size)
