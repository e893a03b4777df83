"""Similarity-matching Hebbian/anti-Hebbian layers: dense and structured.

The math (written out once here; `docs/SIMILARITY_MATCHING.md` has the
derivation). Inputs `x_t` (d values), outputs `y_t` (k values), `T`
samples. Similarity matching asks the outputs to have the same pairwise
similarities as the inputs:

    min_Y (1/T^2) sum_{t,t'} (x_t . x_t' - y_t . y_t')^2      [Y >= 0 for NSM]

With `W = <y x^T>` (k x d) and `M = <y y^T>` (k x k) as auxiliary
variables this becomes the min-max problem

    min_W max_M  2 Tr(W^T W) - Tr(M^T M)
                 + <min_y [-4 x^T W^T y + 2 y^T M y]>_t

whose online solution is Foldiak's Hebbian/anti-Hebbian network: for each
input the neurons settle to the minimizer of the per-sample energy
`E(y) = 1/2 y^T M y - y^T W x` (linear: `y = M^{-1} W x`; non-negative:
the rectified fixed point), then the synapses take one gradient step,

    W <- W + eta       (y x^T - W)     (Hebbian, feedforward)
    M <- M + eta / tau (y y^T - M)     (anti-Hebbian, lateral)

each from its own pre- and post-synaptic activity only. For a minibatch the
outer products are averaged over the batch. The *structured* network masks
both terms with fixed connectivity `C^W` (local receptive fields) and `C^M`
(local lateral connections); the same derivation with the masked objective
gives the same rules restricted to the existing synapses.

Keras layout: the feedforward weights are stored as `kernel` with shape
`(d, k)` (`kernel = W^T`, so `W x` is `x @ kernel`), the lateral weights as
`lateral` with shape `(k, k)`. Both are non-trainable Keras weights by
default: `SimilarityMatchingModel` changes them with the local rules, and a
supervised loss never reaches them.
"""

import numbers

import keras
import numpy as np
from keras import ops

from keras_hebb import _checks, _compat, _context

_TINY = 1e-12


# ------------------------------------------------------------ shared formulas


def run_compiled_when_eager(layer, function, *args):
    """Runs `function(*args)`, as a cached `tf.function` when TF is eager.

    The dynamics are a loop of small steps: executed op by op in eager mode
    (a notebook's `layer(x)`) they take seconds, compiled into a graph
    milliseconds. Inside `fit`/`predict` (already a graph), under an eager
    gradient tape (where building a differentiable graph of the loop costs
    more than the op-by-op loop) and with other backends the function runs
    as is.
    """
    if keras.backend.backend() != "tensorflow":
        return function(*args)
    import tensorflow as tf

    if not tf.executing_eagerly() or _compat.tape_is_recording():
        return function(*args)
    cache = layer.__dict__.setdefault("_compiled_functions", {})
    name = function.__name__
    if name not in cache:
        cache[name] = tf.function(function, reduce_retracing=True)
    return cache[name](*args)


def gram_objective(inputs, states, gamma=0.0, feedforward_masks=None,
                   lateral_masks=None):
    """Minibatch value of the (structured, deep) similarity-matching objective.

    With `Y_0 = X` (rows are samples, `B` of them) and states `Y_1..Y_L`:

        J = (1/B^2) [ ||X^T X||^2
              + sum_l gamma^(l-1) ( ||C^M_l * (Y_l^T Y_l)||^2
                                    - 2 ||C^W_l * (Y_(l-1)^T Y_l)||^2 ) ]

    (`*` is the elementwise product with the connectivity masks, all ones
    when absent; `||.||` the Frobenius norm). For one dense layer this is
    exactly `(1/B^2) ||X X^T - Y Y^T||_F^2`, the similarity mismatch.
    """
    x = ops.cast(inputs, "float32")
    batch = ops.cast(ops.shape(x)[0], "float32")
    total = _frobenius_squared(ops.matmul(ops.transpose(x), x))
    previous = x
    for index, y in enumerate(states):
        y = ops.cast(y, "float32")
        cross = ops.matmul(ops.transpose(previous), y)
        auto = ops.matmul(ops.transpose(y), y)
        if feedforward_masks is not None and feedforward_masks[index] is not None:
            cross = cross * feedforward_masks[index]
        if lateral_masks is not None and lateral_masks[index] is not None:
            auto = auto * lateral_masks[index]
        weight = gamma ** index
        total = total + weight * (
            _frobenius_squared(auto) - 2.0 * _frobenius_squared(cross)
        )
        previous = y
    return total / (batch * batch)


