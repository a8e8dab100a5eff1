"""``slth train`` (dense or supermask, one loop): its options are generated from TrainConfig's fields
(:class:`slth._hparams.TrainSettings`). ``slth train-dense`` lives in :mod:`.train_dense`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ._common import output_dir
from ._common import threads as set_threads


def register(app: typer.Typer) -> None:
    app.command("train")(train_command())


def train_command():
    """``slth train``: one option per field of :class:`slth._hparams.TrainSettings` (TrainConfig's fields; the
    supermask methods' own settings in their own help panel), plus how to run: --out, --resume, --threads,
    --quiet. Only the options the user gives are passed to TrainConfig, so its defaults apply to the rest."""
    import inspect

    from .._hparams import METHOD_FIELDS, TrainSettings
    from ._settings import given, parameters, with_signature

    def command(**values) -> None:
        """Train a network densely or by learning a supermask over frozen random weights.

        Several processes: torchrun --nproc-per-node N -m slth train ... (DistributedDataParallel; gloo on the
        CPU, nccl on CUDA; rank 0 writes the files).
        """
        import os

        from ..train import TrainConfig, train

        out, resume, threads, quiet = (values.pop(k) for k in ("out", "resume", "threads", "quiet"))
        config = TrainConfig(**given(TrainSettings, values))
        set_threads(threads)
        output_dir(out, "--out")
        m = train(config, out, resume=resume, quiet=quiet).metrics
        if os.environ.get("RANK", "0") not in ("", "0"):
            return  # one summary line per launch, from rank 0
        perplexity = "" if m.get("test_perplexity") is None else f", perplexity {m['test_perplexity']:.3f}"
        typer.echo(f"{config.method} {config.model} on {config.data}: test accuracy {100 * m['test_accuracy']:.2f}%"
                   f"{perplexity} at density {m['density']:.4f} ({m['kept_params']:,} of {m['params']:,} weights "
                   f"kept), {m['seconds']:.1f} s on {m['device']}"
                   f"{'' if m['world_size'] == 1 else ' x ' + str(m['world_size'])} -> {out / 'metrics.json'}")

    settings = parameters(TrainSettings)
    for p in settings:
        if p.name in METHOD_FIELDS:
            p.default.rich_help_panel = "Supermask method settings"
    kw = inspect.Parameter.KEYWORD_ONLY
    runner = [
        inspect.Parameter("out", kw, annotation=Path, default=typer.Option(
            ..., help="run directory: checkpoint.pt, metrics.json, ticket.slth")),
        inspect.Parameter("resume", kw, annotation=bool, default=typer.Option(
            False, help="continue from OUT/checkpoint.pt if it exists")),
        inspect.Parameter("threads", kw, annotation=Optional[int],
                          default=typer.Option(None, help="torch CPU threads")),
        inspect.Parameter("quiet", kw, annotation=bool, default=typer.Option(False, help="no progress bars")),
    ]
    return with_signature(command, [*settings, *runner])
