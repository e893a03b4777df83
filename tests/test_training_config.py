"""Training configs: shipped configs valid, bad configs and overrides end
with exit status 2 and one line naming the bad value."""

import glob
import os
import subprocess
import sys

import pytest
import yaml

from training import config as training_config
from training import train as train_program
from training.distribute import choose_strategy_name

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(glob.glob(os.path.join(ROOT, "training", "configs", "*.yaml")))
GOOD = {"dataset": "fashion_mnist", "architecture": "hah_vgg_small"}


def test_shipped_configs_are_valid_and_the_paper_ones_match_the_paper():
    names = {os.path.basename(path)[:-5] for path in CONFIGS}
    assert {"cifar10_hah_vgg16", "cifar10_vgg16_bn", "fashion_mnist_hah_small",
            "fashion_mnist_vgg_small"} <= names
    configs = {os.path.basename(p)[:-5]: training_config.load_config(p) for p in CONFIGS}
    for name in ("cifar10_hah_vgg16", "cifar10_vgg16_bn"):
        c = configs[name]
        assert (c["dataset"], c["optimizer"], c["learning_rate"], c["batch_size"],
                c["epochs"], c["lr_milestones"], c["lr_factor"], c["augment"],
                c["seed"]) == ("cifar10", "adam", 1e-3, 128, 100, [60, 80], 0.1,
                               True, 2022)
    assert configs["cifar10_hah_vgg16"]["hah_alphas"] == [
        0.0045, 0.0025, 0.0013, 0.001, 0.0008, 0.0005]
    # The HaH-VGG16-shaped Fashion-MNIST pair: the paper's schedule shape
    # (lr x0.1 at 60% and 80% of the epochs), the same for both networks.
    hah, standard = configs["fashion_mnist_hah_medium"], configs["fashion_mnist_vgg_medium"]
    assert hah["epochs"] >= 15 and hah["lr_milestones"] == [
        round(0.6 * hah["epochs"]), round(0.8 * hah["epochs"])]
    assert {k: v for k, v in hah.items() if k not in ("architecture", "description")} == {
        k: v for k, v in standard.items() if k not in ("architecture", "description")}
    # The robust recipe's configs: the HaH network of that size with the
    # recipe preset (no threshold, 30x alphas) and otherwise the same training.
    for recipe, paper in (("fashion_mnist_robust_hah_small", "fashion_mnist_hah_small"),
                          ("fashion_mnist_robust_hah_medium", "fashion_mnist_hah_medium"),
                          ("cifar10_robust_hah_vgg16", "cifar10_hah_vgg16"),
                          ("fashion_mnist_hah_small_x30", "fashion_mnist_hah_small")):
        different = {k for k in configs[recipe]
                     if configs[recipe][k] != configs[paper][k]}
        assert different <= {"architecture", "description", "hah_alphas"}, (recipe, different)
    assert configs["fashion_mnist_robust_hah_small"]["architecture"] == "robust_hah_vgg_small"
    assert configs["fashion_mnist_hah_small_x30"]["hah_alphas"] == [0.135, 0.075]


def test_learning_rate_drops_tenfold_at_each_milestone():
    c = training_config.validate({**GOOD, "lr_milestones": [60, 80], "epochs": 100})
    rates = [training_config.learning_rate_at(c, e) for e in (0, 59, 60, 79, 80, 99)]
    assert rates == pytest.approx([1e-3, 1e-3, 1e-4, 1e-4, 1e-5, 1e-5])


def test_overrides_are_parsed_as_yaml_and_type_checked():
    raw = training_config.apply_overrides(
        GOOD, ["epochs=3", "augment=false", "hah_alphas=[0.01, 0.02]",
               "block_options.threshold=null", "data_dir=/data/tfds"])
    c = training_config.validate(raw)
    assert c["epochs"] == 3 and c["augment"] is False
    assert c["hah_alphas"] == [0.01, 0.02] and c["block_options"] == {"threshold": None}
    assert c["data_dir"] == "/data/tfds"
    with pytest.raises(training_config.ConfigError, match="epochs='three'"):
        training_config.validate(training_config.apply_overrides(GOOD, ["epochs=three"]))
    with pytest.raises(training_config.ConfigError, match="did you mean 'learning_rate'"):
        training_config.apply_overrides(GOOD, ["learning_rte=0.1"])
    with pytest.raises(training_config.ConfigError, match="block_options.sigmaa"):
        training_config.validate({**GOOD, "block_options": {"sigmaa": 0.2}})