def assign_unit_columns(kernel, mask=None):
    """Masks `kernel` and scales each column (a neuron's weights) to norm 1."""
    value = ops.cast(kernel, "float32")
    if mask is not None:
        value = value * mask
    norms = ops.sqrt(ops.sum(value * value, axis=0, keepdims=True))
    kernel.assign(ops.cast(value / ops.maximum(norms, _TINY), kernel.dtype))


def _frobenius_squared(matrix):
    return ops.sum(matrix * matrix)


def hebbian_updates(pre, post, kernel, lateral, tau,
                    feedforward_mask=None, lateral_mask=None):
    """The local updates of one layer (to be scaled by the learning rate).

    `pre` (B, d) and `post` (B, k) are this layer's own pre- and
    post-synaptic activities. Returns `(d_kernel, d_lateral)`:

        d_kernel  = C^W * (pre^T post / B - kernel)        (= (y x^T - W)^T)
        d_lateral = C^M * (post^T post / B - lateral) / tau
    """
    pre = ops.cast(pre, "float32")
    post = ops.cast(post, "float32")
    batch = ops.cast(ops.shape(pre)[0], "float32")
    d_kernel = ops.matmul(ops.transpose(pre), post) / batch - kernel
    d_lateral = (ops.matmul(ops.transpose(post), post) / batch - lateral) / tau
    if feedforward_mask is not None:
        d_kernel = d_kernel * feedforward_mask
    if lateral_mask is not None:
        d_lateral = d_lateral * lateral_mask
    return d_kernel, d_lateral


def natural_residual(states, gradients, diagonals, non_negative):
    """`||Y - P(Y - G)|| / ||Y||` over all layers: 0 exactly at a fixed point.

    `G` is each layer's energy gradient divided by the self-inhibition
    `diag(M)` (so it has the units of `Y`), `P` is the projection on the
    constraint set (ReLU for non-negative networks, identity otherwise).
    """
    num = 0.0
    den = 0.0
    for y, g, d in zip(states, gradients, diagonals):
        g = g / d
        step = y - ops.relu(y - g) if non_negative else g
        num = num + ops.sum(step * step)
        den = den + ops.sum(y * y)
    return ops.sqrt(num) / (ops.sqrt(den) + _TINY)


def run_dynamics(initial, gradient_fn, diagonals, weights, step,
                 non_negative, iterations, tolerance):
    """Settles the (rectified) neural dynamics of one or more layers.

    Minimizes the quadratic energy `E` whose per-layer gradients (divided by
    the layer weight `weights[l]`) `gradient_fn(states)` returns, subject to
    `states >= 0` if `non_negative`. The iteration is the projected Euler
    discretization of the neural dynamics

        dy_l/dt = -diag(M_l)^{-1} g_l(y),   y_l <- P(y_l - step * g_l / diag(M_l))

    (each neuron's time constant is its self-inhibition `M_ii`), accelerated
    with Nesterov momentum (FISTA, restarted per sample whenever a step goes
    uphill). In the variables `v_l = sqrt(weights[l] diag(M_l)) y_l` this is
    plain accelerated projected gradient descent with a unit-diagonal Hessian
    whose largest eigenvalue `1 / step` bounds, so it converges to the unique
    fixed point when `E` is strictly convex. Stops after `iterations` steps
    or once `natural_residual` is below `tolerance`. Returns
    `(states, residual)`.
    """
    count = len(initial)
    project = ops.relu if non_negative else (lambda v: v)

    def residual_of(states):
        return natural_residual(states, gradient_fn(states), diagonals,
                                non_negative)

    def cond(i, residual, *rest):
        return ops.logical_and(i < iterations, residual > tolerance)

    def body(i, residual, *rest):
        ys, zs, t = list(rest[:count]), list(rest[count:2 * count]), rest[-1]
        grads = gradient_fn(zs)
        news = [project(z - step * g / d) for z, g, d in zip(zs, grads, diagonals)]
        # Restart the momentum of a sample whose step went uphill, measured
        # in the metric of E (weight * diag(M) per neuron).
        uphill = 0.0
        for z, new, y, d, w in zip(zs, news, ys, diagonals, weights):
            uphill = uphill + w * ops.sum(d * (z - new) * (new - y), axis=1,
                                          keepdims=True)
        restart = uphill > 0.0
        t_next = 0.5 * (1.0 + ops.sqrt(1.0 + 4.0 * t * t))
        t_next = ops.where(restart, 1.0, t_next)
        momentum = ops.where(restart, 0.0, (t - 1.0) / t_next)
        zs = [new + momentum * (new - y) for new, y in zip(news, ys)]
        return (i + 1, residual_of(news), *news, *zs, t_next)

    t0 = ops.ones_like(initial[0][:, :1])
    loop_vars = (ops.convert_to_tensor(0, "int32"), residual_of(initial),
                 *initial, *initial, t0)
    out = ops.while_loop(cond, body, loop_vars, maximum_iterations=iterations)
    return list(out[2:2 + count]), out[1]


