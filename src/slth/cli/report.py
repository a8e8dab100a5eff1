"""``slth report``: regenerate docs/results.md from the run records in docs/results/."""

from __future__ import annotations

from pathlib import Path

import typer

from ._common import existing_dir, output_file


def register(app: typer.Typer) -> None:
    app.command("report")(report_command)


def report_command(
    results: Path = typer.Option(Path("docs/results"),
                                 help="directory of the run records (*.json) and fragments (*.md)"),
    out: Path = typer.Option(Path("docs/results.md"), help="the markdown file to (re)generate"),
) -> None:
    """Regenerate docs/results.md (tables beside the papers' numbers, PNG plots) from the recorded runs."""
    from ..experiments import EXPERIMENTS
    from ..report.core import generate, load_records

    existing_dir(results, "--results")
    output_file(out, "--out")
    path = generate(results, out, experiments=EXPERIMENTS)
    typer.echo(f"rendered {len(load_records(results))} records -> {path}")
