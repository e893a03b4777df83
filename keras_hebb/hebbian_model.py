"""`HebbianModel`: a Keras model trained with cross-entropy plus HaH costs."""

import numbers
import warnings

import keras
from keras import ops

from keras_hebb import _checks, _compat, _trainers
from keras_hebb._context import collect_hah_costs, hah_cost_scope
from keras_hebb.layers.hah_block import HaHBlock

#: Per-layer alphas of the paper's HaH-VGG16 (its six HaH layers).
PAPER_ALPHAS = (0.0045, 0.0025, 0.0013, 0.001, 0.0008, 0.0005)

#: Adversarial training: the attacks, norms and batches the HaH costs may
#: see, and each option's default (`None` = required, or derived).
ADVERSARIAL_ATTACKS = ("fgsm_rs", "pgd")
ADVERSARIAL_NORMS = ("linf", "l2")
HAH_COSTS_ON = ("adversarial",)
BATCH_NORM_STATISTICS = ("adversarial", "clean")
ADVERSARIAL_DEFAULTS = {
    "attack": None,
    "eps": None,
    "norm": "linf",
    "steps": None,
    "step_size": None,
    "random_start": True,
    "hah_costs_on": "adversarial",
    "batch_norm_statistics": "clean",
}
#: The value an option had before it existed: a model or config saved
#: without it was trained that way (`batch_norm_statistics` was added, and
#: later made `"clean"` by default, after adversarial training shipped).
ADVERSARIAL_BEFORE_OPTIONS = {"batch_norm_statistics": "adversarial"}


