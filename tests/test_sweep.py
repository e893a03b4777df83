"""The alpha sweep (`python -m experiments sweep`) end to end at a tiny budget,
on the small HaH network and on the HaH-VGG16-shaped `hah_vgg_medium`:
its tables are computed from the run files, and it resumes: a finished
run is not trained again.

Calls that train nothing (a report, a finished sweep, usage mistakes) run
the program's `main` in this process: a subprocess would spend its seconds
importing TensorFlow (tests/test_cli.py checks a sweep mistake's one line
as a process).
"""

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from experiments import __main__ as experiments_main
from experiments import docs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _sweep(*arguments, check=True):
    result = subprocess.run(
        [sys.executable, "-m", "experiments", "sweep", *arguments], cwd=ROOT,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        capture_output=True, text=True, timeout=900)
    if check:
        assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-3000:])
    return result


def _sweep_in_process(capfd, monkeypatch, *arguments, check=True):
    """`_sweep` as the program's `main` in this process (from the
    repository root, as `_sweep` runs it)."""
    monkeypatch.chdir(ROOT)
    capfd.readouterr()
    status = experiments_main.main(["sweep", *arguments])
    out, err = capfd.readouterr()
    if check:
        assert status == 0, (out[-2000:], err[-3000:])
    return SimpleNamespace(returncode=status, stdout=out, stderr=err)


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep")
    _sweep("--tiny", "--out", str(out), "--scales", "0,30", "--seeds", "1,2")
    return out


def test_sweep_report_is_computed_from_the_run_files(tiny_sweep):
    out = tiny_sweep
    for name in ("x0_s1", "x30_s1", "x0_s2", "x30_s2"):
        assert (out / "runs" / name / "model.keras").is_file()
        assert (out / "probe" / f"{name}.json").is_file()
    # The alphas of each run are the scale times the paper's first alphas.
    config = (out / "runs" / "x30_s2" / "config.yaml").read_text()
    assert "0.135" in config and "0.075" in config and "seed: 2" in config
    table = {e["scale"]: e for e in json.loads((out / "sweep.json").read_text())["table"]}
    assert sorted(table) == [0, 30]
    # Each number is the mean of the per-seed probe files ...
    probes = {(s, seed): json.loads((out / "probe" / f"x{s}_s{seed}.json").read_text())
              for s in (0, 30) for seed in (1, 2)}
    for s in (0, 30):
        clean = table[s]["measures"]["clean"]
        assert clean["values"] == [probes[(s, 1)]["clean"], probes[(s, 2)]["clean"]]
        assert clean["mean"] == pytest.approx(np.mean(clean["values"]))
        assert clean["sd"] == pytest.approx(np.std(clean["values"], ddof=1))
    # ... the effect is the mean difference to x0 of the same seed ...
    noise = table[30]["measures"]["noise 0.3"]
    expected = np.mean([probes[(30, seed)]["noise"]["0.3"] - probes[(0, seed)]["noise"]["0.3"]
                        for seed in (1, 2)])
    assert noise["effect"] == pytest.approx(expected)
    assert noise["clear"] == (abs(noise["effect"]) > 2 * noise["spread"])
    # ... and the x0 runs' kernels are the reference of the kernel change:
    # zero for x0 itself, nonzero once the cost has a weight.
    assert table[0]["measures"]["kernel change block1_hah"]["values"] == [0.0, 0.0]
    assert min(table[30]["measures"]["kernel change block1_hah"]["values"]) > 0
    report = (out / "sweep.md").read_text()
    assert "| clean | " in report and "noise 0.3" in report
    assert f"| {100 * table[0]['measures']['clean']['mean']:.1f} ±" in report.replace(
        "| clean | ", "| ")
    for plot in ("sweep.png", "filters.png"):
        assert (out / plot).stat().st_size > 1000
    timings = json.loads((out / "timings.json").read_text())
    assert timings["settings"]["scales"] == [0, 30]
    assert {"train x0_s1", "probe x30_s2"} <= set(timings)


