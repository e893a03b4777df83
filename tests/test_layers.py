"""Layers against closed forms computed with numpy, plus the standard checks."""

import math

import keras
import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

import keras_hebb
from keras_hebb.layers import (
    AdaptiveThreshold,
    DivisiveNormalization,
    FractionalThreshold,
    HaHBlock,
    UnitNormConv2D,
)

RNG = np.random.default_rng(2022)


def _windows(x, size, pad_value=0.0):
    """(N, H, W, C) -> (N, H, W, C, size, size) zero-padded neighbourhoods."""
    h = size // 2
    padded = np.pad(x, ((0, 0), (h, h), (h, h), (0, 0)), constant_values=pad_value)
    return sliding_window_view(padded, (size, size), axis=(1, 2))


def numpy_unit_norm_conv(x, kernel, eps=1e-6):
    kh, kw = kernel.shape[:2]
    padded = np.pad(x, ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
    patches = sliding_window_view(padded, (kh, kw), axis=(1, 2))  # N,H,W,Cin,kh,kw
    out = np.einsum("nhwcij,ijco->nhwo", patches, kernel)
    norm = np.sqrt((kernel ** 2).sum(axis=(0, 1, 2)))
    return out / (norm + eps)


def numpy_divisive_normalization(a, field, size, sigma):
    win = _windows(np.abs(a) if field != "l2" else a, size)
    if field == "linf":
        s = win.max(axis=(-1, -2))
    elif field == "l1":
        s = win.sum(axis=(-1, -2))
    else:
        s = np.sqrt((win ** 2).sum(axis=(-1, -2)))
    big_s = s.mean(axis=-1, keepdims=True)
    d = sigma * big_s.max(axis=(1, 2), keepdims=True) + (1 - sigma) * big_s + 1e-7
    return a / d


def numpy_fractional_threshold(x, ratio):
    n, h, w, c = x.shape
    k = math.floor(round((1 - ratio) * h * w, 6))
    if k == 0:
        return x
    flat = np.sort(x.reshape(n, h * w, c), axis=1)
    t = flat[:, k - 1, :][:, None, None, :]
    return x * (x > t)


def numpy_hah_cost(z, ratio, demote):
    r = np.maximum(z, 0).astype(np.float64)
    c = r.shape[-1]
    k = math.ceil(round(ratio * c, 6))
    s = np.sort(r, axis=-1)[..., ::-1]
    top = s[..., :k].mean(-1)
    rest = s[..., k:].mean(-1) if k < c else 0.0
    return float((top - demote * rest).mean())


# ---------------------------------------------------------------- closed forms


@pytest.mark.parametrize("kernel_size", [1, 3, 5])
def test_unit_norm_conv2d_matches_numpy(kernel_size):
    x = RNG.normal(size=(2, 7, 9, 3)).astype("float32")
    layer = UnitNormConv2D(4, kernel_size=kernel_size)
    y = keras.ops.convert_to_numpy(layer(x))
    expected = numpy_unit_norm_conv(x, keras.ops.convert_to_numpy(layer.kernel))
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-5)


