"""Matplotlib helpers: headless backend and deterministic, atomic PNG writes."""

from __future__ import annotations

from pathlib import Path


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, path: str | Path) -> Path:
    """Write ``fig`` as PNG atomically; no software/date metadata, so equal records give equal bytes."""
    from .._io import atomic_write

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