def self_inhibition(lateral):
    """`diag(M)`, floored at 1e-6 so that a silent neuron divides safely."""
    return ops.maximum(ops.diagonal(lateral), 1e-6)


def normalized_row_bound(lateral, diagonal):
    """Row sums of `|D^-1/2 M D^-1/2|`: a bound on its eigenvalues."""
    scale = ops.rsqrt(diagonal)
    return ops.sum(ops.abs(lateral) * scale[:, None] * scale[None, :], axis=1)


def settle(drive, lateral, non_negative, iterations, tolerance):
    """Fixed point of one layer's dynamics for the feedforward `drive = X K`.

    Linear: solves `Y M = drive` exactly. Non-negative: minimizes
    `E(Y) = 1/2 Tr(Y M Y^T) - Tr(Y drive^T)` over `Y >= 0` with
    `run_dynamics` (gradient `Y M - drive`), starting from
    `max(0, drive / diag(M))`. Returns `(Y, residual)`.
    """
    diagonal = self_inhibition(lateral)
    if not non_negative:
        y = ops.transpose(ops.solve(lateral, ops.transpose(drive)))
        gradient = ops.matmul(y, lateral) - drive
        return y, natural_residual([y], [gradient], [diagonal], False)
    step = 1.0 / (ops.max(normalized_row_bound(lateral, diagonal)) + _TINY)
    (y,), residual = run_dynamics(
        [ops.relu(drive / diagonal)],
        lambda states: [ops.matmul(states[0], lateral) - drive],
        [diagonal], [1.0], step, True, iterations, tolerance,
    )
    return y, residual


# ----------------------------------------------------------------- the layers


@keras.saving.register_keras_serializable(package="keras_hebb")
class SimilarityMatching(keras.layers.Layer):
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
        super().__init__(**kwargs)
        self.units = _checks.check_positive_int("units", units)
        self.non_negative = bool(non_negative)
        self.tau = _checks.check_positive("tau", tau)
        self.iterations = _checks.check_positive_int("iterations", iterations)
        self.tolerance = _checks.check_non_negative("tolerance", tolerance)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.train_by_backprop = bool(train_by_backprop)
        self.feedforward_mask = None
        self.lateral_mask = None

    # Subclasses with structure override these two (numpy 0/1 arrays).
    def _masks(self, input_shape):
        return None, None

    def _input_dim(self, input_shape):
        dims = input_shape[1:]
        if not dims or any(d is None for d in dims):
            raise ValueError(
                f"Layer '{self.name}' ({type(self).__name__}) needs inputs "
                "(batch, ...) with known non-batch dimensions. "
                f"Received: input_shape={tuple(input_shape)}"
            )
        return int(np.prod(dims))

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
        return {
            **super().get_config(),
            "units": self.units,
            "non_negative": self.non_negative,
            "tau": self.tau,
            "iterations": self.iterations,
            "tolerance": self.tolerance,
            "kernel_initializer": keras.initializers.serialize(
                self.kernel_initializer
            ),
            "train_by_backprop": self.train_by_backprop,
        }


