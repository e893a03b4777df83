"""Deep similarity matching: a Hebbian/anti-Hebbian stack with feedback."""

import keras
import numpy as np
from keras import ops

from keras_hebb import _checks, _context
from keras_hebb.layers.similarity_matching_base import SimilarityMatchingBase
from keras_hebb.layers.similarity_matching_rules import (
    _TINY,
    assign_unit_columns,
    gram_objective,
    hebbian_updates,
    normalized_row_bound,
    run_compiled_when_eager,
    run_dynamics,
    self_inhibition,
)


@keras.saving.register_keras_serializable(package="keras_hebb")
class DeepSimilarityMatching(SimilarityMatchingBase):
    """A stack of similarity-matching layers whose dynamics run jointly.

    Layers `l = 1..L` with `units[l-1]` neurons, feedforward weights `W_l`
    (from layer `l-1`; layer 0 is the input `x`), lateral weights `M_l`,
    and feedback from layer `l+1` through `W_(l+1)^T` scaled by `gamma`.
    The deep similarity-matching objective (Obeid et al. 2019)

        min_{Y_1..Y_L} sum_l gamma^(l-1) (1/T^2) [
            -2 Tr(Y_(l-1)^T Y_(l-1) Y_l^T Y_l) + Tr(Y_l^T Y_l Y_l^T Y_l) ]

    (subject to `Y_l >= 0` when `non_negative`) becomes, with
    `W_l = <y_l y_(l-1)^T>` and `M_l = <y_l y_l^T>`, a min-max problem whose
    inner minimization is over the per-sample energy

        E = sum_l gamma^(l-1) [ -2 y_(l-1)^T W_l^T y_l + y_l^T M_l y_l ].

    The neural dynamics are its gradient flow with each layer's gradient
    divided by `2 gamma^(l-1)`:

        dy_l/dt = W_l y_(l-1) - M_l y_l + gamma W_(l+1)^T y_(l+1)

    (no feedback term for the top layer), rectified for non-negative
    networks. All layers are updated together by
    `keras_hebb.layers.similarity_matching_rules.run_dynamics` (projected,
    momentum-accelerated Euler steps in which each neuron's time constant is
    its self-inhibition `M_ii`, with a step bounded by the scaled Hessian's
    largest absolute row sum), starting from a feed-forward sweep, for at
    most `iterations` steps or until the natural residual is below
    `tolerance`. For small enough `gamma` the energy is
    strictly convex in the states and the fixed point unique.

    Learning is local: with the states at the fixed point, each synapse
    changes from its own pre- and post-synaptic activity,

        W_l += eta (y_l y_(l-1)^T - W_l),   M_l += (eta / tau) (y_l y_l^T - M_l)

    (the gradient steps of the min-max problem; the factor `gamma^(l-1)` of
    each layer's gradient is absorbed into its rate). The layer returns the
    top layer's states `y_L`; `states(inputs)` returns all of them.

    Example:

    >>> layer = DeepSimilarityMatching([8, 4], gamma=0.1)
    >>> layer(np.random.rand(3, 20).astype("float32")).shape
    (3, 4)

    Args:
        units: list of layer widths, bottom to top.
        gamma: feedback strength, in `[0, 1)`. Defaults to `0.1`.
        non_negative: constrain all states to be `>= 0`. Defaults to `True`.
        tau: lateral weights learn at rate `eta / tau`. Defaults to `0.5`.
        iterations: maximum number of steps of the joint dynamics.
            Defaults to `300`.
        tolerance: early-stopping threshold of the natural residual.
            Defaults to `1e-4`.
        kernel_initializer: initializer of each `kernel_l` (= `W_l^T`), whose
            columns are then scaled to unit norm; each `M_l` starts as the
            identity. Defaults to `"orthogonal"`.
        train_by_backprop: make the weights trainable Keras weights (a
            supervised loss then also trains them). Defaults to `False`.
        **kwargs: Base layer keyword arguments.

    Call arguments:
        inputs: tensor `(batch, ...)`, flattened to `(batch, d)`.

    Reference:
        Obeid, Ramambason, Pehlevan, "Structured and Deep Similarity Matching
        via Structured and Deep Hebbian Networks", NeurIPS 2019.
    """

    def __init__(
        self,
        units,
        gamma=0.1,
        non_negative=True,
        tau=0.5,
        iterations=300,
        tolerance=1e-4,
        kernel_initializer="orthogonal",
        train_by_backprop=False,
        **kwargs,
    ):
        super().__init__(non_negative, tau, iterations, tolerance,
                         kernel_initializer, train_by_backprop, **kwargs)
        if not isinstance(units, (list, tuple)) or not units:
            raise ValueError(
                "Invalid value for `units`: expected a non-empty list of "
                f"positive integers. Received: units={units!r}"
            )
        for width in units:
            ok = isinstance(width, (int, np.integer)) and not isinstance(
                width, bool) and width > 0
            if not ok:
                raise ValueError(
                    "Invalid value for `units`: expected a non-empty list of "
                    f"positive integers. Received: units={list(units)!r}"
                )
        self.units = [int(width) for width in units]
        self.gamma = _checks.check_fraction("gamma", gamma, allow_zero=True, allow_one=False)

    def build(self, input_shape):
        previous = self._input_dim(input_shape)
        self.kernels = []
        self.laterals = []
        for index, width in enumerate(self.units, start=1):
            kernel = self.add_weight(
                name=f"kernel_{index}", shape=(previous, width),
                initializer=self.kernel_initializer,
                trainable=self.train_by_backprop,
            )
            assign_unit_columns(kernel)
            self.kernels.append(kernel)
            self.laterals.append(self.add_weight(
                name=f"lateral_{index}", shape=(width, width),
                initializer="identity", trainable=self.train_by_backprop,
            ))
            previous = width

    def _weights32(self):
        kernels = [ops.cast(k, "float32") for k in self.kernels]
        laterals = [ops.cast(m, "float32") for m in self.laterals]
        return kernels, laterals

    def _gradients(self, x, states, kernels, laterals):
        """Each layer's preconditioned energy gradient (rows = samples)."""
        gradients = []
        count = len(states)
        for l in range(count):
            below = x if l == 0 else states[l - 1]
            g = ops.matmul(states[l], laterals[l]) - ops.matmul(below, kernels[l])
            if l + 1 < count and self.gamma > 0:
                g = g - self.gamma * ops.matmul(
                    states[l + 1], ops.transpose(kernels[l + 1]))
            gradients.append(g)
        return gradients

    def _step_size(self, kernels, diagonals, laterals):
        """1 / (a bound on the largest eigenvalue of the scaled Hessian).

        In the variables `v_l = sqrt(gamma^(l-1) diag(M_l)) y_l` the energy's
        Hessian has unit diagonal blocks `D_l^-1/2 M_l D_l^-1/2` and
        off-diagonal blocks `-sqrt(gamma) D_l^-1/2 W_l D_(l-1)^-1/2`; its
        largest absolute row sum bounds its eigenvalues.
        """
        root_gamma = self.gamma ** 0.5
        scales = [ops.rsqrt(d) for d in diagonals]
        bound = 0.0
        count = len(kernels)
        for l in range(count):
            rows = normalized_row_bound(laterals[l], diagonals[l])
            if l > 0:  # W_l couples layer l to layer l-1 (not to the input)
                coupling = ops.abs(kernels[l]) * scales[l - 1][:, None]
                rows = rows + root_gamma * scales[l] * ops.sum(coupling, axis=0)
            if l + 1 < count:
                coupling = ops.abs(kernels[l + 1]) * scales[l + 1][None, :]
                rows = rows + root_gamma * scales[l] * ops.sum(coupling, axis=1)
            bound = ops.maximum(bound, ops.max(rows))
        return 1.0 / (bound + _TINY)

    def _settle(self, x):
        """`(states, residual)` at the fixed point of the joint dynamics."""
        kernels, laterals = self._weights32()
        diagonals = [self_inhibition(m) for m in laterals]
        project = ops.relu if self.non_negative else (lambda v: v)
        states = []
        below = x
        for kernel, diagonal in zip(kernels, diagonals):
            below = project(ops.matmul(below, kernel) / diagonal)
            states.append(below)
        # Each layer's share of the energy; with gamma = 0 the stack is a
        # cascade of independent layers and all count alike.
        weights = [self.gamma ** l if self.gamma > 0 else 1.0
                   for l in range(len(states))]
        return run_dynamics(
            states,
            lambda ys: self._gradients(x, ys, kernels, laterals),
            diagonals, weights, self._step_size(kernels, diagonals, laterals),
            self.non_negative, self.iterations, self.tolerance,
        )

    def _flatten(self, inputs):
        x = ops.cast(inputs, "float32")
        return ops.reshape(x, (ops.shape(x)[0], self.kernels[0].shape[0]))

    def call(self, inputs):
        x = self._flatten(inputs)
        states, residual = run_compiled_when_eager(self, self._settle, x)
        scope = _context.similarity_matching_scope()
        if scope is not None:
            scope.record(self, x, states, residual)
        return ops.cast(states[-1], self.compute_dtype)

    def states(self, inputs):
        """All layers' states `[y_1, ..., y_L]` at the fixed point."""
        x = self._flatten(inputs)
        return run_compiled_when_eager(self, self._settle, x)[0]

    def fixed_point_residual(self, inputs):
        """Natural residual of the joint dynamics at the returned states."""
        x = self._flatten(inputs)
        return run_compiled_when_eager(self, self._settle, x)[1]

    def local_updates(self, inputs, states):
        """`[(variable, delta)]`: every synapse's local rule, before the rate."""
        updates = []
        below = inputs
        for kernel, lateral, y in zip(self.kernels, self.laterals, states):
            d_kernel, d_lateral = hebbian_updates(
                below, y, ops.cast(kernel, "float32"),
                ops.cast(lateral, "float32"), self.tau,
            )
            updates += [(kernel, d_kernel), (lateral, d_lateral)]
            below = y
        return updates

    def objective(self, inputs, states):
        """Minibatch deep similarity-matching objective (`gram_objective`)."""
        return gram_objective(inputs, states, gamma=self.gamma)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.units[-1])

    def get_config(self):
        return {**super().get_config(), "units": list(self.units), "gamma": self.gamma}
