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

from keras_hebb.data.arrays import load_arrays, load_uint8_arrays
from keras_hebb.data.local_files import (
    FASHION_MNIST_DIR,
    foolbox_data_dir,
    load_cifar10_sample,
    load_fashion_mnist,
)
from keras_hebb.data.pipeline import (
    augment_image,
    load_dataset,
    make_dataset,
    steps_per_epoch,
)
from keras_hebb.data.specs import (
    DATASETS,
    DatasetSpec,
    DatasetUnavailableError,
    dataset_spec,
    default_dataset,
)
from keras_hebb.data.tfds_source import tfds_builder

__all__ = [
    "DATASETS",
    "FASHION_MNIST_DIR",
    "DatasetSpec",
    "DatasetUnavailableError",
    "augment_image",
    "dataset_spec",
    "default_dataset",
    "foolbox_data_dir",
    "load_arrays",
    "load_cifar10_sample",
    "load_dataset",
    "load_fashion_mnist",
    "load_uint8_arrays",
    "make_dataset",
    "steps_per_epoch",
    "tfds_builder",
]
