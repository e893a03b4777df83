"""Trace-time modes: thread-local settings the layers read while tracing.

What a layer computes depends on its constructor arguments and, for the
few behaviours below, on a mode entered around the call. A mode is read
when the call is traced: a `tf.function` traced inside a mode keeps that
behaviour in its graph, one traced outside does not (trace a separate
function per mode). Every mode is a context manager built on `_enter`,
restores the outer value on exit (modes nest) and is local to the thread.

| mode (enter with)                    | who enters it                       | who reads it                                     |
|--------------------------------------|-------------------------------------|--------------------------------------------------|
| `collect_hah_costs()`                | `HebbianModel` train/test steps;    | `HaHBlock.call` records its HaH cost             |
|   yields a `HaHCostScope`            | tests                               |                                                  |
| `collect_similarity_matching()`      | `SimilarityMatchingModel` steps     | `SimilarityMatching`, `DeepSimilarityMatching`   |
|   yields a `SimilarityMatchingScope` |                                     | record inputs, states and residuals              |
| `surrogate_gradients(mode, tau)`     | robustness BPDA attacks,            | `surrogates.with_surrogate` (thresholds,         |
|   yields a `SurrogateScope`          | `surrogates.has_surrogates`         | divisive normalization); `HaHBlock` (no fused    |
|                                      |                                     | training path inside it)                         |
| `fast_selection()`                   | robustness attacks' model functions | `_selection.kth_largest` (threshold, HaH cost):  |
|                                      |                                     | inference graphs take the native/NthElement path |
| `without_native()`                   | tests, benchmarks                   | `_selection.native_ops`: no native op traced     |
| `integer_threshold()`                | `export.tflite` (conversion graphs) | `FractionalThreshold(nonnegative_inputs=True)`:  |
|                                      |                                     | selection by integer counting instead of top_k   |
| process-wide, outside this module:   |                                     |                                                  |
| `KERAS_HEBB_NATIVE=0` (environment)  | the user, tests (`monkeypatch`)     | `_native.library()` at each trace: no native op  |
|                                      |                                     | (like `without_native()`, for the whole process) |
| `_selection._has_accelerator()`      | (cached on first use: a GPU/TPU is  | `_selection._native_selection_available`: no     |
|   (`functools.cache`)                | visible to TensorFlow)              | native/NthElement path on machines with one      |
| `KERAS_BACKEND` (Keras, environment) | the user, before importing Keras    | `keras_hebb._trainers.for_backend()`: the step   |
|                                      |                                     | module; `keras_hebb` import fails off TF/JAX     |

The process-wide rows are not modes: they hold for every trace of the
process, cannot be nested or scoped to a thread, and `_has_accelerator`
is fixed once read (`_selection._has_accelerator.cache_clear()` re-reads
it).

Behaviour a user or the export chooses once per model is a constructor
argument saved in `get_config` instead (`HaHBlock(use_fused_training=...)`,
`FractionalThreshold(nonnegative_inputs=...)`).
"""

import contextlib
import dataclasses
import threading

import keras

_local = threading.local()

#: The names under which the modes are kept in `_local`.
HAH_COSTS = "hah_costs"
SIMILARITY_MATCHING = "similarity_matching"
SURROGATES = "surrogates"
FAST_SELECTION = "fast_selection"
WITHOUT_NATIVE = "without_native"
INTEGER_THRESHOLD = "integer_threshold"

#: Surrogate-gradient modes, see `SurrogateScope`.
SURROGATE_MODES = ("smooth", "identity")


@contextlib.contextmanager
def _enter(mode, value):
    """Sets `mode` to `value` for the block, then restores the outer value."""
    previous = getattr(_local, mode, None)
    setattr(_local, mode, value)
    try:
        yield value
    finally:
        setattr(_local, mode, previous)


def current(mode):
    """The value of `mode` in this thread (`None` outside it)."""
    return getattr(_local, mode, None)


# --------------------------------------------------------------- HaH costs


class HaHCostScope:
    """Collects the HaH cost of every HaH layer called inside it.

    Attributes:
        costs: dict from layer name to its scalar cost.
    """

    def __init__(self):
        self.costs = {}

    def record(self, layer, cost):
        if layer.name in self.costs:
            raise ValueError(
                f"HaH layer '{layer.name}' was called twice in one forward "
                "pass; HebbianModel needs each HaH layer used once."
            )
        self.costs[layer.name] = cost


