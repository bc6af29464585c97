"""The command line's contract: exit codes, one JSON object per outcome, the log file, --version."""

import json
from importlib.metadata import version

from tests.cli_helpers import run


def test_version():
    assert run("--version").stdout.strip() == f"uq-flows {version('uq-flows')}"


def test_bad_input_exits_2_with_a_json_error_object():
    result = run("resume", "nope", "--json", expect=2)
    error = json.loads(result.stdout)["error"]
    assert error["kind"] == "bad_input" and "no loop 'nope'" in error["message"]
    assert "no loop 'nope'" in result.stderr


def test_an_internal_error_exits_4_with_one_line_naming_the_log_file(tmp_path, monkeypatch):
    import uq_flows.manager.results as results

    def broken(*args, **kwargs):  # a bug in the package: not an error the user can fix
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(results, "loop_overview", broken)
    log = tmp_path / "run.log"
    result = run("--log-file", log, "status", "--json", expect=4)
    error = json.loads(result.stdout)["error"]
    assert error["kind"] == "internal" and error["log_file"] == str(log)
    assert "ZeroDivisionError: division by zero" in error["message"]
    assert "Traceback" not in result.stderr and f"traceback in {log}" in result.stderr
    assert "Traceback (most recent call last)" in log.read_text() and "in broken" in log.read_text()

    verbose = run("-v", "--log-file", log, "status", expect=4)
    assert "ZeroDivisionError" in verbose.stderr and "broken" in verbose.stderr  # the traceback, on the terminal


def test_the_log_file_defaults_to_the_home_and_a_bad_log_level_is_refused(tmp_path):
    run("status")
    assert (tmp_path / "uq-home" / "logs").is_dir()
    assert "--log-level LOUD" in run("--log-level", "LOUD", "status", expect=2).stderr


def test_outputs_honour_the_umask_and_a_folder_is_not_an_output_file(labelled_set, tmp_path):
    import os

    _, paths = labelled_set
    mix = ("mix", "--reference", paths["ref"], "--prediction", f"good={paths['good']}",
           "--prediction", f"fair={paths['fair']}", "--uc", "1", "--energy-from", "good",
           "--forces-from", "good")
    previous = os.umask(0o022)
    try:
        run(*mix, "--out", tmp_path / "mixed.extxyz")
    finally:
        os.umask(previous)
    assert (tmp_path / "mixed.extxyz").stat().st_mode & 0o777 == 0o644  # as any new file, not mkstemp's 0600
    (tmp_path / "taken.extxyz").mkdir()
    assert "is a folder" in run(*mix, "--out", tmp_path / "taken.extxyz", expect=2).stderr


def test_a_broken_settings_file_stops_every_command_before_work(tmp_path, monkeypatch, labelled_set):
    from uq_flows.settings import get_settings

    settings = tmp_path / "settings.yaml"
    settings.write_text("torch_threads: 1\nbogus_key: 3\n")
    monkeypatch.setenv("UQ_FLOWS_CONFIG_FILE", str(settings))
    get_settings.cache_clear()
    _, paths = labelled_set
    result = run("fit", paths["ref"], "--backend", "linear", "--out", tmp_path / "ace", "--json", expect=2)
    message = json.loads(result.stdout)["error"]["message"]
    assert "bogus_key: Extra inputs are not permitted" in message and str(settings) in message
    assert not (tmp_path / "ace").exists()
    doctor = run("doctor", "--no-database", "--json", expect=1)
    (row,) = [r for r in json.loads(doctor.stdout)["checks"] if r["check"] == "settings"]
    assert row["status"] == "fail" and str(settings) in row["hint"]


def test_every_command_that_runs_a_model_takes_device():
    import typer

    from uq_flows.cli import app

    group = typer.main.get_command(app)
    runs_models = ("score", "measure-rmse", "label", "select", "calibrate", "cago", "explore")
    for name in runs_models:
        options = {opt for param in group.commands[name].params for opt in getattr(param, "opts", [])}
        assert "--device" in options, name


def test_a_model_is_a_model_option_everywhere_and_old_spellings_still_work(tmp_path):
    import typer

    from uq_flows.cli import app
    from uq_flows.cli.common import OLD_SPELLINGS, with_current_spellings

    group = typer.main.get_command(app)
    for name, renames in OLD_SPELLINGS.items():
        options = {opt for param in group.commands[name].params for opt in getattr(param, "opts", [])}
        assert set(renames.values()) <= options and not set(renames) & options, name  # old names hidden
    # an old spelling reaches the option it became: select's committee, fit's member count
    (tmp_path / "cells.extxyz").write_text("")
    said = " ".join(run("select", tmp_path / "cells.extxyz", "--no-qbc", "--committee=x", expect=2).stderr.split())
    assert "--no-qbc and --model (a QBC committee) contradict each other" in said
    assert "'--n-members'" in run("fit", tmp_path / "cells.extxyz", "--backend", "linear", "--ensemble", "0",
                                  expect=2).stderr
    # only the command's own options are renamed, and nothing after "--" (a file may be called anything)
    commands = group.commands
    assert with_current_spellings(["-v", "gamma", "--potential=a.yaml", "--", "--potential"], commands) == [
        "-v", "gamma", "--model=a.yaml", "--", "--potential"]
    assert with_current_spellings(["score", "--potential", "x"], commands) == ["score", "--potential", "x"]
