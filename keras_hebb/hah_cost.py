"""The Hebbian/anti-Hebbian (HaH) cost of a layer.

`keras_hebb.collect_hah_costs()` (a mode of `keras_hebb._context`) collects
the costs of a forward pass.
"""

import math

from keras import ops

from keras_hebb import _checks, _selection


def hah_cost(z, ratio=0.1, demote=1.0):
    """Hebbian/anti-Hebbian cost of a layer's pre-activation `z` (NHWC).

    With `r = relu(z)` and, at every position `(n, h, w)`, the `K =
    ceil(ratio * C)` largest of the `C` channel values:

        HaH = mean_{n,h,w} [mean(top-K of r) - demote * mean(other C-K of r)]

    Maximizing it (the training loss adds `-alpha * HaH`) pushes the winning
    neurons' filters towards the input patch (Hebbian) and the other active
    ones away from it (anti-Hebbian). Finds the K-th largest channel value
    (a selection, not a sort) and takes one weighted sum. Computed in
    float32.

    Args:
        z: tensor of rank >= 2, channels last.
        ratio: fraction of winners per position, in `(0, 1]`.
            Defaults to `0.1`.
        demote: weight of the losers' mean, `>= 0`. Defaults to `1.0`
            (the paper's code; the authors' later package uses `0.1`).

    Returns:
        A float32 scalar.
    """
    ratio = _checks.check_fraction("ratio", ratio)
    demote = _checks.check_non_negative("demote", demote)
    channels = z.shape[-1]
    if channels is None:
        raise ValueError(
            f"hah_cost needs a known number of channels. Received: "
            f"z.shape={tuple(z.shape)}"
        )
    r = ops.relu(ops.cast(z, "float32"))
    winners = winner_count(channels, ratio)
    if winners == channels:
        return ops.mean(ops.sum(r, axis=-1)) / float(winners)
    # Every channel enters the cost linearly, with weight 1/K if it is among
    # the top K and -demote/(C-K) otherwise: one weighted sum of r, weights
    # from a comparison with the K-th largest value (no top-k gradient, no
    # scatter). Channels tied at that value share the remaining winner
    # slots, so the value equals the top-K sum exactly.
    kth = ops.expand_dims(_selection.kth_largest(r, winners), -1)
    weights = ops.stop_gradient(winner_weights(r, kth, winners, demote))
    return ops.mean(ops.sum(r * weights, axis=-1))


def winner_weights(r, kth, winners, demote):
    """Per-channel weights of the cost: `1/K` for the top K of each position
    (`r > kth`, ties at `kth` sharing the free winner slots), `-demote /
    (C - K)` for the others. `kth`: the K-th largest value, keepdims."""
    channels = r.shape[-1]
    above = ops.cast(r > kth, "float32")
    tied = ops.cast(r == kth, "float32")
    free_slots = float(winners) - ops.sum(above, axis=-1, keepdims=True)
    win = above + tied * (
        free_slots / ops.maximum(ops.sum(tied, axis=-1, keepdims=True), 1.0)
    )
    lose_weight = demote / float(channels - winners)
    return win * (1.0 / winners + lose_weight) - lose_weight


def winner_count(channels, ratio):
    """`K = ceil(ratio * channels)`, robust to float error (0.1 * 30)."""
    return max(1, math.ceil(round(ratio * channels, 6)))
