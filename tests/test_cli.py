"""The command line registers every feature's commands however it is started."""

import os
import subprocess
import sys

import pytest

# a bare environment (no rich colours, fixed width) that still imports the slth under test (PYTHONPATH)
_BARE_ENV = {"COLUMNS": "200", "PATH": "", **{k: os.environ[k] for k in ("PYTHONPATH",) if k in os.environ}}

@pytest.mark.parametrize("module", ["slth", "slth.cli"])
def test_python_dash_m_lists_all_commands(module):
    out = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True,
                         env=_BARE_ENV, check=True).stdout
    for command in ("construct", "evaluate", "train-dense", "demo", "train", "bench", "experiment", "report"):
        assert f" {command} " in out, (command, out)


def _help(*args):
    return subprocess.run([sys.executable, "-m", "slth", *args, "--help"], capture_output=True, text=True,
                          env=_BARE_ENV, check=True).stdout


def test_experiment_help_lists_every_registered_experiment():
    from slth.experiments import EXPERIMENTS

    out = _help("experiment")
    commands = [e.name for e in EXPERIMENTS.values() if e.command]
    assert len(commands) >= 6
    for name in commands:
        assert f" {name} " in out, (name, out)


def test_bench_help_lists_every_benchmark():
    out = _help("bench")
    for name in ("subsetsum", "supermask-step"):
        assert f" {name} " in out, (name, out)


def _slth(tmp_path, *args):
    return subprocess.run([sys.executable, "-m", "slth", *map(str, args)], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)


def test_user_mistakes_are_one_line_and_fail_before_the_work(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    target = tmp_path / "fc2.pt"
    target.write_bytes(b"not a model")
    cases = [
        (["experiment", "pensia-exp1", "--target", "missing.pt", "--data-dir", tmp_path], "no such --target file"),
        (["experiment", "pensia-exp1", "--target", target, "--data-dir", tmp_path, "--tickets-dir", blocker / "exp1"],
         "--tickets-dir"),
        (["experiment", "pensia-exp2", "--nets", "fc3"], "unknown --nets fc3"),
        (["experiment", "planted", "--tasks", "mnist"], "needs --data-dir"),
        (["train", "--method", "bogus", "--out", "run"], "unknown method"),
        (["train", "--epochs", "1", "--out", blocker], "not a directory"),
        (["construct", "missing.pt", "-o", "t.slth"], "no such model file"),
        (["bench", "subsetsum", "--n", "12", "--batch", "0"], "must be positive"),
        (["report", "--results", tmp_path / "none"], "no such --results directory"),
    ]
    for args, message in cases:
        r = _slth(tmp_path, *args)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        lines = [line for line in r.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], (args, r.stderr)
        assert "Traceback" not in r.stderr


def test_output_folders_are_created_up_front(tmp_path):
    from pathlib import Path

    from slth.cli._common import CommandError, output_dir, output_file

    nested = Path(tmp_path) / "a" / "b"
    assert output_dir(nested, "--out").is_dir()
    output_file(Path(tmp_path) / "c" / "d" / "r.json", "--out")
    assert (Path(tmp_path) / "c" / "d").is_dir()
    blocker = Path(tmp_path) / "file"
    blocker.write_text("x")
    with pytest.raises(CommandError, match="not a directory"):
        output_dir(blocker, "--out")
    with pytest.raises(CommandError, match="cannot create"):
        output_dir(blocker / "sub", "--out")


def test_debug_variable_shows_the_traceback(tmp_path):
    r = subprocess.run([sys.executable, "-m", "slth", "train", "--method", "bogus", "--out", "run"],
                       capture_output=True, text=True, cwd=tmp_path, timeout=120,
                       env={"SLTH_DEBUG": "1", "PATH": ""})
    assert r.returncode != 0 and "Traceback" in r.stderr


def test_bench_supermask_step_peer_is_edge_popup_only(tmp_path):
    r = _slth(tmp_path, "bench", "supermask-step", "--method", "biprop", "--peer", "--steps", "1")
    assert r.returncode != 0 and "reference implementation's edge-popup" in r.stderr, r.stderr


def test_train_help_lists_every_registered_model_and_method():
    from slth.models import MODELS
    from slth.supermask.methods import METHODS

    out = _help("train")
    lines = {flag: next(line for line in out.splitlines() if f" {flag} " in line) for flag in ("--model", "--method")}
    for name in MODELS:
        assert f" {name} " in lines["--model"], (name, lines["--model"])
    for name in ("dense", *METHODS):
        assert f" {name} " in lines["--method"], (name, lines["--method"])


def test_train_command_names_its_choices_without_importing_torch():
    code = "import sys, slth.cli.train; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_every_registered_experiment_has_a_command_generated_from_its_settings():
    """``slth experiment <name> --help`` works for each registered experiment and offers one option per field of
    its module's Settings, plus the runner's (--out, --quick, --threads, --quiet); the quick preset names only
    fields."""
    import dataclasses

    from typer.testing import CliRunner

    from slth.cli import app
    from slth.experiments import EXPERIMENTS

    for e in EXPERIMENTS.values():
        if not e.command:
            continue
        module = e.load()
        result = CliRunner().invoke(app, ["experiment", e.name, "--help"], terminal_width=200)
        assert result.exit_code == 0, (e.name, result.output)
        fields = {f.name for f in dataclasses.fields(module.Settings)}
        for name in [*fields, "out", "quick", "threads", "quiet"]:
            assert "--" + name.replace("_", "-") in result.output, (e.name, name)
        assert set(module.PRESETS["quick"]) <= fields, e.name
        assert dataclasses.is_dataclass(module.Settings) and module.Settings.__dataclass_params__.frozen
