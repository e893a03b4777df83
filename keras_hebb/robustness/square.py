"""Square Attack (Andriushchenko et al. 2020), batched: AutoAttack's black-box component.

Written from the paper ("Square Attack: a query-efficient black-box
adversarial attack via random search"): an untargeted, gradient-free
random search on the margin loss that only reads the model's outputs,
whole batches per forward pass through the suite's `tf.function`
(`attacks.make_model_fn`), bookkeeping in numpy. It takes images in
[0, 1] (float32, NHWC), their true labels and a budget (one number or one
per image), and returns adversarial examples projected onto the budget
ball and into [0, 1] with the budget and projection helpers of
`autoattack`, where the APGD attacks are; a test checks it against ART's
implementation (tests/test_robustness_autoattack.py).
"""

import math

import numpy as np
import tensorflow as tf

from keras_hebb.robustness import attacks
from keras_hebb.robustness.autoattack import _budgets, _per_image, _project


def _square_fraction(p_init, query, queries):
    # The schedule of Andriushchenko et al., on iterations rescaled to 10,000.
    i = int(query / max(queries, 1) * 10000)
    for bound, divisor in ((10, 1), (50, 2), (200, 4), (500, 8), (1000, 16), (2000, 32),
                           (4000, 64), (6000, 128), (8000, 256)):
        if i <= bound:
            return p_init / divisor
    return p_init / 512


def _margin(logits, y):
    logits = logits.copy()
    true = logits[np.arange(len(y)), y]
    logits[np.arange(len(y)), y] = -np.inf
    return true - logits.max(axis=1)


def _windows(n, height, width, side, rng):
    """Boolean masks `(n, H, W)` of one random `side` x `side` window each,
    and their top-left corners."""
    top = rng.integers(0, height - side + 1, n)
    left = rng.integers(0, width - side + 1, n)
    rows = np.arange(height)[None, :, None]
    cols = np.arange(width)[None, None, :]
    mask = ((rows >= top[:, None, None]) & (rows < top[:, None, None] + side)
            & (cols >= left[:, None, None]) & (cols < left[:, None, None] + side))
    return mask, top, left


def _pseudo_gaussian(side):
    """Square's "meta pseudo-Gaussian" pattern: concentric rings weighted
    `sum 1/(k+1)^2`, the two halves with opposite signs, unit L2 norm."""
    def rings(h, w):
        r = np.arange(h)[:, None]
        c = np.arange(w)[None, :]
        centre_r, centre_c = (h - 1) / 2, (w - 1) / 2
        ring = np.maximum(np.abs(r - centre_r), np.abs(c - centre_c)).astype(int)
        weights = np.cumsum((1.0 / (np.arange(max(h, w) + 1)[::-1] + 1) ** 2))[::-1]
        return weights[ring]

    pattern = np.zeros((side, side))
    half = side // 2
    if half:
        pattern[:half] = rings(half, side)
        pattern[half:] = -rings(side - half, side)
    else:
        pattern[:] = 1.0
    return pattern / np.sqrt(np.sum(pattern ** 2))


def _place(pattern, top, left, height, width, transpose):
    """Per-image copies of `pattern` at (top, left): `(n, H, W)`."""
    side = pattern.shape[0]
    rows = np.arange(height)[None, :, None] - top[:, None, None]
    cols = np.arange(width)[None, None, :] - left[:, None, None]
    inside = (rows >= 0) & (rows < side) & (cols >= 0) & (cols < side)
    r, c = np.clip(rows, 0, side - 1), np.clip(cols, 0, side - 1)
    r, c = np.broadcast_arrays(r, c)
    r, c = np.where(transpose[:, None, None], c, r), np.where(transpose[:, None, None], r, c)
    return np.where(inside, pattern[r, c], 0.0)


def square(model_fn, x, y, eps, norm="linf", queries=1000, p_init=None, seed=0,
           batch_size=512):
    """Square Attack (Andriushchenko et al. 2020), untargeted, gradient-free.

    Random search on the margin loss `z_y - max_{j != y} z_j`: Linf starts
    from vertical stripes of +/-eps and proposes squares of +/-eps per
    channel; L2 starts from a grid of pseudo-Gaussian squares and moves
    the perturbation's mass between two random windows. A proposal is kept
    when it lowers the margin; the square's area follows the paper's
    schedule from `p_init` of the image. One query = one forward pass of
    every image not yet fooled.

    Args:
        model_fn: from `attacks.make_model_fn` (only its outputs are used).
        x, y: images in [0, 1] (NHWC) and integer labels.
        eps: budget in pixel space: a number, or one per image.
        norm: `"linf"` or `"l2"`. Defaults to `"linf"`.
        queries: iterations. Defaults to `1000`.
        p_init: initial fraction of the image a square covers; `None` uses
            AutoAttack's `0.8`. Defaults to `None`.
        seed: seeds the proposals. Defaults to `0`.
        batch_size: images per forward pass. Defaults to `512`.

    Returns:
        `(adversarial, fooled)` as `apgd`.
    """
    _check_square_arguments(norm, queries)
    x = np.asarray(x, np.float32)
    y = np.asarray(y, np.int64)
    n = len(x)
    eps = _budgets(eps, n)
    if not n or not np.any(eps > 0):
        return x.copy(), np.zeros(n, bool)
    if x.ndim != 4:
        raise ValueError(f"Square needs NHWC images. Received: shape={x.shape}")
    p_init = 0.8 if p_init is None else float(p_init)
    rng = np.random.default_rng(seed)
    _, height, width, _ = x.shape
    current = _initial_point(x, eps, norm, rng)
    best = _margins(model_fn, current, y, batch_size)
    for query in range(queries):
        active = np.flatnonzero(best > 0)
        if not len(active):
            break
        p = _square_fraction(p_init, query, queries)
        xa, ca, ea = x[active], current[active], eps[active]
        if norm == "linf":
            side = int(np.clip(round(math.sqrt(p * height * width)), 1, height - 1))
            proposal = _linf_proposal(xa, ca, ea, side, rng)
        else:
            side = int(np.clip(round(math.sqrt(p * height * width)), 3, height - 1))
            proposal = _l2_proposal(xa, ca, ea, side, rng)
        proposal = _project(xa, proposal.astype(np.float32), norm, ea)
        value = _margins(model_fn, proposal, y[active], batch_size)
        better = value < best[active]
        current[active[better]] = proposal[better]
        best[active[better]] = value[better]
    return _project(x, current, norm, eps), best <= 0


