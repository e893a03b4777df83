"""`HebbianModel`: a Keras model trained with cross-entropy plus HaH costs."""

import numbers
import warnings

import keras
from keras import ops

from keras_hebb import _compat, _trainers
from keras_hebb.layers.hah_block import HaHBlock

#: Per-layer alphas of the paper's HaH-VGG16 (its six HaH layers).
PAPER_ALPHAS = (0.0045, 0.0025, 0.0013, 0.001, 0.0008, 0.0005)


@keras.saving.register_keras_serializable(package="keras_hebb")
class HebbianModel(keras.Model):
    """A Keras model whose training adds layer-wise HaH costs.

    Build it like a functional `keras.Model`, from inputs and outputs that
    contain `HaHBlock` layers, or subclass it (create the blocks in
    `__init__`, call them in `call`). Its `train_step` minimizes

        loss = compiled_loss - sum_l alpha_l * HaH_l

    in one forward pass. The cross-entropy (compiled loss) trains every
    weight end to end; each HaH cost updates only its own block's kernel,
    with the block input held constant (a local, synapse-level
    Hebbian/anti-Hebbian rule, as in the paper's training loop). Under a
    `tf.distribute` strategy the HaH term is scaled by 1/replicas like the
    compiled loss. `fit` and `evaluate` log `loss` (the total above),
    `hah_cost` (the sum of `alpha_l * HaH_l`) and each block's raw cost as
    `hah_<block name>`. It trains on the TensorFlow and JAX backends of
    Keras (`keras_hebb._trainers`: one step module per backend).

    The model's HaH blocks are the `HaHBlock` layers (subclasses included)
    found in it when it is built from inputs and outputs and again when it
    is compiled (a subclassed model's blocks exist only after its
    `__init__`). A model without any warns at `compile` (it then trains
    with the compiled loss alone); a forward pass in which a layer the
    model does not know records a HaH cost raises `ValueError` instead of
    dropping that cost.

    Example:

    >>> inputs = keras.Input((28, 28, 1))
    >>> x = keras_hebb.layers.HaHBlock(8)(inputs)
    >>> x = keras.layers.GlobalAveragePooling2D()(x)
    >>> model = HebbianModel(inputs, keras.layers.Dense(10)(x), hah_alphas=1e-3)
    >>> model.compile("adam", keras.losses.SparseCategoricalCrossentropy(
    ...     from_logits=True), metrics=["accuracy"])

    Args:
        inputs, outputs, name: as for a functional `keras.Model`.
        hah_alphas: weight of each block's HaH cost: a number for all blocks,
            a list with one number per `HaHBlock` (in model order), or a dict
            from block name to number. `None` uses the paper's schedule
            `PAPER_ALPHAS` (the first ones if there are fewer blocks, its
            last value repeated if there are more). Defaults to `None`.
        **kwargs: `keras.Model` keyword arguments.

    Reference:
        Cekic, Bakiskan, Madhow, "Neuro-Inspired Deep Neural Networks with
        Sparse, Strong Activations", arXiv:2202.13074, 2022.
    """

    def __init__(self, *args, hah_alphas=None, **kwargs):
        super().__init__(*args, **kwargs)
        _trainers.check_backend()
        self._hah_alphas_argument = hah_alphas
        self._hah_total_tracker = keras.metrics.Mean(name="hah_cost")
        self._hah_layers = []
        self._hah_layer_trackers = []
        self.hah_alphas = []
        self._find_hah_layers()

    def _find_hah_layers(self):
        """(Re)reads the model's `HaHBlock`s; alphas and per-block trackers
        follow. A no-op when the blocks have not changed."""
        layers = [
            layer for layer in _compat.all_layers(self) if isinstance(layer, HaHBlock)
        ]
        if [id(layer) for layer in layers] == [id(layer) for layer in self._hah_layers]:
            # Unchanged; also a subclassed model in its __init__, whose
            # blocks come later (its alphas are checked at compile).
            return
        names = [layer.name for layer in layers]
        self.hah_alphas = _resolve_alphas(self._hah_alphas_argument, names)
        self._hah_layers = layers
        self._hah_layer_trackers = [
            keras.metrics.Mean(name=f"hah_{layer.name}") for layer in layers
        ]

    def compile(self, *args, **kwargs):
        self._find_hah_layers()
        if not self._hah_layers:
            warnings.warn(
                f"HebbianModel '{self.name}' has no HaHBlock layers: it trains "
                "with the compiled loss alone (no HaH cost). Use HaHBlock "
                "layers, or a keras.Model.",
                UserWarning,
                stacklevel=2,
            )
        super().compile(*args, **kwargs)

    def compile_from_config(self, config):
        # Keras skips `compile` on load when a model overrides it; this
        # override only adds the block check above, so load compiles as
        # `keras.Model.compile_from_config` does.
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:
            self.optimizer.build(self.trainable_variables)

    @property
    def hah_layers(self):
        """The `HaHBlock` layers, in model order."""
        return list(self._hah_layers)

    def _hah_term(self, scope):
        """`(costs, hah_term)` of one forward pass run inside `scope` (a
        `collect_hah_costs()` scope): each block's cost, in model order, and
        `sum_l alpha_l * cost_l`. Shared by the backends' step modules."""
        names = [layer.name for layer in self._hah_layers]
        unknown = sorted(set(scope.costs) - set(names))
        if unknown:
            raise ValueError(
                f"HebbianModel '{self.name}': layers {unknown} recorded HaH "
                f"costs but are not among the model's HaH blocks {names} "
                "(found at construction and at compile); compile the model "
                "after creating all its HaHBlock layers."
            )
        missing = [name for name in names if name not in scope.costs]
        if missing:
            raise ValueError(
                f"HebbianModel '{self.name}': HaH blocks {missing} were not "
                "called in the forward pass; HebbianModel needs every HaH "
                "block used once per step."
            )
        costs = [scope.costs[name] for name in names]
        hah_term = ops.zeros((), "float32")
        for alpha, cost in zip(self.hah_alphas, costs):
            hah_term += alpha * cost
        return costs, hah_term

    def _update_hah_trackers(self, costs, hah_term, batch):
        self._hah_total_tracker.update_state(hah_term, sample_weight=batch)
        for tracker, cost in zip(self._hah_layer_trackers, costs):
            tracker.update_state(cost, sample_weight=batch)

    def train_step(self, *args):
        # TensorFlow: (data); JAX: (state, data), see keras_hebb._trainers.
        return _trainers.for_backend().train_step(self, *args)

    def test_step(self, *args):
        return _trainers.for_backend().test_step(self, *args)

    def get_config(self):
        return {**super().get_config(), "hah_alphas": list(self.hah_alphas)}


