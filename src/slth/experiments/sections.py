"""What the experiments' report sections are made of: the record and context types, markdown helpers
(provenance line, percentages, tables) and matplotlib helpers (headless backend, deterministic atomic PNGs).

Each experiment module renders its own section with these; :mod:`slth.report` (above the experiments)
loads the records, hands each to its experiment's renderer and writes docs/results.md.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._io import atomic_write


class ReportError(ValueError):
    """A record that cannot be rendered, or a report that would link a missing file."""


@dataclass
class Record:
    path: Path
    kind: str
    data: Any  # the parsed JSON, or the text of a markdown fragment


@dataclass
class Context:
    """What a renderer needs besides its record: where to put plots and how to link them."""

    results_dir: Path
    out_dir: Path
    written: list[Path] = field(default_factory=list)
    check_freshness: bool = True  # mark records whose code changed since their commit (needs git)
    checker: Callable[[str | None, tuple[str, ...]], Any] | None = None  # (commit, depends_on) -> Freshness
    checked: list = field(default_factory=list)  # one Freshness per checked record, in report order
    summary: list[tuple[str, str, str]] = field(default_factory=list)  # (claim, paper, ours) for the top table

    def plot_path(self, record: Record, suffix: str = "") -> Path:
        path = self.results_dir / f"{record.path.stem}{suffix}.png"
        self.written.append(path)
        return path

    def link(self, path: Path) -> str:
        return Path(os.path.relpath(path, self.out_dir)).as_posix()

    def image(self, path: Path, alt: str) -> str:
        return f"![{alt}]({self.link(path)})"

    def freshness(self, data: dict, depends_on: tuple[str, ...]):
        """Check one record's commit against the code it depends on (``checker``, which ``slth report``
        supplies: :func:`slth.report.freshness.check`); None when off."""
        if not self.check_freshness or self.checker is None:
            return None
        result = self.checker(data.get("git_commit"), depends_on)
        self.checked.append(result)
        return result


def provenance(data: dict[str, Any]) -> str:
    bits = [f"machine: {data.get('machine', 'not recorded')}"]
    if data.get("machine_note"):
        bits.append(data["machine_note"])
    bits.append(f"date: {data.get('date', 'not recorded')}")
    if isinstance(data.get("wall_seconds"), (int, float)):
        bits.append(f"whole run {data['wall_seconds'] / 60:.1f} min wall")
    if data.get("git_commit"):
        bits.append(f"commit {data['git_commit']}")
    cmd = data.get("command")
    return "*" + "; ".join(bits) + ".*" + (f" Command: `{cmd}`" if cmd else "")


def pct(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{100 * x:.{digits}f}"


def table(header: list[str], rows: list[list[Any]], align: str | None = None) -> str:
    align = align or "|" + "|".join("---" for _ in header) + "|"
    lines = ["| " + " | ".join(header) + " |", align]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, path: str | Path) -> Path:
    """Write ``fig`` as PNG atomically; no software/date metadata, so equal records give equal bytes."""
    plt = pyplot()
    path = Path(path)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, metadata={"Software": None}))
    plt.close(fig)
    return path


def plain_log_ticks(axis) -> None:
    """Major ticks of a log axis as plain numbers (1, 10, 100), no minor labels (they collide)."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())
