"""keras_hebb's public API: what `__all__` promises, and `HebbianModel`'s
and `build_vgg`'s documented behaviour where a user could be surprised."""

import importlib
import os
import pkgutil
import re
import subprocess
import sys

import keras
import numpy as np
import pytest
from keras import ops

import keras_hebb
from keras_hebb import _context, architectures
from keras_hebb.layers import HaHBlock

PUBLIC_MODULES = ("architectures", "data", "errors", "layers", "plots", "pruning",
                  "robustness", "runtime", "sparsity", "surrogates")


def test_all_lists_every_public_module_and_each_name_resolves():
    assert set(PUBLIC_MODULES) <= set(keras_hebb.__all__)
    for name in keras_hebb.__all__:
        assert getattr(keras_hebb, name) is not None, name
    for name in PUBLIC_MODULES:
        module = importlib.import_module(f"keras_hebb.{name}")
        assert getattr(keras_hebb, name) is module
        if name == "robustness":  # lazy: its names load the attack libraries
            continue
        for exported in getattr(module, "__all__", ()):
            assert hasattr(module, exported), f"keras_hebb.{name}.{exported}"
    # Every public top-level module is either exported or exposed through a
    # name of the same module (the function `hah_cost`, the model classes).
    modules = {m.name for m in pkgutil.iter_modules(keras_hebb.__path__)
               if not m.name.startswith("_")}
    implementation = {"hah_cost", "hebbian_model", "similarity_matching_model",
                      "local_gradient"}
    assert modules - implementation == set(PUBLIC_MODULES)


def test_surrogate_gradients_has_one_public_name():
    from keras_hebb import surrogates

    assert "surrogate_gradients" in surrogates.__all__
    assert not hasattr(keras_hebb, "surrogate_gradients")
    with surrogates.surrogate_gradients("identity") as scope:
        assert _context.surrogate_scope() is scope


def _recording_layer():
    class CostRecorder(keras.layers.Layer):
        """Records a HaH cost like a block the model does not know."""

        def call(self, x):
            scope = _context.hah_cost_scope()
            if scope is not None:
                scope.record(self, ops.mean(x))
            return x

    return CostRecorder(name="recorder")


def _compile(model):
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def _data():
    rng = np.random.default_rng(0)
    return rng.uniform(0, 1, (4, 8, 8, 1)).astype("float32"), np.arange(4) % 3


def test_a_model_without_hah_blocks_warns_at_compile():
    inputs = keras.Input((8, 8, 1))
    outputs = keras.layers.Dense(3)(keras.layers.Flatten()(inputs))
    model = keras_hebb.HebbianModel(inputs, outputs)
    with pytest.warns(UserWarning, match="has no HaHBlock layers"):
        _compile(model)


SUBCLASSED_MODEL = """
import keras, numpy as np, warnings
import keras_hebb

class Subclassed(keras_hebb.HebbianModel):
    def __init__(self):
        super().__init__(hah_alphas=[0.5])
        self.block = keras_hebb.layers.HaHBlock(4, name="block")
        self.flatten = keras.layers.Flatten()
        self.logits = keras.layers.Dense(3)

    def call(self, x, training=None):
        return self.logits(self.flatten(self.block(x, training=training)))

model = Subclassed()
warnings.simplefilter("error", UserWarning)
model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
x = np.random.default_rng(0).uniform(0, 1, (4, 8, 8, 1)).astype("float32")
history = model.fit(x, np.arange(4) % 3, epochs=1, verbose=0).history
assert [layer.name for layer in model.hah_layers] == ["block"]
assert history["hah_block"][0] > 0, history
assert abs(history["hah_cost"][0] - 0.5 * history["hah_block"][0]) < 1e-6, history
print("ok")
"""


def test_a_subclassed_model_with_its_own_call_trains_with_its_blocks_costs():
    # Its own process: once a process builds a functional HebbianModel,
    # Keras makes the class functional (inject_functional_model_class) and
    # a subclass must pass inputs and outputs, as in the next test.
    done = subprocess.run([sys.executable, "-c", SUBCLASSED_MODEL], capture_output=True,
                          text=True, timeout=300,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert done.stdout.strip() == "ok", done.stderr[-2000:]


def test_a_functional_subclass_trains_with_its_blocks_costs():
    class Subclassed(keras_hebb.HebbianModel):
        def __init__(self):
            inputs = keras.Input((8, 8, 1))
            x = keras.layers.Flatten()(HaHBlock(4, name="block")(inputs))
            super().__init__(inputs, keras.layers.Dense(3)(x), hah_alphas=[0.5])

    model = _compile(Subclassed())
    history = model.fit(*_data(), epochs=1, verbose=0).history
    assert history["hah_block"][0] > 0
    assert history["hah_cost"][0] == pytest.approx(0.5 * history["hah_block"][0])


def test_a_cost_from_a_layer_the_model_does_not_know_raises():
    inputs = keras.Input((8, 8, 1))
    x = _recording_layer()(HaHBlock(4, name="block")(inputs))
    model = _compile(keras_hebb.HebbianModel(
        inputs, keras.layers.Dense(3)(keras.layers.Flatten()(x))))
    with pytest.raises(ValueError, match=r"layers \['recorder'\] recorded HaH costs"):
        model.fit(*_data(), epochs=1, verbose=0)


def _normalization(model):
    layer = model.get_layer("input_normalization")
    return np.ravel(layer.mean), np.sqrt(np.ravel(layer.variance))


def test_build_vgg_normalizes_with_the_stated_statistics():
    spec = keras_hebb.data.dataset_spec
    grey = architectures.build_vgg((4,), input_shape=(8, 8, 1))
    np.testing.assert_allclose(_normalization(grey), (spec("fashion_mnist").mean,
                                                      spec("fashion_mnist").std), rtol=1e-6)
    colour = architectures.build_vgg((4,), input_shape=(8, 8, 3), dataset="cifar10")
    np.testing.assert_allclose(_normalization(colour), (spec("cifar10").mean,
                                                        spec("cifar10").std), rtol=1e-6)
    explicit = architectures.build_vgg((4,), input_shape=(8, 8, 1), mean=(0.5,), std=(0.25,))
    np.testing.assert_allclose(_normalization(explicit), ((0.5,), (0.25,)), rtol=1e-6)
    with pytest.raises(ValueError, match="svhn_cropped"):
        architectures.build_vgg((4,), input_shape=(8, 8, 3), dataset="svhn_cropped")
    with pytest.raises(ValueError, match="2-channel"):
        architectures.build_vgg((4,), input_shape=(8, 8, 2))


def test_the_programs_import_no_private_name_of_another_package():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    # A name with one leading underscore (not a dunder such as __main__).
    private = re.compile(r"(from|import)\s+(keras_hebb|export|training|experiments)"
                         r"(\.\w+)*\.(_(?!_)\w+)|from\s+(keras_hebb|export|training|experiments)"
                         r"(\.\w+)*\s+import\s+.*\b_(?!_)\w+")
    found = []
    for program in ("training", "export", "experiments"):
        for name in sorted(os.listdir(os.path.join(root, program))):
            if not name.endswith(".py"):
                continue
            with open(os.path.join(root, program, name)) as f:
                for number, line in enumerate(f, 1):
                    match = private.search(line)
                    # A program may use its own private names.
                    if match and (match.group(2) or match.group(5)) != program:
                        found.append(f"{program}/{name}:{number}: {line.strip()}")
    assert found == []
