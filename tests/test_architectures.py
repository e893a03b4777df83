"""Architectures (paper presets, CPU presets) and sparsity metrics."""

import keras
import numpy as np
import pytest

import keras_hebb
from keras_hebb import HebbianModel, architectures, sparsity
from keras_hebb.data import DATASETS, load_arrays
from keras_hebb.layers import HaHBlock


def _convs(model):
    return [l for l in model.layers if isinstance(l, (HaHBlock, keras.layers.Conv2D))]


def test_hah_vgg16_is_the_papers_network():
    model = architectures.hah_vgg16()
    convs = _convs(model)
    assert isinstance(model, HebbianModel)
    assert [type(c).__name__ for c in convs] == ["HaHBlock"] * 6 + ["Conv2D"] * 7
    assert [c.filters for c in convs] == [64, 64, 128, 128, 256, 256, 256,
                                          512, 512, 512, 512, 512, 512]
    assert all(not getattr(c, "use_bias", False) for c in convs)
    assert model.hah_alphas == list(keras_hebb.PAPER_ALPHAS)
    block = convs[0]
    assert (block.normalization_field, block.sigma, block.threshold,
            block.threshold_ratio, block.cost_ratio) == ("linf", 0.1, "fractional", 0.2, 0.1)
    assert len([l for l in model.layers if isinstance(l, keras.layers.MaxPooling2D)]) == 5
    assert model.output_shape == (None, 10)
    assert not any(isinstance(l, keras.layers.Dropout) for l in model.layers)
    # Inputs in [0, 1], normalized inside with CIFAR-10 statistics.
    norm = model.get_layer("input_normalization")
    np.testing.assert_allclose(np.ravel(norm.mean), DATASETS["cifar10"].mean, rtol=1e-6)


def test_vgg16_bn_has_the_same_convs_with_batch_norm():
    model = architectures.vgg16_bn()
    assert not isinstance(model, HebbianModel)
    assert len(_convs(model)) == 13
    assert len([l for l in model.layers if isinstance(l, keras.layers.BatchNormalization)]) == 13
    # Same number of conv weights as HaH-VGG16 (the HaH kernels have no bias either).
    hah = architectures.hah_vgg16()
    def conv_params(m):
        return sum(int(np.prod(w.shape)) for c in _convs(m) for w in c.trainable_weights)
    assert conv_params(model) == conv_params(hah)


@pytest.mark.parametrize("preset,shape", [
    (architectures.hah_vgg_small, (28, 28, 1)),
    (architectures.vgg_small_bn, (32, 32, 3)),
])
def test_small_presets_take_both_input_sizes(preset, shape):
    model = preset(input_shape=shape)
    out = model(np.random.rand(2, *shape).astype("float32"))
    assert out.shape == (2, 10)


def test_medium_presets_have_hah_vgg16s_proportions():
    hah, standard = architectures.hah_vgg_medium(), architectures.vgg_medium_bn()
    # The first 4 of 6 convs (two per stage) are HaH blocks, as the paper's
    # first 6 of 13; the standard network has the same convs with batch norm.
    assert [type(c).__name__ for c in _convs(hah)] == ["HaHBlock"] * 4 + ["Conv2D"] * 2
    assert [c.filters for c in _convs(hah)] == [c.filters for c in _convs(standard)] \
        == [32, 32, 64, 64, 128, 128]
    assert hah.hah_alphas == list(keras_hebb.PAPER_ALPHAS[:4])
    assert hah.output_shape == standard.output_shape == (None, 10)


def test_torch_weight_init_is_pytorchs_default_bound_on_every_kernel():
    model = architectures.hah_vgg_small(weight_init="torch")
    kernels = [c.conv.kernel if isinstance(c, HaHBlock) else c.kernel for c in _convs(model)]
    kernels.append(model.get_layer("logits").kernel)
    for kernel in kernels:
        values = keras.ops.convert_to_numpy(kernel)
        bound = (1.0 / np.prod(values.shape[:-1])) ** 0.5  # PyTorch: 1/sqrt(fan_in)
        # Uniform in +-bound: reaches near the bound, never past it.
        assert 0.9 * bound < np.abs(values).max() <= bound
    keras.utils.set_random_seed(3)
    default = architectures.hah_vgg_small().get_weights()
    keras.utils.set_random_seed(3)
    same = architectures.hah_vgg_small(weight_init="glorot_uniform").get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(default, same))