def test_sweep_report_only_rewrites_the_same_report_into_a_doc(tiny_sweep, tmp_path, capfd,
                                                                monkeypatch):
    before = (tiny_sweep / "sweep.md").read_text()
    doc = tmp_path / "DOC.md"
    doc.write_text(f"# Doc\n\n{docs.SWEEP_BEGIN}\nOLD-TEXT\n{docs.SWEEP_END}\ntail\n")
    result = _sweep_in_process(capfd, monkeypatch, "--tiny", "--out", str(tiny_sweep),
                               "--scales", "0,30", "--seeds", "1,2", "--report-only",
                               "--docs", str(doc))
    assert "=== train" not in result.stdout and "=== probe" not in result.stdout
    after = (tiny_sweep / "sweep.md").read_text()
    assert after.split("\n")[3:] == before.split("\n")[3:]  # all but the command
    text = doc.read_text()
    assert "OLD-TEXT" not in text and "tail" in text and "### Measures per scale" in text


def _started(stdout, step):
    """The runs whose `step` (train, probe) this sweep's output shows starting
    (`=== train x0_s1: python -m training train ...`, `=== probe x0_s1 (...)`;
    not the `=== train x0_s1: done in 12 s` line that ends a step)."""
    return sorted(line.split()[2].rstrip(":") for line in stdout.splitlines()
                  if line.startswith(f"=== {step} ") and ": done in " not in line)


def test_sweep_resumes_without_training_a_finished_run_again(tiny_sweep, capfd, monkeypatch):
    # An interrupted sweep: one run lost its model and its probe.
    (tiny_sweep / "runs" / "x30_s2" / "model.keras").unlink()
    (tiny_sweep / "probe" / "x30_s2.json").unlink()
    kept = {name: (tiny_sweep / "runs" / name / "model.keras").stat().st_mtime_ns
            for name in ("x0_s1", "x30_s1", "x0_s2")}
    result = _sweep("--tiny", "--out", str(tiny_sweep), "--scales", "0,30", "--seeds", "1,2")
    assert _started(result.stdout, "train") == ["x30_s2"]
    assert _started(result.stdout, "probe") == ["x30_s2"]
    assert {name: (tiny_sweep / "runs" / name / "model.keras").stat().st_mtime_ns
            for name in kept} == kept
    assert (tiny_sweep / "probe" / "x30_s2.json").is_file()
    # Once everything is finished, a new call trains and probes nothing.
    again = _sweep_in_process(capfd, monkeypatch, "--tiny", "--out", str(tiny_sweep),
                              "--scales", "0,30", "--seeds", "1,2")
    assert _started(again.stdout, "train") == [] and _started(again.stdout, "probe") == []
    assert len(json.loads((tiny_sweep / "timings.json").read_text())["calls"]) == 3


@pytest.mark.parametrize("arguments, message", [
    (["--scales", "1,10"], "--scales must include 0"),
    (["--scales", "a"], "--scales must be a comma-separated list"),
    (["--config", "training/configs/fashion_mnist_vgg_small.yaml"], "HaH blocks"),
    (["--config", "training/configs/no_such.yaml"], "no config file"),
])
def test_sweep_errors_are_one_line_with_status_2(arguments, message, tmp_path, one_line_error,
                                                 capfd, monkeypatch):
    line = one_line_error(_sweep_in_process(capfd, monkeypatch, "--out", str(tmp_path),
                                            *arguments, check=False), message)
    assert line.startswith("error: ")


def test_sweep_runs_on_the_hah_vgg16_shaped_preset(tmp_path):
    _sweep("--tiny", "--out", str(tmp_path), "--config",
           "training/configs/fashion_mnist_hah_medium.yaml", "--scales", "0,1",
           "--seeds", "1")
    config = (tmp_path / "runs" / "x1_s1" / "config.yaml").read_text()
    assert "hah_vgg_medium" in config
    metrics = json.loads((tmp_path / "runs" / "x1_s1" / "metrics.json").read_text())
    # Four HaH blocks, each with its own logged cost; two conv-ReLU-BN after.
    costs = sorted(k for k in metrics["final"] if k.startswith("val_hah_block"))
    assert costs == [f"val_hah_block{i}_hah" for i in range(1, 5)]
    probe = json.loads((tmp_path / "probe" / "x1_s1.json").read_text())
    assert [layer["layer"] for layer in probe["layers"]] == [
        "block1_hah", "block2_hah", "block3_hah", "block4_hah", "block5_relu", "block6_relu"]
    # One seed: no spread, so the report calls nothing clear or not clear.
    report = (tmp_path / "sweep.md").read_text()
    assert "One seed: there is no seed spread" in report
    assert "has a clear effect" not in report and "is clear from" not in report
