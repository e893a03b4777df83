"""Finished parts of an evaluation, kept on disk so that an interrupted
suite run continues where it stopped.

`run_suite(..., resume_dir=...)` writes one file per model and norm when
that norm's cascade is finished, and reads it back on the next call
instead of attacking again. A file is used only when everything its
results depend on is the same: the weights of the model and of its
transfer sources, the images and labels, the suite's settings and the
seed (a fingerprint of all of them is stored in the file). Anything else
is attacked again and the file replaced. The attack code is not in the
fingerprint: resume with the same version of the package.
"""

import hashlib
import json
import os

import numpy as np

#: Version of the file layout; a file of another version is ignored.
_VERSION = 1


def fingerprint(target, sources, images, labels, settings, seed):
    """A hex digest of what one model's attack results depend on."""
    digest = hashlib.sha256()
    for model in [target.model] + [s.model for s in sources]:
        digest.update(model.name.encode())
        for weight in model.weights:
            digest.update(np.ascontiguousarray(np.asarray(weight)).tobytes())
    digest.update(np.ascontiguousarray(images).tobytes())
    digest.update(np.ascontiguousarray(labels).tobytes())
    digest.update(json.dumps({"settings": settings, "seed": int(seed),
                              "sources": [s.name for s in sources]},
                             sort_keys=True, default=str).encode())
    return digest.hexdigest()


def _path(folder, name, norm):
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    return os.path.join(folder, f"{safe}.{norm}.json")


def load(folder, name, norm, key):
    """`(records, smallest, seconds)` of a finished norm saved under `key`
    (`seconds`: the time it took), or None."""
    if not folder:
        return None
    try:
        with open(_path(folder, name, norm)) as f:
            saved = json.load(f)
    except (OSError, ValueError):
        return None
    if saved.get("version") != _VERSION or saved.get("key") != key:
        return None
    smallest = np.array([np.nan if v is None else v for v in saved["smallest"]],
                        np.float64)
    return saved["records"], smallest, float(saved.get("seconds", 0.0))


def save(folder, name, norm, key, records, smallest, seconds):
    """Writes a finished norm's results (atomically: a file is whole or absent)."""
    if not folder:
        return
    os.makedirs(folder, exist_ok=True)
    path = _path(folder, name, norm)
    document = {"version": _VERSION, "key": key, "records": records, "seconds": float(seconds),
                "smallest": [None if np.isnan(v) else float(v) for v in smallest]}
    with open(path + ".tmp", "w") as f:
        json.dump(document, f)
    os.replace(path + ".tmp", path)


def clear(folder):
    """Removes the saved parts (once the report that holds them is written)."""
    if not folder or not os.path.isdir(folder):
        return
    for entry in os.listdir(folder):
        if entry.endswith(".json") or entry.endswith(".json.tmp"):
            os.remove(os.path.join(folder, entry))
    try:
        os.rmdir(folder)
    except OSError:
        pass
