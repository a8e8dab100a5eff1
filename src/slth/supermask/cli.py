"""Commands ``slth train``, ``slth experiment width-sweep`` and ``slth bench supermask-step``.

torch and the rest are imported inside the commands so that ``slth --help`` stays fast.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from ..cli import app, bench_app, experiment_app


def _fail(exc: Exception) -> None:
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(2)


def _ints(text: Optional[str], what: str) -> Optional[tuple[int, ...]]:
    if text is None:
        return None
    try:
        return tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise typer.BadParameter(f"{what} must be comma-separated integers, got {text!r}") from None


@app.command("train")
def train_command(
    method: str = typer.Option("edge-popup", help="dense | edge-popup | bernoulli | biprop | iterand | gem-miner"),
    model: str = typer.Option("fc", help="fc | conv2 | conv4 | conv6 | lenet5 | resnet20"),
    data: str = typer.Option("digits", help="digits | mnist | fashion-mnist | cifar10"),
    data_dir: Optional[Path] = typer.Option(None, help="directory with the dataset files (not needed for digits)"),
    density: float = typer.Option(0.5, help="kept fraction of the Linear/Conv2d weights, in (0, 1]"),
    width: float = typer.Option(1.0, help="width multiplier of the hidden layers"),
    epochs: int = typer.Option(10),
    seed: int = typer.Option(0, help="seeds the weights, scores, data order and sampling"),
    out: Path = typer.Option(..., help="run directory: checkpoint.pt, metrics.json, ticket.slth"),
    resume: bool = typer.Option(False, help="continue from OUT/checkpoint.pt if it exists"),
    batch_size: int = typer.Option(128),
    lr: Optional[float] = typer.Option(None, help="peak learning rate of the cosine schedule (default per method)"),
    weight_decay: Optional[float] = typer.Option(None, help="default per method"),
    init: Optional[str] = typer.Option(None, help="kaiming-normal | scaled-kaiming-normal | signed-constant | "
                                                  "scaled-signed-constant (default: dense kaiming-normal, else signed-constant)"),
    distribution: str = typer.Option("uniform", help="per-layer density: uniform | erk"),
    hidden: Optional[str] = typer.Option(None, help="fc hidden sizes, e.g. 300,100"),
    augment: Optional[bool] = typer.Option(None, help="random crop + flip (default: on for cifar10)"),
    rerand_period: int = typer.Option(300, help="iterand: steps between re-randomisations"),
    rerand_prob: float = typer.Option(0.1, help="iterand: probability a pruned weight is re-drawn"),
    score_l2: float = typer.Option(1e-4, help="gem-miner: lambda of the score regulariser"),
    threads: Optional[int] = typer.Option(None, help="torch CPU threads"),
    quiet: bool = typer.Option(False, help="no progress bars"),
) -> None:
    """Train a network densely or by learning a supermask over frozen random weights."""
    import torch

    from ..train import TrainConfig, train

    if threads:
        torch.set_num_threads(threads)
    try:
        config = TrainConfig(method=method, model=model, data=data, data_dir=None if data_dir is None else str(data_dir),
                             density=density, width=width, epochs=epochs, seed=seed, batch_size=batch_size, lr=lr,
                             weight_decay=weight_decay, init=init, distribution=distribution,
                             hidden=_ints(hidden, "--hidden"), augment=augment, rerand_period=rerand_period,
                             rerand_prob=rerand_prob, score_l2=score_l2)
        metrics = train(config, out, resume=resume, quiet=quiet).metrics
    except (ValueError, FileNotFoundError, FileExistsError) as exc:
        _fail(exc)
    typer.echo(f"{method} {model} on {data}: test accuracy {100 * metrics['test_accuracy']:.2f}% at density "
               f"{metrics['density']:.4f} ({metrics['kept_params']:,} of {metrics['params']:,} weights kept), "
               f"{metrics['seconds']:.1f} s -> {out / 'metrics.json'}")


@experiment_app.command("width-sweep")
def width_sweep_command(
    model: str = typer.Option("fc"),
    data: str = typer.Option("digits"),
    data_dir: Optional[Path] = typer.Option(None),
    width: float = typer.Option(1.0, help="width w of the dense network"),
    multiples: str = typer.Option("1,2,4,8", help="supermask networks have width k*w for these k"),
    methods: str = typer.Option("edge-popup,bernoulli,biprop,iterand,gem-miner"),
    density: float = typer.Option(0.5, help="kept fraction of the supermask networks"),
    epochs: int = typer.Option(10),
    seed: int = typer.Option(0),
    hidden: Optional[str] = typer.Option(None, help="fc hidden sizes, e.g. 300,100"),
    out: Path = typer.Option(..., help="directory for the runs, width_sweep.{json,md,png}"),
    threads: Optional[int] = typer.Option(None),
    quiet: bool = typer.Option(False),
) -> None:
    """Dense at width w against each supermask method on random networks of width k*w, same data."""
    import torch

    from ..train import TrainConfig
    from .experiment import width_sweep

    if threads:
        torch.set_num_threads(threads)
    try:
        base = TrainConfig(method="dense", model=model, data=data, data_dir=None if data_dir is None else str(data_dir),
                           density=density, width=width, epochs=epochs, seed=seed, hidden=_ints(hidden, "--hidden"))
        method_list = [m.strip() for m in methods.split(",") if m.strip()]
        for m in method_list:
            TrainConfig(method=m, model=model, data=data, density=density)  # validates the names early
        command = "slth " + " ".join(sys.argv[1:])
        result = width_sweep(base, method_list, _ints(multiples, "--multiples") or (1,), out, quiet=quiet,
                             command=command)
    except (ValueError, FileNotFoundError) as exc:
        _fail(exc)
    from .experiment import table

    typer.echo(table(result))
    typer.echo(f"-> {out / 'width_sweep.png'}")


@bench_app.command("supermask-step")
def bench_supermask_step_command(
    model: str = typer.Option("fc"),
    method: str = typer.Option("edge-popup"),
    width: float = typer.Option(1.0),
    density: float = typer.Option(0.5),
    batch_size: int = typer.Option(128),
    steps: int = typer.Option(50),
    input_shape: str = typer.Option("1,28,28"),
    threads: Optional[int] = typer.Option(None),
) -> None:
    """Time a supermask training step against the dense step at the same width (one process)."""
    import torch

    from .bench import step_times

    if threads:
        torch.set_num_threads(threads)
    try:
        result = step_times(model, method, width=width, density=density, batch_size=batch_size, steps=steps,
                            input_shape=_ints(input_shape, "--input-shape"))
    except ValueError as exc:
        _fail(exc)
    result.pop("samples")
    typer.echo(json.dumps(result, indent=2))
