"""The ``slth`` command line. Each command imports its machinery lazily to keep start-up fast.

Commands live in the module of the feature they drive and are registered here, one line each.
"""

from __future__ import annotations

import typer

app = typer.Typer(
    name="slth",
    help="Strong lottery tickets: construct, learn by pruning, and measure.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)
bench_app = typer.Typer(help="Benchmarks (results go to docs/benchmarks.md).", no_args_is_help=True)
experiment_app = typer.Typer(help="Experiments reproducing the papers' claims.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")
app.add_typer(experiment_app, name="experiment")


def _register() -> None:
    # one import per feature; each module adds its commands to the apps above
    from .subsetsum import cli as _subsetsum_cli  # noqa: F401
    from .supermask import cli as _supermask_cli  # noqa: F401
    from .construct import cli as _construct_cli  # noqa: F401
    from .report import cli as _report_cli  # noqa: F401


def main() -> None:
    # register on, and run, the app of the importable module ``slth.cli``: under ``python -m slth.cli``
    # this file is also ``__main__``, whose ``app`` the feature modules never see
    from slth import cli

    cli._register()
    cli.app()


if __name__ == "__main__":  # pragma: no cover
    main()