def test_adversarial_options_are_completed_and_overridable():
    c = training_config.validate(training_config.apply_overrides(
        GOOD, ["adversarial.attack=pgd", "adversarial.eps=0.1", "adversarial.norm=l2"]))
    assert c["adversarial"] == {
        "attack": "pgd", "eps": 0.1, "norm": "l2", "steps": 7,
        "step_size": pytest.approx(2.5 * 0.1 / 7), "random_start": True,
        "hah_costs_on": "adversarial", "batch_norm_statistics": "clean"}
    # The dumped config validates to itself (a resumed run's check).
    again = training_config.validate(yaml.safe_load(training_config.dump_config(c)))
    assert again == c
    assert training_config.validate(GOOD)["adversarial"] is None
    with pytest.raises(training_config.ConfigError, match="only block_options and adversarial"):
        training_config.apply_overrides(GOOD, ["epochs.x=1"])


@pytest.mark.parametrize("raw, named", [
    ({**GOOD, "epochs": 0}, "epochs=0"),
    ({**GOOD, "batch_size": 12.5}, "batch_size=12.5"),
    ({**GOOD, "learning_rate": -1}, "learning_rate=-1"),
    ({**GOOD, "lr_milestones": [80, 60]}, "lr_milestones=[80, 60]"),
    ({**GOOD, "lr_factor": 2}, "lr_factor=2"),
    ({**GOOD, "strategy": "horovod"}, "strategy='horovod'"),
    ({**GOOD, "augment": "yes"}, "augment='yes'"),
    ({**GOOD, "noise_sigma": -0.1}, "noise_sigma=-0.1"),
    ({**GOOD, "noise_sigma": ".2"}, "noise_sigma='.2'"),
    ({**GOOD, "weight_init": "pytorch"}, "weight_init='pytorch'"),
    ({**GOOD, "hah_alphas": [0.1, -0.1]}, "hah_alphas=[0.1, -0.1]"),
    ({**GOOD, "architecture": {"widths": [8, "X"]}}, "architecture="),
    ({**GOOD, "block_options": {"threshold": "top"}}, "block_options.threshold='top'"),
    ({**GOOD, "block_options": {"threshold_ratio": 1.5}},
     "block_options.threshold_ratio=1.5: expected a number in (0, 1]"),
    ({**GOOD, "block_options": {"normalization_size": 4}},
     "block_options.normalization_size=4: expected a positive odd integer"),
    ({"dataset": "fashion_mnist"}, "'architecture'"),
    ({**GOOD, "noise_sigma": 0.25, "noise_fraction": 0}, "noise_fraction=0"),
    ({**GOOD, "noise_fraction": 0.5}, "noise_fraction=0.5: expected 1.0 when noise_sigma is 0"),
    ({**GOOD, "adversarial": "pgd"}, "adversarial='pgd'"),
    ({**GOOD, "adversarial": {"attack": "cw", "eps": 0.1}}, "adversarial.attack='cw'"),
    ({**GOOD, "adversarial": {"attack": "pgd"}}, "adversarial.eps=None"),
    ({**GOOD, "adversarial": {"attack": "pgd", "eps": 0.1, "norm": "l1"}},
     "adversarial.norm='l1'"),
    ({**GOOD, "adversarial": {"attack": "fgsm_rs", "eps": 0.1, "steps": 7}},
     "adversarial.steps=7"),
    ({**GOOD, "adversarial": {"attack": "pgd", "eps": 0.1, "epsilon": 0.1}},
     "'adversarial.epsilon'"),
])
def test_bad_values_are_rejected_naming_the_value(raw, named):
    with pytest.raises(training_config.ConfigError) as caught:
        training_config.validate(raw)
    assert named in str(caught.value) and "\n" not in str(caught.value)


