"""What every evidence record carries: machine, date, command, commit; and the atomic write.

A record is one JSON object with an ``"experiment"`` key naming its renderer in :mod:`slth.report`.
"""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .._io import atomic_write_json


def machine() -> str:
    """CPU model, cores visible, torch threads and version; the VMs here are shared, so timings are noisy."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, torch {torch.__version__}, "
            f"{platform.system()}")


def load_note() -> str:
    """The machine's measured load when the record is written (the VMs here are shared)."""
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "load average unavailable; wall times on a shared machine are upper bounds"
    return (f"load average {one:.1f} / {five:.1f} / {fifteen:.1f} (1 / 5 / 15 min) on {os.cpu_count()} cores when "
            "written; the VM is shared, so wall times are upper bounds")


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def command_line() -> str:
    return "slth " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def header(experiment: str, settings: dict[str, Any], *, command: str | None = None) -> dict[str, Any]:
    return {
        "experiment": experiment,
        "settings": settings,
        "machine": machine(),
        "machine_note": load_note(),
        "date": time.strftime("%Y-%m-%d"),
        "command": command if command is not None else command_line(),
        "git_commit": git_commit(),
    }


def write_record(record: dict[str, Any], path: str | os.PathLike) -> Path:
    if "experiment" not in record:
        raise ValueError("a record needs an 'experiment' key naming its renderer")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_json(path, record)


class Stopwatch:
    """Wall and CPU seconds of a block: ``with Stopwatch() as sw: ...; sw.wall, sw.cpu``."""

    def __enter__(self) -> "Stopwatch":
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.wall = time.perf_counter() - self._wall
        self.cpu = time.process_time() - self._cpu
