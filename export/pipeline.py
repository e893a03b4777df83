"""The export: SavedModel + TFLite into a new version directory, verified.

A version is assembled in `EXPORT_DIR/.tmp-<version>-<pid>-*` and renamed to
`EXPORT_DIR/<version>` only once everything is written and verified, so a
server watching EXPORT_DIR never sees half a model (TF Serving only loads
directories whose name is a number). An existing version is never
overwritten. A version that fails verification is kept, for inspection, as
`EXPORT_DIR/rejected-<version>-<time>`.
"""

import datetime
import hashlib
import json
import os
import shutil
import tempfile
import time

import numpy as np

from export import ExportError, VerificationError, cli
from export import tflite as tflite_lib
from export.savedmodel import (
    FLOAT_SIGNATURE,
    SERVING_SIGNATURE,
    image_shape,
    write_savedmodel,
    write_warmup_requests,
)

#: Default datasets by image shape, for calibration and verification.
TMP_PREFIX = ".tmp-"


def numeric_versions(export_dir):
    """The version numbers present in `export_dir`, sorted."""
    if not os.path.isdir(export_dir):
        return []
    return sorted(int(n) for n in os.listdir(export_dir)
                  if n.isdigit() and os.path.isdir(os.path.join(export_dir, n)))


def next_version(export_dir, version=None):
    """`version` if it is free, else ExportError; `None`: latest + 1 (or 1)."""
    if version is None:
        existing = numeric_versions(export_dir)
        return existing[-1] + 1 if existing else 1
    if version < 1:
        raise ExportError(f"Invalid --version {version}: expected an integer >= 1.")
    path = os.path.join(export_dir, str(version))
    if os.path.exists(path):
        raise ExportError(
            f"Version directory {path} already exists: versions are never "
            "overwritten; pass another --version or omit it to use the next one."
        )
    return version


def remove_stale_temporaries(export_dir):
    """Deletes temporary version directories of exports that died."""
    removed = []
    for name in os.listdir(export_dir):
        if not name.startswith(TMP_PREFIX):
            continue
        try:
            pid = int(name[len(TMP_PREFIX):].split("-")[1])
            os.kill(pid, 0)
            continue  # its export is still running
        except (IndexError, ValueError):
            pass
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        shutil.rmtree(os.path.join(export_dir, name), ignore_errors=True)
        removed.append(name)
    return removed


def load_model(model_path):
    """Loads a `.keras` file (keras_hebb layers registered); ExportError if bad."""
    return cli.load_model(model_path, error=ExportError)


def default_dataset(shape, dataset=None):
    """`dataset`, else keras_hebb.data's default for images of `shape`."""
    from keras_hebb import data

    dataset = dataset or data.default_dataset(shape)
    if dataset:
        return dataset
    raise ExportError(
        f"No default dataset for images of shape {list(shape)}: pass "
        "--calibration-dataset NAME (a keras_hebb.data dataset)."
    )


def load_images(dataset, split, limit):
    """`(float32 images in [0, 1], labels)` or ExportError naming the dataset."""
    from keras_hebb import data

    try:
        images, labels = data.load_arrays(dataset, split, limit)
    except (ValueError, FileNotFoundError, OSError) as error:
        raise ExportError(
            f"Cannot load dataset {dataset!r} ({split} split): {error}"
        ) from error
    return images, labels


def sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def export_model(model_path, export_dir, version=None, variants=tflite_lib.VARIANTS,
                 calibration_dataset=None, calibration_images=300,
                 verify_images=None, max_accuracy_drop=None, num_threads=1,
                 log=print, integer_threshold=True):
    """Exports a `.keras` model to `export_dir/<version>` and verifies it.

    Args:
        model_path: the trained `.keras` file.
        export_dir: the model base path a TF Serving server watches.
        version: version number; `None` picks the latest + 1.
        variants: TFLite variants to write (subset of `tflite.VARIANTS`).
        calibration_dataset: `keras_hebb.data` dataset name; its training
            split calibrates int8, its test split verifies. `None` picks one
            from the image shape.
        calibration_images: training images used to calibrate int8.
        verify_images: test images used by the verification; `None`:
            `verify.VERIFY_IMAGES`.
        max_accuracy_drop: see `verify.MAX_ACCURACY_DROP`.
        num_threads: TFLite threads for the verification.
        log: called with progress lines.
        integer_threshold: see `tflite.convert` (`False`: `TOPK_V2`
            thresholds, for runtimes without `BITCAST`).

    Returns:
        `(version_dir, report)`.

    Raises:
        ExportError: a user mistake (nothing is published).
        VerificationError: an artifact failed verification; the version is
            kept as `rejected-<version>-<time>`, not published.
    """
    os.makedirs(export_dir, exist_ok=True)
    version = next_version(export_dir, version)
    progress = _progress(log)
    for name in remove_stale_temporaries(export_dir):
        log(f"removed the leftovers of an interrupted export: {name}")
    model, shape, dataset, train_images, warmup_pixels = _inputs(
        model_path, calibration_dataset, calibration_images)

    scratch = tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{version}-{os.getpid()}-", dir=export_dir)
    try:
        # write_out wants to create the directory itself.
        staging = os.path.join(scratch, "version")
        files = _write_artifacts(
            model, staging, os.path.join(scratch, "tflite_source"), variants,
            train_images[:calibration_images] if "int8" in variants else None,
            warmup_pixels, integer_threshold, progress)
        metadata = _metadata(model, model_path, version, shape, dataset,
                             calibration_images, files, integer_threshold)
        with open(os.path.join(staging, "export.json"), "w") as f:
            json.dump(metadata, f, indent=2)
        report = _verify_or_reject(staging, export_dir, version, model, model_path, dataset,
                                   verify_images, max_accuracy_drop, num_threads, progress)
        return _publish(staging, export_dir, version, report)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _progress(log):
    """`log` with the seconds since now in front of each line."""
    start = time.perf_counter()

    def progress(line):
        log(f"[{time.perf_counter() - start:.0f}s] {line}")

    return progress


def _inputs(model_path, calibration_dataset, calibration_images):
    """`(model, image shape, dataset, training images, warm-up pixels)`:
    the model and the data that calibrates and warms up its artifacts."""
    model = load_model(model_path)
    shape = image_shape(model)
    dataset = default_dataset(shape, calibration_dataset)
    train_images, _ = load_images(dataset, "train", max(calibration_images, 32))
    warmup_pixels = np.round(train_images[:32] * 255.0).astype(np.uint8)
    return model, shape, dataset, train_images, warmup_pixels


def _verify_or_reject(staging, export_dir, version, model, model_path, dataset,
                      verify_images, max_accuracy_drop, num_threads, progress):
    """`verify.verify_version` of the staged version (`None` arguments:
    its defaults); on a failure the version is kept as
    `rejected-<version>-<time>` and the error says so."""
    from export import verify

    if verify_images is None:
        verify_images = verify.VERIFY_IMAGES
    progress(f"verifying on {verify_images} {dataset} test images")
    options = {} if max_accuracy_drop is None else {"max_accuracy_drop": max_accuracy_drop}
    try:
        return verify.verify_version(
            staging, model, dataset, verify_images, num_threads=num_threads,
            model_path=os.path.abspath(model_path), **options)
    except VerificationError as error:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        rejected = os.path.join(export_dir, f"rejected-{version}-{stamp}")
        os.rename(staging, rejected)
        raise VerificationError(
            f"{error} (not published; kept in {rejected})") from None


