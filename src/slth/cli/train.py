"""``slth train`` (dense or supermask, one loop) and ``slth train-dense`` (a bias-free MLP target to construct)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from .._names import METHOD_NAMES, MODEL_NAMES
from ._common import CommandError, ints, output_dir, output_file, threads as set_threads

DATA_HELP = "digits (embedded), mnist, fashion-mnist or cifar10"  # train-dense: in-memory data sets


def register(app: typer.Typer) -> None:
    app.command("train")(train_command)
    app.command("train-dense")(train_dense_cmd)


def train_command(
    method: str = typer.Option("edge-popup", help=" | ".join(("dense", *METHOD_NAMES))),
    model: str = typer.Option("fc", help=" | ".join(MODEL_NAMES)),
    data: str = typer.Option("digits", help="digits | mnist | fashion-mnist | cifar10 (in memory) | cifar100 | "
                                             "image-folder (streamed through DataLoader workers)"),
    data_dir: Optional[Path] = typer.Option(None, help="directory with the dataset files (not needed for digits)"),
    density: float = typer.Option(0.5, help="kept fraction of the Linear/Conv2d weights, in (0, 1]"),
    width: float = typer.Option(1.0, help="width multiplier of the hidden layers"),
    epochs: int = typer.Option(10),
    seed: int = typer.Option(0, help="seeds the weights, scores, data order and sampling"),
    out: Path = typer.Option(..., help="run directory: checkpoint.pt, metrics.json, ticket.slth"),
    resume: bool = typer.Option(False, help="continue from OUT/checkpoint.pt if it exists"),
    batch_size: int = typer.Option(128, help="global batch, split evenly over torchrun's processes"),
    lr: Optional[float] = typer.Option(None, help="peak learning rate of the cosine schedule (default per method)"),
    weight_decay: Optional[float] = typer.Option(None, help="default per method"),
    init: Optional[str] = typer.Option(None, help="kaiming-normal | scaled-kaiming-normal | signed-constant | "
                                                  "scaled-signed-constant (default: dense kaiming-normal, "
                                                  "else signed-constant)"),
    distribution: str = typer.Option("uniform", help="per-layer density: uniform | erk"),
    hidden: Optional[str] = typer.Option(None, help="fc hidden sizes, e.g. 300,100"),
    model_arg: Optional[List[str]] = typer.Option(
        None, "--model-arg", metavar="KEY=VALUE",
        help="a model constructor argument, repeatable: --model-arg patch=7 --model-arg depth=4 "
             "(vit: patch, dim, depth, heads, mlp_ratio)"),
    augment: Optional[bool] = typer.Option(None, help="random crop + flip (default: on for cifar10)"),
    rerand_period: int = typer.Option(300, help="iterand: steps between re-randomisations"),
    rerand_prob: float = typer.Option(0.1, help="iterand: probability a pruned weight is re-drawn"),
    score_l2: float = typer.Option(1e-4, help="gem-miner: lambda of the score regulariser"),
    device: str = typer.Option("auto", help="auto (CUDA when available) | cpu | cuda | cuda:N | mps"),
    precision: str = typer.Option("fp32", help="fp32 | bf16 | fp16 (autocast; fp16 needs a GPU)"),
    workers: int = typer.Option(0, help="DataLoader worker processes (streamed data sets)"),
    image_size: Optional[int] = typer.Option(None, help="image-folder: side of the square crops (default 224)"),
    threads: Optional[int] = typer.Option(None, help="torch CPU threads"),
    quiet: bool = typer.Option(False, help="no progress bars"),
) -> None:
    """Train a network densely or by learning a supermask over frozen random weights.

    Several processes: torchrun --nproc-per-node N -m slth train ... (DistributedDataParallel; gloo on the
    CPU, nccl on CUDA; rank 0 writes the files).
    """
    import os

    from ..train import TrainConfig, train

    config = TrainConfig(method=method, model=model, data=data, data_dir=None if data_dir is None else str(data_dir),
                         density=density, width=width, epochs=epochs, seed=seed, batch_size=batch_size, lr=lr,
                         weight_decay=weight_decay, init=init, distribution=distribution,
                         hidden=ints(hidden, "--hidden"), model_args=_pairs(model_arg or []), augment=augment,
                         rerand_period=rerand_period, rerand_prob=rerand_prob, score_l2=score_l2, device=device,
                         precision=precision, workers=workers, image_size=image_size)
    set_threads(threads)
    output_dir(out, "--out")
    metrics = train(config, out, resume=resume, quiet=quiet).metrics
    if os.environ.get("RANK", "0") not in ("", "0"):
        return  # one summary line per launch, from rank 0
    typer.echo(f"{method} {model} on {data}: test accuracy {100 * metrics['test_accuracy']:.2f}% at density "
               f"{metrics['density']:.4f} ({metrics['kept_params']:,} of {metrics['params']:,} weights kept), "
               f"{metrics['seconds']:.1f} s on {metrics['device']}"
               f"{'' if metrics['world_size'] == 1 else ' x ' + str(metrics['world_size'])} -> {out / 'metrics.json'}")


def _pairs(items: list[str]) -> tuple[tuple[str, str], ...]:
    """``["patch=7", "depth=4"]`` -> (("patch", "7"), ("depth", "4")); the model checks keys and values."""
    pairs = []
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise CommandError(f"--model-arg takes KEY=VALUE (e.g. patch=7), got {item!r}")
        pairs.append((key.strip(), value.strip()))
    return tuple(pairs)


def train_dense_cmd(
    arch: str = typer.Option(..., help="MLP widths, e.g. 784-500-10 (input and output must match the data)"),
    data: str = typer.Option("digits", help=DATA_HELP),
    data_dir: Optional[Path] = typer.Option(None, help="directory with the data set's files"),
    epochs: int = typer.Option(10),
    seed: int = typer.Option(0),
    lr: float = typer.Option(0.05),
    out: Path = typer.Option(..., "-o", "--out", help="state_dict file to write (e.g. model.pt)"),
) -> None:
    """Train a bias-free ReLU MLP target on unnormalised [0, 1] inputs (Pensia et al.'s Exp. 1 setting)."""
    import math

    from rich.console import Console

    from .._io import atomic_torch_save
    from ..data import load_dataset
    from ..construction.demo import train_target
    from ..construction.target import mlp

    output_file(out, "--out")
    widths = [int(x) for x in arch.split("-")] if all(p.isdigit() for p in arch.split("-")) else None
    if widths is None or len(widths) < 2:
        raise CommandError(f"--arch must look like 784-500-10, got {arch!r}")
    dataset = load_dataset(data, data_dir)
    if widths[0] != math.prod(dataset.input_shape) or widths[-1] != dataset.num_classes:
        raise CommandError(
            f"--arch {arch} does not fit {data}: inputs {math.prod(dataset.input_shape)}, "
            f"classes {dataset.num_classes}")
    target, metrics = train_target(data, data_dir, hidden=widths[1:-1], epochs=epochs, seed=seed, lr=lr, quiet=False)
    mlp(widths, bias=False).load_state_dict(target.state_dict())  # the file loads with --arch
    atomic_torch_save(out, target.state_dict())
    Console().print(f"test accuracy {metrics['test_accuracy']:.2%} after {epochs} epochs "
                    f"({metrics['seconds']:.1f} s); wrote {out}")
