"""The command line registers every feature's commands however it is started; every refusal is one line
``error: ...``, exit status 2, before any work starts (in-process through typer's CliRunner, which is fast;
test_user_mistakes_are_one_line_and_fail_before_the_work runs the same path through ``python -m slth``)."""

import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from slth.cli import _common, app
from slth.cli._common import CommandError

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
    from slth.bench import BENCHMARKS

    out = _help("bench")
    for name in ("subsetsum", "supermask-step", *BENCHMARKS):
        assert f" {name} " in out, (name, out)


def test_a_registered_benchmark_parses_its_own_options(tmp_path, monkeypatch):
    """``slth bench <name>`` hands every option, --help too, to the benchmark's own parser."""
    import importlib

    from slth.bench import BENCHMARKS

    for b in BENCHMARKS.values():
        assert callable(importlib.import_module(f"slth.bench.{b.module}").main), b.name
    r = CliRunner().invoke(app, ["bench", "input-range", "--help"])
    assert r.exit_code == 0 and "usage: slth bench input-range" in r.output and "--data-dir" in r.output, r.output
    r = CliRunner().invoke(app, ["bench", "input-range", "--eps", "0.1"])  # its required --data-dir missing
    assert r.exit_code == 2 and "the following arguments are required: --data-dir" in r.stderr, r.output


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


def test_debug_variable_lets_the_exception_through(tmp_path, monkeypatch):
    # a process: the traceback of a refused value reaches stderr
    r = subprocess.run([sys.executable, "-m", "slth", "train", "--method", "bogus", "--out", "run"],
                       capture_output=True, text=True, cwd=tmp_path, timeout=120,
                       env={"SLTH_DEBUG": "1", "PATH": ""})
    assert r.returncode != 0 and "Traceback" in r.stderr
    # in-process: the command's own refusal passes the root group unchanged
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SLTH_DEBUG", "1")
    r = CliRunner().invoke(app, ["construct", "missing.pt", "-o", "t.slth"])
    assert isinstance(r.exception, CommandError) and "no such model file" in str(r.exception)


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


# -- every refusal, command by command --------------------------------------------------------------


def _error(tmp_path, monkeypatch, *args) -> str:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SLTH_DEBUG", raising=False)
    r = CliRunner().invoke(app, [str(a) for a in args])
    assert r.exit_code == 2, (args, r.exit_code, r.output, r.exception)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), (args, r.stderr)
    return lines[0]


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "model.pt"
    path.write_bytes(b"not read: the checks come first")
    return path


# _common.py, through the commands


def test_ints_refuses_a_non_integer(tmp_path, monkeypatch):
    line = _error(tmp_path, monkeypatch, "train", "--hidden", "30,x", "--out", "run")
    assert "--hidden must be comma-separated integers, got '30,x'" in line


def test_floats_refuses_a_non_number(tmp_path, monkeypatch):
    line = _error(tmp_path, monkeypatch, "experiment", "width-curves", "--eps", "0.1,abc")
    assert "--eps must be comma-separated numbers, got '0.1,abc'" in line


def test_names_refuses_an_empty_list(tmp_path, monkeypatch):
    line = _error(tmp_path, monkeypatch, "experiment", "planted", "--tasks", " , ")
    assert "--tasks is empty" in line


def test_names_refuses_an_unknown_name(tmp_path, monkeypatch):
    line = _error(tmp_path, monkeypatch, "experiment", "planted", "--tasks", "relu,spiral")
    assert "unknown --tasks spiral; valid: relu" in line


def test_threads_must_be_positive(tmp_path, monkeypatch):
    line = _error(tmp_path, monkeypatch, "bench", "supermask-step", "--threads", "0")
    assert "--threads must be >= 1, got 0" in line


def test_missing_input_file(tmp_path, monkeypatch):
    line = _error(tmp_path, monkeypatch, "construct", "missing.pt", "-o", "t.slth")
    assert "no such model file: missing.pt" in line


def test_input_file_that_is_a_directory(tmp_path, monkeypatch):
    (tmp_path / "adir").mkdir()
    line = _error(tmp_path, monkeypatch, "construct", "adir", "-o", "t.slth")
    assert "adir is a directory without config.json: not a save_pretrained directory" in line


def test_missing_input_directory(tmp_path, monkeypatch):
    line = _error(tmp_path, monkeypatch, "report", "--results", "none")
    assert "no such --results directory: none" in line


def test_output_directory_that_is_a_file(tmp_path, monkeypatch):
    (tmp_path / "blocker").write_text("x")
    line = _error(tmp_path, monkeypatch, "train", "--epochs", "1", "--out", "blocker")
    assert "--out: blocker exists and is not a directory" in line


def test_output_directory_that_cannot_be_created(tmp_path, monkeypatch):
    (tmp_path / "blocker").write_text("x")
    line = _error(tmp_path, monkeypatch, "train", "--epochs", "1", "--out", "blocker/run")
    assert "--out: cannot create directory blocker/run" in line


def test_output_directory_that_is_not_writable(tmp_path, monkeypatch):
    # root may write anywhere, so the permission answer is simulated
    monkeypatch.setattr(_common.os, "access", lambda path, mode: False)
    with pytest.raises(CommandError, match=r"--out: directory .* is not writable"):
        _common.output_dir(tmp_path / "run", "--out")


def test_output_file_that_is_a_directory(tmp_path, monkeypatch, model_file):
    (tmp_path / "t.slth").mkdir()
    line = _error(tmp_path, monkeypatch, "construct", model_file.name, "-o", "t.slth")
    assert "--out: t.slth is a directory, expected a file name" in line
    assert os.listdir(tmp_path / "t.slth") == []


