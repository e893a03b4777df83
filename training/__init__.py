"""The keras_hebb training program: `python -m training train|evaluate`.

Run it from the repository root (it is not installed into site-packages):

    python -m training train --config training/configs/fashion_mnist_hah_small.yaml --out runs/hah
    python -m training evaluate --model runs/hah/model.keras ...

See docs/TRAINING.md.
"""
