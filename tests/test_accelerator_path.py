"""The accelerator paths train like the default CPU path.

A GPU user gets XLA (`jit_compile="auto"` turns it on there), no native CPU
ops (`keras_hebb._native`) and often `mixed_float16`; a TPU user gets XLA
with static shapes. Each path here trains `hah_vgg_small` for 4 steps on
64 real Fashion-MNIST images and is checked against the default path
(`jit_compile=False`, native ops where built, float32): same per-step
losses and HaH costs, same weight updates, within the tolerances below.
The layer-local HaH gradients are checked inside jit-compiled functions.

Tolerances, and why. The comparisons use plain SGD (lr 0.003): its
update is the gradient times the learning rate, so an update's error is
the gradient's error. (Adam divides each gradient by its own size and
turns rounding noise in near-zero gradients into full-size steps of either
sign: 50-70% update differences under float16, measuring Adam, not the
path.) Only the first step is a clean comparison: the same weights and
batch, one gradient. After it the weights differ by rounding, and a HaH
network's gradient is piecewise (a threshold or HaH winner flips where
two values are equal to rounding): moving the weights by 1e-5 (relative)
moved the conv kernels' next gradient by 2.5%, so later steps drift. The
gates, with the largest differences measured on the Intel Xeon guest
(AVX-512), with `ONEDNN_MAX_CPU_ISA=AVX2` (the AMD guest's oneDNN kernels)
and with `TF_ENABLE_ONEDNN_OPTS=0` (Eigen's):

- float32 under XLA (paths a, d) and without native ops (b): first-step
  losses and HaH costs 1e-4 (measured <= 1.6e-6: XLA fuses and reorders
  float32 sums; without native ops 3.9e-7), first-step weight updates 1e-3
  relative per tensor (measured <= 2.1e-5); losses and costs of steps 2-4
  2e-2 (measured <= 2.5e-3 with AVX2 kernels, 6.8e-6 otherwise); cosine
  of each tensor's 4-step update >= 0.8 (measured >= 0.96).
- mixed_float16 under XLA (c) against float32: float16 keeps 11 bits and
  its roundings flip thresholds and winners from the first layer on:
  first-step losses and costs differ by up to 1.9e-2 (gate 0.1), the
  first update's cosine is >= 0.92 (gate 0.8; a missing or wrong-signed
  gradient scores near 0 or below), the 4-step update's >= 0.75 (gate
  0.5); steps 2-4 values <= 1.0e-2 (gate 0.1). Without XLA the first
  update's cosine is the same (0.92): it is float16, not XLA.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_hebb import _context, _native, _selection, collect_hah_costs, hah_cost
from keras_hebb.architectures import build_vgg, hah_vgg_small
from keras_hebb.data import load_arrays

IMAGES, BATCH = 64, 16  # 4 training steps
LEARNING_RATE = 0.003  # stable for 4 steps (0.05 diverges)
LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

# Gates (the module docstring says why these values): relative tolerances
# of the first step's and the later steps' losses and HaH costs, of the
# first step's weight update, and lower bounds of the cosine of each weight
# tensor's first-step and 4-step updates with the default path's.
FLOAT32 = {"first_values": 1e-4, "values": 2e-2, "first_update": 1e-3,
           "final_cosine": 0.8}
FLOAT16 = {"first_values": 0.1, "values": 0.1, "first_cosine": 0.8,
           "final_cosine": 0.5}


@pytest.fixture(scope="module")
def data():
    return load_arrays("fashion_mnist", "train", IMAGES)


class _StepLogs(keras.callbacks.Callback):
    """Keeps the logs of every training batch."""

    def on_train_begin(self, logs=None):
        self.steps = []

    def on_train_batch_end(self, batch, logs=None):
        self.steps.append({k: float(v) for k, v in logs.items()})
        if batch == 0:
            self.after_first = _weights(self.model)


def _weights(model):
    return [np.array(w.numpy(), "float32") for w in model.trainable_weights]


class Run:
    """What a training run left: its weights before, after the first step
    and at the end, and its per-step logs."""

    def __init__(self, model, initial, after_first, steps, history=None):
        self.model = model
        self.initial = initial
        self.after_first = after_first
        self.final = _weights(model)
        self.steps = steps
        self.history = history or {}

    def updates(self, first_step=False):
        end = self.after_first if first_step else self.final
        return [b - a for a, b in zip(self.initial, end)]


def _model():
    keras.utils.set_random_seed(1)
    return hah_vgg_small()


def _fit(data, jit_compile, policy="float32", native=True):
    """`model.fit` for one epoch of 4 steps, as a user calls it."""
    x, y = data
    keras.mixed_precision.set_global_policy(policy)
    try:
        model = _model()
        model.compile(keras.optimizers.SGD(LEARNING_RATE), LOSS, jit_compile=jit_compile)
        assert model.jit_compile is jit_compile
        initial = _weights(model)
        logs = _StepLogs()
        fit = lambda: model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False,
                                verbose=0, callbacks=[logs])
        if native:
            history = fit()
        else:
            with _context.without_native():  # read when the step is traced
                history = fit()
    finally:
        keras.mixed_precision.set_global_policy("float32")
    return Run(model, initial, logs.after_first, logs.steps, history.history)


@pytest.fixture(scope="module")
def default_run(data):
    return _fit(data, jit_compile=False)


def _assert_same_training(run, reference, gate):
    """Compares a run with the default path's under `gate` (`FLOAT32` or
    `FLOAT16`): the first step's losses, HaH costs and weight update (same
    weights, same batch: one gradient), then the later steps' values and
    the direction of the 4-step update."""
    assert len(run.steps) == len(reference.steps) == IMAGES // BATCH
    for step, (got, want) in enumerate(zip(run.steps, reference.steps)):
        assert set(got) == set(want)
        rtol = gate["first_values"] if step == 0 else gate["values"]
        for key in want:
            assert got[key] == pytest.approx(want[key], rel=rtol), (
                f"step {step + 1}: {key} {got[key]} vs {want[key]} on the default path")
    names = [w.path for w in reference.model.trainable_weights]
    first = zip(names, run.updates(first_step=True), reference.updates(first_step=True))
    for name, got, want in first:
        if "first_update" in gate:
            error = np.linalg.norm(got - want) / np.linalg.norm(want)
            assert error <= gate["first_update"], (
                f"{name}: first update differs by {error:.2e} (relative)")
        if "first_cosine" in gate:
            assert _cosine(got, want) >= gate["first_cosine"], (
                f"{name}: first update cosine {_cosine(got, want):.3f}")
    for name, got, want in zip(names, run.updates(), reference.updates()):
        assert _cosine(got, want) >= gate["final_cosine"], (
            f"{name}: 4-step update cosine {_cosine(got, want):.3f}")


def _cosine(a, b):
    norms = np.linalg.norm(a) * np.linalg.norm(b)
    assert norms > 0, "a weight did not train"
    return float(np.sum(a * b) / norms)


def _assert_hah_costs_logged(run, blocks=("block1_hah", "block2_hah")):
    keys = {"loss", "hah_cost"} | {f"hah_{b}" for b in blocks}
    assert keys <= set(run.steps[-1])
    for key in keys:
        values = np.array([step[key] for step in run.steps])
        assert np.all(np.isfinite(values)) and np.all(values != 0), (key, values)
        if run.history:
            assert np.isfinite(run.history[key][-1]) and run.history[key][-1] != 0


def test_default_path_logs_hah_costs(default_run):
    _assert_hah_costs_logged(default_run)


def test_fit_with_jit_compile_trains_like_the_default_path(data, default_run):
    run = _fit(data, jit_compile=True)
    _assert_hah_costs_logged(run)
    _assert_same_training(run, default_run, FLOAT32)


def _op_types(function, *specs):
    """Op types of a traced function's graph and its function library."""
    graph_def = function.get_concrete_function(*specs).graph.as_graph_def()
    types = {node.op for node in graph_def.node}
    for library_function in graph_def.library.function:
        types |= {node.op for node in library_function.node_def}
    return types


