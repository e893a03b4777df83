"""The keras_hebb experiments: `python -m experiments demo|results|sweep`.

Studies over the training and export programs, each step one of those
programs run in this process (`experiments/steps.py`), and their reports.
Run it from the repository root (it is not installed into site-packages):

    python -m experiments demo --out runs/demo                          # make demo
    python -m experiments results --out results/fashion_mnist_regime    # make results
    python -m experiments sweep --out results/fashion_mnist_sweep       # make sweep

See docs/TRAINING.md and docs/RESULTS.md.
"""
