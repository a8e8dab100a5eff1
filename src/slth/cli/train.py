"""``slth train`` (dense or supermask, one loop) and ``slth train-dense`` (a dense target to construct: a bias-free
MLP, or a registry model such as vit or gpt)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from .._names import METHOD_NAMES, MODEL_NAMES
from ._common import CommandError, ints, output_dir, output_file, threads as set_threads

DATA_HELP = ("digits (embedded), mnist, fashion-mnist, cifar10 or pystdlib-chars (the Python standard library's "
             "source, characters)")  # train-dense: in-memory data sets
DATA_ARG_HELP = ("a data set option, repeatable: --data-arg context=32 (pystdlib-chars: context, max_bytes, "
                 "test_every)")


def register(app: typer.Typer) -> None:
    app.command("train")(_with_method_options(train_command))
    app.command("train-dense")(train_dense_cmd)


def _with_method_options(command):
    """``command`` with one more option per field of :class:`slth._hparams.MethodSettings` (the supermask
    methods' own settings: their defaults and help texts are the fields'), passed on as ``method_settings``: only
    those the user gave, so TrainConfig's defaults (MethodSettings's) apply to the rest."""
    import inspect
    import typing

    from .._hparams import MethodSettings
    from ._settings import given, parameters

    hints = typing.get_type_hints(command)  # real types, not this module's annotation strings
    own = [p.replace(annotation=hints[p.name]) for p in inspect.signature(command).parameters.values()
           if p.name != "method_settings"]
    extra = parameters(MethodSettings, panel="Supermask method settings")

    def wrapped(**values):
        method_values = {p.name: values.pop(p.name) for p in extra}
        return command(**values, method_settings=given(MethodSettings, method_values))

    wrapped.__doc__ = command.__doc__
    wrapped.__signature__ = inspect.Signature([*own, *extra])
    wrapped.__annotations__ = {p.name: p.annotation for p in (*own, *extra)}
    return wrapped


def train_command(
    method: str = typer.Option("edge-popup", help=" | ".join(("dense", *METHOD_NAMES))),
    model: str = typer.Option("fc", help=" | ".join(MODEL_NAMES)),
    data: str = typer.Option("digits", help="digits | mnist | fashion-mnist | cifar10 | pystdlib-chars (in memory) "
                                             "| cifar100 | image-folder (streamed through DataLoader workers)"),
    data_arg: Optional[List[str]] = typer.Option(None, "--data-arg", metavar="KEY=VALUE", help=DATA_ARG_HELP),
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
             "(vit: patch, dim, depth, heads, mlp_ratio; gpt: dim, depth, heads, mlp_ratio, tie)"),
    augment: Optional[bool] = typer.Option(None, help="random crop + flip (default: on for cifar10)"),
    device: str = typer.Option("auto", help="auto (CUDA when available) | cpu | cuda | cuda:N | mps"),
    precision: str = typer.Option("fp32", help="fp32 | bf16 | fp16 (autocast; fp16 needs a GPU)"),
    workers: int = typer.Option(0, help="DataLoader worker processes (streamed data sets)"),
    image_size: Optional[int] = typer.Option(None, help="image-folder: side of the square crops (default 224)"),
    threads: Optional[int] = typer.Option(None, help="torch CPU threads"),
    quiet: bool = typer.Option(False, help="no progress bars"),
    method_settings: Optional[dict] = None,
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
                         hidden=ints(hidden, "--hidden"), model_args=_pairs(model_arg or []),
                         data_args=_pairs(data_arg or [], "--data-arg"), augment=augment,
                         device=device, precision=precision, workers=workers, image_size=image_size,
                         **(method_settings or {}))
    set_threads(threads)
    output_dir(out, "--out")
    metrics = train(config, out, resume=resume, quiet=quiet).metrics
    if os.environ.get("RANK", "0") not in ("", "0"):
        return  # one summary line per launch, from rank 0
    perplexity = "" if metrics.get("test_perplexity") is None else f", perplexity {metrics['test_perplexity']:.3f}"
    typer.echo(f"{method} {model} on {data}: test accuracy {100 * metrics['test_accuracy']:.2f}%{perplexity} at "
               f"density {metrics['density']:.4f} ({metrics['kept_params']:,} of {metrics['params']:,} weights kept), "
               f"{metrics['seconds']:.1f} s on {metrics['device']}"
               f"{'' if metrics['world_size'] == 1 else ' x ' + str(metrics['world_size'])} -> {out / 'metrics.json'}")


def _pairs(items: list[str], option: str = "--model-arg") -> tuple[tuple[str, str], ...]:
    """``["patch=7", "depth=4"]`` -> (("patch", "7"), ("depth", "4")); the model (or data set) checks keys and
    values."""
    pairs = []
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise CommandError(f"{option} takes KEY=VALUE (e.g. {'context=32' if 'data' in option else 'patch=7'}), "
                               f"got {item!r}")
        pairs.append((key.strip(), value.strip()))
    return tuple(pairs)


def train_dense_cmd(
    arch: Optional[str] = typer.Option(None, help="MLP widths, e.g. 784-500-10 (input and output must match the "
                                                  "data); the target when --model is not given"),
    model: Optional[str] = typer.Option(None, help="a registry model instead of the MLP: " + " | ".join(MODEL_NAMES)),
    data: str = typer.Option("digits", help=DATA_HELP),
    data_dir: Optional[Path] = typer.Option(None, help="directory with the data set's files"),
    data_arg: Optional[List[str]] = typer.Option(None, "--data-arg", metavar="KEY=VALUE", help=DATA_ARG_HELP),
    model_arg: Optional[List[str]] = typer.Option(None, "--model-arg", metavar="KEY=VALUE",
                                                  help="--model: a constructor argument, repeatable (depth=2)"),
    width: float = typer.Option(1.0, help="--model: width multiplier"),
    epochs: int = typer.Option(10),
    seed: int = typer.Option(0),
    lr: Optional[float] = typer.Option(None, help="learning rate (default: 0.05 for the MLP, slth train's dense "
                                                  "default for --model)"),
    batch_size: int = typer.Option(128, help="--model: batch size"),
    device: str = typer.Option("auto", help="--model: auto | cpu | cuda | cuda:N | mps"),
    threads: Optional[int] = typer.Option(None, help="torch CPU threads"),
    out: Path = typer.Option(..., "-o", "--out", help="state_dict file to write (e.g. model.pt)"),
) -> None:
    """Train a dense target to construct from.

    Without --model: a bias-free ReLU MLP (--arch) on unnormalised [0, 1] inputs (Pensia et al.'s Exp. 1
    setting); the file is its state_dict. With --model (vit, gpt, ...): the registry model, trained by slth
    train's loop (--method dense); the file holds {"state_dict", "model", "model_kwargs", "data", "data_args",
    "data_info", "metrics"}, and ``slth construct FILE --arch MODEL --input-shape ... --classes ...`` loads its
    state_dict (when the model's other constructor arguments are its defaults).
    """
    set_threads(threads)
    output_file(out, "--out")
    if model is not None:
        if arch is not None:
            raise CommandError("give --arch (an MLP) or --model, not both")
        return _train_dense_model(model, data, data_dir, _pairs(data_arg or [], "--data-arg"),
                                  _pairs(model_arg or []), width, epochs, seed, lr, batch_size, device, out)
    if arch is None:
        raise CommandError("train-dense needs --arch (MLP widths, e.g. 64-32-10) or --model (e.g. gpt)")
    if data_arg or model_arg:
        raise CommandError("--data-arg and --model-arg go with --model")
    _train_dense_mlp(arch, data, data_dir, epochs, seed, 0.05 if lr is None else lr, out)


def _train_dense_model(model, data, data_dir, data_args, model_args, width, epochs, seed, lr, batch_size, device,
                       out) -> None:
    from rich.console import Console

    from .._io import atomic_torch_save
    from ..train import TrainConfig, train

    config = TrainConfig(method="dense", model=model, data=data,
                         data_dir=None if data_dir is None else str(data_dir), data_args=data_args,
                         model_args=model_args, width=width, epochs=epochs, seed=seed, lr=lr,
                         batch_size=batch_size, device=device)
    run = train(config, None)
    net = run.model.cpu()
    spec = net.slth_spec
    metrics = {k: run.metrics.get(k) for k in ("test_accuracy", "test_perplexity", "seconds", "machine", "device")}
    atomic_torch_save(out, {"state_dict": net.state_dict(), "model": model, "model_kwargs": spec["model_kwargs"],
                            "seed": seed, "data": data, "data_args": dict(config.data_args),
                            "data_info": run.metrics.get("data_info", {}), "metrics": metrics})
    perplexity = "" if metrics["test_perplexity"] is None else f", perplexity {metrics['test_perplexity']:.3f}"
    kwargs = spec["model_kwargs"]
    shape = ",".join(str(v) for v in kwargs["input_shape"])
    hint = (f"construct: --arch {model} --input-shape {shape} --classes {kwargs['num_classes']}"
            + ("" if width == 1.0 else f" --width {width:g}"))
    Console().print(f"{model} on {data}: test accuracy {metrics['test_accuracy']:.2%}{perplexity} after {epochs} "
                    f"epochs ({metrics['seconds']:.1f} s); wrote {out} ({hint})")


def _train_dense_mlp(arch, data, data_dir, epochs, seed, lr, out) -> None:
    import math

    from rich.console import Console

    from .._io import atomic_torch_save
    from ..data import load_dataset
    from ..train.target import train_target
    from ..construction.target import mlp

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