def collect_hah_costs():
    """Context manager: `with collect_hah_costs() as scope: model(x)`."""
    return _enter(HAH_COSTS, HaHCostScope())


def hah_cost_scope():
    """The innermost active `HaHCostScope` of this thread, or `None`."""
    return current(HAH_COSTS)


# ----------------------------------------------------- similarity matching


class SimilarityMatchingScope:
    """Collects, per similarity-matching layer, what its local rules need.

    `SimilarityMatchingModel` opens one around its forward pass; every
    similarity-matching layer called inside records its (flattened) input,
    its neural states (one per sub-layer) and the residual of its dynamics.
    Outside a scope the layers record nothing.
    """

    def __init__(self):
        self.records = {}

    def record(self, layer, inputs, states, residual):
        if layer.name in self.records:
            raise ValueError(
                f"Similarity-matching layer '{layer.name}' was called twice in "
                "one forward pass; its local update needs one input per step."
            )
        self.records[layer.name] = (inputs, list(states), residual)


def collect_similarity_matching():
    """Context manager: `with collect_similarity_matching() as scope: model(x)`."""
    return _enter(SIMILARITY_MATCHING, SimilarityMatchingScope())


def similarity_matching_scope():
    """The innermost active `SimilarityMatchingScope` of this thread, or None."""
    return current(SIMILARITY_MATCHING)


# ------------------------------------------------------ surrogate gradients


@dataclasses.dataclass
class SurrogateScope:
    """Settings of an active `surrogate_gradients()` scope.

    Attributes:
        mode: `"smooth"`: thresholds back-propagate like
            `x * sigmoid((x - t) / tau)` and maxima like a log-sum-exp;
            `"identity"`: thresholds back-propagate like the identity
            (straight-through), maxima like a log-sum-exp.
        temperature: `tau` relative to the typical size of the values
            (mean absolute value of the channel for thresholds, the maximum
            for maxima).
        uses: how many surrogates were applied since the scope opened
            (0 means the model declares none: BPDA equals plain PGD).
    """

    mode: str = "smooth"
    temperature: float = 0.1
    uses: int = 0


def surrogate_gradients(mode="smooth", temperature=0.1):
    """Context manager: layers called inside use their surrogate gradients.

    Args:
        mode: `"smooth"` or `"identity"`, see `SurrogateScope`.
            Defaults to `"smooth"`.
        temperature: relative smoothing, `> 0`. Defaults to `0.1`.

    Yields:
        The `SurrogateScope` (its `uses` counts applied surrogates).
    """
    if mode not in SURROGATE_MODES:
        raise ValueError(
            f"Invalid value for `mode`: expected one of {list(SURROGATE_MODES)}. "
            f"Received: mode={mode!r}"
        )
    if not temperature > 0:
        raise ValueError(
            "Invalid value for `temperature`: expected a number > 0. "
            f"Received: temperature={temperature!r}"
        )
    return _enter(SURROGATES, SurrogateScope(mode, float(temperature)))


def surrogate_scope():
    """The innermost active `SurrogateScope` of this thread, or `None`."""
    return current(SURROGATES)


# ------------------------------------------------------- selection paths


def fast_selection():
    """Within this scope, inference graphs use the fast selection path too.

    Robustness evaluation traces its attack functions inside it (the same
    values, 3-7x cheaper thresholds); graphs that are exported are traced
    outside it and keep `top_k`.
    """
    return _enter(FAST_SELECTION, True)


def without_native():
    """Within this scope the fast selection path leaves out keras_hebb's
    native ops: `NthElement` and TensorFlow ops are traced, as where the ops
    are not built (tests and benchmarks compare the two)."""
    return _enter(WITHOUT_NATIVE, True)


def integer_threshold():
    """Within this scope `FractionalThreshold`s built with
    `nonnegative_inputs=True` (those of `HaHBlock`s) select by integer
    counting (`_selection.above_kth_largest_by_bits`) instead of `top_k`:
    the graphs that `export.tflite` converts. The same kept values for
    every input, in int32 ops; TFLite runs it ~2.5x faster than `TOPK_V2`
    (`python -m benchmarks.tflite_ops`). TensorFlow backend only.
    """
    return _enter(INTEGER_THRESHOLD, True)


def integer_threshold_active():
    """Whether the calling trace is inside `integer_threshold()` (and the
    backend is TensorFlow, the only one with the integer path)."""
    return bool(current(INTEGER_THRESHOLD)) and keras.backend.backend() == "tensorflow"
