"""Certified L2 robustness by randomized smoothing (Cohen, Rosenfeld and
Kolter 2019).

The smoothed classifier `g(x) = argmax_c P(f(x + e) = c)`, `e ~ N(0,
sigma^2 I)`, is robust around `x` within the L2 radius `sigma *
Phi^-1(p_A)` whenever the top class has probability `p_A > 1/2`. CERTIFY
estimates it: `n0` noise draws select the top class `c_A`, `n` fresh draws
count how often `f` returns it, and the one-sided Clopper-Pearson lower
bound `p_A_lower` at level `alpha` replaces `p_A`; if `p_A_lower < 1/2`
the prediction abstains. With probability at least `1 - alpha` per image
the certificate is correct, whatever any attack does.

The noise is not clipped to [0, 1] (the base classifier `f` is the model
itself, as in the paper); pixels are in [0, 1], so the radii are in the
same units as the suite's L2 budgets.
"""

import numpy as np
from scipy import stats

from keras_hebb.robustness import attacks

#: Certified-accuracy radii reported by default (L2, pixels in [0, 1]).
RADII = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0)
ABSTAIN = -1


def clopper_pearson_lower(successes, trials, alpha):
    """One-sided `(1 - alpha)` Clopper-Pearson lower bound of a binomial
    proportion (`scipy.stats.beta`); 0 when there is no success."""
    successes = np.asarray(successes)
    bound = stats.beta.ppf(alpha, np.maximum(successes, 1), trials - successes + 1)
    return np.where(successes > 0, bound, 0.0)


def _counts(model_fn, x, sigma, samples, num_classes, rng, batch_size):
    """Per image, how often the model returns each class on `samples`
    noisy copies: int array `(N, num_classes)`."""
    counts = np.zeros((len(x), num_classes), np.int64)
    per_batch = max(1, batch_size // max(1, min(samples, batch_size)))
    draws = min(samples, batch_size)
    for start in range(0, len(x), per_batch):
        block = x[start:start + per_batch]
        remaining = samples
        while remaining > 0:
            k = min(draws, remaining)
            noisy = np.repeat(block, k, axis=0)
            noisy = noisy + rng.standard_normal(noisy.shape, dtype=np.float32) * np.float32(sigma)
            predicted = attacks.predict(model_fn, noisy.astype(np.float32), batch_size)
            predicted = predicted.reshape(len(block), k)
            for c in range(num_classes):
                counts[start:start + len(block), c] += np.sum(predicted == c, axis=1)
            remaining -= k
    return counts


def certify(model_fn, x, sigma, num_classes, n0=100, n=1000, alpha=0.001, seed=0,
            batch_size=512):
    """CERTIFY (Cohen et al. 2019) for every image of `x`.

    Args:
        model_fn: the base classifier, images -> logits
            (`attacks.make_model_fn`).
        x: images in [0, 1] (float32, NHWC).
        sigma: noise standard deviation (pixels in [0, 1]), > 0.
        num_classes: number of classes.
        n0: draws that select the top class. Defaults to `100`.
        n: draws that estimate its probability. Defaults to `1000`.
        alpha: failure probability of each certificate. Defaults to `0.001`.
        seed: seeds the noise. Defaults to `0`.
        batch_size: noisy images per forward pass. Defaults to `512`.

    Returns:
        `(prediction, radius, p_lower)`: the smoothed prediction
        (`ABSTAIN` = -1 where it abstains), the certified L2 radius (0 where
        it abstains) and the Clopper-Pearson lower bound, numpy `(N,)` each.
    """
    if not sigma > 0:
        raise ValueError(f"Invalid `sigma`: expected a number > 0. Received: sigma={sigma!r}")
    if n0 < 1 or n < 1:
        raise ValueError(f"`n0` and `n` must be >= 1. Received: n0={n0}, n={n}")
    if not 0 < alpha < 1:
        raise ValueError(f"Invalid `alpha`: expected a number in (0, 1). Received: alpha={alpha!r}")
    x = np.asarray(x, np.float32)
    rng = np.random.default_rng([int(seed), int(round(sigma * 1e6))])
    selection = _counts(model_fn, x, sigma, n0, num_classes, rng, batch_size)
    top = selection.argmax(axis=1)
    estimation = _counts(model_fn, x, sigma, n, num_classes, rng, batch_size)
    successes = estimation[np.arange(len(x)), top]
    p_lower = clopper_pearson_lower(successes, n, alpha)
    certified = p_lower >= 0.5
    radius = np.where(certified, sigma * stats.norm.ppf(np.clip(p_lower, 0.5, 1.0)), 0.0)
    prediction = np.where(certified, top, ABSTAIN)
    return prediction, radius, p_lower


def certified_accuracy(prediction, radius, labels, radii=RADII):
    """Fraction of images predicted correctly with a radius `>= r`, per r."""
    correct = np.asarray(prediction) == np.asarray(labels)
    return [float(np.mean(correct & (np.asarray(radius) >= r))) for r in radii]


def evaluate(model_fn, images, labels, sigmas, num_classes, n0=100, n=1000, alpha=0.001,
             radii=RADII, seed=0, batch_size=512):
    """Certified accuracy at `radii` for each sigma (JSON-ready list).

    Args:
        model_fn, num_classes, n0, n, alpha, seed, batch_size: as `certify`.
        images, labels: images in [0, 1] and integer labels.
        sigmas: noise levels, each > 0.
        radii: L2 radii of the certified accuracy. Defaults to `RADII`.
    """
    results = []
    for sigma in sigmas:
        prediction, radius, p_lower = certify(model_fn, images, sigma, num_classes, n0, n,
                                              alpha, seed, batch_size)
        correct = prediction == np.asarray(labels)
        results.append({
            "sigma": float(sigma), "n0": int(n0), "n": int(n), "alpha": float(alpha),
            "images": int(len(images)),
            "radii": [float(r) for r in radii],
            "certified_accuracy": certified_accuracy(prediction, radius, labels, radii),
            "abstained": float(np.mean(prediction == ABSTAIN)),
            "smoothed_accuracy": float(np.mean(correct)),
            "median_radius_correct": float(np.median(radius[correct])) if correct.any() else 0.0,
            "radius": [float(r) for r in radius],
        })
    return results