@keras.saving.register_keras_serializable(package="keras_hebb")
class HebbianModel(keras.Model):
    """A Keras model that logs its HaH costs and can train adversarially.

    The HaH cost itself needs no special model: in training every
    `HaHBlock` adds `-alpha * HaH` to its model's losses (a layer loss,
    with a layer-local gradient), so a `keras.Sequential` or any
    `keras.Model` with `HaHBlock`s minimizes

        loss = compiled_loss - sum_l alpha_l * HaH_l

    with plain `compile` and `fit`, on every Keras backend. The
    cross-entropy (compiled loss) trains every weight end to end; each HaH
    cost updates only its own block's kernel, with the block input held
    constant (a local, synapse-level Hebbian/anti-Hebbian rule, as in the
    paper's training loop).

    `HebbianModel` adds what Keras lacks, and nothing else:
    - the blocks' weights in one place (`hah_alphas`, below);
    - logs: `fit` and `evaluate` log `hah_cost` (the sum of `alpha_l *
      HaH_l`) and each block's raw cost as `hah_<block name>` (through
      `compute_loss` and metrics; evaluation computes the costs for the
      logs, its `loss` is the compiled loss alone);
    - adversarial training (`adversarial`, below).

    Build it like a functional `keras.Model`, from inputs and outputs that
    contain `HaHBlock` layers, or subclass it (create the blocks in
    `__init__`, call them in `call`). Its HaH blocks are the `HaHBlock`
    layers (subclasses included) found in it when it is built from inputs
    and outputs and again when it is compiled. A model without any warns
    at `compile`, unless it trains adversarially (a standard network's
    adversarial training); a forward pass in which a layer the model does
    not know records a HaH cost raises `ValueError`.

    Example:

    >>> inputs = keras.Input((28, 28, 1))
    >>> x = keras_hebb.layers.HaHBlock(8)(inputs)
    >>> x = keras.layers.GlobalAveragePooling2D()(x)
    >>> model = HebbianModel(inputs, keras.layers.Dense(10)(x), hah_alphas=1e-3)
    >>> model.compile("adam", keras.losses.SparseCategoricalCrossentropy(
    ...     from_logits=True), metrics=["accuracy"])

    Adversarial training (`adversarial`): each training step first crafts
    adversarial examples of the batch, then takes Keras's own training
    step on them instead of the clean images (Madry et al. 2018; Wong et
    al. 2020); the HaH costs are those of the adversarial batch. The attack
    maximizes the compiled loss with the model as it trains
    (`training=True`: batch-norm layers normalize with the batch's
    statistics, as in the field's reference code), but its forward passes
    run in a `keras.StatelessScope`, so batch-norm moving statistics (and
    any other state) are updated only by the training forward pass. Images
    are in [0, 1]: every iterate is projected onto the `norm` ball of
    radius `eps` and clipped to [0, 1]. Random starts are drawn from
    `(optimizer.iterations, replica)` with stateless random ops, so a
    resumed run crafts the same examples as an uninterrupted one. The
    attack's steps are a `keras.ops.fori_loop` (not unrolled); its input
    gradient is the only backend code (`keras_hebb._trainers`).
    `accuracy` and `loss` in the training logs are then those of the
    adversarial examples. On TensorFlow (`jit_compile` and `tf.distribute`
    included) and JAX.

    >>> robust = HebbianModel.from_model(model, adversarial={
    ...     "attack": "fgsm_rs", "eps": 0.1})

    Args:
        inputs, outputs, name: as for a functional `keras.Model`.
        hah_alphas: weight of each block's HaH cost, set on the blocks
            (`HaHBlock.alpha`): a number for all blocks, a list with one
            number per `HaHBlock` (in model order), or a dict from block
            name to number. `None` keeps the alpha of each block that has
            one and gives the others the paper's schedule by position,
            `PAPER_ALPHAS` (its last value repeated past its end).
            Defaults to `None`.
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
            `"adversarial"`, the only value (the costs shape the
            representation the network is trained to classify);
            `batch_norm_statistics`: what the moving statistics of batch
            norm (and any other non-trainable state) follow, `"clean"`
            (default: a forward pass on the clean batch in training mode,
            without a gradient, sets them; the step itself still
            normalizes the adversarial batch with its own statistics; about
            one forward pass more per step) or `"adversarial"` (the
            training forward pass on the adversarial batch, as in the
            field's reference code). Under `"adversarial"` a channel silent
            on adversarial batches but not on clean images keeps a moving
            variance of about 0, which at inference multiplies its clean
            output by up to `1 / sqrt(epsilon)`: it collapsed half the
            robust recipe's FGSM-RS runs (docs/results/front.md). A model
            saved before the option existed loads with `"adversarial"`.
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
        self.adversarial = adversarial_options(adversarial)
        if self.adversarial is not None:
            _trainers.check_backend(_trainers.ADVERSARIAL_BACKENDS,
                                    "keras_hebb's adversarial training")
        self._hah_alphas_argument = hah_alphas
        self._hah_total_tracker = keras.metrics.Mean(name="hah_cost")
        self._hah_layers = []
        self._hah_layer_trackers = []
        self._find_hah_layers()

    def _find_hah_layers(self):
        """(Re)reads the model's `HaHBlock`s and sets their alphas; the
        per-block trackers follow. A no-op when the blocks have not changed."""
        layers = [
            layer for layer in _compat.all_layers(self) if isinstance(layer, HaHBlock)
        ]
        if [id(layer) for layer in layers] == [id(layer) for layer in self._hah_layers]:
            # Unchanged; also a subclassed model in its __init__, whose
            # blocks come later (its alphas are checked at compile).
            return
        alphas = _resolve_alphas(self._hah_alphas_argument, layers)
        for layer, alpha in zip(layers, alphas):
            layer.alpha = alpha
        self._hah_layers = layers
        self._hah_layer_trackers = [
            keras.metrics.Mean(name=f"hah_{layer.name}") for layer in layers
        ]

    @property
    def hah_alphas(self):
        """Each HaH block's alpha, in model order."""
        return [layer.alpha for layer in self._hah_layers]

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

    @classmethod
    def from_config(cls, config, custom_objects=None):
        adversarial = config.get("adversarial")
        if isinstance(adversarial, dict):
            # Saved before an option existed: trained the way it was then.
            config = {**config, "adversarial": {**ADVERSARIAL_BEFORE_OPTIONS, **adversarial}}
        return super().from_config(config, custom_objects)

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
        not copied), its blocks' alphas kept: how a built network, standard
        or HaH, gets this class's training options (`adversarial`)."""
        return cls(model.inputs, model.outputs, name=model.name, adversarial=adversarial)

    @property
    def hah_layers(self):
        """The `HaHBlock` layers, in model order."""
        return list(self._hah_layers)

    def train_step(self, *args):
        # TensorFlow: (data); JAX: (state, data), as Keras's own train_step.
        *state, data = args
        self._build_outside_cost_scope(data)
        if self.adversarial is None:
            with collect_hah_costs():
                return super().train_step(*state, data)
        trainer = _trainers.for_backend()
        crafted = trainer.adversarial_batch(self, *state, data)

        def step(*state):
            with collect_hah_costs():
                return super(HebbianModel, self).train_step(*state, crafted)

        if self.adversarial["batch_norm_statistics"] == "clean":
            clean_images = keras.utils.unpack_x_y_sample_weight(data)[0]
            return trainer.with_clean_state(self, state, clean_images, step)
        return step(*state)

    def test_step(self, *args):
        self._build_outside_cost_scope(args[-1])
        with collect_hah_costs():
            return super().test_step(*args)

    def _build_outside_cost_scope(self, data):
        # A subclassed model builds on its first call by calling itself once
        # more: that call must not record costs (first trace only; an
        # inference call, which updates nothing and is pruned from graphs).
        if not self.built:
            self(keras.utils.unpack_x_y_sample_weight(data)[0], training=False)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None,
                     training=True):
        """Keras's loss (compiled loss plus the layers' losses, the HaH
        terms among them); also logs the costs of the forward pass."""
        loss = super().compute_loss(x=x, y=y, y_pred=y_pred,
                                    sample_weight=sample_weight, training=training)
        scope = hah_cost_scope()
        if scope is not None and self._hah_layers:
            self._log_hah_costs(scope, batch=ops.shape(
                next(i for i in keras.tree.flatten(x) if i is not None))[0])
        return loss

    def _log_hah_costs(self, scope, batch):
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
        total = ops.zeros((), "float32")
        for layer, tracker in zip(self._hah_layers, self._hah_layer_trackers):
            cost = scope.costs[layer.name]
            tracker.update_state(cost, sample_weight=batch)
            total += layer.alpha * cost
        self._hah_total_tracker.update_state(total, sample_weight=batch)

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

    if options["hah_costs_on"] == "clean":
        raise _checks.InvalidArgument(
            "adversarial.hah_costs_on", "clean",
            "'adversarial': the HaH costs are layer losses of the training forward "
            "pass, which sees the adversarial batch (the clean batch's costs were "
            "dropped when the cost became a layer loss)")
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
        "batch_norm_statistics": _checks.check_choice(
            "adversarial.batch_norm_statistics", options["batch_norm_statistics"],
            BATCH_NORM_STATISTICS),
    }


def _resolve_alphas(hah_alphas, layers):
    """One float per HaH block, from a number, a list, a dict or `None`
    (each block's own alpha, else the paper's schedule by position)."""
    names = [layer.name for layer in layers]
    count = len(names)
    if hah_alphas is None:
        schedule = list(PAPER_ALPHAS[:count])
        schedule += [PAPER_ALPHAS[-1]] * (count - len(schedule))
        return [layer.alpha if layer.alpha is not None else paper
                for layer, paper in zip(layers, schedule)]
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