def _resolve_alphas(hah_alphas, names):
    """One float per HaH layer name, from a number, a list or a dict."""
    count = len(names)
    if hah_alphas is None:
        schedule = list(PAPER_ALPHAS[:count])
        return schedule + [PAPER_ALPHAS[-1]] * (count - len(schedule))
    if isinstance(hah_alphas, numbers.Real) and not isinstance(hah_alphas, bool):
        alphas = [float(hah_alphas)] * count
    elif isinstance(hah_alphas, dict):
        unknown = sorted(set(hah_alphas) - set(names))
        if unknown:
            raise ValueError(
                f"Invalid value for `hah_alphas`: no HaH layer named {unknown}; "
                f"the model's HaH layers are {names}. Received: "
                f"hah_alphas={hah_alphas!r}"
            )
        missing = [name for name in names if name not in hah_alphas]
        if missing:
            raise ValueError(
                f"Invalid value for `hah_alphas`: no alpha for HaH layers "
                f"{missing}. Received: hah_alphas={hah_alphas!r}"
            )
        alphas = [float(hah_alphas[name]) for name in names]
    elif isinstance(hah_alphas, (list, tuple)):
        if len(hah_alphas) != count:
            raise ValueError(
                f"Invalid value for `hah_alphas`: expected {count} values, one "
                f"per HaH layer {names}. Received: hah_alphas={list(hah_alphas)!r}"
            )
        alphas = [float(a) for a in hah_alphas]
    else:
        raise ValueError(
            "Invalid value for `hah_alphas`: expected None, a number, a list "
            f"or a dict. Received: hah_alphas={hah_alphas!r}"
        )
    if any(a < 0 for a in alphas):
        raise ValueError(
            "Invalid value for `hah_alphas`: alphas must be >= 0. "
            f"Received: hah_alphas={hah_alphas!r}"
        )
    return alphas
