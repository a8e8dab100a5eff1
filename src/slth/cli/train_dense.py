"""``slth train-dense``: a dense target to construct from (a bias-free MLP, or a registry model such as vit or
gpt)."""

from __future__ import annotations

from pathlib import Path

import typer

from .._names import MODEL_NAMES
from ._common import CommandError, output_file
from ._common import threads as set_threads
from ._settings import pairs

DATA_HELP = ("digits (embedded), mnist, fashion-mnist, cifar10 or pystdlib-chars (the Python standard library's "
             "source, characters)")  # in-memory data sets
DATA_ARG_HELP = ("a data set option, repeatable: --data-arg context=32 (pystdlib-chars: context, max_bytes, "
                 "test_every)")


def register(app: typer.Typer) -> None:
    app.command("train-dense")(train_dense_cmd)


def train_dense_cmd(
    arch: str | None = typer.Option(None, help="MLP widths, e.g. 784-500-10 (input and output must match the "
                                                  "data); the target when --model is not given"),
    model: str | None = typer.Option(None, help="a registry model instead of the MLP: " + " | ".join(MODEL_NAMES)),
    data: str = typer.Option("digits", help=DATA_HELP),
    data_dir: Path | None = typer.Option(None, help="directory with the data set's files"),
    data_arg: list[str] | None = typer.Option(None, "--data-arg", metavar="KEY=VALUE", help=DATA_ARG_HELP),
    model_arg: list[str] | None = typer.Option(None, "--model-arg", metavar="KEY=VALUE",
                                                  help="--model: a constructor argument, repeatable (depth=2)"),
    width: float = typer.Option(1.0, help="--model: width multiplier"),
    epochs: int = typer.Option(10),
    seed: int = typer.Option(0),
    lr: float | None = typer.Option(None, help="learning rate (default: 0.05 for the MLP, slth train's dense "
                                                  "default for --model)"),
    batch_size: int = typer.Option(128, help="--model: batch size"),
    device: str = typer.Option("auto", help="--model: auto | cpu | cuda | cuda:N | mps"),
    threads: int | None = typer.Option(None, help="torch CPU threads"),
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
        return _train_dense_model(model, data, data_dir, pairs(data_arg or [], "--data-arg"),
                                  pairs(model_arg or [], "--model-arg"), width, epochs, seed, lr, batch_size, device,
                                  out)
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
    from ..construction.target import mlp
    from ..data import load_dataset
    from ..train.target import train_target

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
