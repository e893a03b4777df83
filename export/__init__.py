"""Turns a trained keras_hebb model into serving artifacts and verifies them.

Run from the repository root:

    python -m export MODEL.keras --out EXPORT_DIR [--version N]
        [--tflite float32,float16,dynamic,int8] [--calibration-dataset NAME]
    python -m export --verify EXPORT_DIR [MODEL.keras]

`EXPORT_DIR/<version>/` is a TF Serving version directory (SavedModel with
the `serving_default` and `serving_float` signatures, warm-up requests) that
also holds the TFLite files (`tflite/model_<variant>.tflite`), the export
metadata (`export.json`) and the verification report (`verification.json`,
`verification.md`). See docs/EXPORT.md.

This package file imports nothing heavy, so that argument mistakes are
reported before TensorFlow loads (`command` is the program, `cli` the
command-line kit the `training` programs share); the modules
`savedmodel`, `tflite`, `verify` and `pipeline` import TensorFlow.
"""

from export.cli import UsageError

#: TFLite variants, in the order they are written and reported.
VARIANTS = ("float32", "float16", "dynamic", "int8")


class ExportError(UsageError):
    """A mistake the user can fix (bad path, version, variant, dataset).

    The program prints its message as one line and exits with status 2.
    """


class VerificationError(Exception):
    """An artifact disagrees with the Keras model beyond its tolerance.

    The program prints its message and exits with status 1; the report is
    written before this is raised.
    """
