"""Export: TF Serving SavedModel and TFLite files agree with the Keras model.

A small HebbianModel with two HaH blocks is trained on real Fashion-MNIST
(once per session), exported by the real program (`python -m export` in a
subprocess) and its artifacts checked against it on 4,000 test images
(`verify.VERIFY_IMAGES`: on 1,000, the int8 accuracy drop's sampling error
is as large as its 1-point gate).
"""

import os
import shutil
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2

import keras_hebb  # noqa: F401  (registers the layers for loading)
from export import VerificationError
from export import pipeline, savedmodel, tflite, verify
from keras_hebb import data
from keras_hebb.architectures import build_vgg
from keras_hebb.layers import HaHBlock

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VERSION = 3
SHAPE_TEXT = "[batch, 28, 28, 1]"


def run_export(*args, **kwargs):
    # The caller's TensorFlow settings (a CI pass may force other kernels).
    env = {"TF_ENABLE_ONEDNN_OPTS": "1", **os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run([sys.executable, "-m", "export", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, **kwargs)


@pytest.fixture(scope="session")
def test_set():
    images, labels = data.load_arrays("fashion_mnist", "test", verify.VERIFY_IMAGES)
    pixels = np.round(images * 255.0).astype(np.uint8)
    return pixels, pixels.astype(np.float32) / 255.0, labels


@pytest.fixture(scope="session")
def trained_model_path(tmp_path_factory):
    """Two HaH blocks (16, 32 filters) trained for two epochs on 8,000 images.

    Trained long enough to be sure of most images (~84% accuracy), as a
    user's model is: a one-epoch model on 4,000 images (~79%) flipped 7-9%
    of its test images in int8 and sat on the 1-point gate.
    """
    keras.utils.set_random_seed(0)
    images, labels = data.load_arrays("fashion_mnist", "train", 8000)
    model = build_vgg((16, "M", 32, "M"), hah_blocks=2, input_shape=(28, 28, 1),
                      name="hah_export_test")
    model.compile(keras.optimizers.Adam(2e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    model.fit(images, labels, batch_size=64, epochs=2, verbose=0)
    path = str(tmp_path_factory.mktemp("model") / "hah_export_test.keras")
    model.save(path)
    return path


@pytest.fixture(scope="session")
def model(trained_model_path):
    return keras.models.load_model(trained_model_path)


@pytest.fixture(scope="session")
def keras_logits(model, test_set):
    _, images, labels = test_set
    logits = model.predict(images, batch_size=250, verbose=0)
    # The model must have learnt something for the int8 check to mean much.
    assert np.mean(logits.argmax(-1) == labels) > 0.78
    return logits


@pytest.fixture(scope="session")
def export_dir(trained_model_path, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("serving") / "hah")
    result = run_export(trained_model_path, "--out", out, "--version", str(VERSION),
                        "--calibration-images", "300", timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Result: PASSED" in result.stdout
    return out


@pytest.fixture(scope="session")
def version_dir(export_dir):
    return os.path.join(export_dir, str(VERSION))


def test_version_directory_has_serving_layout(export_dir, version_dir):
    assert sorted(os.listdir(export_dir)) == [str(VERSION)]  # no temporaries left
    for name in ("saved_model.pb", "variables", savedmodel.WARMUP_FILE, "export.json",
                 "verification.json", "verification.md"):
        assert os.path.exists(os.path.join(version_dir, name)), name
    for variant in tflite.VARIANTS:
        assert os.path.getsize(os.path.join(version_dir, "tflite", f"model_{variant}.tflite")) > 0


def _has_threshold_tie(model, image, relative=1e-5):
    """Whether a HaH block's threshold input has values within `relative`
    of each other around the k-th value of some channel for `image`."""
    for block in (layer for layer in model.layers if isinstance(layer, HaHBlock)):
        inputs = keras.Model(model.inputs, block.input)(image[None])
        u = keras.ops.convert_to_numpy(
            block.normalization(keras.ops.relu(block.conv(inputs))))
        values = np.sort(u.reshape(-1, u.shape[-1]), axis=0)[::-1]
        k = block.threshold_layer.threshold_rank
        above, at, below = values[k - 2], values[k - 1], values[k]
        gap = np.minimum(above - at, at - below) / np.maximum(at, 1e-12)
        if np.any((gap < relative) & (at > 0)):
            return True
    return False


def test_savedmodel_and_float32_tflite_agree_with_keras(version_dir, test_set, keras_logits,
                                                        model):
    pixels, images, _ = test_set
    loaded = savedmodel.load_for_serving(version_dir)
    served = loaded.signatures["serving_default"](images=tf.constant(pixels))
    assert set(served) == {"logits", "probabilities", "classes"}
    float_served = loaded.signatures["serving_float"](images=tf.constant(images))
    runner = tflite.TFLiteRunner(os.path.join(version_dir, "tflite", "model_float32.tflite"))
    for logits in (served["logits"].numpy(), float_served["logits"].numpy(),
                   runner.logits(pixels)):
        per_image = np.max(np.abs(logits - keras_logits), axis=-1)
        flips = np.flatnonzero(per_image > 1e-4)
        # A few images may differ through activations tied at a threshold
        # (export/verify.py, FLOAT32_MAX_TIE_FLIPS); everything else agrees.
        assert len(flips) <= verify.FLOAT32_MAX_TIE_FLIPS * len(per_image)
        assert all(_has_threshold_tie(model, images[i]) for i in flips)
        keep = np.setdiff1d(np.arange(len(per_image)), flips)
        np.testing.assert_array_equal(logits[keep].argmax(-1), keras_logits[keep].argmax(-1))
    np.testing.assert_array_equal(served["classes"].numpy(), served["logits"].numpy().argmax(-1))
    np.testing.assert_allclose(served["probabilities"].numpy(),
                               tf.nn.softmax(served["logits"]).numpy(), atol=1e-6)


def test_int8_graph_is_integer_and_loses_at_most_one_point(version_dir, test_set, keras_logits,
                                                          summary_line):
    pixels, _, labels = test_set
    path = os.path.join(version_dir, "tflite", "model_int8.tflite")
    scale, zero_point = tflite.input_quantization(path)
    assert zero_point == 0 and scale == pytest.approx(1 / 255)
    graph = tflite.float_ops(path)
    assert len(graph["quantize_ops"]) == 1 and graph["dequantize_ops"]
    assert [op for op in graph["between"]
            if tflite.op_signature(op) not in tflite.DOCUMENTED_FLOAT_OPS] == []
    # The HaH ops themselves run in int8; the thresholds count in int32.
    table = tflite.op_table(path)
    int8_ops = {op["op"] for op in table if "int8" in op["output_dtypes"]}
    assert {"CONV_2D", "RSQRT", "SELECT_V2", "MAX_POOL_2D"} <= int8_ops
    # No int8 DIV: TensorFlow's kernel refuses raw int8 divisors of 0.
    assert "DIV" not in {op["op"] for op in table}
    assert "TOPK_V2" not in {op["op"] for op in table}
    int8_logits = tflite.TFLiteRunner(path).logits(pixels)
    int8_accuracy = np.mean(int8_logits.argmax(-1) == labels)
    float_accuracy = np.mean(keras_logits.argmax(-1) == labels)
    drop = 100.0 * (float_accuracy - int8_accuracy)
    summary_line(f"int8 accuracy drop: {drop:.2f} points on {len(labels)} images (gate "
          f"{verify.MAX_ACCURACY_DROP}), Keras {100 * float_accuracy:.2f}%, argmax agreement "
          f"{100 * np.mean(int8_logits.argmax(-1) == keras_logits.argmax(-1)):.2f}%")
    assert drop <= verify.MAX_ACCURACY_DROP
    for variant in tflite.VARIANTS:
        assert tflite.non_builtin_ops(os.path.join(version_dir, "tflite",
                                                   f"model_{variant}.tflite")) == []


def test_int8_file_runs_in_tensorflow_s_own_tflite_kernels(version_dir, test_set):
    """TensorFlow's TFLite kernels (`tf.lite.Interpreter`, and runtimes built
    from them) check int8 divisors more strictly than LiteRT's: with an
    int8 `DIV` in the normalization the file failed on most images there."""
    import warnings

    pixels = test_set[0][:50]
    path = os.path.join(version_dir, "tflite", "model_int8.tflite")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf.lite.Interpreter is deprecated
        runner = tf.lite.Interpreter(model_path=path).get_signature_runner("serving_default")
    logits = np.concatenate([runner(images=pixels[i:i + 10])["logits"] for i in range(0, 50, 10)])
    # The two runtimes' int8 kernels round differently (a logit step here
    # and there, which a threshold can pass on): the same classes nearly
    # everywhere.
    litert = tflite.TFLiteRunner(path).logits(pixels)
    assert np.mean(logits.argmax(-1) == litert.argmax(-1)) >= 0.9


def test_float_island_detector_flags_a_float_square():
    """`ops.square` leaves a float island in int8 graphs (where `v * v` stays
    int8; docs/EXPORT.md): the check sees it."""
    keras.utils.set_random_seed(1)
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    x = keras.layers.Lambda(lambda v: keras.ops.square(v))(x)
    x = keras.layers.Flatten()(keras.layers.Conv2D(4, 3, padding="same")(x))
    model = keras.Model(inputs, keras.layers.Dense(3)(x))
    images = np.random.default_rng(0).random((32, 8, 8, 1)).astype(np.float32)
    images[0, 0, 0, 0], images[0, 0, 1, 0] = 0.0, 1.0
    content = tflite.convert(model, "int8", representative_images=images)
    islands = tflite.float_ops(content)["between"]
    assert islands, tflite.op_table(content)
    assert tflite.undocumented_float_islands(content) == islands


def test_verification_report_lists_every_artifact(version_dir, keras_logits):
    import json

    with open(os.path.join(version_dir, "verification.json")) as f:
        report = json.load(f)
    assert report["passed"] and report["images"] == verify.VERIFY_IMAGES
    artifacts = {row["artifact"]: row for row in report["artifacts"]}
    assert set(artifacts) == {"keras", "savedmodel:serving_default", "savedmodel:serving_float",
                              *(f"tflite:{v}" for v in tflite.VARIANTS)}
    for row in artifacts.values():
        for key in ("accuracy", "keras_accuracy", "argmax_agreement", "max_logit_diff",
                    "size_bytes", "latency_ms_batch1", "latency_ms_batch32"):
            assert row[key] is not None, (row["artifact"], key)
    for name in ("savedmodel:serving_default", "savedmodel:serving_float", "tflite:float32"):
        row = artifacts[name]
        assert len(row["tie_flips"]) <= 5
        assert row["max_logit_diff_without_tie_flips"] <= 1e-4 * max(
            1.0, float(np.max(np.abs(keras_logits))))
    assert report["servability"]["warmup_requests"]["count"] == 2
    assert report["servability"]["saved_model_cli_run"]["failures"] == []
    with open(os.path.join(version_dir, "verification.md")) as f:
        table = f.read()
    assert "| tflite:int8 |" in table and "Result: PASSED" in table


def test_saved_model_cli_show_lists_the_signatures(version_dir):
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    shown = subprocess.run([cli, "show", "--dir", version_dir, "--tag_set", "serve", "--all"],
                           capture_output=True, text=True, check=True).stdout
    default = shown.split("signature_def['serving_default']")[1].split("signature_def[")[0]
    float_part = shown.split("signature_def['serving_float']")[1].split("signature_def[")[0]
    images = default.split("inputs['images'] tensor_info:")[1]
    assert images.split()[:5] == ["dtype:", "DT_UINT8", "shape:", "(-1,", "28,"]
    assert "(-1, 28, 28, 1)" in images.split("name:")[0]
    for output, dtype in (("logits", "DT_FLOAT"), ("probabilities", "DT_FLOAT"),
                          ("classes", "DT_INT64")):
        assert default.split(f"outputs['{output}'] tensor_info:")[1].split()[1] == dtype
    assert "tensorflow/serving/predict" in default
    assert float_part.split("inputs['images'] tensor_info:")[1].split()[1] == "DT_FLOAT"


def test_predict_request_built_from_the_protos_runs(version_dir, test_set, keras_logits):
    pixels, _, _ = test_set
    loaded = savedmodel.load_for_serving(version_dir)
    request = savedmodel.predict_request(pixels[:5], model_name="hah")
    request.output_filter.append("classes")
    # As sent over the wire.
    request = predict_pb2.PredictRequest.FromString(request.SerializeToString())
    response = savedmodel.run_predict_request(loaded, request)
    assert list(response.outputs) == ["classes"]
    np.testing.assert_array_equal(tf.make_ndarray(response.outputs["classes"]),
                                  keras_logits[:5].argmax(-1))
    warmup = savedmodel.read_warmup_requests(version_dir)
    assert [list(tf.make_ndarray(r.inputs["images"]).shape) for r in warmup] == [
        [1, 28, 28, 1], [32, 28, 28, 1]]
    for request in warmup:
        response = savedmodel.run_predict_request(loaded, request)
        assert tf.make_ndarray(response.outputs["logits"]).shape == (
            len(tf.make_ndarray(request.inputs["images"])), 10)


@pytest.mark.parametrize("bad, problem", [
    (np.zeros((2, 28, 28), np.uint8), "rank"),
    (np.zeros((2, 28, 27, 1), np.uint8), "shape"),
    (np.zeros((2, 28, 28, 1), np.float32), "dtype"),
])
def test_bad_requests_fail_naming_the_expected_shape(version_dir, bad, problem):
    loaded = savedmodel.load_for_serving(version_dir)
    with pytest.raises(ValueError, match=r"\[batch, 28, 28, 1\]"):
        savedmodel.run_predict_request(loaded, savedmodel.predict_request(bad))
    runner = tflite.TFLiteRunner(os.path.join(version_dir, "tflite", "model_int8.tflite"))
    with pytest.raises(ValueError, match=r"\[batch, 28, 28, 1\]"):
        runner(bad)
    if problem != "dtype":
        # Called directly, the signature's own check names the shape too.
        with pytest.raises(tf.errors.InvalidArgumentError, match=r"\[\?,28,28,1\]"):
            loaded.signatures["serving_default"](images=tf.constant(bad))


def test_killed_export_leaves_no_loadable_version(trained_model_path, tmp_path):
    out = tmp_path / "serving"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", TF_ENABLE_ONEDNN_OPTS="1")
    process = subprocess.Popen(
        [sys.executable, "-m", "export", trained_model_path, "--out", str(out),
         "--calibration-images", "50", "--verify-images", "100"],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        # Kill it once the SavedModel is written, while TFLite converts.
        while not list(out.glob(".tmp-*/version/saved_model.pb")):
            assert process.poll() is None, "the export ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.wait()
    finally:
        if process.poll() is None:
            process.kill()
    names = os.listdir(out)
    assert names and all(name.startswith(".tmp-") for name in names)
    # TF Serving loads only directories named by a number.
    assert pipeline.numeric_versions(str(out)) == []
    assert pipeline.next_version(str(out)) == 1
    assert pipeline.remove_stale_temporaries(str(out)) == names
    assert os.listdir(out) == []


def test_bad_input_gives_one_line_and_status_2(trained_model_path, export_dir, tmp_path):
    cases = [
        ((trained_model_path, "--out", export_dir, "--version", str(VERSION)), "already exists"),
        ((str(tmp_path / "missing.keras"), "--out", str(tmp_path / "a")), "not found"),
        ((trained_model_path, "--out", str(tmp_path / "b"), "--tflite", "float32,int4"),
         "'int4'"),
    ]
    before = sorted(os.listdir(export_dir))
    for args, message in cases:
        result = run_export(*args, timeout=120)
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], result.stderr
    assert sorted(os.listdir(export_dir)) == before
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_verification_fails_when_an_artifact_disagrees(trained_model_path, version_dir, tmp_path):
    copy = str(tmp_path / "copy")
    shutil.copytree(version_dir, copy)
    for variant in ("float16", "dynamic", "int8"):
        os.remove(os.path.join(copy, "tflite", f"model_{variant}.tflite"))
    # A slightly different model stands for artifacts that drifted from Keras.
    drifted = keras.models.load_model(trained_model_path)
    bias = drifted.get_layer("logits").bias
    bias.assign(bias.numpy() + np.linspace(0.0, 0.01, 10, dtype=np.float32))
    with pytest.raises(VerificationError, match="max logit difference"):
        verify.verify_version(copy, drifted, "fashion_mnist", 100, time_it=False,
                              check_servability=False)
    import json

    with open(os.path.join(copy, "verification.json")) as f:
        report = json.load(f)
    assert not report["passed"]
    failing = {row["artifact"] for row in report["artifacts"] if not row["passed"]}
    assert failing == {"savedmodel:serving_default", "savedmodel:serving_float",
                       "tflite:float32"}


def test_topk_thresholds_flag_writes_topk_files_that_verify(trained_model_path, tmp_path,
                                                            monkeypatch, capsys):
    """`--topk-thresholds` (runtimes without BITCAST): TOPK_V2 in the files,
    the same verification of them.

    The program's `main` runs in this process (`export_dir` runs it as a
    process), and without the servability checks (`saved_model_cli`
    processes, ~half its time): they check the SavedModel, which the flag
    does not change (`pipeline._write_artifacts` writes it without the
    threshold option), and `export_dir`'s export checks it."""
    from export import command

    monkeypatch.setattr(verify, "_check_servability", lambda *args, **kwargs: {})
    out = str(tmp_path / "topk")
    status = command.main([trained_model_path, "--out", out, "--tflite", "float32,int8",
                           "--topk-thresholds", "--calibration-images", "300"])
    printed = capsys.readouterr()
    assert status == 0, (printed.out[-2000:], printed.err[-3000:])
    assert "Result: PASSED" in printed.out
    for variant in ("float32", "int8"):
        ops = {op["op"] for op in tflite.op_table(
            os.path.join(out, "1", "tflite", f"model_{variant}.tflite"))}
        assert "TOPK_V2" in ops and "BITCAST" not in ops, variant
    import json

    with open(os.path.join(out, "1", "export.json")) as f:
        assert json.load(f)["tflite_thresholds"] == "TOPK_V2"