def _write_artifacts(model, staging, conversion_source, variants,
                     representative_images, warmup_pixels, integer_threshold, progress):
    """Writes the SavedModel (with warm-up requests) and the TFLite files
    into `staging`; returns `{variant: file relative to staging}`."""
    progress(f"writing SavedModel ({SERVING_SIGNATURE}: uint8, {FLOAT_SIGNATURE}: float32)")
    write_savedmodel(model, staging)
    write_warmup_requests(staging, [warmup_pixels[:1], warmup_pixels[:32]])
    os.makedirs(os.path.join(staging, "tflite"))
    if set(variants) - {"int8"}:  # the float variants share one trace
        tflite_lib.write_conversion_savedmodel(model, conversion_source, integer_threshold)
    files = {}
    for variant in variants:
        progress(f"converting TFLite {variant}")
        content = tflite_lib.convert(
            model, variant, savedmodel_dir=conversion_source,
            representative_images=representative_images,
            integer_threshold=integer_threshold,
        )
        files[variant] = f"tflite/model_{variant}.tflite"
        with open(os.path.join(staging, files[variant]), "wb") as f:
            f.write(content)
    return files


def _publish(staging, export_dir, version, report):
    """Renames the verified `staging` to `export_dir/<version>` (atomic);
    returns `(version_dir, report)`."""
    from export.verification_report import write_report

    final = os.path.join(export_dir, str(version))
    if os.path.exists(final):
        raise ExportError(f"Version directory {final} appeared during the export; not overwritten.")
    # The one step that publishes the version: an atomic rename.
    os.rename(staging, final)
    report["version_dir"] = os.path.abspath(final)
    write_report(final, report)
    return final, report


def _metadata(model, model_path, version, shape, dataset, calibration_images, files,
              integer_threshold):
    import keras
    import tensorflow as tf

    import keras_hebb

    return {
        "version": version,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "source_model": os.path.abspath(model_path),
        "source_sha256": sha256(model_path),
        "model_name": model.name,
        "image_shape": list(shape),
        "num_classes": int(model.output_shape[-1]),
        "signatures": {
            SERVING_SIGNATURE: {"images": "uint8 [batch, H, W, C], raw pixels"},
            FLOAT_SIGNATURE: {"images": "float32 [batch, H, W, C] in [0, 1]"},
            "outputs": {"logits": "float32 [batch, classes]",
                        "probabilities": "float32 [batch, classes]",
                        "classes": "int64 [batch]"},
        },
        "tflite": files,
        "tflite_thresholds": ("integer counting (BITCAST, int32 ops)" if integer_threshold
                              else "TOPK_V2"),
        "calibration": {"dataset": dataset, "split": "train", "images": calibration_images},
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__,
                     "keras_hebb": keras_hebb.__version__},
    }


def verify_export_dir(export_dir, model_path=None, version=None, dataset=None,
                      verify_images=None, max_accuracy_drop=None, num_threads=1):
    """Re-runs the verification of a published version (latest by default)."""
    from export import verify

    versions = numeric_versions(export_dir)
    if not versions:
        raise ExportError(f"No version directory in {export_dir}.")
    if version is None:
        version = versions[-1]
    elif version not in versions:
        raise ExportError(f"No version {version} in {export_dir}: it has {versions}.")
    version_dir = os.path.join(export_dir, str(version))
    metadata_path = os.path.join(version_dir, "export.json")
    metadata = {}
    if os.path.exists(metadata_path):
        with open(metadata_path) as f:
            metadata = json.load(f)
    if model_path is None:
        model_path = metadata.get("source_model")
        if not model_path or not os.path.isfile(model_path):
            raise ExportError(
                f"The source model of {version_dir} ({model_path}) is not available: "
                "pass it: python -m export MODEL.keras --verify EXPORT_DIR"
            )
    model = load_model(model_path)
    dataset = default_dataset(image_shape(model), dataset or metadata.get("calibration", {}).get("dataset"))
    options = {} if max_accuracy_drop is None else {"max_accuracy_drop": max_accuracy_drop}
    if verify_images is None:
        verify_images = verify.VERIFY_IMAGES
    report = verify.verify_version(version_dir, model, dataset, verify_images,
                                   num_threads=num_threads,
                                   model_path=os.path.abspath(model_path), **options)
    return version_dir, report
