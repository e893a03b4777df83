"""What each dataset is: shape, classes, augmentation, download host."""


class DatasetSpec:
    """What a dataset looks like and how it is augmented.

    Args:
        shape: image shape `(height, width, channels)`.
        num_classes: number of labels.
        crop_padding: zero padding of the random-crop augmentation.
        flip: whether horizontal flips keep the label (not for digits).
        download_host: `(host, port)` tfds downloads from, or `None`.
        mean, std: per-channel pixel statistics of the training images (in
            [0, 1]) that the architectures normalize with, or `None`.
    """

    def __init__(self, shape, num_classes, crop_padding, flip, download_host,
                 mean=None, std=None):
        self.shape = shape
        self.num_classes = num_classes
        self.crop_padding = crop_padding
        self.flip = flip
        self.download_host = download_host
        self.mean = mean
        self.std = std


#: The datasets `load_arrays` and `load_dataset` know, by name; for images
#: of one shape the first listed is the default (`default_dataset`).
DATASETS = {
    "fashion_mnist": DatasetSpec(
        (28, 28, 1), 10, 2, True,
        ("fashion-mnist.s3-website.eu-central-1.amazonaws.com", 80),
        mean=(0.2860,), std=(0.3530,)),
    "mnist": DatasetSpec((28, 28, 1), 10, 2, False, ("storage.googleapis.com", 443)),
    "cifar10": DatasetSpec((32, 32, 3), 10, 4, True, ("www.cs.toronto.edu", 443),
                           mean=(0.4914, 0.4822, 0.4465), std=(0.2471, 0.2435, 0.2616)),
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


def default_dataset(shape):
    """The first dataset of `DATASETS` whose images have `shape`, or None
    (Fashion-MNIST for 28x28x1, CIFAR-10 for 32x32x3)."""
    return next((name for name, spec in DATASETS.items()
                 if tuple(spec.shape) == tuple(shape)), None)
