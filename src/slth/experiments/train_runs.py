"""Report section for one ``slth train`` run (its ``metrics.json`` copied into docs/results/)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..report.core import Context, Record


def render(record: Record, ctx: Context) -> str:
    """The docs/results.md section of one training run."""
    from ..report.format import pct, table

    d = record.data
    rows = [[d["method"], d["model"], d["data"], f"{d['width']:g}", f"{d['density']:.4f}", f"{d['kept_params']:,}",
             f"{d['params']:,}", d["epochs_done"], pct(d["test_accuracy"]), pct(d["best_test_accuracy"]),
             f"{d['seconds']:.0f}"]]
    return "\n".join([f"## Training run `{record.path.name}`\n",
                      table(["method", "model", "data", "width", "density", "kept", "params", "epochs",
                             "test acc. %", "best %", "seconds"], rows), "",
                      f"*machine: {d.get('machine', 'not recorded')}; finished: {d['finished']}.*"])