@pytest.mark.parametrize("kwargs,message", [
    ({"widths": (8, "X")}, "widths"),
    ({"widths": (8, "M"), "hah_blocks": 2}, "hah_blocks=2"),
    ({"widths": (8,), "input_shape": (28, 28)}, "input_shape"),
    ({"widths": (8,), "input_shape": (8, 8, 3), "mean": (0.5,)}, "mean"),
    ({"widths": (8,), "weight_init": "he"}, "weight_init='he'"),
])
def test_builder_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        architectures.build_vgg(**kwargs)


def test_activation_statistics_match_numpy():
    inputs = keras.Input((4, 4, 20))
    relu = keras.layers.ReLU(name="relu")(inputs)
    model = keras.Model(inputs, keras.layers.Flatten()(relu))
    x = np.random.default_rng(0).normal(size=(6, 4, 4, 20)).astype("float32")
    stats = sparsity.activation_statistics(model, x, batch_size=4)
    assert [s["layer"] for s in stats] == ["relu"]
    r = np.maximum(x, 0)
    assert stats[0]["nonzero_fraction"] == pytest.approx((r > 0).mean())
    s = np.sort(r, axis=-1)[..., ::-1]
    disparity = (s[..., :2].mean(-1) - s[..., 2:].mean(-1)).mean()
    assert stats[0]["disparity"] == pytest.approx(disparity, rel=1e-5)


def test_one_epoch_on_fashion_mnist_learns_and_hah_layers_are_sparser():
    """One epoch over 6,000 real training images, batch 64, Adam 1e-3."""
    x, y = load_arrays("fashion_mnist", "train", limit=6000)
    x_test, y_test = load_arrays("fashion_mnist", "test", limit=1000)
    results = {}
    for preset in (architectures.hah_vgg_small, architectures.vgg_small_bn):
        keras.utils.set_random_seed(2022)
        model = preset()
        model.compile(keras.optimizers.Adam(1e-3),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"])
        model.fit(x, y, batch_size=64, epochs=1, verbose=0)
        accuracy = model.evaluate(x_test, y_test, verbose=0, return_dict=True)["accuracy"]
        stats = sparsity.activation_statistics(model, x_test[:200])
        results[model.name] = (accuracy, [s["nonzero_fraction"] for s in stats])
    hah_accuracy, hah_nonzero = results["hah_vgg_small"]
    std_accuracy, std_nonzero = results["vgg_small_bn"]
    assert hah_accuracy > 0.6 and std_accuracy > 0.6  # chance is 0.1
    # The two HaH blocks against the same two layers of the standard network.
    for hah, std in zip(hah_nonzero[:2], std_nonzero[:2]):
        assert hah < 0.5 * std


@pytest.mark.parametrize("preset,twin,blocks", [
    (architectures.robust_hah_vgg_small, architectures.hah_vgg_small, 2),
    (architectures.robust_hah_vgg_medium, architectures.hah_vgg_medium, 4),
    (architectures.robust_hah_vgg16, architectures.hah_vgg16, 6),
])
def test_robust_recipe_is_the_hah_network_without_threshold_at_30x_alphas(preset, twin, blocks):
    model = preset()
    assert isinstance(model, HebbianModel)
    blocks_found = [l for l in model.layers if isinstance(l, HaHBlock)]
    assert len(blocks_found) == blocks
    assert all(b.threshold is None for b in blocks_found)
    assert all(b.normalization_field == "linf" for b in blocks_found)
    np.testing.assert_allclose(model.hah_alphas,
                               [30 * a for a in keras_hebb.PAPER_ALPHAS[:blocks]], rtol=1e-9)
    # The same layers and weight shapes as the paper's design of that size.
    reference = twin()
    assert [w.shape for w in model.weights] == [w.shape for w in reference.weights]
    assert [l.name for l in model.layers] == [l.name for l in reference.layers]


def test_robust_recipe_takes_other_alphas_and_block_options():
    model = architectures.robust_hah_vgg_small(hah_alphas=0.0, block_options={"sigma": 0.2})
    assert model.hah_alphas == [0.0, 0.0]
    assert all(b.threshold is None and b.sigma == 0.2
               for b in model.layers if isinstance(b, HaHBlock))
    # An explicit threshold overrides the recipe's none (it is then the paper's design).
    thresholded = architectures.robust_hah_vgg_small(block_options={"threshold": "fractional"})
    assert all(b.threshold == "fractional" for b in thresholded.layers if isinstance(b, HaHBlock))
