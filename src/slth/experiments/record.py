"""What every evidence record carries: machine, date, command, commit; and the atomic write.

A record is one JSON object with an ``"experiment"`` key naming its renderer in :mod:`slth.report`.
:func:`run_experiment` is the one way ``slth experiment <name>`` runs any experiment.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
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

    def __enter__(self) -> Stopwatch:
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.wall = time.perf_counter() - self._wall
        self.cpu = time.process_time() - self._cpu


def settings_record(settings: Any) -> dict[str, Any]:
    """``dataclasses.asdict(settings)`` in JSON terms: tuples become lists, folders ``"DIR"`` (as in every
    record's command line: a local folder's name is not part of what ran), other paths their text."""

    def plain(value: Any) -> Any:
        if isinstance(value, Path):
            return "DIR" if value.is_dir() else str(value)
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return {k: plain(v) for k, v in dataclasses.asdict(settings).items()}


def run_experiment(name: str, settings: Any, out: str | os.PathLike, *, preset: str | None = None,
                   command: str | None = None, log: Callable[..., None] = print, quiet: bool = False) -> dict[str, Any]:
    """Run the registered experiment ``name`` at ``settings`` and write its record (atomically) to ``out``.

    The experiment's module computes the body (``execute(settings, out=..., log=..., quiet=...)``); the record is the
    header (settings = :func:`settings_record`, machine, date, command, commit, and the preset's name), the
    body and the wall seconds. An experiment whose registry entry names a ``record_file`` takes ``out`` as a
    folder (its own files go there) and writes the record inside it.
    """
    from . import EXPERIMENTS

    experiment = EXPERIMENTS[name]
    module = experiment.load()
    if not isinstance(settings, module.Settings):
        raise TypeError(f"{name} runs {module.__name__}.Settings, got {type(settings).__name__}")
    out = Path(out)
    path = out / experiment.record_file if experiment.record_file else out
    with Stopwatch() as sw:
        body = module.execute(settings, out=out, log=log, quiet=quiet)
    record = {**header(name, settings_record(settings), command=command), "preset": preset, **body,
              "wall_seconds": sw.wall}
    write_record(record, path)
    return record