def _check_square_arguments(norm, queries):
    if norm not in attacks.NORMS:
        raise ValueError(f"Invalid value for `norm`: expected 'linf' or 'l2'. Received: norm={norm!r}")
    if queries < 1:
        raise ValueError(f"`queries` must be >= 1. Received: queries={queries}")


def _margins(model_fn, points, labels, batch_size):
    """The margin loss of each point, in batches of `batch_size`."""
    logits = np.concatenate([model_fn(tf.constant(points[s:s + batch_size])).numpy()
                             for s in range(0, len(points), batch_size)])
    return _margin(logits.astype(np.float64), labels)


def _initial_point(x, eps, norm, rng):
    """Linf: vertical stripes of +/-eps; L2: a grid of pseudo-Gaussian squares."""
    n, height, width, channels = x.shape
    if norm == "linf":
        stripes = rng.choice([-1.0, 1.0], size=(n, 1, width, channels)) * _per_image(eps, 4)
        return np.clip(x + stripes, 0.0, 1.0).astype(np.float32)
    current = x + _l2_init(n, height, width, channels, eps, rng)
    return _project(x, current, "l2", eps)


def _linf_proposal(xa, ca, ea, side, rng):
    """Each current point with one random square window set to +/-eps per
    channel (signs flipped where that would not change the point)."""
    n, height, width, channels = xa.shape
    mask, _, _ = _windows(n, height, width, side, rng)
    signs = rng.choice([-1.0, 1.0], size=(n, 1, 1, channels)) * _per_image(ea, 4)
    proposal = np.where(mask[..., None], np.clip(xa + signs, 0.0, 1.0), ca)
    # A proposal equal to the current point in its whole window
    # wastes a query: flip its signs (as the paper's code resamples).
    same = np.all((proposal == ca) | ~mask[..., None], axis=(1, 2))
    signs = np.where(same[:, None, None, :], -signs, signs)
    return np.where(mask[..., None], np.clip(xa + signs, 0.0, 1.0), ca)


def _l2_init(n, height, width, channels, eps, rng):
    """A grid of pseudo-Gaussian squares with random signs, norm `eps`."""
    side = max(height // 5, 1)
    delta = np.zeros((n, height, width, channels))
    pattern = _pseudo_gaussian(side)
    for top in range(0, height - side + 1, side):
        for left in range(0, width - side + 1, side):
            signs = rng.choice([-1.0, 1.0], size=(n, 1, 1, channels))
            delta[:, top:top + side, left:left + side, :] += pattern[None, :, :, None] * signs
    norms = np.sqrt(np.sum(delta.reshape(n, -1) ** 2, axis=1))
    return (delta * _per_image(eps / np.maximum(norms, 1e-12), 4)).astype(np.float32)


def _l2_proposal(x, current, eps, side, rng):
    """Moves the perturbation's mass in two random windows into the first,
    with a new pseudo-Gaussian pattern (Square's L2 proposal)."""
    n, height, width, channels = x.shape
    nu = (current - x).astype(np.float64)
    w1, top, left = _windows(n, height, width, side, rng)
    w2, _, _ = _windows(n, height, width, side, rng)
    w2 &= ~w1
    unused = np.maximum(eps.astype(np.float64) ** 2 - np.sum(nu.reshape(n, -1) ** 2, axis=1),
                        0.0)
    pattern = _place(_pseudo_gaussian(side), top, left, height, width,
                     rng.random(n) < 0.5)[..., None]
    both = (w1 | w2)[..., None]
    w1 = w1[..., None]
    in_w1 = np.where(w1, nu, 0.0)
    norm_w1 = np.sqrt(np.sum(in_w1 ** 2, axis=(1, 2)))[:, None, None, :]
    signs = rng.choice([-1.0, 1.0], size=(n, 1, 1, channels))
    temp = signs * pattern + in_w1 / np.maximum(norm_w1, 1e-12)
    temp = np.where(w1, temp, 0.0)
    temp_norm = np.sqrt(np.sum(temp ** 2, axis=(1, 2)))[:, None, None, :]
    available = np.sqrt(np.sum(np.where(both, nu, 0.0) ** 2, axis=(1, 2))[:, None, None, :]
                        + unused[:, None, None, None] / channels)
    new = np.where(both, 0.0, nu) + temp / np.maximum(temp_norm, 1e-12) * available
    return x + new
