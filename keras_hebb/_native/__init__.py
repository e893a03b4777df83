"""keras_hebb's one native TensorFlow op: the k-th largest value of rows.

`KerasHebbKthLargest` (`kth_largest.cc`) returns what
`tf.raw_ops.NthElement(n=k-1, reverse=True)` returns (the k-th value of the
sorted row; subnormal floats, which TensorFlow's kernels flush to zero, it
compares exactly), 2.5-4x faster on the rows of HaH networks, and can read the H*W values of each
image and channel of an NHWC tensor in place (no transposed copy). It is
compiled against the installed TensorFlow by `make setup`
(`python -m keras_hebb._native`, ~20 s with g++). Where it is not built,
or `KERAS_HEBB_NATIVE=0`, `keras_hebb._selection` uses `NthElement`:
the same values, slower.
"""

import functools
import os
import platform
import subprocess

_DIR = os.path.dirname(os.path.abspath(__file__))
_SOURCE = os.path.join(_DIR, "kth_largest.cc")


def library_path():
    """Where the op built for the installed TensorFlow version lives."""
    import tensorflow as tf

    return os.path.join(_DIR, f"_kth_largest_tf{tf.__version__}.so")


def build(verbose=True):
    """Compiles `kth_largest.cc` for the installed TensorFlow; returns the
    path of the shared library. Raises `RuntimeError` with the compiler's
    message if it fails."""
    import tensorflow as tf

    target = library_path()
    command = ["g++", "-O3", "-shared", "-fPIC", "-Wno-deprecated-declarations"]
    if platform.machine() in ("x86_64", "AMD64"):
        command.append("-march=x86-64-v2")  # SSE4.2: vectorized int32 max
    command += [_SOURCE, "-o", target + ".partial"]
    command += tf.sysconfig.get_compile_flags() + tf.sysconfig.get_link_flags()
    if verbose:
        print(f"Building {os.path.basename(target)} (g++, ~20 s) ...", flush=True)
    try:
        result = subprocess.run(command, capture_output=True, text=True)
    except FileNotFoundError as error:
        raise RuntimeError("g++ not found: install it (Debian: apt-get install g++)") from error
    if result.returncode != 0:
        raise RuntimeError(f"g++ failed to build {_SOURCE}:\n{result.stderr[-4000:]}")
    os.replace(target + ".partial", target)
    library.cache_clear()
    return target


@functools.cache
def library():
    """The loaded op module, or `None` when it is not built or disabled."""
    if os.environ.get("KERAS_HEBB_NATIVE", "1") == "0":
        return None
    path = library_path()
    if not os.path.exists(path):
        return None
    import tensorflow as tf

    module = tf.load_op_library(path)
    tf.no_gradient("KerasHebbKthLargest")
    return module


def kth_largest(x, k, spatial=False):
    """The op itself: `k`-th largest along the last axis, or with
    `spatial=True` over the H*W values of each image and channel of an NHWC
    tensor (shape `(N, C)`). Needs `library()`; float32 only."""
    return library().keras_hebb_kth_largest(input=x, k=k, spatial=spatial)

