"""keras_hebb's native TensorFlow ops (CPU), compiled at setup.

`hah_ops.cc` holds three ops:

- `KerasHebbKthLargest`: what `tf.raw_ops.NthElement(n=k-1, reverse=True)`
  returns (the k-th value of the sorted row; subnormal floats, which
  TensorFlow's kernels flush to zero, it compares exactly), 1.7-4x faster
  on the rows of HaH networks, and it can read the H*W values of each image
  and channel of an NHWC tensor in place (no transposed copy);
- `KerasHebbHahCost` / `KerasHebbHahCostGrad`: the HaH cost of each position
  of a conv output (and its K-th largest ReLU value), and the cost's
  gradient, each one pass over a row of channels.

They are compiled against the installed TensorFlow by `make setup`
(`python -m keras_hebb._native`, ~30 s with g++), into this package's
folder, or where that is read-only (a system site-packages) into the
user's cache, `$XDG_CACHE_HOME/keras_hebb` (default `~/.cache/keras_hebb`;
the file name there carries the TensorFlow version and a digest of the
source, so installs of other versions never share a file). Where they are not built,
or `KERAS_HEBB_NATIVE=0`, or inside `keras_hebb._context.without_native()`,
`keras_hebb._selection` and `keras_hebb._fused` use TensorFlow ops for the
same values (slower).
"""

import functools
import hashlib
import os
import platform
import subprocess
import tempfile

from keras_hebb import _backends

_DIR = os.path.dirname(os.path.abspath(__file__))
_SOURCE = os.path.join(_DIR, "hah_ops.cc")
_OPS = ("KerasHebbKthLargest", "KerasHebbHahCost", "KerasHebbHahCostGrad")


def library_path():
    """Where the ops built for the installed TensorFlow version live (or
    will, once built): the package folder if they are there or it is
    writable, else the user cache folder (`cache_dir()`)."""
    tf = _backends.import_tensorflow("keras_hebb's native ops (keras_hebb._native)")

    in_package = os.path.join(_DIR, f"_hah_ops_tf{tf.__version__}.so")
    if os.path.exists(in_package) or _writable(_DIR):
        return in_package
    with open(_SOURCE, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:12]
    return os.path.join(cache_dir(), f"_hah_ops_tf{tf.__version__}_{digest}.so")


def cache_dir():
    """`$XDG_CACHE_HOME/keras_hebb` (default `~/.cache/keras_hebb`)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(
        os.path.expanduser("~"), ".cache")
    return os.path.join(base, "keras_hebb")


def _writable(directory):
    """Whether a file can be created in `directory` (tried: permission bits
    say nothing for root on a read-only mount)."""
    try:
        handle, path = tempfile.mkstemp(dir=directory, prefix=".write-test-")
    except OSError:
        return False
    os.close(handle)
    os.remove(path)
    return True


def build(verbose=True):
    """Compiles `hah_ops.cc` for the installed TensorFlow; returns the path
    of the shared library. Raises `RuntimeError` with the compiler's message
    if it fails."""
    tf = _backends.import_tensorflow("keras_hebb's native ops (keras_hebb._native)")

    target = library_path()
    os.makedirs(os.path.dirname(target), exist_ok=True)
    command = ["g++", "-O3", "-shared", "-fPIC", "-Wno-deprecated-declarations"]
    if platform.machine() in ("x86_64", "AMD64"):
        command.append("-march=x86-64-v2")  # SSE4.2: vectorized int32 max
    command += [_SOURCE, "-o", target + ".partial"]
    command += tf.sysconfig.get_compile_flags() + tf.sysconfig.get_link_flags()
    if verbose:
        print(f"Building {os.path.basename(target)} (g++, ~30 s) ...", flush=True)
    try:
        result = subprocess.run(command, capture_output=True, text=True)
    except FileNotFoundError as error:
        raise RuntimeError("g++ not found: install it (Debian: apt-get install g++)") from error
    if result.returncode != 0:
        raise RuntimeError(f"g++ failed to build {_SOURCE}:\n{result.stderr[-4000:]}")
    os.replace(target + ".partial", target)
    _load.cache_clear()
    return target


def library():
    """The loaded op module, or `None` when it is not built or disabled
    (`KERAS_HEBB_NATIVE=0`). TensorFlow backend only."""
    _backends.require_tensorflow("keras_hebb's native ops (keras_hebb._native)")
    if os.environ.get("KERAS_HEBB_NATIVE", "1") == "0":
        return None
    return _load()


@functools.cache
def _load():
    path = library_path()
    if not os.path.exists(path):
        return None
    import tensorflow as tf

    module = tf.load_op_library(path)
    for name in _OPS:
        tf.no_gradient(name)
    return module


def kth_largest(x, k, spatial=False):
    """`k`-th largest along the last axis, or with `spatial=True` over the
    H*W values of each image and channel of an NHWC tensor (shape `(N, C)`).
    Needs `library()`; float32 only."""
    return library().keras_hebb_kth_largest(input=x, k=k, spatial=spatial)


def hah_cost(z, winners, lose):
    """`(value, kth)` per position of `z` (float32, channels last): the HaH
    cost (`keras_hebb.hah_cost.hah_cost`, before the mean) and the K-th
    largest ReLU value. Needs `library()`."""
    return library().keras_hebb_hah_cost(z=z, winners=winners, lose=lose)


def hah_cost_gradient(z, kth, scale, winners, lose):
    """The gradient of `scale * sum(value)` of `hah_cost` with respect to
    `z`, from `z` and its `kth`. Needs `library()`."""
    return library().keras_hebb_hah_cost_grad(
        z=z, kth=kth, scale=scale, winners=winners, lose=lose)