# construct.py


def test_construct_refuses_a_bad_input_shape(tmp_path, monkeypatch, model_file):
    line = _error(tmp_path, monkeypatch, "construct", model_file.name, "-o", "t.slth", "--input-shape", "1,a,28")
    assert "--input-shape must look like 1,28,28, got '1,a,28'" in line


def test_construct_resume_needs_a_workdir(tmp_path, monkeypatch, model_file):
    line = _error(tmp_path, monkeypatch, "construct", model_file.name, "-o", "t.slth", "--resume")
    assert "--resume needs --workdir" in line


def test_construct_refuses_an_unknown_attention(tmp_path, monkeypatch, model_file):
    line = _error(tmp_path, monkeypatch, "construct", model_file.name, "-o", "t.slth", "--attention", "bogus")
    assert "unknown attention construction 'bogus'; valid: projection, product" in line


def test_construct_refuses_arch_for_a_model_directory(tmp_path, monkeypatch):
    (tmp_path / "pretrained").mkdir()
    line = _error(tmp_path, monkeypatch, "construct", "pretrained", "--arch", "4-3-2", "-o", "t.slth")
    assert "pretrained is a directory (a save_pretrained model); --arch is for state_dict files" in line


def test_demo_refuses_zero_epochs(tmp_path, monkeypatch):
    line = _error(tmp_path, monkeypatch, "demo", "--epochs", "0", "-o", "demo")
    assert "--epochs must be >= 1, got 0" in line
    assert not (tmp_path / "demo").exists()


# train.py


@pytest.mark.parametrize("arch", ["64-x-10", "64"])
def test_train_dense_refuses_a_malformed_arch(tmp_path, monkeypatch, arch):
    line = _error(tmp_path, monkeypatch, "train-dense", "--arch", arch, "-o", "m.pt")
    assert f"--arch must look like 784-500-10, got '{arch}'" in line


def test_train_dense_refuses_an_arch_that_does_not_fit_the_data(tmp_path, monkeypatch):
    line = _error(tmp_path, monkeypatch, "train-dense", "--arch", "784-32-10", "-o", "m.pt")
    assert "--arch 784-32-10 does not fit digits: inputs 64, classes 10" in line
    assert not (tmp_path / "m.pt").exists()


def test_train_dense_takes_arch_or_model_not_both(tmp_path, monkeypatch):
    line = _error(tmp_path, monkeypatch, "train-dense", "--arch", "64-10", "--model", "gpt", "-o", "m.pt")
    assert "give --arch (an MLP) or --model, not both" in line


def test_train_dense_needs_arch_or_model(tmp_path, monkeypatch):
    line = _error(tmp_path, monkeypatch, "train-dense", "-o", "m.pt")
    assert "train-dense needs --arch (MLP widths, e.g. 64-32-10) or --model" in line


@pytest.mark.parametrize("option", ["--model-arg", "--data-arg"])
def test_train_dense_mlp_refuses_model_and_data_args(tmp_path, monkeypatch, option):
    line = _error(tmp_path, monkeypatch, "train-dense", "--arch", "64-10", option, "depth=2", "--epochs", "1",
                  "-o", "m.pt")
    assert "--data-arg and --model-arg go with --model" in line
    assert not (tmp_path / "m.pt").exists()


# bench.py


def test_bench_subsetsum_refuses_non_integer_extra_values(tmp_path, monkeypatch):
    line = _error(tmp_path, monkeypatch, "bench", "subsetsum", "--n", "12", "sixteen")
    assert "unexpected arguments ['sixteen']; --n takes integers" in line


@pytest.mark.parametrize("args", [["--batch", "0"], ["--n", "0"]])
def test_bench_subsetsum_refuses_non_positive_sizes(tmp_path, monkeypatch, args):
    line = _error(tmp_path, monkeypatch, "bench", "subsetsum", *args)
    assert "--batch and --n must be positive" in line


# experiment.py


def test_width_curves_with_nothing_to_do(tmp_path, monkeypatch):
    line = _error(tmp_path, monkeypatch, "experiment", "width-curves", "--no-digits", "--out", "wc.json")
    assert "nothing to do: pass --target or keep --digits" in line


def test_planted_mnist_needs_a_data_dir(tmp_path, monkeypatch):
    line = _error(tmp_path, monkeypatch, "experiment", "planted", "--tasks", "relu,mnist")
    assert "the mnist task needs --data-dir" in line


def test_pensia_exp2_needs_a_data_dir(tmp_path, monkeypatch):
    line = _error(tmp_path, monkeypatch, "experiment", "pensia-exp2", "--out", "e2.json")
    assert "pensia-exp2 needs --data-dir" in line


def test_variants_needs_a_data_dir_or_quick(tmp_path, monkeypatch):
    line = _error(tmp_path, monkeypatch, "experiment", "variants", "--out", "v.json")
    assert "variants" in line and "needs --data-dir" in line and "or --quick" in line


@pytest.mark.parametrize("option", ["--epochs", "--train-size"])
def test_variants_refuses_zero_epochs_or_train_size(tmp_path, monkeypatch, option):
    (tmp_path / "mnist").mkdir()
    line = _error(tmp_path, monkeypatch, "experiment", "variants", "--data-dir", "mnist", option, "0",
                  "--out", "v.json")
    assert option in line and "must be >= 1" in line
    assert not (tmp_path / "v.json").exists()
