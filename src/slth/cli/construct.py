"""``slth construct``, ``slth evaluate``, ``slth demo``: trained network -> ticket, and its measurements."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

import typer

from ._common import CommandError, existing_file, output_dir, output_file

DATA_HELP = "digits (embedded), mnist, fashion-mnist or cifar10"


def register(app: typer.Typer) -> None:
    app.command("construct")(construct_command())
    app.command("evaluate")(evaluate_cmd)
    app.command("demo")(demo_cmd)


def construct_command():
    """``slth construct``: one option per field of :class:`slth._hparams.ConstructSettings` (what to build) and
    :class:`slth._hparams.ExecutionSettings` (how to run it), the fields of ``ConstructConfig`` and ``Execution``,
    plus the target's and the ticket file's options and the fields written by hand (``--n``, ``--input-range LO
    HI``, ``--min-error``). Only the options the user gives are passed on, so the records' defaults apply to the
    rest (defined once, there)."""
    import inspect

    from .._hparams import ConstructSettings, ExecutionSettings
    from ._settings import parameters, with_signature

    what = {f.name: f.metadata.get("help", "") for f in dataclasses.fields(ConstructSettings)}
    kw = inspect.Parameter.KEYWORD_ONLY
    own = [
        inspect.Parameter("model", kw, annotation=Path, default=typer.Argument(
            ..., help="target: a state_dict file (with --arch), a TorchScript file (nn.Sequential) or a transformers "
                      "save_pretrained directory (config.json + weights, read locally)")),
        inspect.Parameter("out", kw, annotation=Path, default=typer.Option(
            ..., "-o", "--out", help="ticket file to write (.slth)")),
        inspect.Parameter("arch", kw, annotation=Optional[str], default=typer.Option(
            None, help="state_dict target: MLP widths (784-500-10) or a name: lenet5, conv2, conv4, conv6, "
                       "resnet20, resnet18")),
        inspect.Parameter("input_shape", kw, annotation=Optional[str], default=typer.Option(
            None, help="input shape C,H,W of a named --arch (e.g. 1,28,28)")),
        inspect.Parameter("classes", kw, annotation=Optional[int], default=typer.Option(
            None, help="number of classes of a named --arch")),
        inspect.Parameter("width", kw, annotation=float, default=typer.Option(
            1.0, help="width multiplier of a named --arch")),
        inspect.Parameter("n", kw, annotation=Optional[int], default=typer.Option(None, help=what["n"])),
        inspect.Parameter("input_range", kw, annotation=Optional[tuple[float, float]], default=typer.Option(
            None, help=what["input_range"])),
        inspect.Parameter("min_error", kw, annotation=bool, default=typer.Option(
            False, "--min-error", help="minimal-error subsets instead of sparsest within eps")),
    ]
    return with_signature(construct_cmd, [*own, *parameters(ConstructSettings), *parameters(ExecutionSettings)])


def construct_cmd(**values) -> None:
    """Turn a trained ReLU network (MLP, CNN, ResNet) into a ticket: seed + masks over a random network."""
    from rich.console import Console

    from .._hparams import ConstructSettings, ExecutionSettings
    from ..construction.api import construct_with
    from ..construction.config import ConstructConfig, Execution
    from ..construction.target import load_target
    from ._settings import given

    model, out, arch, input_shape, classes, width, n, input_range, min_error = (values.pop(k) for k in (
        "model", "out", "arch", "input_shape", "classes", "width", "n", "input_range", "min_error"))
    console = Console()
    shape = None
    if input_shape is not None:
        try:
            shape = tuple(int(v) for v in input_shape.replace("x", ",").split(","))
        except ValueError:
            raise CommandError(f"--input-shape must look like 1,28,28, got {input_shape!r}") from None
    # the records refuse a bad value (an unknown method or attention, a bad --input-range, ...) before any work
    config = ConstructConfig(**given(ConstructSettings, values), n=n, input_range=input_range,
                             **({"sparse": False} if min_error else {}))
    execution = Execution(**given(ExecutionSettings, values), progress=True)
    workdir = None if execution.workdir is None else Path(execution.workdir)
    if execution.resume and workdir is None:
        raise CommandError("--resume needs --workdir")
    if model.is_dir():
        if arch is not None:
            raise CommandError(f"{model} is a directory (a save_pretrained model); --arch is for state_dict files")
    else:
        existing_file(model, "model")
    if out.is_dir():
        raise CommandError(f"--out: {out} is a directory, expected a file name")
    if model.is_dir():
        target = load_pretrained(model)
    else:
        target = load_target(model, arch, input_shape=shape, num_classes=classes, width=width)
    from ..construction.modules import plan_modules
    from ..construction.target import UntraceableError, parse_target

    # a target the construction cannot take is refused before --out's folder or --workdir is created
    if config.construction == "modules":
        plan_modules(target)
    else:
        try:
            parse_target(target, input_range=config.box, attention=config.attention)
        except UntraceableError:  # built by module replacement ("auto"): its refusals, first
            if config.construction == "graph":
                raise
            plan_modules(target)
    output_file(out, "--out")
    output_dir(workdir, "--workdir")
    ticket = construct_with(target, config, execution)
    path = ticket.save(out)
    size = path.stat().st_size
    run = ticket.run
    console.print(f"chunks: {run['chunks']} ({run['reused']} reused from the work dir, {run['computed']} computed; "
                  f"{run['workers']} worker(s), {run['backend']} backend)")
    console.print(f"ticket digest {ticket.digest()}")
    console.print(ticket.summary())
    console.print(f"wrote {path} ({size:,} bytes, "
                  f"{8 * size / ticket.stats['target_params']:.2f} bits per target weight)")


def load_pretrained(path: Path):
    """A transformers model written by ``save_pretrained(path)``: its config (``AutoConfig``) and weights, read
    from the directory only (``local_files_only=True``; never a hub), built as the class its config names
    (``architectures``), else ``AutoModel``. transformers is imported here, by the CLI only."""
    if not (path / "config.json").is_file():
        raise CommandError(f"{path} is a directory without config.json: not a save_pretrained directory")
    try:
        import transformers
    except ImportError:
        raise CommandError(f"{path}: a save_pretrained directory needs transformers (pip install transformers)") \
            from None
    try:
        config = transformers.AutoConfig.from_pretrained(path, local_files_only=True)
        names = getattr(config, "architectures", None) or []
        cls = getattr(transformers, names[0], None) if names else None
        model = (cls or transformers.AutoModel).from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise CommandError(f"{path}: cannot load the saved model ({type(exc).__name__}: {exc})") from None
    return model.eval()


def evaluate_cmd(
    ticket_path: Path = typer.Argument(..., metavar="TICKET", help="a constructed ticket (.slth)"),
    data: str = typer.Option("digits", help=DATA_HELP),
    data_dir: Path | None = typer.Option(None, help="directory with the data set's files"),
    target: Path | None = typer.Option(None, help="the target model, to measure agreement and the bound"),
    arch: str | None = typer.Option(
        None, help="MLP widths or architecture name (lenet5, resnet20, ...) of a state_dict target"),
    width: float = typer.Option(1.0, help="width multiplier of a named --arch"),
    box: tuple[float, float] | None = typer.Option(
        None, help="input box LO HI for the certified bound (default: the ticket's --input-range; else [0, 1] for "
        "nonnegative-input tickets, else [-1, 1])"),
    json_out: Path | None = typer.Option(None, "--json", help="write the report as JSON"),
) -> None:
    """Accuracy of a ticket on a test set; with --target also logit difference, top-1 agreement, certified bound."""
    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    from .._io import atomic_write_json
    from ..construction.bound import certified_bound
    from ..construction.report import measure, weight_errors
    from ..construction.target import load_target
    from ..construction.ticket import Ticket
    from ..data import load_dataset

    existing_file(ticket_path, "ticket")
    existing_file(target, "--target")
    output_file(json_out, "--json")
    console = Console()
    ticket = Ticket.load(ticket_path)
    if ticket.replaces_modules:
        raise CommandError(f"{ticket_path} replaced the modules of a {ticket.config['model']}; evaluate it in Python: "
                           "Ticket.load(path).to_module(model=<a fresh instance>) and slth.construction.measure")
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
    report = {"ticket": str(ticket_path), "data": data, "stats": ticket.stats,
              "ticket_accuracy": result["ticket_accuracy"]}
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


def demo_cmd(
    out: Path = typer.Option(Path("slth-demo"), "-o", "--out", help="directory for the ticket, JSON and plot"),
    eps: float = typer.Option(0.01, help="per-weight tolerance"),
    seed: int = typer.Option(0),
    epochs: int = typer.Option(40, help="target training epochs"),
) -> None:
    """The main job on embedded digits: train a target MLP, construct its ticket, compare, plot error vs n."""
    from ..experiments.demo import run_demo

    if epochs < 1:
        raise CommandError(f"--epochs must be >= 1, got {epochs}")
    run_demo(output_dir(out, "--out"), eps=eps, seed=seed, epochs=epochs)
