"""Transfer attacks in the production cascade (`cascade.evaluate_norm`).

A source that shares the target's weights is the strongest possible
transfer source: its adversarial examples are the target's own. So
`transfer` from it must break exactly the images PGD-CE on the target
breaks, and `transfer_bpda` exactly those BPDA (same loss and steps)
breaks; a transfer attack that fooled nothing there would be broken.
"""

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_hebb import data
from keras_hebb.layers import FractionalThreshold
from keras_hebb.robustness import attacks, cascade, registry, suite


def _cnn(small_cnn, threshold):
    # The threshold keeps the top 30% per channel: hard masks, declared
    # surrogates.
    return small_cnn(after_first=(lambda x: FractionalThreshold(0.3)(x)) if threshold
                     else None)


def _twin(model):
    twin = keras.models.clone_model(model)
    twin.set_weights(model.get_weights())
    return twin


@pytest.fixture(scope="module")
def fashion():
    train = data.load_arrays("fashion_mnist", "train", 2000)
    test = data.load_arrays("fashion_mnist", "test", 80)
    return train, test


def _smallest(model, source, fashion, attack_names, budgets=(0.02, 0.05, 0.1, 0.2)):
    """Each image's smallest breaking Linf budget under `attack_names`."""
    _, (x, y) = fashion
    five = {"steps": 5} if attack_names[0] in ("transfer", "transfer_bpda") else {
        "steps": 5, "restarts": 1}
    config = dataclasses.replace(suite.QUICK, attacks=attack_names, linf_budgets=budgets,
                                 l2_budgets=(), attack_settings={attack_names[0]: five})
    target = suite._ModelUnderTest("target", model)
    sources = [suite._ModelUnderTest("twin", source)]
    clean = attacks.predict(target.fn, x) == y
    tf.random.set_seed(0)
    records, smallest = cascade.evaluate_norm(
        target, sources, x, y, clean, "linf", budgets, config, {}, suite._Progress(False))
    return records, smallest


@pytest.mark.parametrize("threshold, transfer, white_box", [
    (False, "transfer", "pgd_ce"),
    (True, "transfer_bpda", "bpda"),
])
def test_transfer_from_a_twin_breaks_what_the_white_box_attack_breaks(
        threshold, transfer, white_box, fashion, monkeypatch, small_cnn):
    (x, y), _ = fashion
    model = _cnn(small_cnn, threshold)
    model.fit(x, y, batch_size=100, epochs=2, verbose=0)
    if white_box == "bpda":
        # The suite's BPDA uses the margin loss; the transfer stage uses
        # cross-entropy: compare like with like.
        monkeypatch.setitem(registry.REGISTRY, "bpda", dataclasses.replace(
            registry.REGISTRY["bpda"],
            craft=lambda s: attacks.pgd(s.target.bpda_fn(s.settings["surrogate"]), s.images,
                                        s.labels, s.eps, s.norm, s.options["steps"],
                                        loss="ce", batch_size=s.config.batch_size)))
    records, by_transfer = _smallest(model, _twin(model), fashion, (transfer,))
    stages = [s["stage"] for s in records[0]["stages"]]
    assert stages == [f"{transfer}_from_twin"]
    _, by_white_box = _smallest(model, _twin(model), fashion, (white_box,))
    fooled = np.isfinite(by_transfer) & (by_transfer > 0)
    print(f"{transfer}: broke {fooled.mean():.2f} of the images by Linf 0.2")
    assert fooled.mean() >= 0.5
    np.testing.assert_array_equal(by_transfer, by_white_box)


def test_transfer_bpda_runs_only_from_sources_with_surrogates():
    config = suite.FULL
    plain = type("Source", (), {"name": "std", "surrogates": False})()
    hah = type("Source", (), {"name": "hah", "surrogates": True})()
    stages = registry.REGISTRY["transfer_bpda"].stages(
        config.attack_settings["transfer_bpda"], None, [plain, hah])
    assert [s.name for s in stages] == ["transfer_bpda_from_hah"]
    assert stages[0].settings["surrogate"] == config.attack_settings["bpda"]["modes"][0]
    assert "transfer_bpda" in config.attacks