def test_fit_without_native_ops_trains_like_the_default_path(data, default_run):
    run = _fit(data, jit_compile=False, native=False)
    _assert_hah_costs_logged(run)
    _assert_same_training(run, default_run, FLOAT32)
    # The scope does leave the native ops out of the training step.
    model = _model()
    model.compile(keras.optimizers.SGD(LEARNING_RATE), LOSS)
    model.optimizer.build(model.trainable_variables)
    spec = ((tf.TensorSpec((BATCH, 28, 28, 1)), tf.TensorSpec((BATCH,), tf.int64)),)
    with _context.without_native():
        types = _op_types(tf.function(model.train_step), *spec)
    assert not any(t.startswith("KerasHebb") for t in types)
    if _native.library() is not None:
        types = _op_types(tf.function(model.train_step), *spec)
        assert "KerasHebbHahCost" in types


def test_mixed_float16_with_jit_compile_trains_like_float32(data, default_run):
    run = _fit(data, jit_compile=True, policy="mixed_float16")
    assert keras.mixed_precision.global_policy().name == "float32"  # restored
    assert run.model.hah_layers[0].compute_dtype == "float16"
    assert all(w.dtype == "float32" for w in run.model.trainable_weights)
    # The dynamic loss scale skipped no step (a skipped step is no update).
    assert int(run.model.optimizer.inner_optimizer.iterations) == IMAGES // BATCH
    _assert_hah_costs_logged(run)
    _assert_same_training(run, default_run, FLOAT16)