def test_strategy_is_chosen_from_the_environment():
    two = '{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 0}}'
    one = '{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 0}}'
    assert choose_strategy_name("auto", {}, gpus=0) == "default"
    assert choose_strategy_name("auto", {}, gpus=4) == "mirrored"
    assert choose_strategy_name("auto", {"TF_CONFIG": two}, gpus=0) == "multi_worker"
    assert choose_strategy_name("auto", {"TF_CONFIG": one}, gpus=1) == "default"
    assert choose_strategy_name("auto", {"TPU_NAME": "v3-8", "TF_CONFIG": two}) == "tpu"
    assert choose_strategy_name("default", {"TF_CONFIG": two}) == "default"


def _write(tmp_path, raw):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw) if isinstance(raw, dict) else raw)
    return str(path)


@pytest.mark.parametrize("raw, overrides, named", [
    ({**GOOD, "epochz": 3}, [], "'epochz'"),
    ({**GOOD, "dataset": "imagenet"}, [], "dataset='imagenet'"),
    ({**GOOD, "architecture": "resnet50"}, [], "architecture='resnet50'"),
    ({**GOOD, "epochs": -5}, [], "epochs=-5"),
    (GOOD, ["bach_size=64"], "'bach_size'"),
    (GOOD, ["epochs"], "'epochs'"),
    ("dataset: [unclosed", [], "not valid YAML"),
])
def test_bad_configs_exit_2_with_one_line(tmp_path, capsys, raw, overrides, named):
    argv = ["--config", _write(tmp_path, raw), "--out", str(tmp_path / "run")]
    for override in overrides:
        argv += ["--set", override]
    assert train_program.main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and named in lines[0], lines
    assert not os.path.exists(tmp_path / "run" / "model.keras")


def test_the_program_exits_2_without_traceback(tmp_path):
    """The real command line: exit status 2, one line on stderr."""
    path = _write(tmp_path, {**GOOD, "epochs": -1})
    result = subprocess.run(
        [sys.executable, "-m", "training", "train", "--config", path,
         "--out", str(tmp_path / "run"), "--set", "batch_sise=3"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error")]
    assert errors == [result.stderr.strip().splitlines()[-1]]
    assert "Traceback" not in result.stderr and "'batch_sise'" in errors[0]
    # Found only when the model is built (after TensorFlow starts): a
    # separate process, since training enables op determinism globally.
    path = _write(tmp_path, {**GOOD, "architecture": "vgg_small_bn",
                             "hah_alphas": 0.1})
    result = subprocess.run(
        [sys.executable, "-m", "training", "train", "--config", path,
         "--out", str(tmp_path / "run")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1].startswith(
        "error: Architecture 'vgg_small_bn' has no HaH blocks")
    unknown = subprocess.run(
        [sys.executable, "-m", "training", "fit"], cwd=ROOT,
        capture_output=True, text=True, timeout=60)
    assert unknown.returncode == 2 and "'fit'" in unknown.stderr


def test_a_run_saved_before_a_key_existed_counts_as_the_same_config():
    config = training_config.validate(dict(GOOD))
    saved = {key: value for key, value in config.items() if key != "noise_sigma"}
    assert train_program._config_difference(saved, config) is None
    assert "noise_sigma" in train_program._config_difference(saved, {**config, "noise_sigma": 0.25})


def test_block_options_are_the_hah_block_arguments_an_ablation_may_change():
    import inspect

    from keras_hebb.layers import HaHBlock

    arguments = set(inspect.signature(HaHBlock.__init__).parameters) - {"self", "kwargs"}
    options = set(training_config.block_options())
    assert options == arguments - set(training_config.ARCHITECTURE_BLOCK_ARGUMENTS)
    assert {"threshold", "normalization_field", "cost_demote"} <= options
    checked = training_config.validate(
        {**GOOD, "block_options": {"sigma": 0, "normalization_size": 5}})["block_options"]
    assert checked == {"sigma": 0.0, "normalization_size": 5}


def test_weight_init_choices_are_the_architectures():
    from keras_hebb import architectures

    # Listed twice (the config module imports no TensorFlow): kept equal here.
    assert training_config.WEIGHT_INITS == architectures.WEIGHT_INITS
