"""Where a HaH block's training time goes on JAX: each part's jitted
forward and backward pass on one activation tensor, CPU time.

    KERAS_BACKEND=jax python -m benchmarks.jax_parts [--shape 128,28,28,32] [--repeats 5]

Parts: a ReLU (the floor), divisive normalization with XLA's max pool
(whose gradient is select-and-scatter) and with the separable window max
keras_hebb uses on JAX (`divisive_normalization.window_max`), the
fractional threshold (selection by bit counting, no gradient through it)
and the HaH cost (`keras_hebb.hah_cost`). Prints one table; the ratios
to the ReLU are the figures to compare between machines.
"""

import argparse
import sys
import time


def _parts():
    from keras import ops

    from keras_hebb import hah_cost
    from keras_hebb.layers import DivisiveNormalization, FractionalThreshold

    normalization = DivisiveNormalization(nonnegative_inputs=True)
    threshold = FractionalThreshold(0.2, nonnegative_inputs=True)

    def pooled_normalization(a):
        field = ops.mean(ops.max_pool(a, 3, strides=1, padding="same"), axis=-1, keepdims=True)
        peak = ops.max(field, axis=(1, 2), keepdims=True)
        return a / (0.1 * peak + 0.9 * field + 1e-7)

    return {
        "relu": lambda a: ops.sum(ops.relu(a) * 1.1),
        "divisive normalization, max pool": lambda a: ops.sum(pooled_normalization(a)),
        "divisive normalization, window max": lambda a: ops.sum(normalization(a)),
        "fractional threshold": lambda a: ops.sum(threshold(a, training=True)),
        "HaH cost": lambda a: hah_cost(a),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.jax_parts",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", default="128,28,28,32", help="NHWC activation shape")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    import keras

    if keras.backend.backend() != "jax":
        parser.error("run with KERAS_BACKEND=jax")
    import jax
    import numpy as np

    from benchmarks import common

    shape = tuple(int(v) for v in args.shape.split(","))
    x = jax.numpy.asarray(np.random.default_rng(0).random(shape).astype("float32"))
    rows = []
    for name, part in _parts().items():
        step = jax.jit(jax.grad(part))
        step(x).block_until_ready()
        times = []
        for _ in range(args.repeats):
            start = time.process_time()
            step(x).block_until_ready()
            times.append(time.process_time() - start)
        rows.append([name, common.median_ms(times)])
    relu = rows[0][1]
    print(common.markdown_table(["part (forward + backward)", "CPU ms", "vs ReLU"],
                                [[n, ms, f"{ms / relu:.1f}x"] for n, ms in rows]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
