"""keras_hebb._compat: each shim's upstream assumption, one test per shim.

Each test fails, naming its shim, when the private Keras/TensorFlow/LiteRT
behaviour the shim relies on changes (a rename, a new signature, other
values), so an upgrade shows which shim to update.
"""

import inspect
import os
import re
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_hebb import _compat

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _constraints_pins():
    """`{name: version}` of constraints.txt, the versions CI tests."""
    pins = {}
    with open(os.path.join(ROOT, "constraints.txt")) as f:
        for line in f:
            match = re.match(r"^\s*([A-Za-z0-9_.-]+)==(\S+)", line)
            if match:
                pins[re.sub(r"[-_.]+", "-", match.group(1)).lower()] = match.group(2)
    return pins


def test_tested_versions_are_the_constraints_pins():
    pins = _constraints_pins()
    for package, version in _compat.TESTED_VERSIONS.items():
        assert pins.get(package) == version, (
            f"_compat.TESTED_VERSIONS[{package!r}] = {version}, constraints.txt "
            f"pins {pins.get(package)}: keep them equal")


def test_version_check_warns_naming_the_shims_at_risk(monkeypatch):
    monkeypatch.setitem(_compat.TESTED_VERSIONS, "keras", "0.0.1")
    _compat.check_versions.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match=r"keras==0\.0\.1.*all_layers.*loss_tracker"):
            _compat.check_versions()
    finally:
        _compat.check_versions.cache_clear()


def test_installed_versions_are_the_tested_ones():
    """Fails on an upgrade: run this file, then update TESTED_VERSIONS."""
    assert _compat.version_mismatches() == []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _compat.check_versions.cache_clear()
        _compat.check_versions()


def _nested_model():
    inner = keras.Sequential([keras.layers.Dense(3, name="inner_dense")], name="inner")
    inputs = keras.Input((4,))
    x = keras.layers.Dense(5, name="first")(inputs)
    outputs = inner(x)
    return keras.Model(inputs, outputs)


def test_all_layers_reaches_nested_layers_in_model_order():
    names = [layer.name for layer in _compat.all_layers(_nested_model())
             if not isinstance(layer, keras.layers.InputLayer)]
    assert names == ["first", "inner", "inner_dense"], (
        f"_compat.all_layers: keras.Layer._flatten_layers order changed: {names}")


def test_all_layers_names_itself_when_keras_drops_flatten_layers(monkeypatch):
    monkeypatch.delattr(keras.Layer, "_flatten_layers")
    with pytest.raises(_compat.CompatibilityError, match=r"_compat\.all_layers"):
        _compat.all_layers(_nested_model())


def test_loss_tracker_is_what_fit_logs_as_loss():
    model = _nested_model()
    model.compile("sgd", "mse")
    tracker = _compat.loss_tracker(model)
    assert tracker in model.metrics, "_compat.loss_tracker: not among model.metrics"
    tracker.update_state(2.0)
    assert float(model.get_metrics_result()["loss"]) == pytest.approx(2.0), (
        "_compat.loss_tracker: the tracker is not what the model reports as loss")


def test_in_xla_context_tells_jit_compiled_graphs():
    seen = {}

    def probe(name):
        seen[name] = _compat.in_xla_context(tf.compat.v1.get_default_graph())
        return tf.constant(0.0)

    tf.function(lambda: probe("plain"))()
    tf.function(lambda: probe("xla"), jit_compile=True)()
    assert seen == {"plain": False, "xla": True}, f"_compat.in_xla_context: {seen}"


def test_in_multi_worker_mode_is_false_on_one_machine():
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert hasattr(strategy.extended, "_in_multi_worker_mode"), (
        "_compat.in_multi_worker_mode: StrategyExtended._in_multi_worker_mode is gone")
    assert _compat.in_multi_worker_mode(strategy) is False
    assert _compat.in_multi_worker_mode(tf.distribute.get_strategy()) is False


def test_tape_is_recording_follows_gradient_tapes():
    from tensorflow.python.eager import record

    assert hasattr(record, "could_possibly_record"), (
        "_compat.tape_is_recording: tensorflow.python.eager.record."
        "could_possibly_record is gone (the shim would always say True)")
    assert _compat.tape_is_recording() is False
    with tf.GradientTape() as tape:
        assert _compat.tape_is_recording() is True
        with tape.stop_recording():
            assert _compat.tape_is_recording() is False


def test_preserved_global_seed_gives_the_seed_stream_back():
    from tensorflow.python.eager import context

    tf.random.set_seed(7)
    assert all(hasattr(context.context(), name) for name in ("_seed", "_rng")), (
        "_compat.preserved_global_seed: the eager context's _seed/_rng are gone "
        "(the caller's global seed would not be given back)")
    expected = [float(tf.random.uniform(())) for _ in range(2)]
    tf.random.set_seed(7)
    drawn = [float(tf.random.uniform(()))]
    with _compat.preserved_global_seed():
        tf.random.set_seed(123)
        tf.random.uniform(())
    drawn.append(float(tf.random.uniform(())))
    assert drawn == expected, (
        "_compat.preserved_global_seed: the operation-seed stream was not restored")


def _tflite_add():
    @tf.function(input_signature=[tf.TensorSpec((1, 4), tf.float32)])
    def add(x):
        return {"y": x + 1.0}

    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [add.get_concrete_function()], add)
    return converter.convert()


def test_tflite_op_and_tensor_details_list_the_graph():
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(  # no delegate: the graph's own ops only
        model_content=_tflite_add(),
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interpreter.allocate_tensors()
    ops = _compat.tflite_op_details(interpreter)
    assert [op["op_name"] for op in ops] == ["ADD"], f"_compat.tflite_op_details: {ops}"
    assert {"index", "op_name", "inputs", "outputs"} <= set(ops[0]), (
        f"_compat.tflite_op_details: keys changed: {sorted(ops[0])}")
    output = int(ops[0]["outputs"][0])
    details = _compat.tflite_tensor_details(interpreter, output)
    assert np.dtype(details["dtype"]) == np.float32, (
        f"_compat.tflite_tensor_details: {details}")


def test_multi_worker_patch_finds_the_internals_it_replaces():
    module = _compat._multi_worker_internals()
    assert module.__name__ == "keras.src.backend.tensorflow.trainer"


def test_multi_worker_patch_names_itself_when_a_parameter_is_renamed(monkeypatch):
    from keras.src.backend.tensorflow import trainer

    def renamed(values, distribution, reduction):
        return values

    monkeypatch.setattr(trainer, "reduce_per_replica", renamed)
    with pytest.raises(_compat.CompatibilityError,
                       match=r"_compat\.patch_keras_multi_worker_fit.*reduce_per_replica"):
        _compat._multi_worker_internals()


def test_public_compute_loss_still_takes_training():
    """HebbianModel calls `Model.compute_loss(..., training=...)` (public)."""
    parameters = inspect.signature(keras.Model.compute_loss).parameters
    assert list(parameters)[1:6] == ["x", "y", "y_pred", "sample_weight", "training"]
