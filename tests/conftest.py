"""Test setup: quiet TensorFlow, oneDNN on, two logical CPUs for strategies.

Everything here runs before TensorFlow is first imported by a test.
"""

import os

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

# Two logical CPU devices let MirroredStrategy tests run on one CPU.
_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2
)


import pytest  # noqa: E402

_SUMMARY_LINES = []


@pytest.fixture
def summary_line():
    """`summary_line(text)`: prints `text` in the run's closing summary
    (measured figures a reader of the CI log should see, e.g. the int8
    accuracy drop), whatever pytest's output capture."""
    return _SUMMARY_LINES.append


def pytest_terminal_summary(terminalreporter):
    if _SUMMARY_LINES:
        terminalreporter.section("measured")
        for line in _SUMMARY_LINES:
            terminalreporter.write_line(line)
