"""Release hygiene: the licence pyproject declares, one version, type hints shipped, a wheel that works outside
the repository."""

from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

import slth

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
ROOT = Path(__file__).resolve().parents[1]


def test_the_declared_licence_ships_as_a_file():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == {"text": "MIT"}
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")


def test_the_version_is_written_once():
    """pyproject takes the version from slth.__version__; no other file of the package spells it out."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "slth.__version__"}
    assert importlib.metadata.version("slth") == slth.__version__
    spelled = [p for p in (ROOT / "src").rglob("*.py")
               if re.search(rf"['\"]{re.escape(slth.__version__)}['\"]", p.read_text()) and p.name != "__init__.py"]
    assert not spelled, spelled
    assert f"## [{slth.__version__}]" in (ROOT / "CHANGELOG.md").read_text()


@pytest.mark.slow
def test_the_wheel_installs_outside_the_repo_and_runs_the_demo(tmp_path):
    """``pip wheel`` of the checkout, installed into a new virtual environment in a folder outside the repository:
    the package imports from there (not from src/), ships py.typed and LICENSE, and ``slth demo`` runs. The new
    environment borrows the test environment's dependencies (torch, numba, ...) through a plain path entry, so
    nothing is downloaded and the editable install of src/ is not on its path."""
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(wheels), str(ROOT)], check=True, capture_output=True, timeout=300)
    (wheel,) = wheels.glob("slth-*.whl")
    assert wheel.name.startswith(f"slth-{slth.__version__}-py3-none-any")

    env_dir = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True, timeout=120)
    python = env_dir / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")  # a path, not a site dir
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
                    str(wheel)], check=True, capture_output=True, timeout=300)

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["NUMBA_CACHE_DIR"] = str(tmp_path / "numba-cache")
    where = subprocess.run([str(python), "-c", "import slth, pathlib; p = pathlib.Path(slth.__file__).parent; "
                            "print(p); print((p / 'py.typed').is_file())"],
                           cwd=tmp_path, env=env, check=True, capture_output=True, text=True).stdout.split()
    assert Path(where[0]).is_relative_to(site) and where[1] == "True", where
    assert list(site.glob("slth-*.dist-info/licenses/LICENSE"))

    demo = subprocess.run([str(env_dir / "bin" / "slth"), "demo", "--epochs", "5", "--out", str(tmp_path / "demo")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert demo.returncode == 0, demo.stdout[-2000:] + demo.stderr[-2000:]
    assert (tmp_path / "demo" / "ticket.slth").is_file() and (tmp_path / "demo" / "demo.json").is_file()
