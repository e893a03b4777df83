"""TFLite (LiteRT) files: conversion, graph checks and an interpreter runner.

Every variant takes raw uint8 pixels `[batch, H, W, C]` as input `images`
(signature `serving_default`, batch resizable) and returns `logits`,
`probabilities` and `classes`, like the SavedModel:

- `float32`: the float graph; uint8 -> float happens inside (CAST, MUL).
- `float16`: float16 weights, float32 compute.
- `dynamic`: int8 weights, activations quantized on the fly.
- `int8`: full integer graph calibrated on training images; its uint8
  input has scale 1/255 and zero point 0, so raw pixels feed it directly.

Only builtin ops (`TFLITE_BUILTINS[_INT8]`): no Flex/select TF ops. The
graphs are traced inside `keras_hebb.runtime.integer_threshold()`: the
fractional thresholds of the HaH blocks select by counting on the int32
bit patterns of their (in int8: dequantized) inputs instead of calling
`TOPK_V2`: the same kept values, in ~2/5 of the time.
"""

import contextlib
import os
import tempfile
import time

import numpy as np
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter, OpResolverType

from export import VARIANTS, ExportError
from export.savedmodel import (
    INPUT_NAME,
    SERVING_SIGNATURE,
    expected_shape_text,
    write_savedmodel,
)
from keras_hebb import runtime

#: Float ops allowed between the int8 graph's input QUANTIZE and its output
#: DEQUANTIZEs, by `op_signature`, with the reason (docs/EXPORT.md). No
#: float arithmetic: a float tensor may only be turned into integers.
DOCUMENTED_FLOAT_OPS = {
    "DEQUANTIZE int8->float32": (
        "fractional threshold: the values of an int8 tensor, read only by "
        "the BITCAST below (integer counting instead of TOPK_V2)"),
    "BITCAST float32->int32": (
        "fractional threshold: their bit patterns, compared and summed in "
        "int32 (order-preserving for nonnegative floats)"),
}


def op_signature(op):
    """`"CAST float32->int32"`: an `op_table` row's name and dtypes."""
    return f"{op['op']} {','.join(op['input_dtypes'])}->{','.join(op['output_dtypes'])}"


def convert(model, variant, savedmodel_dir=None, representative_images=None,
            integer_threshold=True):
    """Converts `model` to a TFLite flatbuffer.

    Args:
        model: the Keras model (float32 images in [0, 1] -> logits).
        variant: one of `VARIANTS`.
        savedmodel_dir: a SavedModel from `write_conversion_savedmodel`
            (same `integer_threshold`) to convert the float variants from,
            so that several variants share one trace; written to a
            temporary directory if `None`.
        representative_images: float32 images in [0, 1] from the training
            data; required for `int8`.
        integer_threshold: trace the HaH thresholds' integer counting
            (`keras_hebb.runtime.integer_threshold`) instead of `top_k`
            (`TOPK_V2`): the same outputs, in the threshold ops' ~2/5 of
            the time. `False` for runtimes without `BITCAST`.

    Returns:
        The `.tflite` file content (bytes).
    """
    if variant not in VARIANTS:
        raise ExportError(f"Unknown TFLite variant {variant!r}: expected one of {VARIANTS}.")
    with tempfile.TemporaryDirectory(prefix="keras_hebb_tflite_") as scratch:
        source = _conversion_source(model, variant, savedmodel_dir, integer_threshold, scratch)
        converter = tf.lite.TFLiteConverter.from_saved_model(
            source, signature_keys=[SERVING_SIGNATURE]
        )
        _set_variant(converter, variant, representative_images)
        content = converter.convert()
    if variant == "int8":
        _check_int8_input(content)
    return content


def _conversion_source(model, variant, savedmodel_dir, integer_threshold, scratch):
    """The SavedModel directory `variant` is converted from (written into
    `scratch` unless `savedmodel_dir` serves)."""
    if variant == "int8":
        # The quantizer needs the float graph from the [0, 1] images on,
        # so that the uint8 input becomes a quantized tensor (scale
        # 1/255) instead of a CAST leaving a float island.
        source = os.path.join(scratch, "float_input")
        with _threshold_scope(integer_threshold):
            write_savedmodel(model, source, {SERVING_SIGNATURE: "float32"})
        return source
    if savedmodel_dir is None:
        source = os.path.join(scratch, "uint8_input")
        write_conversion_savedmodel(model, source, integer_threshold)
        return source
    return savedmodel_dir


