"""Each cleverhans-based attack of the suite fools a small trained model at a
budget where it should (MIM and transfer were never shown to fool
anything before). APGD, Square: tests/test_robustness_autoattack.py; CW,
SPSA, BPDA: tests/test_robustness.py."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_hebb import data
from keras_hebb.robustness import attacks


@pytest.fixture(scope="module")
def setup(small_cnn):
    x, y = data.load_arrays("fashion_mnist", "train", 2000)
    target, source = small_cnn(0), small_cnn(1)
    target.fit(x, y, batch_size=100, epochs=2, verbose=0)
    # The transfer source: same architecture, other seed, other images.
    xs, ys = data.load_arrays("fashion_mnist", "train", 4000)
    source.fit(xs[2000:], ys[2000:], batch_size=100, epochs=2, verbose=0)
    xt, yt = data.load_arrays("fashion_mnist", "test", 120)
    fn = attacks.make_model_fn(target)
    keep = attacks.predict(fn, xt) == yt
    return fn, attacks.make_model_fn(source), xt[keep][:60], yt[keep][:60]


# Budgets where PGD leaves this model near 0% (Linf 0.25, L2 4); the
# one-step and transfer attacks are weaker, their gates lower. Measured:
# FGSM 97% / 95%, PGD 100%, MIM 100% / 98%, transfer 88% / 83%.
@pytest.mark.parametrize("attack, norm, eps, least", [
    ("fgsm", "linf", 0.25, 0.75),
    ("fgsm", "l2", 4.0, 0.75),
    ("pgd_ce", "linf", 0.25, 0.9),
    ("pgd_margin", "l2", 4.0, 0.9),
    ("mim", "linf", 0.25, 0.9),
    ("mim", "l2", 4.0, 0.9),
    ("transfer", "linf", 0.25, 0.6),
    ("transfer", "l2", 4.0, 0.6),
])
def test_attack_fools_a_trained_model(attack, norm, eps, least, setup):
    fn, source_fn, x, y = setup
    assert len(x) >= 50
    tf.random.set_seed(0)
    adversarial = {
        "fgsm": lambda: attacks.fgsm(fn, x, y, eps, norm),
        "pgd_ce": lambda: attacks.pgd(fn, x, y, eps, norm, steps=10, loss="ce"),
        "pgd_margin": lambda: attacks.pgd(fn, x, y, eps, norm, steps=10, loss="margin"),
        "mim": lambda: attacks.mim(fn, x, y, eps, norm, steps=10),
        "transfer": lambda: attacks.pgd(source_fn, x, y, eps, norm, steps=10, loss="ce"),
    }[attack]()
    attacks.check_budget(x, adversarial, norm, eps)
    fooled = np.mean(attacks.predict(fn, adversarial) != y)
    print(f"{attack} {norm} {eps}: fooled {fooled:.2f}")
    assert fooled >= least


@pytest.mark.parametrize("norm, eps, loss", [("linf", 0.03, "ce"), ("linf", 0.06, "margin"),
                                             ("l2", 0.5, "ce"), ("l2", 1.0, "margin")])
def test_early_stopping_pgd_breaks_every_image_cleverhans_pgd_breaks(norm, eps, loss, setup):
    # Same random start (same seed), same steps; the suite's PGD stops an
    # image at its first misclassified iterate instead of going on.
    fn, _, x, y = setup
    broken = {}
    for early_stop in (False, True):
        tf.random.set_seed(5)
        adversarial = attacks.pgd(fn, x, y, eps, norm, steps=10, loss=loss,
                                  early_stop=early_stop)
        attacks.check_budget(x, adversarial, norm, eps)
        broken[early_stop] = attacks.predict(fn, adversarial) != y
    print(f"{norm} {eps} {loss}: cleverhans {broken[False].sum()}, early stop "
          f"{broken[True].sum()} of {len(y)}")
    assert 0 < broken[False].sum() < len(y)
    assert np.all(broken[True] >= broken[False])


@pytest.mark.parametrize("norm, eps", [("linf", 0.1), ("l2", 1.0)])
def test_per_image_random_starts_do_not_depend_on_the_other_images(norm, eps):
    from keras_hebb.robustness import autoattack

    seeds = [(0, 7, i) for i in range(6)]
    shape = (6, 28, 28, 1)
    full = attacks.random_starts(shape, norm, eps, seeds)
    np.testing.assert_array_equal(full[3:5], attacks.random_starts((2,) + shape[1:], norm,
                                                                   eps, seeds[3:5]))
    assert attacks.distances(np.zeros(shape), full, norm).max() <= eps * (1 + 1e-6)
    assert len({float(v) for v in full[:, 0, 0, 0]}) == 6  # distinct draws
    # APGD's starts likewise.
    x = np.full(shape, 0.5, np.float32)
    budgets = np.full(6, eps, np.float32)
    starts = autoattack._random_start(x, norm, budgets, None, seeds)
    np.testing.assert_array_equal(
        starts[3:5], autoattack._random_start(x[3:5], norm, budgets[3:5], None, seeds[3:5]))


def test_early_stop_with_per_image_starts_breaks_a_superset(setup):
    fn, _, x, y = setup
    seeds = [(1, i) for i in range(len(x))]
    broken = {}
    for early_stop in (False, True):
        adversarial = attacks.pgd(fn, x, y, 0.04, "linf", steps=10, loss="margin",
                                  early_stop=early_stop, start_seeds=seeds)
        broken[early_stop] = attacks.predict(fn, adversarial) != y
    assert 0 < broken[False].sum() < len(y)
    assert np.all(broken[True] >= broken[False])


def test_attack_graphs_are_freed_with_the_model(small_cnn):
    # The suite's graph caches live on the model function: after an
    # evaluation nothing keeps the model alive (make results evaluates
    # many models in one process).
    import gc
    import weakref

    from keras_hebb.robustness import autoattack, spsa

    model = small_cnn(0)
    model_fn = attacks.make_model_fn(model)
    x = np.random.default_rng(0).random((4, 28, 28, 1), dtype=np.float32)
    y = np.zeros(4, np.int64)
    attacks.pgd(model_fn, x, y, 0.05, steps=2)
    spsa.spsa(model_fn, x[:1], y[:1], 0.05, steps=1, samples=2)
    autoattack.apgd(model_fn, x, y, 0.05, steps=2)
    references = [weakref.ref(model), weakref.ref(model_fn)]
    del model, model_fn
    gc.collect()
    assert [r() for r in references] == [None, None]
