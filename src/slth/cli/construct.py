"""``slth construct``, ``slth evaluate``, ``slth demo``: trained network -> ticket, and its measurements."""

from __future__ import annotations

from pathlib import Path

import typer

from ._common import CommandError, existing_file, output_dir, output_file

DATA_HELP = "digits (embedded), mnist, fashion-mnist or cifar10"


def register(app: typer.Typer) -> None:
    app.command("construct")(construct_cmd)
    app.command("evaluate")(evaluate_cmd)
    app.command("demo")(demo_cmd)


def construct_cmd(
    model: Path = typer.Argument(
        ..., help="target: a state_dict file (with --arch), a TorchScript file (nn.Sequential) or a transformers "
                  "save_pretrained directory (config.json + weights, read locally)"),
    out: Path = typer.Option(..., "-o", "--out", help="ticket file to write (.slth)"),
    arch: str | None = typer.Option(None, help="state_dict target: MLP widths (784-500-10) or a name: lenet5, "
                                                  "conv2, conv4, conv6, resnet20, resnet18"),
    eps: float = typer.Option(0.01, help="per-weight tolerance"),
    seed: int = typer.Option(0, help="seed of the random network"),
    method: str = typer.Option("pensia", help="pensia (SubsetSum, log width) or malach (single pick, poly width)"),
    n: int | None = typer.Option(None, help="random values per weight (default: chosen per layer from eps)"),
    nonnegative_input: bool = typer.Option(False, "--nonnegative-input", help="inputs are >= 0 (images in [0, 1])"),
    input_range: tuple[float, float] | None = typer.Option(
        None, help="inputs lie in [LO, HI] (e.g. standardised images); LO < 0 shifts them to x - LO >= 0"),
    dense_subsets: bool = typer.Option(False, "--min-error",
                                       help="minimal-error subsets instead of sparsest within eps"),
    input_shape: str | None = typer.Option(None, help="input shape C,H,W of a named --arch (e.g. 1,28,28)"),
    classes: int | None = typer.Option(None, help="number of classes of a named --arch"),
    width: float = typer.Option(1.0, help="width multiplier of a named --arch"),
    workers: int = typer.Option(1, help="worker processes (local) or Ray tasks in flight / 2 (ray)"),
    backend: str = typer.Option("local", help="local (processes on this machine) or ray (a Ray cluster)"),
    address: str | None = typer.Option(None, help="Ray cluster address (ray backend; default: start a local one)"),
    workdir: Path | None = typer.Option(None, help="checkpoint directory: one file per finished chunk"),
    resume: bool = typer.Option(False, "--resume", help="reuse the finished chunks in --workdir"),
    chunk_instances: int = typer.Option(1 << 18, help="SubsetSum instances per chunk (bounds memory)"),
    device: str | None = typer.Option(None, help="PyTorch device for the --min-error search, e.g. cuda"),
    attention: str = typer.Option("projection", help="MultiheadAttention construction: projection (W_q, W_k, W_v, "
                                                     "W_o each a random pair) or product (one random attention "
                                                     "pruned for W_q W_k^T and W_v W_o, Otsuka et al.)"),
) -> None:
    """Turn a trained ReLU network (MLP, CNN, ResNet) into a ticket: seed + masks over a random network."""
    from rich.console import Console

    from ..construction import construct
    from ..construction.target import load_target

    console = Console()
    shape = None
    if input_shape is not None:
        try:
            shape = tuple(int(v) for v in input_shape.replace("x", ",").split(","))
        except ValueError:
            raise CommandError(f"--input-shape must look like 1,28,28, got {input_shape!r}") from None
    if resume and workdir is None:
        raise CommandError("--resume needs --workdir")
    if attention not in ("projection", "product"):
        raise CommandError(f"--attention must be projection or product, got {attention!r}")
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
    try:
        from ..construction.target import input_range_of

        input_range_of(input_range, nonnegative_input)
    except ValueError as exc:
        raise CommandError(f"--input-range: {exc}") from None
    from ..construction.target import UntraceableError, parse_target

    # a target the construction cannot take is refused before --out's folder or --workdir is created
    try:
        parse_target(target, nonnegative_input=nonnegative_input, input_range=input_range, attention=attention)
    except UntraceableError:  # built by module replacement (construct's default "auto"): its refusals, first
        from ..construction.modules import plan_modules

        plan_modules(target)
    output_file(out, "--out")
    output_dir(workdir, "--workdir")
    ticket = construct(target, eps, seed=seed, method=method, n=n, nonnegative_input=nonnegative_input,
                       input_range=input_range, sparse=not dense_subsets, progress=True, workers=workers,
                       backend=backend, address=address, workdir=None if workdir is None else str(workdir),
                       resume=resume, chunk_instances=chunk_instances, device=device, attention=attention)
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