def test_static_shape_xla_train_step_trains_like_the_default_path(data, default_run):
    """The TPU path: one XLA computation per step, fixed batch shapes.

    `jit_compile=True` makes compilation mandatory (no op may fall back to
    TensorFlow outside XLA, as on a TPU) and the input signature fixes
    every shape, as `drop_remainder=True` batches do on a TPU.
    """
    x, y = data
    model = _model()
    model.compile(keras.optimizers.SGD(LEARNING_RATE), LOSS)
    model.optimizer.build(model.trainable_variables)
    initial = _weights(model)
    spec = ((tf.TensorSpec((BATCH, 28, 28, 1), tf.float32),
             tf.TensorSpec((BATCH,), tf.int64)),)
    step = tf.function(model.train_step, jit_compile=True, input_signature=spec)
    graph = step.get_concrete_function().graph
    assert all(t.shape.is_fully_defined() for t in graph.inputs if t.dtype != tf.resource)
    batches = [(tf.constant(x[i:i + BATCH]), tf.constant(y[i:i + BATCH]))
               for i in range(0, IMAGES, BATCH)]
    hlo = step.experimental_get_compiler_ir(batches[0])(stage="hlo")
    assert "f64[" not in hlo  # TPUs have no float64
    logs = []
    for batch in batches:
        logs.append({k: float(v) for k, v in step(batch).items()})
        after_first = after_first if len(logs) > 1 else _weights(model)
    run = Run(model, initial, after_first, logs)
    _assert_hah_costs_logged(run)
    _assert_same_training(run, default_run, FLOAT32)


# Layer-local HaH gradients inside XLA ------------------------------------


def _three_block_model(seed=3):
    keras.utils.set_random_seed(seed)
    return build_vgg((6, "M", 8, "M", 8), hah_blocks=3, input_shape=(12, 12, 1),
                     num_classes=3, hah_alphas=[0.5, 0.3, 0.2], name="tiny")


