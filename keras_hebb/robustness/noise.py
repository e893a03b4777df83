"""Accuracy under additive Gaussian noise in [0, 1] pixel space."""

import numpy as np

from keras_hebb.robustness import attacks


def noise_batch(images, sigma, draw, seed):
    """`images + N(0, sigma^2)`, clipped to [0, 1], reproducibly.

    The draw depends only on `(seed, draw, sigma)` and the image shape, so
    every model evaluated with the same seed sees exactly the same noise.
    """
    rng = np.random.default_rng([int(seed), int(draw), int(round(sigma * 1e6))])
    noise = rng.standard_normal(images.shape, dtype=np.float32) * np.float32(sigma)
    return np.clip(images + noise, 0.0, 1.0)


def noise_accuracy(model_fn, images, labels, sigmas, draws=3, seed=0, batch_size=512):
    """Mean accuracy over `draws` noise draws at each sigma.

    Args:
        model_fn: from `attacks.make_model_fn` (or any images -> logits).
        images, labels: images in [0, 1] and integer labels.
        sigmas: noise standard deviations in pixel units, each `>= 0`.
        draws: noise draws per sigma. Defaults to `3` (as in the paper).
        seed: noise seed. Defaults to `0`.
        batch_size: images per forward pass. Defaults to `512`.

    Returns:
        A list of `{"sigma", "accuracy", "accuracy_per_draw", "draws"}`.
    """
    results = []
    for sigma in sigmas:
        if sigma < 0:
            raise ValueError(f"Invalid noise sigma: expected a number >= 0. Received: sigma={sigma}")
        per_draw = []
        for draw in range(draws):
            noisy = noise_batch(images, sigma, draw, seed)
            predicted = attacks.predict(model_fn, noisy, batch_size)
            per_draw.append(float(np.mean(predicted == labels)))
        results.append({
            "sigma": float(sigma),
            "accuracy": float(np.mean(per_draw)),
            "accuracy_per_draw": per_draw,
            "draws": int(draws),
        })
    return results
