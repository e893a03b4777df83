"""TF Serving SavedModel: signatures, warm-up requests, Predict requests.

The exported SavedModel has two signatures with the same outputs:

- `serving_default`: input `images`, uint8 `[batch, H, W, C]` (raw pixels);
- `serving_float`: input `images`, float32 `[batch, H, W, C]` in `[0, 1]`;

outputs `logits` (float32 `[batch, classes]`), `probabilities` (softmax of
the logits) and `classes` (int64 `[batch]`, argmax of the logits). Both
check the image shape inside the graph (`tf.ensure_shape`), so a request
with the wrong rank or size fails with "... is not compatible with expected
shape [?,H,W,C]" instead of an error from deep inside the network.
"""

import os

import keras
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

from export import ExportError

SERVING_SIGNATURE = "serving_default"
FLOAT_SIGNATURE = "serving_float"
INPUT_NAME = "images"
WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")

_DTYPES = {"uint8": tf.uint8, "float32": tf.float32}


def image_shape(model):
    """`(H, W, C)` of a model with one fully known NHWC image input."""
    shapes = model.input_shape
    if isinstance(shapes, list):
        if len(shapes) != 1:
            raise ExportError(
                f"Model '{model.name}' has {len(shapes)} inputs; export expects "
                "one image input of shape (batch, height, width, channels)."
            )
        shapes = shapes[0]
    if len(shapes) != 4 or any(d is None for d in shapes[1:]):
        raise ExportError(
            f"Model '{model.name}' has input shape {tuple(shapes)}; export "
            "expects (batch, height, width, channels) with known height, "
            "width and channels."
        )
    return tuple(int(d) for d in shapes[1:])


def expected_shape_text(shape):
    """`[batch, H, W, C]`, as error messages and docs write it."""
    return "[batch, " + ", ".join(str(d) for d in shape) + "]"


def _serving_function(model, shape, dtype):
    """The body of a signature: checked images -> logits, probs, classes."""

    def serve(images):
        images = tf.ensure_shape(images, [None, *shape], name="check_images")
        pixels = tf.cast(images, tf.float32)
        if dtype == "uint8":
            pixels = pixels / 255.0
        logits = tf.cast(model(pixels, training=False), tf.float32)
        return {
            "logits": logits,
            "probabilities": tf.nn.softmax(logits),
            "classes": tf.argmax(logits, axis=-1),
        }

    return serve


def write_savedmodel(model, path, signatures=None):
    """Writes `model` as a SavedModel with serving signatures.

    Args:
        model: a built Keras model taking float32 images in [0, 1] and
            returning logits.
        path: directory to create.
        signatures: dict from signature name to input dtype (`"uint8"`:
            raw pixels, divided by 255 in the graph; `"float32"`: images
            in [0, 1]). Defaults to `serving_default` (uint8) and
            `serving_float` (float32).
    """
    shape = image_shape(model)
    signatures = signatures or {SERVING_SIGNATURE: "uint8", FLOAT_SIGNATURE: "float32"}
    archive = keras.export.ExportArchive()
    archive.track(model)
    for name, dtype in signatures.items():
        archive.add_endpoint(
            name,
            _serving_function(model, shape, dtype),
            input_signature=[
                tf.TensorSpec([None, *shape], _DTYPES[dtype], name=INPUT_NAME)
            ],
        )
    archive.write_out(path, verbose=False)


def predict_request(images, model_name="model", signature_name=SERVING_SIGNATURE):
    """A TF Serving `PredictRequest` carrying `images` as input `images`.

    Args:
        images: array `[batch, H, W, C]`, uint8 for `serving_default`,
            float32 in [0, 1] for `serving_float`.
        model_name: the name the server serves the model under.
        signature_name: which signature to call.

    Returns:
        A `tensorflow_serving.apis.predict_pb2.PredictRequest`.
    """
    request = predict_pb2.PredictRequest(
        model_spec=model_pb2.ModelSpec(name=model_name, signature_name=signature_name)
    )
    request.inputs[INPUT_NAME].CopyFrom(tf.make_tensor_proto(np.asarray(images)))
    return request