def _tiny_data(n=8, seed=0):
    rng = np.random.default_rng(seed)
    return (tf.constant(rng.random((n, 12, 12, 1)).astype("float32")),
            tf.constant(rng.integers(0, 3, n)))


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "local_branch"])
def test_hah_gradient_does_not_leak_into_earlier_layers_under_xla(fused):
    """Fails if block l's HaH cost reaches the kernel of a block before l
    inside a jit-compiled function (both training paths of `HaHBlock`:
    `keras_hebb._fused` and `UnitNormConv2D.call_with_local_branch`)."""
    model = _three_block_model()
    blocks = model.hah_layers
    for block in blocks:
        block.use_fused_training = fused
    kernels = [block.conv.kernel for block in blocks]
    block_inputs = keras.Model(model.inputs, [block.input for block in blocks])
    x, _ = _tiny_data()

    @tf.function(jit_compile=True)
    def gradients(x):
        with tf.GradientTape(persistent=True) as tape:
            with collect_hah_costs() as scope:
                model(x, training=True)
            costs = [scope.costs[block.name] for block in blocks]
        # Reference: each cost on the conv of its block's input held constant.
        inputs = block_inputs(x, training=True)
        with tf.GradientTape(persistent=True) as ref_tape:
            references = [
                hah_cost(keras.ops.conv(tf.stop_gradient(inputs[l]),
                                        block.conv.normalized_kernel(), padding="same"),
                         block.cost_ratio, block.cost_demote)
                for l, block in enumerate(blocks)]
        found = [[_dense(tape.gradient(cost, k), k) for k in kernels] for cost in costs]
        expected = [ref_tape.gradient(r, b.conv.kernel) for r, b in zip(references, blocks)]
        return costs, references, found, expected

    costs, references, found, expected = gradients(x)
    for l in range(len(blocks)):
        assert float(costs[l]) == pytest.approx(float(references[l]), rel=1e-5)
        assert float(tf.reduce_max(tf.abs(expected[l]))) > 0
        for earlier in range(l):
            leaked = float(tf.reduce_max(tf.abs(found[l][earlier])))
            assert leaked == 0.0, (
                f"the HaH cost of {blocks[l].name} puts gradient {leaked:.3g} on the "
                f"kernel of the earlier {blocks[earlier].name} under XLA")
        for later in range(l + 1, len(blocks)):
            assert not np.any(found[l][later].numpy())
        np.testing.assert_allclose(found[l][l], expected[l], rtol=1e-4,
                                   atol=1e-4 * float(tf.reduce_max(tf.abs(expected[l]))))


def _dense(gradient, variable):
    return tf.zeros_like(variable) if gradient is None else tf.convert_to_tensor(gradient)


def test_jit_compiled_train_step_adds_only_local_hah_gradients():
    """One SGD step (lr=1) of `fit(jit_compile=True)` moves each weight by
    minus the cross-entropy gradient plus alpha times its block's local HaH
    gradient (input held constant), computed by hand without XLA."""
    model = _three_block_model(seed=4)
    blocks = model.hah_layers
    x, y = _tiny_data(16, seed=1)
    weights = model.trainable_weights
    before = [w.numpy().copy() for w in weights]
    block_inputs = keras.Model(model.inputs, [block.input for block in blocks])
    with tf.GradientTape() as tape:
        ce = LOSS(y, model(x, training=True))
    expected = [g.numpy() for g in tape.gradient(ce, weights)]
    inputs = block_inputs(x, training=True)
    for alpha, block, block_input in zip(model.hah_alphas, blocks, inputs):
        with tf.GradientTape() as local_tape:
            z = keras.ops.conv(block_input, block.conv.normalized_kernel(), padding="same")
            cost = hah_cost(z, block.cost_ratio, block.cost_demote)
        index = next(i for i, w in enumerate(weights) if w is block.conv.kernel)
        expected[index] -= alpha * local_tape.gradient(cost, block.conv.kernel).numpy()

    model.compile(keras.optimizers.SGD(1.0), LOSS, jit_compile=True)
    model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    for w, b, g in zip(model.trainable_weights, before, expected):
        scale = float(np.abs(g).max())
        np.testing.assert_allclose(b - w.numpy(), g, rtol=1e-3, atol=1e-3 * scale,
                                   err_msg=w.path)
