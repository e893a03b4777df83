"""Similarity matching's dynamics and local learning rules, shared by the
`SimilarityMatching`, `StructuredSimilarityMatching` and
`DeepSimilarityMatching` layers.

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

import keras
from keras import ops

from keras_hebb import _compat

_TINY = 1e-12


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
