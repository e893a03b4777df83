"""The programs' command-line kit (export._cli), shared by export and training."""

import subprocess
import sys

import pytest

from export import ExportError, _cli
from training import train as train_program


def test_parser_errors_are_one_usage_error_line_pointing_to_help():
    parser = _cli.Parser(prog="python -m tool")
    parser.add_argument("--count", type=int, required=True)
    with pytest.raises(_cli.UsageError) as caught:
        parser.parse_args(["--count", "many"])
    message = str(caught.value)
    assert "\n" not in message and message.endswith("(see python -m tool --help)")
    assert "'many'" in message


def test_first_line_of_an_error():
    assert _cli.first_line(ValueError("one\ntwo")) == "one"
    assert _cli.first_line(ValueError("  \n")) == "ValueError"


def test_environment_defaults_leave_a_user_choice_alone():
    environ = {"TF_ENABLE_ONEDNN_OPTS": "0"}
    _cli.set_tf_environment_defaults(environ)
    assert environ == {"TF_ENABLE_ONEDNN_OPTS": "0", "TF_CPP_MIN_LOG_LEVEL": "2"}


def test_load_model_names_the_missing_or_bad_file(tmp_path):
    with pytest.raises(ExportError, match="Model file not found: .*missing.keras"):
        _cli.load_model(str(tmp_path / "missing.keras"), error=ExportError)
    bad = tmp_path / "bad.keras"
    bad.write_text("not a zip")
    with pytest.raises(_cli.UsageError, match=r"Cannot load model .*bad\.keras: "):
        _cli.load_model(str(bad))


def test_export_error_is_a_usage_error():
    assert issubclass(ExportError, _cli.UsageError)


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
