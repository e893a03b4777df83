"""The programs' command-line kit (export.cli), shared by export, training
and experiments."""

import os
import subprocess
import sys

import pytest

from export import ExportError, cli
from training import train as train_program

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_parser_errors_are_one_usage_error_line_pointing_to_help():
    parser = cli.Parser(prog="python -m tool")
    parser.add_argument("--count", type=int, required=True)
    with pytest.raises(cli.UsageError) as caught:
        parser.parse_args(["--count", "many"])
    message = str(caught.value)
    assert "\n" not in message and message.endswith("(see python -m tool --help)")
    assert "'many'" in message


def test_first_line_of_an_error():
    assert cli.first_line(ValueError("one\ntwo")) == "one"
    assert cli.first_line(ValueError("  \n")) == "ValueError"


def test_environment_defaults_leave_a_user_choice_alone():
    environ = {"TF_ENABLE_ONEDNN_OPTS": "0"}
    cli.set_tf_environment_defaults(environ)
    assert environ == {"TF_ENABLE_ONEDNN_OPTS": "0", "TF_CPP_MIN_LOG_LEVEL": "2"}


def test_load_model_names_the_missing_or_bad_file(tmp_path):
    with pytest.raises(ExportError, match="Model file not found: .*missing.keras"):
        cli.load_model(str(tmp_path / "missing.keras"), error=ExportError)
    bad = tmp_path / "bad.keras"
    bad.write_text("not a zip")
    with pytest.raises(cli.UsageError, match=r"Cannot load model .*bad\.keras: "):
        cli.load_model(str(bad))


def test_export_error_is_a_usage_error():
    assert issubclass(ExportError, cli.UsageError)


def test_both_programs_report_a_bad_flag_in_one_line_with_status_2(capsys):
    from export import command

    for main in (command.main, train_program.main):
        assert main(["--no-such-flag"]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and "--help)" in lines[0]


def test_python_m_export_runs_the_command_module():
    result = subprocess.run([sys.executable, "-m", "export", "--help"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "python -m export" in result.stdout


def test_start_up_notices_are_dropped_and_everything_else_passes(capfd):
    def start_up():
        os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called "
                    b"are written to STDERR\n")
        os.write(2, b"I0000 00:00:1.5 8774 port.cc:153] oneDNN custom operations are on. "
                    b"You may see slightly different numerical results.\n")
        os.write(2, b"E0000 real failure of a kernel\n")
        return 7

    assert cli._filtered_stderr(start_up) == 7
    assert capfd.readouterr().err == "E0000 real failure of a kernel\n"


def test_an_error_while_filtering_passes_with_what_was_written(capfd):
    def broken():
        os.write(2, b"F0000 check failed: no such op\n")
        raise ImportError("no module named tensorflow.python")

    with pytest.raises(ImportError, match="tensorflow.python"):
        cli._filtered_stderr(broken)
    assert capfd.readouterr().err == "F0000 check failed: no such op\n"


@pytest.fixture(scope="module")
def bad_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("bad") / "bad.keras"
    path.write_text("not a zip")
    return str(path)


# Each mistake is found after TensorFlow is imported, oneDNN on (as `make`
# sets it): the output is the program's one line, not TensorFlow's notices.
@pytest.mark.parametrize("cpu", [{}, {"ONEDNN_MAX_CPU_ISA": "AVX2"}], ids=["default", "avx2"])
@pytest.mark.parametrize("arguments", [
    ["training", "train", "--config", "training/configs/no_such_config.yaml", "--out", "x"],
    ["export", "BAD", "--out", "x"],
    ["experiments", "sweep", "--config", "training/configs/fashion_mnist_vgg_small.yaml",
     "--report-only", "--out", "x"],
], ids=["training", "export", "experiments"])
def test_a_mistake_after_tensorflow_starts_prints_one_line(arguments, cpu, bad_model, tmp_path,
                                                           one_line_error):
    arguments = [bad_model if a == "BAD" else str(tmp_path / a) if a == "x" else a
                 for a in arguments]
    environ = {k: v for k, v in os.environ.items()
               if k not in ("TF_CPP_MIN_LOG_LEVEL", "ONEDNN_MAX_CPU_ISA")}
    result = subprocess.run(
        [sys.executable, "-m", *arguments], cwd=ROOT,
        env={**environ, "TF_ENABLE_ONEDNN_OPTS": "1", **cpu},
        capture_output=True, text=True, timeout=300)
    one_line_error(result)


def test_the_moved_subcommands_name_their_new_command_in_one_line(capsys):
    from training.__main__ import main

    assert main(["sweep", "--scales", "1,10"]) == 2
    captured = capsys.readouterr()
    assert captured.err == ("error: `python -m training sweep` moved: run "
                            "`python -m experiments sweep` with the same options.\n")
    assert captured.out == ""


def test_dispatch_runs_the_named_module_and_refuses_others_in_one_line(capsys):
    # `export.command.main` is a real subcommand's `main(argv)`.
    subcommands = {"export": "export.command"}
    assert cli.dispatch(["export", "--no-such-flag"], "python -m tool", "usage", subcommands) == 2
    assert "--no-such-flag" in capsys.readouterr().err
    assert cli.dispatch(["fit"], "python -m tool", "usage", subcommands) == 2
    assert capsys.readouterr().err == (
        "error: unknown command 'fit': expected one of 'export' (python -m tool --help).\n")
    assert cli.dispatch([], "python -m tool", "usage", subcommands) == 2
    assert capsys.readouterr().out == "usage\n"
