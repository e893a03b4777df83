"""Benchmarks of keras_hebb: training steps, inference, a profile of HaH time.

Run from the repository root (they are not installed):

    python -m benchmarks.train_step      # make bench
    python -m benchmarks.profile_hah
    python -m benchmarks.inference
    python -m benchmarks.compare_hahtorch  # make bench-compare (own venv)

Results and how they were measured: docs/PERFORMANCE.md. Benchmarks print
figures; no test asserts a time.
"""
