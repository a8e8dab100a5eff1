"""``slth report`` (and, through one import, the evidence experiments ``slth experiment ...``)."""

from __future__ import annotations

from pathlib import Path

import typer

from ..cli import app
from ..experiments import cli as _experiments_cli  # noqa: F401  (the experiments write what `report` renders)


@app.command("report")
def report_command(
    results: Path = typer.Option(Path("docs/results"), help="directory of the run records (*.json) and fragments (*.md)"),
    out: Path = typer.Option(Path("docs/results.md"), help="the markdown file to (re)generate"),
) -> None:
    """Regenerate docs/results.md (tables beside the papers' numbers, PNG plots) from the recorded runs."""
    from .core import ReportError, generate, load_records

    try:
        path = generate(results, out)
    except (ReportError, FileNotFoundError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2)
    typer.echo(f"rendered {len(load_records(results))} records -> {path}")