def _set_variant(converter, variant, representative_images):
    """The converter's ops, optimizations and types for `variant`."""
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if variant != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if variant == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if variant == "int8":
        if representative_images is None or not len(representative_images):
            raise ExportError("The int8 variant needs representative images.")
        images = np.asarray(representative_images, np.float32)

        def representative_dataset():
            for start in range(0, len(images), 16):
                yield {INPUT_NAME: images[start:start + 16]}

        converter.representative_dataset = representative_dataset
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
        converter.inference_output_type = tf.float32


def _check_int8_input(content):
    """`ExportError` unless the int8 model's uint8 input means pixels / 255."""
    scale, zero_point = input_quantization(content)
    if zero_point != 0 or abs(scale * 255.0 - 1.0) > 1e-5:
        raise ExportError(
            "The int8 model's uint8 input got scale "
            f"{scale} and zero point {zero_point} instead of 1/255 and 0: the "
            "calibration images do not span [0, 1] (use more of them)."
        )


def write_conversion_savedmodel(model, path, integer_threshold=True):
    """Writes the SavedModel the float variants are converted from: a uint8
    `serving_default` signature, traced inside
    `keras_hebb.runtime.integer_threshold()` unless `integer_threshold`
    is `False` (then it is the served graph, with `top_k`)."""
    with _threshold_scope(integer_threshold):
        write_savedmodel(model, path, {SERVING_SIGNATURE: "uint8"})


def _threshold_scope(integer_threshold):
    return runtime.integer_threshold() if integer_threshold else contextlib.nullcontext()


