"""CLI: ``slth construct``, ``slth evaluate``, ``slth train-dense``, ``slth demo``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..cli import app, experiment_app

DATA_HELP = "digits (embedded), mnist, fashion-mnist or cifar10"


@app.command("construct")
def construct_cmd(
    model: Path = typer.Argument(..., help="target: a state_dict file (with --arch) or a TorchScript file (nn.Sequential)"),
    out: Path = typer.Option(..., "-o", "--out", help="ticket file to write (.slth)"),
    arch: Optional[str] = typer.Option(None, help="state_dict target: MLP widths (784-500-10) or a name: lenet5, conv2, conv4, conv6, resnet20, resnet18"),
    eps: float = typer.Option(0.01, help="per-weight tolerance"),
    seed: int = typer.Option(0, help="seed of the random network"),
    method: str = typer.Option("pensia", help="pensia (SubsetSum, log width) or malach (single pick, poly width)"),
    n: Optional[int] = typer.Option(None, help="random values per weight (default: chosen per layer from eps)"),
    nonnegative_input: bool = typer.Option(False, "--nonnegative-input", help="inputs are >= 0 (images in [0, 1])"),
    dense_subsets: bool = typer.Option(False, "--min-error", help="minimal-error subsets instead of sparsest within eps"),
    input_shape: Optional[str] = typer.Option(None, help="input shape C,H,W of a named --arch (e.g. 1,28,28)"),
    classes: Optional[int] = typer.Option(None, help="number of classes of a named --arch"),
    width: float = typer.Option(1.0, help="width multiplier of a named --arch"),
    workers: int = typer.Option(1, help="worker processes (local) or Ray tasks in flight / 2 (ray)"),
    backend: str = typer.Option("local", help="local (processes on this machine) or ray (a Ray cluster)"),
    address: Optional[str] = typer.Option(None, help="Ray cluster address (ray backend; default: start a local one)"),
    workdir: Optional[Path] = typer.Option(None, help="checkpoint directory: one file per finished chunk"),
    resume: bool = typer.Option(False, "--resume", help="reuse the finished chunks in --workdir"),
    chunk_instances: int = typer.Option(1 << 18, help="SubsetSum instances per chunk (bounds memory)"),
    device: Optional[str] = typer.Option(None, help="PyTorch device for the --min-error search, e.g. cuda"),
) -> None:
    """Turn a trained ReLU network (MLP, CNN, ResNet) into a ticket: seed + masks over a random network."""
    from rich.console import Console

    from . import construct
    from .target import load_target

    console = Console()
    shape = None
    if input_shape is not None:
        try:
            shape = tuple(int(v) for v in input_shape.replace("x", ",").split(","))
        except ValueError:
            raise typer.BadParameter(f"--input-shape must look like 1,28,28, got {input_shape!r}") from None
    if resume and workdir is None:
        raise typer.BadParameter("--resume needs --workdir")
    target = load_target(model, arch, input_shape=shape, num_classes=classes, width=width)
    ticket = construct(target, eps, seed=seed, method=method, n=n, nonnegative_input=nonnegative_input,
                       sparse=not dense_subsets, progress=True, workers=workers, backend=backend,
                       address=address, workdir=None if workdir is None else str(workdir), resume=resume,
                       chunk_instances=chunk_instances, device=device)
    path = ticket.save(out)
    size = path.stat().st_size
    run = ticket.run
    console.print(f"chunks: {run['chunks']} ({run['reused']} reused from the work dir, {run['computed']} computed; "
                  f"{run['workers']} worker(s), {run['backend']} backend)")
    console.print(f"ticket digest {ticket.digest()}")
    console.print(ticket.summary())
    console.print(f"wrote {path} ({size:,} bytes, {8 * size / ticket.stats['target_params']:.2f} bits per target weight)")


@app.command("evaluate")
def evaluate_cmd(
    ticket_path: Path = typer.Argument(..., metavar="TICKET", help="a constructed ticket (.slth)"),
    data: str = typer.Option("digits", help=DATA_HELP),
    data_dir: Optional[Path] = typer.Option(None, help="directory with the data set's files"),
    target: Optional[Path] = typer.Option(None, help="the target model, to measure agreement and the bound"),
    arch: Optional[str] = typer.Option(None, help="MLP widths or architecture name (lenet5, resnet20, ...) of a state_dict target"),
    width: float = typer.Option(1.0, help="width multiplier of a named --arch"),
    box: Optional[tuple[float, float]] = typer.Option(
        None, help="input box LO HI for the certified bound (default [0, 1] for nonnegative-input tickets, else [-1, 1])"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="write the report as JSON"),
) -> None:
    """Accuracy of a ticket on a test set; with --target also logit difference, top-1 agreement, certified bound."""
    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    from .._io import atomic_write_json
    from ..data import load_dataset
    from .report import certified_bound, measure, weight_errors
    from .target import load_target
    from .ticket import Ticket

    console = Console()
    ticket = Ticket.load(ticket_path)
    dataset = load_dataset(data, data_dir)
    module = ticket.to_module()
    reference = module
    if target is not None:
        reference = load_target(target, arch, input_shape=dataset.input_shape, num_classes=dataset.num_classes,
                                width=width)
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task(f"evaluating on {data} test set", total=len(dataset.x_test))
        result = measure(module, reference, dataset.x_test, dataset.y_test,
                         progress=lambda k: bar.advance(task, k))
    report = {"ticket": str(ticket_path), "data": data, "stats": ticket.stats, "ticket_accuracy": result["ticket_accuracy"]}
    table = Table(title=f"{ticket_path.name} on {data} ({result['examples']:,} test examples)")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("ticket accuracy", f"{result['ticket_accuracy']:.2%}")
    if target is not None:
        report.update(result)
        lo, hi = box if box is not None else (None, None)
        report["certified_bound"] = float(certified_bound(ticket, reference, lo, hi,
                                                          input_shape=dataset.input_shape).max())
        report["certified_box"] = list(box) if box is not None else None
        report["max_weight_error_per_layer"] = weight_errors(ticket, reference)
        table.add_row("target accuracy", f"{result['target_accuracy']:.2%}")
        table.add_row("top-1 agreement", f"{result['top1_agreement']:.3%}")
        table.add_row("max logit difference", f"{result['max_logit_diff']:.3g}")
        table.add_row("certified output bound (input box)", f"{report['certified_bound']:.3g}")
        table.add_row("max weight error per layer", ", ".join(f"{e:.2e}" for e in report["max_weight_error_per_layer"]))
    s = ticket.stats
    table.add_row("random / kept params", f"{s['random_params']:,} / {s['kept_params']:,}")
    console.print(table)
    if json_out is not None:
        atomic_write_json(json_out, report)


@app.command("train-dense")
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
    from .demo import train_target
    from .target import mlp

    widths = [int(x) for x in arch.split("-")] if all(p.isdigit() for p in arch.split("-")) else None
    if widths is None or len(widths) < 2:
        raise typer.BadParameter(f"--arch must look like 784-500-10, got {arch!r}")
    dataset = load_dataset(data, data_dir)
    if widths[0] != math.prod(dataset.input_shape) or widths[-1] != dataset.num_classes:
        raise typer.BadParameter(
            f"--arch {arch} does not fit {data}: inputs {math.prod(dataset.input_shape)}, classes {dataset.num_classes}")
    target, metrics = train_target(data, data_dir, hidden=widths[1:-1], epochs=epochs, seed=seed, lr=lr, quiet=False)
    mlp(widths, bias=False).load_state_dict(target.state_dict())  # the file loads with --arch
    atomic_torch_save(out, target.state_dict())
    Console().print(f"test accuracy {metrics['test_accuracy']:.2%} after {epochs} epochs "
                    f"({metrics['seconds']:.1f} s); wrote {out}")


@app.command("demo")
def demo_cmd(
    out: Path = typer.Option(Path("slth-demo"), "-o", "--out", help="directory for the ticket, JSON and plot"),
    eps: float = typer.Option(0.01, help="per-weight tolerance"),
    seed: int = typer.Option(0),
    epochs: int = typer.Option(40, help="target training epochs"),
) -> None:
    """The main job on embedded digits: train a target MLP, construct its ticket, compare, plot error vs n."""
    from .demo import run_demo

    run_demo(out, eps=eps, seed=seed, epochs=epochs)


@experiment_app.command("pensia-exp1")
def pensia_exp1_cmd(
    target: Path = typer.Option(..., help="784-500-10 bias-free MNIST target (state_dict, e.g. from slth train-dense)"),
    data_dir: Path = typer.Option(..., help="directory with the MNIST idx(.gz) files"),
    eps: list[float] = typer.Option([0.01, 0.001], help="per-weight tolerances"),
    seed: int = typer.Option(0),
    out: Path = typer.Option(Path("docs/results/pensia_exp1.json"), help="run record (JSON) to write"),
    tickets_dir: Optional[Path] = typer.Option(None, help="also save the tickets here"),
) -> None:
    """Pensia et al. Exp. 1: construct and evaluate tickets of a 784-500-10 MNIST target, beside the paper."""
    import shlex
    import sys

    from rich.console import Console

    from .._io import atomic_write_json
    from .experiments import exp1_markdown, exp1_tickets

    record = exp1_tickets(target, data_dir, eps_values=tuple(eps), seed=seed, out_dir=tickets_dir)
    record["command"] = "slth " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out, record)
    Console().print(exp1_markdown(record))
    Console().print(f"wrote {out}")
