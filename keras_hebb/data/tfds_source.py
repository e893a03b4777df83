"""Datasets through tensorflow-datasets: a prepared `data_dir`, or a
download when the server answers (probed first: tfds retries for minutes)."""

import socket
import threading

from keras_hebb.data.specs import DATASETS, DatasetUnavailableError


def _can_connect(host, port, timeout=5.0):
    """Whether a TCP connection to `host:port` opens within `timeout` s.

    Name resolution has no timeout of its own, so the attempt runs in a
    daemon thread that is abandoned if it takes too long.
    """
    result = []

    def attempt():
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


def tfds_builder(name, data_dir=None, download=True):
    """A prepared tensorflow-datasets builder of `name`.

    Prepares (downloads) it into `data_dir` when it is missing and the
    download server answers. tfds itself retries a failing download for
    minutes, so the server is probed first and a missing, undownloadable
    dataset fails at once with `DatasetUnavailableError`.

    Args:
        name: a tfds dataset name, e.g. `"cifar10"`.
        data_dir: tfds data directory; `None` is tfds's default
            (`$TFDS_DATA_DIR` or `~/tensorflow_datasets`).
        download: whether a missing dataset may be downloaded.
            Defaults to `True`.
    """
    import tensorflow_datasets as tfds

    builder = tfds.builder(name, data_dir=data_dir)
    if builder.is_prepared():
        return builder
    where = builder.data_dir_root
    how = (
        f"prepare it on a machine with internet (python -c \"import "
        f"tensorflow_datasets as tfds; tfds.builder('{name}', "
        f"data_dir='DIR').download_and_prepare()\") and copy DIR/{name} "
        f"into {where}, or pass the data_dir (config key `data_dir`, or "
        f"$TFDS_DATA_DIR) of a directory that holds it"
    )
    if not download:
        raise DatasetUnavailableError(
            f"Dataset {name!r} is not prepared in {where} and downloads are "
            f"off: {how}."
        )
    spec = DATASETS.get(name)
    host = spec.download_host if spec else None
    if host is not None and not _can_connect(*host):
        raise DatasetUnavailableError(
            f"Dataset {name!r} is not prepared in {where} and cannot be "
            f"downloaded from here (no connection to {host[0]}): {how}."
        )
    try:
        builder.download_and_prepare()
    except Exception as error:  # tfds raises many kinds; keep it one line.
        raise DatasetUnavailableError(
            f"Dataset {name!r} is not prepared in {where} and its download "
            f"failed ({type(error).__name__}: {str(error).splitlines()[0]}): "
            f"{how}."
        ) from error
    return builder


def _tfds_split(split, limit):
    return split if limit is None else f"{split}[:{int(limit)}]"
