"""Timing, FLOP counting and reporting shared by the benchmarks.

Nothing here imports TensorFlow at module level: `set_onednn` must run
before TensorFlow is first imported.
"""

import os
import platform
import resource
import subprocess
import sys
import time

import numpy as np


def set_onednn(enabled):
    """Sets `TF_ENABLE_ONEDNN_OPTS` (must run before TensorFlow is imported)."""
    if "tensorflow" in sys.modules:
        raise RuntimeError("set_onednn must run before TensorFlow is imported")
    os.environ["TF_ENABLE_ONEDNN_OPTS"] = "1" if enabled else "0"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def onednn_enabled():
    return os.environ.get("TF_ENABLE_ONEDNN_OPTS", "") == "1"


def machine_description():
    """One line: CPU model, cores, memory, 1-minute load average."""
    model = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    cores = os.cpu_count()
    memory = ""
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        memory = f", {pages / 2**30:.0f} GiB"
    except (ValueError, OSError):
        pass
    load = os.getloadavg()[0]
    return f"{model}, {cores} cores{memory}, load average {load:.1f} at start"


def print_header(machine, module, argv, conditions=""):
    """Prints the `Machine:` and `Command:` lines every benchmark starts with.

    Args:
        machine: `machine_description()`, taken when the benchmark started.
        module: e.g. `"benchmarks.train_step"`.
        argv: the arguments given to `main` (`None`: the command line).
        conditions: appended in parentheses, e.g. `"oneDNN on"`.
    """
    arguments = " ".join(argv if argv is not None else sys.argv[1:])
    print(f"Machine: {machine}")
    print(f"Command: python -m {module} {arguments}"
          + (f"  ({conditions})" if conditions else ""))
    print()


def interleaved(functions, steps, warmup=1):
    """Times callables in turns (a, b, a, b, ...) so load hits all alike.

    Args:
        functions: dict name -> callable without arguments.
        steps: timed calls of each.
        warmup: untimed calls of each first (tracing, allocation).

    Returns:
        dict name -> {"wall": [seconds], "cpu": [seconds of process CPU]}.
    """
    for fn in functions.values():
        for _ in range(warmup):
            fn()
    times = {name: {"wall": [], "cpu": []} for name in functions}
    for _ in range(steps):
        for name, fn in functions.items():
            wall, cpu = time.perf_counter(), time.process_time()
            fn()
            times[name]["wall"].append(time.perf_counter() - wall)
            times[name]["cpu"].append(time.process_time() - cpu)
    return times


def median_ms(samples):
    return float(np.median(samples)) * 1e3


def matmul_gflops(size=2048, repeats=5):
    """float32 matmul GFLOP/s of TensorFlow on this machine (median)."""
    import tensorflow as tf

    a = tf.random.normal((size, size))
    b = tf.random.normal((size, size))
    matmul = tf.function(lambda: tf.matmul(a, b))
    matmul().numpy()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        matmul().numpy()
        samples.append(time.perf_counter() - start)
    return 2 * size**3 / float(np.median(samples)) / 1e9


def conv_output_sizes(model):
    """Per conv layer (also inside HaH blocks): (h, w, cin, cout, kh, kw)."""
    import keras

    from keras_hebb.layers import HaHBlock

    sizes = []
    for layer in model.layers:
        if isinstance(layer, HaHBlock):
            conv = layer.conv
            _, h, w, _ = layer.output.shape
        elif isinstance(layer, keras.layers.Conv2D):
            conv = layer
            _, h, w, _ = layer.output.shape
        elif isinstance(layer, keras.layers.Dense):
            cin, cout = layer.kernel.shape
            sizes.append((1, 1, cin, cout, 1, 1))
            continue
        else:
            continue
        kh, kw, cin, cout = conv.kernel.shape
        sizes.append((h, w, cin, cout, kh, kw))
    return sizes


def training_flops_per_image(model):
    """FLOPs of one training step per image: 3x the forward convs + dense.

    Forward, gradient of the input and gradient of the kernel each cost one
    convolution's multiply-adds (the first layer's input gradient is not
    needed; counted anyway, it is < 1% of VGG16).
    """
    forward = sum(2 * h * w * cin * cout * kh * kw
                  for h, w, cin, cout, kh, kw in conv_output_sizes(model))
    return 3 * forward


def peak_rss_mb():
    """Peak resident memory of this process so far, MiB (Linux ru_maxrss)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def current_rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def run_python(module, args, onednn=True, timeout=None):
    """Runs `python -m module args` with oneDNN on or off; returns stdout."""
    env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS="1" if onednn else "0",
               TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run(
        [sys.executable, "-m", module, *args], env=env, capture_output=True,
        text=True, timeout=timeout, check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"python -m {module} {' '.join(args)} failed "
            f"(status {result.returncode}):\n{result.stderr[-3000:]}"
        )
    return result.stdout


def markdown_table(headers, rows):
    """A GitHub markdown table; floats get 1 decimal unless already strings."""
    def cell(value):
        if isinstance(value, float):
            return f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"
        return str(value)

    lines = ["| " + " | ".join(headers) + " |",
             "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
