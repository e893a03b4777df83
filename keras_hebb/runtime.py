"""What the programs around keras_hebb (training, export) need from the
runtime, in one public place.

- `integer_threshold()`: the context the TFLite export traces its graphs
  in (a HaH block's threshold selects by integer counting there: the same
  kept values, no `TOPK_V2`).
- `tflite_op_details(interpreter)`, `tflite_tensor_details(interpreter,
  index)`: a LiteRT interpreter's ops and tensors (the verification's op
  table).
- `patch_keras_multi_worker_fit()`, `in_multi_worker_mode(strategy)`:
  `model.fit` under `MultiWorkerMirroredStrategy` (keras_hebb's fix of the
  upstream failure) and whether a strategy runs on several workers.

They wrap private or version-dependent API of Keras, TensorFlow and LiteRT
(kept in `keras_hebb._compat` and `keras_hebb._context`), so a program
imports only this module.
"""

from keras_hebb._compat import (
    in_multi_worker_mode,
    patch_keras_multi_worker_fit,
    tflite_op_details,
    tflite_tensor_details,
)
from keras_hebb._context import integer_threshold

__all__ = ["in_multi_worker_mode", "integer_threshold", "patch_keras_multi_worker_fit",
           "tflite_op_details", "tflite_tensor_details"]
