"""The ``slth`` command line: one module per command group, each registered here explicitly.

==============  ==============================================================
construct       ``construct``, ``evaluate``, ``demo``          (:mod:`.construct`)
train           ``train``, ``train-dense``         (:mod:`.train`, :mod:`.train_dense`)
bench           ``bench subsetsum``, ``bench supermask-step``  (:mod:`.bench`)
experiment      ``experiment <name>``, one per registered experiment (:mod:`.experiment`)
report          ``report``                                     (:mod:`.report`)
==============  ==============================================================

The modules import only typer at import time (torch and numba inside the commands), so ``slth --help``
stays fast. A mistake of the user's (a bad value, a missing file, a folder that cannot be written) ends
in one line ``error: ...`` and exit status 2; ``SLTH_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import os

import typer
from typer.core import TyperGroup

from . import bench, construct, experiment, report, train, train_dense
from ._common import USER_ERRORS


class _Root(TyperGroup):
    """The root group: a user's mistake, raised anywhere below it, becomes one line and exit status 2."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except USER_ERRORS as exc:
            if os.environ.get("SLTH_DEBUG"):
                raise
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None


def build_app() -> typer.Typer:
    app = typer.Typer(
        name="slth",
        cls=_Root,
        help="Strong lottery tickets: construct, learn by pruning, and measure.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        add_completion=False,
    )
    construct.register(app)
    train.register(app)
    train_dense.register(app)
    app.add_typer(bench.app, name="bench")
    app.add_typer(experiment.app, name="experiment")
    report.register(app)
    return app


app = build_app()


def main() -> None:
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
