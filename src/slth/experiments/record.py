"""What every evidence record carries: machine, date, command, commit; and the atomic write.

A record is one JSON object with an ``"experiment"`` key naming its renderer in :mod:`slth.report`.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from .._io import atomic_write_json
from ..provenance import command_line, git_commit, load_note, machine


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