def check_request_input(signature, array, signature_name=SERVING_SIGNATURE):
    """Raises a `ValueError` naming the expected shape if `array` won't fit."""
    spec = signature.structured_input_signature[1][INPUT_NAME]
    expected = expected_shape_text(spec.shape[1:])
    received = list(np.shape(array))
    problem = None
    if array.dtype != spec.dtype.as_numpy_dtype:
        problem = f"dtype {array.dtype}"
    elif not spec.shape.is_compatible_with(received):
        problem = f"shape {received}"
    if problem:
        raise ValueError(
            f"Invalid input `{INPUT_NAME}` for signature '{signature_name}': "
            f"expected {spec.dtype.name} images of shape {expected}. "
            f"Received: {problem} (shape {received}, dtype {array.dtype})"
        )


def run_predict_request(loaded, request):
    """Answers a `PredictRequest` with a loaded SavedModel, as TF Serving does.

    Looks up the signature by name (empty name: `serving_default`), checks
    that the request's inputs are exactly the signature's and fit its dtype
    and shape, runs it and returns a `PredictResponse` with the outputs
    named in `output_filter` (all if empty).

    Args:
        loaded: the result of `tf.saved_model.load(path, tags=["serve"])`.
        request: a `PredictRequest`.

    Returns:
        A `PredictResponse`.

    Raises:
        ValueError: unknown signature or output, wrong input names, wrong
            dtype or shape (the message names the expected shape).
    """
    name = request.model_spec.signature_name or SERVING_SIGNATURE
    if name not in loaded.signatures:
        raise ValueError(
            f"Unknown signature '{name}'. Expected one of "
            f"{sorted(loaded.signatures)}."
        )
    signature = loaded.signatures[name]
    expected_inputs = set(signature.structured_input_signature[1])
    if set(request.inputs) != expected_inputs:
        raise ValueError(
            f"Signature '{name}' takes inputs {sorted(expected_inputs)}. "
            f"Received: {sorted(request.inputs)}"
        )
    array = tf.make_ndarray(request.inputs[INPUT_NAME])
    check_request_input(signature, array, name)
    outputs = signature(**{INPUT_NAME: tf.constant(array)})
    wanted = list(request.output_filter) or sorted(outputs)
    unknown = sorted(set(wanted) - set(outputs))
    if unknown:
        raise ValueError(
            f"Unknown outputs {unknown} in output_filter; signature '{name}' "
            f"has {sorted(outputs)}."
        )
    response = predict_pb2.PredictResponse(model_spec=request.model_spec)
    for key in wanted:
        response.outputs[key].CopyFrom(tf.make_tensor_proto(outputs[key].numpy()))
    return response


def write_warmup_requests(version_dir, batches, model_name="model"):
    """Writes TF Serving warm-up records (`assets.extra/...warmup_requests`).

    Args:
        version_dir: the SavedModel directory.
        batches: list of uint8 arrays `[batch, H, W, C]`, one request each.
        model_name: the model name put in the requests.
    """
    path = os.path.join(version_dir, WARMUP_FILE)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path) as writer:
        for images in batches:
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(
                    request=predict_request(images, model_name)
                )
            )
            writer.write(log.SerializeToString())


def read_warmup_requests(version_dir):
    """The `PredictRequest`s of a version's warm-up file (may be empty)."""
    path = os.path.join(version_dir, WARMUP_FILE)
    if not os.path.exists(path):
        return []
    requests = []
    for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
        log = prediction_log_pb2.PredictionLog.FromString(record)
        requests.append(log.predict_log.request)
    return requests


def load_for_serving(version_dir):
    """Loads a SavedModel the way TF Serving does: the `serve` tag set."""
    return tf.saved_model.load(version_dir, tags=["serve"])
