"""``slth experiment <name>``: one command per experiment of :data:`slth.experiments.EXPERIMENTS`, generated.

Each command's options are the fields of its module's ``Settings`` dataclass (:mod:`._settings`), plus the
options of the runner, which say how to run, not what to compute, so they are not part of the record's
settings: ``--out`` (the record; a folder for experiments that write several files), ``--quick`` (the
module's ``PRESETS["quick"]``: options given explicitly still win), ``--threads`` (torch threads) and
``--quiet``. A module is imported only when its command runs or shows its help (``slth experiment --help``
lists the registry's summaries), so the help stays fast. The command checks the settings
(``Settings.__post_init__``) and creates the output folder before the work starts;
:func:`slth.experiments.record.run_experiment` runs it and writes the record.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from typer.core import TyperCommand, TyperGroup

from ._common import CommandError, output_dir, output_file
from ._common import threads as set_threads

RESULTS = Path("docs/results")


def build_command(name: str):
    """The command of the registered experiment ``name``: its settings' options and the runner's."""
    import inspect

    from ..experiments import EXPERIMENTS
    from . import _settings

    experiment = EXPERIMENTS[name]
    module = experiment.load()
    cls = module.Settings
    default_out = None if experiment.record_file else RESULTS / (name.replace("-", "_") + ".json")
    quick = ", ".join(f"{k}={_settings.shown(v)}" for k, v in module.PRESETS["quick"].items())

    def command(**values) -> None:
        from rich.console import Console

        from ..experiments.record import run_experiment
        from ..experiments.settings import with_preset

        out, preset, threads, quiet = (values.pop("out"), "quick" if values.pop("quick") else None,
                                       values.pop("threads"), values.pop("quiet"))
        settings = with_preset(cls, preset, module.PRESETS, **_settings.given(cls, values))  # checks them
        if out is None:
            raise CommandError("--out is required (the folder for this experiment's runs and record)")
        if experiment.record_file:
            output_dir(out, "--out")
        else:
            output_file(out, "--out")
        set_threads(threads)
        console = Console(quiet=quiet)
        cmd = _settings.command_with_dir(sys.argv[1:], _settings.folder_options(cls))
        run_experiment(name, settings, out, preset=preset, command=cmd, log=console.print, quiet=quiet)
        console.print(f"{name} -> {out / experiment.record_file if experiment.record_file else out}")

    kw = inspect.Parameter.KEYWORD_ONLY
    runner = [
        inspect.Parameter("out", kw, annotation=Optional[Path], default=typer.Option(
            default_out, help="the record (JSON) to write" if default_out else "folder for the runs and the record")),
        inspect.Parameter("quick", kw, annotation=bool, default=typer.Option(
            False, "--quick", help=f"the tiny preset for tests: {quick}")),
        inspect.Parameter("threads", kw, annotation=Optional[int], default=typer.Option(
            experiment.threads, help="torch threads (how to run: not part of the settings)")),
        inspect.Parameter("quiet", kw, annotation=bool, default=typer.Option(False, "--quiet", help="no progress")),
    ]
    sub = typer.Typer(add_completion=False)
    doc = (module.__doc__ or experiment.summary).strip().split("\n\n")[0]
    sub.command(name, help=doc, short_help=experiment.summary)(
        _settings.with_signature(command, [*_settings.parameters(cls), *runner]))
    return typer.main.get_command(sub)


class _Experiments(TyperGroup):
    """The registered experiments as subcommands. Running one (or its --help) builds its command from its
    module; the listing of ``slth experiment --help`` uses the registry's one-line summaries and imports none."""

    def list_commands(self, ctx):
        from ..experiments import EXPERIMENTS

        return [e.name for e in EXPERIMENTS.values() if e.command]

    def get_command(self, ctx, name):  # the listing: a summary only
        from ..experiments import EXPERIMENTS

        if name not in EXPERIMENTS or not EXPERIMENTS[name].command:
            return None
        return TyperCommand(name, help=EXPERIMENTS[name].summary, short_help=EXPERIMENTS[name].summary)

    def resolve_command(self, ctx, args):  # running it: the whole command
        from ..experiments import EXPERIMENTS

        if args and args[0] in EXPERIMENTS and EXPERIMENTS[args[0]].command:
            return args[0], build_command(args[0]), args[1:]
        return super().resolve_command(ctx, args)


app = typer.Typer(cls=_Experiments, help="Experiments reproducing the papers' claims (records for slth report).",
                  no_args_is_help=True)
