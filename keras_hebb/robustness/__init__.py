"""Robustness evaluation: noise, an attack suite, BPDA, certificates, reports.

Every robustness number is the per-image worst case over a suite of attacks
(PGD with cross-entropy and margin losses, momentum iteration, CW-L2,
AutoAttack's APGD-CE, APGD-T and Square, an adaptive BPDA attack, a
transfer attack and gradient-free SPSA; one table, `registry`), with
diagnostic columns (each its own cascade) and sanity checks that flag
gradient masking; `smoothing` certifies L2 robustness by randomized
smoothing. See docs/ROBUSTNESS.md.

The submodules load lazily: `import keras_hebb` never imports the attack
libraries. The attacks are TensorFlow code (`tf.function` model functions,
cleverhans): on another Keras backend, `keras_hebb.robustness.<name>` of a
module that needs them raises a one-line `RuntimeError` naming the backend.
The surrogate-gradient scope that BPDA turns on lives in
`keras_hebb.surrogates` (re-exported here as `bpda`).
"""

import importlib

from keras_hebb import _backends

_EXPORTS = {
    "surrogate_gradients": "bpda",
    "with_surrogate": "bpda",
    "has_surrogates": "bpda",
    "make_model_fn": "attacks",
    "SuiteConfig": "suite",
    "QUICK": "suite",
    "FULL": "suite",
    "run_suite": "suite",
    "COLUMNS": "cascade",
    "REGISTRY": "registry",
    "register": "registry",
    "noise_accuracy": "noise",
    "certify": "smoothing",
    "write_report": "report",
}

_MODULES = ("attacks", "autoattack", "bpda", "cascade", "checks", "cw", "escalation", "noise", "registry",
            "report", "smoothing", "spsa", "square", "suite")

#: The submodules that run on any Keras backend; the others need TensorFlow.
_BACKEND_NEUTRAL = ("attack_types", "bpda", "report", "resume")

__all__ = sorted(_EXPORTS) + list(_MODULES)


def _load(module):
    if module not in _BACKEND_NEUTRAL:
        _backends.require_tensorflow(f"keras_hebb.robustness.{module}")
    return importlib.import_module(f"{__name__}.{module}")


def __getattr__(name):
    if name in _MODULES:
        return _load(name)
    if name in _EXPORTS:
        return getattr(_load(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