def test_unit_norm_conv2d_ignores_filter_scale():
    x = RNG.normal(size=(1, 6, 6, 2)).astype("float32")
    layer = UnitNormConv2D(3)
    y = layer(x)
    layer.kernel.assign(layer.kernel * 7.5)
    np.testing.assert_allclose(layer(x), y, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("field", ["linf", "l1", "l2"])
@pytest.mark.parametrize("size,shape", [(3, (2, 7, 9, 5)), (5, (1, 11, 6, 3))])
@pytest.mark.parametrize("sigma", [0.0, 0.1, 1.0])
def test_divisive_normalization_matches_numpy(field, size, shape, sigma):
    a = np.maximum(RNG.normal(size=shape), 0).astype("float32")
    layer = DivisiveNormalization(field=field, size=size, sigma=sigma)
    y = keras.ops.convert_to_numpy(layer(a))
    expected = numpy_divisive_normalization(a.astype(np.float64), field, size, sigma)
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("ratio", [0.2, 0.5, 0.07, 1.0])
@pytest.mark.parametrize("shape", [(3, 5, 7, 4), (2, 10, 10, 3)])
def test_fractional_threshold_matches_numpy_with_ties(ratio, shape):
    # Small integers: many ties at the threshold.
    x = RNG.integers(0, 4, size=shape).astype("float32")
    y = keras.ops.convert_to_numpy(FractionalThreshold(ratio)(x))
    np.testing.assert_array_equal(y, numpy_fractional_threshold(x, ratio))


def test_fractional_threshold_keeps_the_requested_fraction_without_ties():
    x = RNG.permutation(2 * 10 * 10 * 6).reshape(2, 10, 10, 6).astype("float32")
    y = keras.ops.convert_to_numpy(FractionalThreshold(0.2)(x))
    kept = (y != 0).sum(axis=(1, 2))
    np.testing.assert_array_equal(kept, np.full((2, 6), 20))
    np.testing.assert_array_equal(y[y != 0], x[y != 0])


def test_adaptive_threshold_matches_numpy():
    x = RNG.normal(size=(2, 5, 7, 3)).astype("float32")
    y = keras.ops.convert_to_numpy(AdaptiveThreshold(1.5)(x))
    t = 1.5 * x.mean(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(y, x * (x > t), rtol=1e-6)


@pytest.mark.parametrize("ratio,demote", [(0.1, 1.0), (0.25, 0.1), (1.0, 1.0)])
def test_hah_cost_matches_numpy(ratio, demote):
    z = RNG.normal(size=(3, 4, 5, 30)).astype("float32")
    value = float(keras_hebb.hah_cost(z, ratio=ratio, demote=demote))
    assert value == pytest.approx(numpy_hah_cost(z, ratio, demote), rel=1e-5)


def test_hah_block_is_conv_relu_normalization_threshold():
    x = RNG.random(size=(2, 9, 9, 2)).astype("float32")
    block = HaHBlock(6, normalization_field="l2", sigma=0.3, threshold_ratio=0.3)
    y = keras.ops.convert_to_numpy(block(x))
    z = numpy_unit_norm_conv(x, keras.ops.convert_to_numpy(block.conv.kernel))
    a = numpy_divisive_normalization(np.maximum(z, 0), "l2", 3, 0.3)
    # The threshold is applied to the block's own float32 normalized values
    # (float64 numpy values could order near-ties differently).
    a32 = keras.ops.convert_to_numpy(
        block.normalization(keras.ops.relu(block.conv(x))))
    np.testing.assert_allclose(a32, a, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(y, numpy_fractional_threshold(a32, 0.3))
    # At most H*W - floor(0.7 * H*W) = 25 of the 81 values of a channel.
    assert (y > 0).mean() <= 25 / 81 + 1e-9


def test_hah_block_parts_can_be_switched_off():
    x = RNG.random(size=(1, 8, 8, 1)).astype("float32")
    block = HaHBlock(4, normalization_field=None, threshold=None)
    y = keras.ops.convert_to_numpy(block(x))
    z = numpy_unit_norm_conv(x, keras.ops.convert_to_numpy(block.conv.kernel))
    np.testing.assert_allclose(y, np.maximum(z, 0), rtol=1e-4, atol=1e-5)
    assert block.normalization is None and block.threshold_layer is None


@pytest.mark.parametrize("native", [True, False], ids=["native", "tf_ops"])
@pytest.mark.parametrize("filters, quantized", [(16, False), (8, True)])
def test_fused_training_path_has_the_plain_layers_values_and_gradients(
        filters, quantized, native, monkeypatch):
    # keras_hebb._fused (memory-lean custom gradients) against autodiff of
    # the plain layers; quantized inputs make ties in the ReLU output, the
    # max pool, the image-wide maximum and the cost's channel ranking. With
    # keras_hebb's native ops (built by make setup) and without them.
    import tensorflow as tf

    from keras_hebb import _fused, _native
    from keras_hebb import collect_hah_costs

    if not native:
        monkeypatch.setenv("KERAS_HEBB_NATIVE", "0")
    elif _native.library() is None:
        pytest.fail("the native ops are not built: run `make setup`")

    calls = []
    for name in ("relu_normalize_threshold", "conv_with_hah_cost"):
        original = getattr(_fused, name)
        monkeypatch.setattr(_fused, name, lambda *a, _f=original, _n=name: (
            calls.append(_n), _f(*a))[1])
    x = RNG.random(size=(3, 10, 10, 3)).astype("float32")
    if quantized:
        x = np.round(x * 2) / 2
    block = HaHBlock(filters, threshold_ratio=0.3, cost_demote=0.5)
    block.build(x.shape)
    if quantized:
        kernel = keras.ops.convert_to_numpy(block.conv.kernel)
        block.conv.kernel.assign(np.round(kernel * 4) / 4)
    x = tf.constant(x)
    weights = tf.constant(RNG.normal(size=(3, 10, 10, filters)).astype("float32"))

    def step(fused):
        block.use_fused_training = fused
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(x)
            with collect_hah_costs() as scope:
                y = block(x, training=True)
            cost = scope.costs[block.name]
            loss = tf.reduce_sum(y * weights)
        grads = tape.gradient(loss, [block.conv.kernel, x])
        grads += tape.gradient(cost, [block.conv.kernel])
        return [v.numpy() for v in (y, cost, *grads)]

    plain = step(False)
    assert calls == []
    fused = step(True)
    assert sorted(calls) == ["conv_with_hah_cost", "relu_normalize_threshold"]
    assert (plain[0] > 0).mean() < 0.35 and np.abs(plain[2]).max() > 0
    np.testing.assert_array_equal(fused[0], plain[0])
    np.testing.assert_allclose(fused[1], plain[1], rtol=1e-6)
    for got, expected in zip(fused[2:], plain[2:]):
        np.testing.assert_allclose(got, expected, rtol=2e-5,
                                   atol=2e-6 * np.abs(expected).max())


# ------------------------------------------------------ standard layer checks

LAYER_CASES = [
    (UnitNormConv2D, {"filters": 4, "kernel_size": 3, "epsilon": 1e-5}),
    (DivisiveNormalization, {"field": "l1", "size": 5, "sigma": 0.2}),
    (FractionalThreshold, {"ratio": 0.3}),
    (AdaptiveThreshold, {"scale": 0.5}),
    (HaHBlock, {"filters": 4, "normalization_field": "l2", "threshold": "adaptive",
                "cost_ratio": 0.25, "cost_demote": 0.1}),
]


@pytest.mark.parametrize("cls,kwargs", LAYER_CASES, ids=lambda c: getattr(c, "__name__", ""))
def test_standard_layer_behaviour(cls, kwargs, tmp_path):
    x = RNG.random(size=(4, 8, 8, 3)).astype("float32")
    layer = cls(**kwargs, name="layer_under_test")

    # Eager call and config round trip give the same layer.
    y = keras.ops.convert_to_numpy(layer(x))
    config = layer.get_config()
    for key, value in kwargs.items():
        assert config[key] in (value, (value, value))
    clone = cls.from_config(config)
    assert clone.get_config() == config
    clone(x)
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(clone(x), y, rtol=1e-6)

    # Symbolic call: shape inference agrees with the eager output.
    inputs = keras.Input((8, 8, 3))
    symbolic = cls(**kwargs)(inputs)
    assert tuple(symbolic.shape[1:]) == y.shape[1:]

    # A training step inside a model: finite loss; the gradient passes
    # through the layer (the conv before it moves) and reaches each of its
    # own weights (the Dense after it would move whatever the layer did).
    conv, under_test = keras.layers.Conv2D(3, 3, padding="same"), cls(**kwargs)
    model = keras.Sequential([
        keras.Input((8, 8, 3)),
        conv,
        under_test,
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(2),
    ])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = {layer.name: [w.copy() for w in layer.get_weights()]
              for layer in (conv, under_test)}
    history = model.fit(x, np.array([0, 1, 0, 1]), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    for layer in (conv, under_test):
        for old, new in zip(before[layer.name], layer.get_weights()):
            assert not np.allclose(old, new), f"{layer.name}'s weights did not move"

    # Saved inside a functional model, reloaded with the same outputs.
    functional = keras.Model(inputs, symbolic)
    path = str(tmp_path / "layer.keras")
    functional.save(path)
    reloaded = keras.models.load_model(path)
    np.testing.assert_allclose(reloaded(x), functional(x), rtol=1e-6)


@pytest.mark.float16_conv
@pytest.mark.parametrize("cls,kwargs", LAYER_CASES, ids=lambda c: getattr(c, "__name__", ""))
def test_mixed_precision_keeps_float16_outputs_close_to_float32(cls, kwargs):
    x = RNG.random(size=(2, 8, 8, 3)).astype("float32")
    layer32 = cls(**kwargs)
    y32 = keras.ops.convert_to_numpy(layer32(x))
    layer16 = cls(**kwargs, dtype="mixed_float16")
    layer16(x)
    layer16.set_weights(layer32.get_weights())
    y16 = layer16(x)
    assert keras.backend.standardize_dtype(y16.dtype) == "float16"
    for w in layer16.weights:
        assert w.dtype == "float32"
    y16 = keras.ops.convert_to_numpy(y16).astype("float32")
    if cls in (FractionalThreshold, AdaptiveThreshold, HaHBlock):
        # float16 rounding may flip values that sit at the threshold.
        agree = np.isclose(y16, y32, rtol=2e-2, atol=2e-2).mean()
        assert agree > 0.97
    else:
        np.testing.assert_allclose(y16, y32, rtol=2e-2, atol=2e-2)


# ----------------------------------------------------------------- bad input


@pytest.mark.parametrize("make,message", [
    (lambda: FractionalThreshold(ratio=0.0), "ratio=0.0"),
    (lambda: FractionalThreshold(ratio=1.5), "ratio=1.5"),
    (lambda: DivisiveNormalization(sigma=-0.1), "sigma=-0.1"),
    (lambda: DivisiveNormalization(sigma=1.2), "sigma=1.2"),
    (lambda: DivisiveNormalization(field="l3"), "field='l3'"),
    (lambda: DivisiveNormalization(size=4), "size=4"),
    (lambda: UnitNormConv2D(0), "filters=0"),
    (lambda: UnitNormConv2D(4, padding="full"), "padding='full'"),
    (lambda: AdaptiveThreshold(scale=-1), "scale=-1"),
    (lambda: HaHBlock(4, threshold="top"), "threshold='top'"),
    (lambda: HaHBlock(4, cost_ratio=0), "cost_ratio=0"),
    # A block reports its own argument names, not its sublayers' ones, and
    # checks an argument whether or not the part using it is switched on.
    (lambda: HaHBlock(8, threshold_ratio=1.5), "threshold_ratio=1.5"),
    (lambda: HaHBlock(8, threshold_scale=-1), "threshold_scale=-1"),
    (lambda: HaHBlock(8, normalization_size=4), "normalization_size=4"),
    (lambda: HaHBlock(8, normalization_field=None, sigma=2), "sigma=2"),
    (lambda: HaHBlock(0), "filters=0"),
    (lambda: HaHBlock(8, use_fused_training="yes"), "use_fused_training='yes'"),
    (lambda: FractionalThreshold(nonnegative_inputs=1), "nonnegative_inputs=1"),
    (lambda: keras_hebb.hah_cost(np.ones((2, 4), "float32"), ratio=2.0), "ratio=2.0"),
])
def test_bad_arguments_raise_value_error_naming_the_value(make, message):
    with pytest.raises(ValueError, match="Received: .*" + message.replace("(", r"\(")):
        make()


@pytest.mark.parametrize("cls,kwargs", LAYER_CASES, ids=lambda c: getattr(c, "__name__", ""))
def test_wrong_input_rank_raises_value_error(cls, kwargs):
    with pytest.raises(ValueError, match=r"expects a rank-4 input .*Received: input_shape=\(2, 8, 3\)"):
        cls(**kwargs)(np.zeros((2, 8, 3), "float32"))


# ------------------------------------------------------ constructor options


def test_hah_block_saves_use_fused_training_and_loads_configs_without_it():
    block = HaHBlock(4, use_fused_training=False)
    config = block.get_config()
    assert config["use_fused_training"] is False
    assert HaHBlock.from_config(config).use_fused_training is False
    # Files saved before the argument existed get the default (fused).
    del config["use_fused_training"]
    assert HaHBlock.from_config(config).use_fused_training is True


def test_hah_block_builds_its_parts_for_nonnegative_inputs():
    block = HaHBlock(4)
    block.build((None, 8, 8, 3))
    assert block.normalization.nonnegative_inputs
    assert block.threshold_layer.nonnegative_inputs
    assert block.threshold_layer.threshold_rank == 8 * 8 - math.floor(0.8 * 64) + 1


def test_nonnegative_inputs_divisive_normalization_equals_the_default_on_relu_outputs():
    a = np.maximum(RNG.normal(size=(2, 6, 6, 3)), 0).astype("float32")
    plain = DivisiveNormalization()(a)
    nonnegative = DivisiveNormalization(nonnegative_inputs=True)
    assert nonnegative.get_config()["nonnegative_inputs"] is True
    np.testing.assert_array_equal(nonnegative(a), plain)


def test_fractional_threshold_keeping_everything_is_the_identity():
    layer = FractionalThreshold(1.0)
    x = RNG.normal(size=(2, 4, 4, 3)).astype("float32")
    y = layer(x)
    assert layer.threshold_rank is None
    np.testing.assert_array_equal(y, x)
