"""Iterative magnitude pruning reaches its sparsity and keeps weights pruned."""

import keras
import numpy as np
import pytest

from keras_hebb import architectures
from keras_hebb.pruning import MagnitudePruning, prunable_kernels, weight_sparsity


def test_pruning_reaches_the_final_sparsity_per_kernel_and_model_still_learns():
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.random((256, 12, 12, 1)).astype("float32")
    y = (x[:, :6].mean(axis=(1, 2, 3)) > x[:, 6:].mean(axis=(1, 2, 3))).astype("int64")
    model = architectures.build_vgg((8, "M", 16, "M"), input_shape=(12, 12, 1), num_classes=2)
    model.compile(keras.optimizers.Adam(3e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    pruning = MagnitudePruning(0.9, end_step=40, frequency=5)
    assert pruning.target_sparsity(0) == 0.0
    assert pruning.target_sparsity(40) == pytest.approx(0.9)
    history = model.fit(x, y, batch_size=32, epochs=8, callbacks=[pruning], verbose=0)
    assert weight_sparsity(model) == pytest.approx(0.9, abs=0.01)
    for kernel in prunable_kernels(model):
        values = keras.ops.convert_to_numpy(kernel)
        assert (values == 0).mean() == pytest.approx(0.9, abs=0.02)
    # The last epochs train under fixed masks: pruned weights stayed zero.
    assert history.history["accuracy"][-1] > 0.6


@pytest.mark.parametrize("kwargs,message", [
    ({"final_sparsity": 1.0, "end_step": 10}, "final_sparsity=1.0"),
    ({"final_sparsity": 0.5, "end_step": 0}, "end_step=0"),
    ({"final_sparsity": 0.5, "end_step": 10, "frequency": 0}, "frequency=0"),
])
def test_bad_pruning_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MagnitudePruning(**kwargs)
