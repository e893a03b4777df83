"""BPDA surrogate gradients: `keras_hebb.surrogates`, under the name the
attack suite uses (`bpda.surrogate_gradients`, `bpda.with_surrogate`, ...).

The scope lives in the core package because layers declare their
surrogates; the robustness suite only turns it on.
"""

from keras_hebb.surrogates import (  # noqa: F401
    MODES,
    has_surrogates,
    max_surrogate,
    surrogate_gradients,
    threshold_surrogate,
    with_surrogate,
)
