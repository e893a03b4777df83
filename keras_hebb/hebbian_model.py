"""`HebbianModel`: a Keras model trained with cross-entropy plus HaH costs."""

import numbers
import warnings

import keras
from keras import ops

from keras_hebb import _checks, _compat, _trainers
from keras_hebb.layers.hah_block import HaHBlock

#: Per-layer alphas of the paper's HaH-VGG16 (its six HaH layers).
PAPER_ALPHAS = (0.0045, 0.0025, 0.0013, 0.001, 0.0008, 0.0005)

#: Adversarial training: the attacks, norms and batches the HaH costs may
#: see, and each option's default (`None` = required, or derived).
ADVERSARIAL_ATTACKS = ("fgsm_rs", "pgd")
ADVERSARIAL_NORMS = ("linf", "l2")
HAH_COSTS_ON = ("adversarial", "clean")
ADVERSARIAL_DEFAULTS = {
    "attack": None,
    "eps": None,
    "norm": "linf",
    "steps": None,
    "step_size": None,
    "random_start": True,
    "hah_costs_on": "adversarial",
}


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
    with the compiled loss alone), unless it trains adversarially (a
    standard network's adversarial training); a forward pass in which a
    layer the model does not know records a HaH cost raises `ValueError`
    instead of dropping that cost.

    Example:

    >>> inputs = keras.Input((28, 28, 1))
    >>> x = keras_hebb.layers.HaHBlock(8)(inputs)
    >>> x = keras.layers.GlobalAveragePooling2D()(x)
    >>> model = HebbianModel(inputs, keras.layers.Dense(10)(x), hah_alphas=1e-3)
    >>> model.compile("adam", keras.losses.SparseCategoricalCrossentropy(
    ...     from_logits=True), metrics=["accuracy"])

    Adversarial training (`adversarial`): each training step first crafts
    adversarial examples of the batch, then takes the step above on them
    instead of the clean images (Madry et al. 2018; Wong et al. 2020).
    The attack maximizes the compiled loss with the model as it trains
    (`training=True`: batch-norm layers normalize with the batch's
    statistics, as in the field's reference code), but its forward passes
    run in a `keras.StatelessScope`, so batch-norm moving statistics (and
    any other state) are updated only by the training forward pass. Images
    are in [0, 1]: every iterate is projected onto the `norm` ball of
    radius `eps` and clipped to [0, 1]. Random starts are drawn from
    `(optimizer.iterations, replica)` with stateless random ops, so a
    resumed run crafts the same examples as an uninterrupted one.
    `accuracy` and `loss` in the training logs are then those of the
    adversarial examples. On TensorFlow (`jit_compile` and `tf.distribute`
    included) and JAX (stateless: the attack's state updates are dropped).

    >>> robust = HebbianModel.from_model(model, adversarial={
    ...     "attack": "fgsm_rs", "eps": 0.1})

    Args:
        inputs, outputs, name: as for a functional `keras.Model`.
        hah_alphas: weight of each block's HaH cost: a number for all blocks,
            a list with one number per `HaHBlock` (in model order), or a dict
            from block name to number. `None` uses the paper's schedule
            `PAPER_ALPHAS` (the first ones if there are fewer blocks, its
            last value repeated if there are more). Defaults to `None`.
        adversarial: `None` (train on the clean images) or a dict of
            adversarial-training options (`ADVERSARIAL_DEFAULTS`):
            `attack`: `"fgsm_rs"` (one signed/normalized gradient step from
            a random start, Wong et al.'s "fast is better than free") or
            `"pgd"` (Madry et al.'s PGD); `eps`: the budget in pixel space;
            `norm`: `"linf"` or `"l2"` (default `"linf"`); `steps`: PGD
            iterations (default 7; 1 for `fgsm_rs`, which takes no other
            value); `step_size`: default `1.25 * eps` for `fgsm_rs` (Wong
            et al.) and `2.5 * eps / steps` for `pgd` (Madry et al.);
            `random_start`: start uniformly inside the ball (default
            `True`; `fgsm_rs` without it is plain FGSM); `hah_costs_on`:
            the batch whose HaH costs enter the loss, `"adversarial"`
            (default: the costs shape the representation the network is
            trained to classify, and it costs no extra forward pass) or
            `"clean"` (one more forward pass, which updates no state).
            Defaults to `None`.
        **kwargs: `keras.Model` keyword arguments.

    Reference:
        Madry et al., "Towards Deep Learning Models Resistant to
        Adversarial Attacks", ICLR 2018. Wong, Rice, Kolter, "Fast is
        better than free: Revisiting adversarial training", ICLR 2020.

        Cekic, Bakiskan, Madhow, "Neuro-Inspired Deep Neural Networks with
        Sparse, Strong Activations", arXiv:2202.13074, 2022.
    """

    def __init__(self, *args, hah_alphas=None, adversarial=None, **kwargs):
        super().__init__(*args, **kwargs)
        _trainers.check_backend()
        self.adversarial = adversarial_options(adversarial)
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
        if not self._hah_layers and self.adversarial is None:
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

    @classmethod
    def from_model(cls, model, adversarial=None):
        """A `HebbianModel` on the layers of a functional `model` (shared,
        not copied), with its HaH alphas if it is a `HebbianModel`: how a
        built network, standard or HaH, gets this class's training options
        (`adversarial`)."""
        alphas = model.hah_alphas if isinstance(model, HebbianModel) else None
        return cls(model.inputs, model.outputs, name=model.name, hah_alphas=alphas,
                   adversarial=adversarial)

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
        return {**super().get_config(), "hah_alphas": list(self.hah_alphas),
                "adversarial": None if self.adversarial is None else dict(self.adversarial)}


def adversarial_options(adversarial):
    """The complete adversarial-training options of a user's dict (every
    key of `ADVERSARIAL_DEFAULTS`, step size resolved), or `None`.

    Raises:
        keras_hebb._checks.InvalidArgument: (a `ValueError`) a bad option,
            named as `adversarial.<key>`.
    """
    if adversarial is None:
        return None
    if not isinstance(adversarial, dict):
        raise _checks.InvalidArgument(
            "adversarial", adversarial,
            f"None or a dict with keys from {list(ADVERSARIAL_DEFAULTS)}")
    unknown = sorted(set(adversarial) - set(ADVERSARIAL_DEFAULTS))
    if unknown:
        raise _checks.InvalidArgument(
            f"adversarial.{unknown[0]}", adversarial[unknown[0]],
            f"no such option (options: {list(ADVERSARIAL_DEFAULTS)})")
    options = {**ADVERSARIAL_DEFAULTS, **adversarial}

    attack, norm, hah_costs_on = (
        _checks.check_choice(f"adversarial.{key}", options[key], choices)
        for key, choices in (("attack", ADVERSARIAL_ATTACKS),
                             ("norm", ADVERSARIAL_NORMS),
                             ("hah_costs_on", HAH_COSTS_ON)))
    eps = _checks.check_positive("adversarial.eps", options["eps"])
    steps = options["steps"]
    if attack == "fgsm_rs":
        if steps not in (None, 1) or isinstance(steps, bool):
            raise _checks.InvalidArgument(
                "adversarial.steps", steps, "1 or None for attack='fgsm_rs' (use "
                "attack='pgd' for several steps)")
        steps = 1
    else:
        steps = 7 if steps is None else _checks.check_positive_int(
            "adversarial.steps", steps)
    step_size = options["step_size"]
    if step_size is None:
        step_size = 1.25 * eps if attack == "fgsm_rs" else 2.5 * eps / steps
    step_size = _checks.check_positive("adversarial.step_size", step_size)
    return {
        "attack": attack,
        "eps": eps,
        "norm": norm,
        "steps": steps,
        "step_size": step_size,
        "random_start": _checks.check_bool(
            "adversarial.random_start", options["random_start"]),
        "hah_costs_on": hah_costs_on,
    }


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