@keras.saving.register_keras_serializable(package="keras_hebb")
class StructuredSimilarityMatching(SimilarityMatching):
    """Structured similarity matching on an image grid (local connectivity).

    The neurons sit on a grid of sites, `filters` neurons per site. Site
    `(a, b)` sees only the `kernel_size x kernel_size` input patch starting
    at `(a * strides, b * strides)` (all channels; "valid" placement, so the
    grid is `(H - kernel_size) // strides + 1` sites high), and is laterally
    connected only to the neurons of sites `(a', b')` with
    `max(|a - a'|, |b - b'|) <= lateral_radius` (including its own site).
    Weights are not shared between sites (unlike a convolution). The
    objective and the rules are those of `SimilarityMatching` with the
    connectivity masks `C^W` (receptive fields) and `C^M` (lateral
    neighbourhoods) applied: only existing synapses exist and learn,

        W += eta C^W * (y x^T - W),   M += (eta / tau) C^M * (y y^T - M).

    `kernel` and `lateral` are stored as dense masked matrices (size
    `H*W*C x sites*filters` and `(sites*filters)^2`): meant for small images
    such as 28x28 Fashion-MNIST.

    Example:

    >>> layer = StructuredSimilarityMatching(4, kernel_size=8, strides=4)
    >>> layer(np.random.rand(2, 28, 28, 1).astype("float32")).shape
    (2, 6, 6, 4)

    Args:
        filters: neurons per site.
        kernel_size: side of each site's receptive field. Defaults to `8`.
        strides: distance between neighbouring sites' fields. Defaults
            to `4`.
        lateral_radius: Chebyshev radius (in sites) of the lateral
            connections; `0` connects only neurons of the same site.
            Defaults to `1`.
        non_negative: outputs `y >= 0`. Defaults to `True`.
        **kwargs: the other arguments of `SimilarityMatching` (`tau`,
            `iterations`, `tolerance`, `kernel_initializer`,
            `train_by_backprop`) and base layer keyword arguments.

    Call arguments:
        inputs: NHWC images.

    Returns:
        `(batch, sites_high, sites_wide, filters)`.

    Reference:
        Obeid, Ramambason, Pehlevan, "Structured and Deep Similarity Matching
        via Structured and Deep Hebbian Networks", NeurIPS 2019.
    """

    def __init__(self, filters, kernel_size=8, strides=4, lateral_radius=1,
                 non_negative=True, **kwargs):
        kwargs.pop("units", None)
        super().__init__(units=1, non_negative=non_negative, **kwargs)
        self.filters_per_site = _checks.check_positive_int("filters", filters)
        self.kernel_size = _checks.check_positive_int("kernel_size", kernel_size)
        self.strides = _checks.check_positive_int("strides", strides)
        ok = isinstance(lateral_radius, numbers.Integral) and lateral_radius >= 0
        if not ok or isinstance(lateral_radius, bool):
            raise ValueError(
                "Invalid value for `lateral_radius`: expected an integer >= 0. "
                f"Received: lateral_radius={lateral_radius!r}"
            )
        self.lateral_radius = int(lateral_radius)
        self.grid = None
        self.image_shape = None

    def _grid(self, input_shape):
        _checks.check_image_rank(self, input_shape)
        height, width = input_shape[1], input_shape[2]
        if height is None or width is None or input_shape[3] is None:
            raise ValueError(
                f"Layer '{self.name}' needs a known image size. "
                f"Received: input_shape={tuple(input_shape)}"
            )
        if height < self.kernel_size or width < self.kernel_size:
            raise ValueError(
                f"Invalid value for `kernel_size`: larger than the "
                f"{height}x{width} image. Received: kernel_size="
                f"{self.kernel_size}"
            )
        return ((height - self.kernel_size) // self.strides + 1,
                (width - self.kernel_size) // self.strides + 1)

    def _masks(self, input_shape):
        _, height, width, channels = input_shape
        rows, cols = self._grid(input_shape)
        f = self.filters_per_site
        ff = np.zeros((height, width, channels, rows, cols, f), "float32")
        for a in range(rows):
            for b in range(cols):
                top, left = a * self.strides, b * self.strides
                ff[top:top + self.kernel_size, left:left + self.kernel_size,
                   :, a, b, :] = 1.0
        site_a, site_b = np.meshgrid(np.arange(rows), np.arange(cols),
                                     indexing="ij")
        near = np.maximum(
            np.abs(site_a.reshape(-1, 1) - site_a.reshape(1, -1)),
            np.abs(site_b.reshape(-1, 1) - site_b.reshape(1, -1)),
        ) <= self.lateral_radius
        lat = np.kron(near.astype("float32"), np.ones((f, f), "float32"))
        return ff.reshape(height * width * channels, -1), lat

    def build(self, input_shape):
        self.grid = self._grid(input_shape)
        self.image_shape = tuple(int(d) for d in input_shape[1:])
        self.units = self.grid[0] * self.grid[1] * self.filters_per_site
        super().build(input_shape)

    def _shape_output(self, y):
        return ops.reshape(y, (ops.shape(y)[0], *self.grid,
                               self.filters_per_site))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *self._grid(input_shape), self.filters_per_site)

    def receptive_fields(self):
        """Each neuron's feedforward weights as an image patch (numpy).

        Returns `(rows, cols, filters, kernel_size, kernel_size, channels)`.
        """
        kernel = ops.convert_to_numpy(self.kernel)
        image = kernel.reshape(*self.image_shape, *self.grid,
                               self.filters_per_site)
        channels = self.image_shape[-1]
        k = self.kernel_size
        out = np.zeros((*self.grid, self.filters_per_site, k, k, channels),
                       "float32")
        for a in range(self.grid[0]):
            for b in range(self.grid[1]):
                top, left = a * self.strides, b * self.strides
                patch = image[top:top + k, left:left + k, :, a, b, :]
                out[a, b] = np.transpose(patch, (3, 0, 1, 2))
        return out

    def get_config(self):
        config = super().get_config()
        config.pop("units")
        return {
            **config,
            "filters": self.filters_per_site,
            "kernel_size": self.kernel_size,
            "strides": self.strides,
            "lateral_radius": self.lateral_radius,
        }
