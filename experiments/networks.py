"""What every experiment shares: the networks' training configs and the
tests' tiny training budget."""

import os

#: The repository root: the training configs are named relative to it.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: network -> base name -> training config (relative to `ROOT`).
NETWORKS = {
    "small": {
        "standard": "training/configs/fashion_mnist_vgg_small.yaml",
        "hah": "training/configs/fashion_mnist_hah_small.yaml",
    },
    "medium": {
        "standard": "training/configs/fashion_mnist_vgg_medium.yaml",
        "hah": "training/configs/fashion_mnist_hah_medium.yaml",
    },
}

#: `python -m training train` arguments of the tests' tiny budget (`--tiny`):
#: one epoch on 512 images, seconds per run.
TINY_TRAINING = ["--set", "epochs=1", "--set", "train_limit=512",
                 "--set", "validation_limit=128", "--set", "sparsity_images=32",
                 "--set", "lr_milestones=[]"]


def config_path(relative):
    """The absolute path of a config named relative to the repository root."""
    return os.path.join(ROOT, relative)
