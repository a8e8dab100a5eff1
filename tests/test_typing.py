"""The package ships its type hints (py.typed); the public API's modules and the README's calls type-check with
mypy (its settings and file list: pyproject.toml, [tool.mypy])."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip("mypy")


def _mypy(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mypy", "--no-error-summary", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=600)


def test_the_public_api_type_checks():
    done = _mypy()
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_wrong_call_of_the_public_api_is_caught(tmp_path):
    """The check means something: a call the signatures exclude fails it."""
    bad = tmp_path / "bad.py"
    bad.write_text("import slth\nfrom torch import nn\n\n"
                   "ticket: slth.Ticket = slth.construct(nn.Linear(2, 2), eps='x')\n"  # eps is a float
                   "n: int = ticket.digest()\n")  # a hex string
    done = _mypy(str(bad))  # the project's settings (mypy_path = src), this file only
    assert done.returncode == 1, done.stdout + done.stderr
    assert "bad.py:4" in done.stdout and "bad.py:5" in done.stdout, done.stdout
