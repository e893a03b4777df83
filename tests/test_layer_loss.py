"""The HaH cost is an ordinary Keras layer loss: a `keras.Sequential` with
`HaHBlock`s trains it with plain `compile` and `fit`, on TensorFlow, JAX
and PyTorch, and each block's cost moves only its own kernel.

The suite runs it on TensorFlow (in this process) and JAX (a subprocess);
`make test-torch` runs the in-process test on Keras's torch backend, in a
virtualenv of its own with the CPU torch wheel (too heavy for `make test`).

One SGD step from the same weights, with and without the cost: the
cross-entropy part of the step is the same (no batch norm, so training's
forward pass is inference's), so the difference of the weights is exactly
`learning_rate * alpha_l * dHaH_l/dkernel_l` on each block's kernel, with
the block input held constant, and zero on every other weight. The test
fails if the cost is dropped (no difference), if it reaches the block
input (block 2's cost would move block 1's kernel and block 1's would
differ), or if it has the wrong sign or weight.
"""

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

ALPHAS = (0.5, 0.3)
LEARNING_RATE = 0.1
SHAPE = (10, 10, 1)


def _sequential(alphas):
    import keras

    from keras_hebb.layers import HaHBlock

    keras.utils.set_random_seed(4)
    return keras.Sequential([
        keras.Input(SHAPE),
        HaHBlock(6, alpha=alphas[0], threshold=None, name="b1"),
        HaHBlock(8, alpha=alphas[1], threshold=None, name="b2"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(3, name="logits"),
    ], name="net")


def _local_cost_gradient(block, block_input):
    """The block's HaH cost and its gradient with respect to its kernel,
    the input a constant, by the backend's own autodiff."""
    import keras
    from keras import ops

    from keras_hebb import hah_cost

    def cost_of(kernel):
        norm = ops.sqrt(ops.sum(kernel * kernel, axis=(0, 1, 2), keepdims=True))
        z = ops.conv(block_input, kernel / (norm + block.conv.epsilon), padding="same")
        return hah_cost(z, block.cost_ratio, block.cost_demote)

    kernel = ops.convert_to_tensor(ops.convert_to_numpy(block.conv.kernel))
    block_input = ops.convert_to_tensor(block_input)
    if keras.backend.backend() == "jax":
        import jax

        cost, gradient = jax.value_and_grad(cost_of)(kernel)
    elif keras.backend.backend() == "torch":
        kernel = kernel.detach().requires_grad_()
        cost = cost_of(kernel)
        cost.backward()
        cost, gradient = cost.detach().cpu(), kernel.grad.cpu()
    else:
        import tensorflow as tf

        with tf.GradientTape() as tape:
            tape.watch(kernel)
            cost = cost_of(kernel)
        gradient = tape.gradient(cost, kernel)
    return float(cost), ops.convert_to_numpy(gradient)


def one_step(out=None):
    """Weights after one SGD step with and without the cost, the logged
    losses, and the reference costs and local gradients."""
    import keras
    from keras import ops

    rng = np.random.default_rng(0)
    x = rng.random((16, *SHAPE)).astype("float32")
    y = rng.integers(0, 3, 16)
    results = {}
    for tag, alphas in (("hah", ALPHAS), ("plain", (0.0, 0.0))):
        model = _sequential(alphas)
        if tag == "hah":
            b1_input = x
            b2_input = ops.convert_to_numpy(model.get_layer("b1")(x))
            for name, block_input in (("b1", b1_input), ("b2", b2_input)):
                cost, gradient = _local_cost_gradient(model.get_layer(name), block_input)
                results[f"cost_{name}"], results[f"gradient_{name}"] = cost, gradient
        model.compile(keras.optimizers.SGD(LEARNING_RATE),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        history = model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
        results[f"loss_{tag}"] = history.history["loss"][0]
        for weight in model.trainable_weights:
            results[f"{tag}:{weight.path}"] = ops.convert_to_numpy(weight)
    if out is not None:
        np.savez(out, **results)
    return results


def _check(results):
    # The logged loss is cross-entropy - sum_l alpha_l * HaH_l.
    hah_term = sum(a * results[f"cost_{n}"] for a, n in zip(ALPHAS, ("b1", "b2")))
    assert hah_term > 0.05
    assert results["loss_hah"] == pytest.approx(results["loss_plain"] - hah_term, abs=1e-5)
    paths = [key.split(":", 1)[1] for key in results if key.startswith("hah:")]
    kernels = {"b1": "net/b1/conv/kernel", "b2": "net/b2/conv/kernel"}
    for path in paths:
        moved = results[f"hah:{path}"] - results[f"plain:{path}"]
        block = next((n for n, k in kernels.items() if path == k), None)
        if block is None:
            # The Dense layer: the cost never reaches it.
            np.testing.assert_allclose(moved, 0.0, atol=1e-7, err_msg=path)
            continue
        index = ("b1", "b2").index(block)
        expected = LEARNING_RATE * ALPHAS[index] * results[f"gradient_{block}"]
        assert np.abs(expected).max() > 1e-3, path
        np.testing.assert_allclose(moved, expected, rtol=1e-3, atol=1e-6, err_msg=path)
    assert set(kernels.values()) <= set(paths)


def test_a_sequential_fit_on_the_running_backend_minimizes_the_local_hah_cost():
    _check(one_step())


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed")
def test_a_sequential_fit_on_jax_minimizes_the_local_hah_cost(tmp_path):
    out = tmp_path / "jax.npz"
    done = subprocess.run(
        [sys.executable, __file__, str(out)], capture_output=True, text=True, timeout=600,
        env={**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert done.returncode == 0, done.stderr[-3000:]
    with np.load(out) as saved:
        results = {k: (saved[k].item() if saved[k].ndim == 0 else saved[k]) for k in saved.files}
    _check(results)


if __name__ == "__main__":
    one_step(sys.argv[1])
