"""The dense similarity-matching layer (linear or non-negative).

The objective, the neural dynamics and the local learning rules are
written out in `keras_hebb.layers.similarity_matching_rules` (and
`docs/SIMILARITY_MATCHING.md` has the derivation).
"""

import keras
from keras import ops

from keras_hebb import _checks, _context
from keras_hebb.layers.similarity_matching_base import SimilarityMatchingBase
from keras_hebb.layers.similarity_matching_rules import (
    assign_unit_columns,
    gram_objective,
    hebbian_updates,
    run_compiled_when_eager,
    settle,
)


@keras.saving.register_keras_serializable(package="keras_hebb")
class SimilarityMatching(SimilarityMatchingBase):
    """Similarity matching: a Hebbian/anti-Hebbian layer with lateral inhibition.

    A layer of `units` neurons with feedforward weights `W` and lateral
    (inhibitory) weights `M`. Its output for an input `x` is the fixed point
    of the neural dynamics `dy/dt = W x - M y`:

    - linear (`non_negative=False`): `y = M^{-1} W x` (an exact solve);
    - non-negative (`non_negative=True`, NSM): the minimizer of
      `1/2 y^T M y - y^T W x` over `y >= 0`, i.e. the point where
      `y_i = max(0, (W x - sum_{j != i} M_ij y_j)_i) / M_ii`, found by at
      most `iterations` steps of the rectified dynamics (projected
      gradient steps scaled by `1 / M_ii` with momentum; see
      `run_dynamics`).

    Trained by `keras_hebb.SimilarityMatchingModel` with the local rules
    `W += eta (y x^T - W)` and `M += (eta / tau) (y y^T - M)`, the linear
    layer learns the principal subspace of its inputs (the rows of
    `F = M^{-1} W` become an orthonormal basis of the top-`units`
    eigenvectors of `<x x^T>`), and the non-negative layer learns sparse,
    part-based features (competition through `M`). Inputs of rank > 2 are
    flattened. Inside a `SimilarityMatchingModel` step the layer records its
    input, output and residual for the local update; elsewhere it is a plain
    feed-forward layer.

    Example:

    >>> layer = SimilarityMatching(4, non_negative=True)
    >>> layer(np.random.rand(8, 20).astype("float32")).shape
    (8, 4)

    Args:
        units: number of output neurons `k`.
        non_negative: constrain outputs to `y >= 0` (NSM). Defaults to
            `False`.
        tau: the lateral weights learn at rate `eta / tau`. Defaults to
            `0.5`.
        iterations: maximum number of steps of the non-negative dynamics
            (the linear fixed point is solved exactly). Defaults to `200`.
        tolerance: the dynamics stop early once the natural residual
            `||y - max(0, y - (M y - W x) / diag(M))|| / ||y||` is below it.
            Defaults to `1e-4`.
        kernel_initializer: initializer of `kernel` (= `W^T`); each neuron's
            weight vector is then scaled to unit norm. `M` starts as the
            identity. Defaults to `"orthogonal"`.
        train_by_backprop: make `kernel` and `lateral` trainable Keras
            weights, so a supervised loss also trains them by backpropagation
            through the dynamics. Defaults to `False` (local learning only).
        **kwargs: Base layer keyword arguments.

    Call arguments:
        inputs: tensor `(batch, ...)`, flattened to `(batch, d)`.

    Reference:
        Pehlevan, Sengupta, Chklovskii, "Why do similarity matching
        objectives lead to Hebbian/anti-Hebbian networks?", Neural
        Computation 30(1), 2018; Pehlevan, Chklovskii, "A Hebbian/anti-Hebbian
        network derived from online non-negative matrix factorization can
        cluster and discover sparse features", Asilomar 2014.
    """

    def __init__(
        self,
        units,
        non_negative=False,
        tau=0.5,
        iterations=200,
        tolerance=1e-4,
        kernel_initializer="orthogonal",
        train_by_backprop=False,
        **kwargs,
    ):
        super().__init__(non_negative, tau, iterations, tolerance,
                         kernel_initializer, train_by_backprop, **kwargs)
        self.units = _checks.check_positive_int("units", units)
        self.feedforward_mask = None
        self.lateral_mask = None

    # Subclasses with structure override these two (numpy 0/1 arrays).
    def _masks(self, input_shape):
        return None, None

    def build(self, input_shape):
        d = self._input_dim(input_shape)
        ff_mask, lat_mask = self._masks(input_shape)
        self.kernel = self.add_weight(
            name="kernel", shape=(d, self.units),
            initializer=self.kernel_initializer,
            trainable=self.train_by_backprop,
        )
        self.lateral = self.add_weight(
            name="lateral", shape=(self.units, self.units),
            initializer="identity", trainable=self.train_by_backprop,
        )
        if ff_mask is not None:
            self.feedforward_mask = ops.convert_to_tensor(ff_mask, "float32")
        if lat_mask is not None:
            self.lateral_mask = ops.convert_to_tensor(lat_mask, "float32")
        assign_unit_columns(self.kernel, self.feedforward_mask)

    def _flatten(self, inputs):
        x = ops.cast(inputs, "float32")
        return ops.reshape(x, (ops.shape(x)[0], self.kernel.shape[0]))

    def _settle_flat(self, x):
        kernel = ops.cast(self.kernel, "float32")
        lateral = ops.cast(self.lateral, "float32")
        drive = ops.matmul(x, kernel)
        return settle(drive, lateral, self.non_negative, self.iterations,
                      self.tolerance)

    def _shape_output(self, y):
        return y

    def call(self, inputs):
        x = self._flatten(inputs)
        y, residual = run_compiled_when_eager(self, self._settle_flat, x)
        scope = _context.similarity_matching_scope()
        if scope is not None:
            scope.record(self, x, [y], residual)
        return ops.cast(self._shape_output(y), self.compute_dtype)

    def fixed_point_residual(self, inputs):
        """Natural residual of the dynamics at the returned output (scalar)."""
        x = self._flatten(inputs)
        return run_compiled_when_eager(self, self._settle_flat, x)[1]

    def filters(self):
        """`F = M^{-1} W` (k x d): the linear map from input to output."""
        kernel = ops.cast(self.kernel, "float32")
        lateral = ops.cast(self.lateral, "float32")
        return ops.solve(lateral, ops.transpose(kernel))

    def local_updates(self, inputs, states):
        """`[(variable, delta)]`: this layer's local rule, before the rate."""
        d_kernel, d_lateral = hebbian_updates(
            inputs, states[0], ops.cast(self.kernel, "float32"),
            ops.cast(self.lateral, "float32"), self.tau,
            self.feedforward_mask, self.lateral_mask,
        )
        return [(self.kernel, d_kernel), (self.lateral, d_lateral)]

    def objective(self, inputs, states):
        """Minibatch similarity-matching objective (see `gram_objective`)."""
        return gram_objective(
            inputs, states,
            feedforward_masks=[self.feedforward_mask],
            lateral_masks=[self.lateral_mask],
        )

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.units)

    def get_config(self):
        return {**super().get_config(), "units": self.units}
