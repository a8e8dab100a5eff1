"""The command line registers every feature's commands however it is started."""

import subprocess
import sys

import pytest


@pytest.mark.parametrize("module", ["slth", "slth.cli"])
def test_python_dash_m_lists_all_commands(module):
    out = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True,
                         env={"COLUMNS": "200", "PATH": ""}, check=True).stdout
    for command in ("construct", "evaluate", "train-dense", "demo", "train", "bench", "experiment", "report"):
        assert f" {command} " in out, (command, out)
