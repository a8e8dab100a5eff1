"""First runs: numba compilation is reported apart from the work, and a read-only install still works."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch

import slth
from slth import construct
from slth._jit import warm_up
from slth.subsetsum import compile_kernels

SCRIPT = """
import torch
from slth import construct
torch.manual_seed(0)
net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
print(construct(net, eps=0.05, nonnegative_input=True).digest())
"""


def _net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))


def test_stats_separate_compile_seconds_from_the_work_and_the_digest_ignores_both():
    warm_up(compile_kernels)
    a = construct(_net(), eps=0.05, nonnegative_input=True)
    assert a.stats["compile_seconds"] == 0.0  # already warm in this process
    assert a.stats["seconds"] > 0
    b = construct(_net(), eps=0.05, nonnegative_input=True)
    b.stats["compile_seconds"] = 12.5
    assert a.digest() == b.digest()
    assert construct(_net(), eps=0.05, nonnegative_input=True, method="malach").stats["compile_seconds"] == 0.0


def test_construct_works_where_no_numba_cache_can_be_written(tmp_path):
    """A read-only install: no writable NUMBA_CACHE_DIR, ``__pycache__`` or user cache directory. Root can
    write into a chmod-ed directory, so every location is a path *under a regular file* (mkdir fails).
    numba alone raises RuntimeError at import ("no locator available"); slth falls back to the temp dir."""
    pkg = tmp_path / "site"
    shutil.copytree(Path(slth.__file__).parent, pkg / "slth", ignore=shutil.ignore_patterns("__pycache__"))
    for d in [pkg / "slth", *(p for p in (pkg / "slth").rglob("*") if p.is_dir())]:
        (d / "__pycache__").write_text("")  # a file where numba (and Python) would create the directory
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = dict(os.environ, PYTHONPATH=str(pkg), PYTHONDONTWRITEBYTECODE="1", TMPDIR=str(tmp),
               NUMBA_CACHE_DIR=str(blocker / "numba"), HOME=str(blocker / "home"),
               XDG_CACHE_HOME=str(blocker / "xdg"))
    run = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    assert "numba cannot write its cache" in run.stderr
    assert any(tmp.glob("slth-numba-cache-*/*/*.nbi"))  # cached after all, in the fallback directory
    assert run.stdout.strip().splitlines()[-1] == construct(_net(), eps=0.05, nonnegative_input=True).digest()


def test_warm_up_takes_compile_functions_only():
    import pytest

    with pytest.raises(TypeError, match="compile functions"):
        warm_up("subsetsum")
