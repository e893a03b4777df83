"""Iterative magnitude pruning as a Keras callback.

tensorflow-model-optimization cannot prune Keras 3 models (it needs
tf-keras), so this is the small piece it would provide: the gradual
schedule of Zhu & Gupta (2017), masks on the kernels of Conv2D, Dense and
UnitNormConv2D layers, re-applied after every training batch so pruned
weights stay zero.
"""

import keras
import numpy as np

from keras_hebb import _checks, _compat
from keras_hebb.layers.unit_norm_conv2d import UnitNormConv2D


def prunable_kernels(model):
    """The kernels that get pruned: Conv2D, Dense and UnitNormConv2D."""
    kernels = []
    for layer in _compat.all_layers(model):
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense, UnitNormConv2D)):
            kernels.append(layer.kernel)
    return kernels


def weight_sparsity(model):
    """Fraction of zero entries over all prunable kernels."""
    values = [keras.ops.convert_to_numpy(k) for k in prunable_kernels(model)]
    zeros = sum(int((v == 0).sum()) for v in values)
    return zeros / max(1, sum(v.size for v in values))


class MagnitudePruning(keras.callbacks.Callback):
    """Prunes the smallest-magnitude weights of every kernel, gradually.

    At step `t` between `begin_step` and `end_step` the target sparsity is
    `s_t = final_sparsity * (1 - (1 - p)^3)` with `p` the fraction of the
    schedule done; every `frequency` steps each kernel's smallest
    `s_t` fraction (by absolute value, per layer) is set to zero and kept
    there. After `end_step` the masks are fixed.

    Example:

    >>> pruning = MagnitudePruning(0.9, begin_step=0, end_step=500)
    >>> model.fit(x, y, epochs=3, callbacks=[pruning])
    >>> weight_sparsity(model)   # ~0.9

    Args:
        final_sparsity: fraction of weights removed at the end, in `(0, 1)`.
        begin_step: training step where pruning starts. Defaults to `0`.
        end_step: step where the final sparsity is reached.
        frequency: steps between mask updates. Defaults to `50`.
    """

    def __init__(self, final_sparsity, end_step, begin_step=0, frequency=50):
        super().__init__()
        self.final_sparsity = _checks.check_fraction("final_sparsity", final_sparsity)
        if self.final_sparsity >= 1.0:
            raise ValueError(
                "Invalid value for `final_sparsity`: expected a number in "
                f"(0, 1). Received: final_sparsity={final_sparsity!r}"
            )
        self.begin_step = int(begin_step)
        self.end_step = int(end_step)
        if self.end_step <= self.begin_step:
            raise ValueError(
                "Invalid value for `end_step`: expected > begin_step "
                f"({self.begin_step}). Received: end_step={end_step!r}"
            )
        self.frequency = _checks.check_positive_int("frequency", frequency)
        self._masks = None
        self._final_done = False

    def target_sparsity(self, step):
        progress = min(1.0, max(0.0, (step - self.begin_step) /
                                (self.end_step - self.begin_step)))
        return self.final_sparsity * (1.0 - (1.0 - progress) ** 3)

    def on_train_begin(self, logs=None):
        kernels = prunable_kernels(self.model)
        if self._masks is None:
            # Weights that are already zero (a resumed run) stay pruned.
            self._masks = [keras.ops.convert_to_numpy(k) != 0 for k in kernels]

    def on_train_batch_end(self, batch, logs=None):
        step = int(self.model.optimizer.iterations.numpy())
        kernels = prunable_kernels(self.model)
        scheduled = (self.begin_step <= step < self.end_step
                     and (step - self.begin_step) % self.frequency == 0)
        final = step >= self.end_step and not self._final_done
        if scheduled or final:
            sparsity = self.target_sparsity(step)
            for i, kernel in enumerate(kernels):
                # Pruned weights are zero, so they stay among the smallest:
                # the masks only grow as the target sparsity rises.
                values = np.abs(keras.ops.convert_to_numpy(kernel)).ravel()
                count = int(round(sparsity * values.size))
                mask = np.ones(values.size, bool)
                if count:
                    mask[np.argpartition(values, count - 1)[:count]] = False
                self._masks[i] = mask.reshape(kernel.shape)
            self._final_done = final
        for kernel, mask in zip(kernels, self._masks):
            kernel.assign(keras.ops.convert_to_numpy(kernel) * mask)

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["weight_sparsity"] = weight_sparsity(self.model)