def _interpreter(content_or_path, num_threads=1, delegates=True):
    # Without the default (XNNPACK) delegate the op list shows the graph's
    # own ops instead of one DELEGATE node.
    options = {"num_threads": num_threads}
    if not delegates:
        options["experimental_op_resolver_type"] = (
            OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    if isinstance(content_or_path, (bytes, bytearray)):
        interpreter = Interpreter(model_content=bytes(content_or_path), **options)
    else:
        interpreter = Interpreter(model_path=str(content_or_path), **options)
    interpreter.allocate_tensors()
    return interpreter


def input_quantization(content_or_path):
    """`(scale, zero_point)` of the model's input (0.0, 0 for float input)."""
    details = _interpreter(content_or_path).get_input_details()[0]
    scale, zero_point = details["quantization"]
    return float(scale), int(zero_point)


def op_table(content_or_path):
    """The graph's ops: dicts with `index`, `op`, `inputs`, `outputs` (tensor
    indices) and `input_dtypes`, `output_dtypes` (numpy dtype names)."""
    interpreter = _interpreter(content_or_path, delegates=False)
    dtypes = {t["index"]: np.dtype(t["dtype"]).name for t in interpreter.get_tensor_details()}
    ops = []
    for op in runtime.tflite_op_details(interpreter):
        inputs = [int(i) for i in op["inputs"] if i >= 0]
        outputs = [int(i) for i in op["outputs"]]
        ops.append({
            "index": int(op["index"]),
            "op": op["op_name"],
            "inputs": inputs,
            "outputs": outputs,
            "input_dtypes": [_dtype_of(interpreter, dtypes, i) for i in inputs],
            "output_dtypes": [_dtype_of(interpreter, dtypes, i) for i in outputs],
        })
    return ops


def _dtype_of(interpreter, dtypes, index):
    if index not in dtypes:
        dtypes[index] = np.dtype(runtime.tflite_tensor_details(interpreter, index)["dtype"]).name
    return dtypes[index]


def non_builtin_ops(content_or_path):
    """Names of Flex (select TF) or custom ops in the graph; [] if none."""
    return sorted({
        op["op"] for op in op_table(content_or_path)
        if op["op"].startswith("Flex") or op["op"] in ("CUSTOM", "DELEGATE")
    })


def float_ops(content_or_path):
    """Classifies the float ops of a quantized graph.

    Returns:
        dict with `between`: ops that read or write a float tensor and lie on
        a path from the input QUANTIZE to an output DEQUANTIZE (float
        islands), `after_output`: float ops fed by an output DEQUANTIZE
        (post-processing such as ARG_MAX of dequantized logits), and
        `quantize_ops` / `dequantize_ops`: indices of the boundary ops.
    """
    ops = op_table(content_or_path)
    producer = {t: op["index"] for op in ops for t in op["outputs"]}
    consumers = {}
    for op in ops:
        for t in op["inputs"]:
            consumers.setdefault(t, []).append(op["index"])
    by_index = {op["index"]: op for op in ops}
    interpreter = _interpreter(content_or_path, delegates=False)
    graph_inputs = {d["index"] for d in interpreter.get_input_details()}
    graph_outputs = {d["index"] for d in interpreter.get_output_details()}

    quantize = [op["index"] for op in ops
                if op["op"] == "QUANTIZE" and set(op["inputs"]) & graph_inputs]
    dequantize = [op["index"] for op in ops if op["op"] == "DEQUANTIZE"
                  and op["input_dtypes"] and op["input_dtypes"][0] in ("int8", "uint8", "int16")
                  and _reaches(op["index"], graph_outputs, by_index, consumers)]

    downstream = _closure(quantize, lambda i: [c for t in by_index[i]["outputs"] for c in consumers.get(t, [])])
    upstream = _closure(dequantize, lambda i: [producer[t] for t in by_index[i]["inputs"] if t in producer])
    after = _closure(dequantize, lambda i: [c for t in by_index[i]["outputs"] for c in consumers.get(t, [])])
    boundary = set(quantize) | set(dequantize)

    def is_float(op):
        return any(d.startswith("float") for d in op["input_dtypes"] + op["output_dtypes"])

    def describe(op):
        return {"index": op["index"], "op": op["op"],
                "input_dtypes": op["input_dtypes"], "output_dtypes": op["output_dtypes"]}

    between = [describe(by_index[i]) for i in sorted((downstream & upstream) - boundary)
               if is_float(by_index[i])]
    after_output = [describe(by_index[i]) for i in sorted(after - boundary - upstream)
                    if is_float(by_index[i])]
    return {"between": between, "after_output": after_output,
            "quantize_ops": quantize, "dequantize_ops": dequantize}


def _closure(start, neighbours):
    seen, stack = set(start), list(start)
    while stack:
        for n in neighbours(stack.pop()):
            if n not in seen:
                seen.add(n)
                stack.append(n)
    return seen


def _reaches(index, graph_outputs, by_index, consumers):
    """Whether op `index`'s output is (or feeds) a graph output."""
    seen = _closure([index], lambda i: [c for t in by_index[i]["outputs"] for c in consumers.get(t, [])])
    return any(t in graph_outputs for i in seen for t in by_index[i]["outputs"])


def undocumented_float_islands(content_or_path):
    """The `between` float ops that `DOCUMENTED_FLOAT_OPS` does not excuse."""
    return [op for op in float_ops(content_or_path)["between"]
            if op_signature(op) not in DOCUMENTED_FLOAT_OPS]


class TFLiteRunner:
    """Runs a `.tflite` file's `serving_default` signature on uint8 images.

    Args:
        content_or_path: path of the file or its bytes.
        num_threads: interpreter threads. Defaults to `1` (a phone core).
    """

    def __init__(self, content_or_path, num_threads=1):
        self.interpreter = _interpreter(content_or_path, num_threads)
        self.runner = self.interpreter.get_signature_runner(SERVING_SIGNATURE)
        details = self.runner.get_input_details()[INPUT_NAME]
        self.image_shape = tuple(int(d) for d in details["shape_signature"][1:])
        self.input_dtype = np.dtype(details["dtype"])

    def __call__(self, images):
        """Outputs dict (`logits`, `probabilities`, `classes`) for a batch."""
        images = np.asarray(images)
        if (images.dtype != self.input_dtype or images.ndim != 4
                or tuple(images.shape[1:]) != self.image_shape):
            raise ValueError(
                f"Invalid input `{INPUT_NAME}`: expected {self.input_dtype.name} "
                f"images of shape {expected_shape_text(self.image_shape)}. "
                f"Received: shape {list(images.shape)}, dtype {images.dtype}"
            )
        return self.runner(**{INPUT_NAME: images})

    def logits(self, images, batch_size=100):
        """float32 logits of uint8 `images`, computed in batches."""
        return np.concatenate([
            self(images[start:start + batch_size])["logits"]
            for start in range(0, len(images), batch_size)
        ])

    def latency_ms(self, images, repeats):
        """Median wall time of one call on `images`, in milliseconds."""
        self(images)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            self(images)
            times.append((time.perf_counter() - start) * 1e3)
        return float(np.median(times))
