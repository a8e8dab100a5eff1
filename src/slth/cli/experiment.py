"""``slth experiment <name>``: one command per experiment of :data:`slth.experiments.EXPERIMENTS`.

Each command checks its arguments and creates its output folders before the work starts, runs the
experiment's module in :mod:`slth.experiments`, and writes one record that ``slth report`` renders.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from ._common import (CommandError, existing_dir, existing_file, floats, ints, names, output_dir, output_file,
                      threads as set_threads)

app = typer.Typer(help="Experiments reproducing the papers' claims (records for slth report).", no_args_is_help=True)

RESULTS = Path("docs/results")


@app.command("pensia-exp1")
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
    from ..experiments.pensia_exp1 import exp1_markdown, exp1_tickets

    existing_file(target, "--target")
    existing_dir(data_dir, "--data-dir")
    output_file(out, "--out")
    output_dir(tickets_dir, "--tickets-dir")
    record = exp1_tickets(target, data_dir, eps_values=tuple(eps), seed=seed, out_dir=tickets_dir)
    record["command"] = "slth " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    atomic_write_json(out, record)
    Console().print(exp1_markdown(record))
    Console().print(f"wrote {out}")


@app.command("width-sweep")
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
    from ..experiments.width_sweep import table, width_sweep
    from ..train import TrainConfig

    base = TrainConfig(method="dense", model=model, data=data, data_dir=None if data_dir is None else str(data_dir),
                       density=density, width=width, epochs=epochs, seed=seed, hidden=ints(hidden, "--hidden"))
    method_list = names(methods, "--methods")
    for m in method_list:
        TrainConfig(method=m, model=model, data=data, density=density)  # validates the names early
    set_threads(threads)
    output_dir(out, "--out")
    command = "slth " + " ".join(sys.argv[1:])
    result = width_sweep(base, method_list, ints(multiples, "--multiples") or (1,), out, quiet=quiet,
                         command=command)

    typer.echo(table(result))
    typer.echo(f"-> {out / 'width_sweep.png'}")


@app.command("width-curves")
def width_curves_command(
    target: Optional[Path] = typer.Option(None, help="also a saved bias-free MLP target (state_dict, e.g. from "
                                                     "slth train-dense), evaluated on --data"),
    arch: str = typer.Option("784-500-10", help="widths of --target"),
    data: str = typer.Option("mnist", help="data set of --target"),
    data_dir: Optional[Path] = typer.Option(None, help="directory with --data's files"),
    digits: bool = typer.Option(True, help="include a digits 64-64-10 target trained here (40 epochs, ~1 min)"),
    eps: str = typer.Option("0.1,0.03,0.01,0.003,0.001", help="eps values for the width-needed table"),
    pensia_n: str = typer.Option("2,4,6,8,10,12,14,16,18,20,22,24"),
    malach_n: str = typer.Option("2,4,8,16,32,64,128,256,512,1024,2048,4096"),
    law_n: str = typer.Option("2,4,6,8,10,12,14,16,18,20,22,24,26,28,30,32", help="n values of the SubsetSum law"),
    law_instances: int = typer.Option(4000),
    max_values: int = typer.Option(40_000_000, help="skip constructions with more random values (memory)"),
    seed: int = typer.Option(0),
    quick: bool = typer.Option(False, help="tiny setting for tests (digits, 1 epoch, two n per method)"),
    out: Path = typer.Option(RESULTS / "width_curves.json"),
    threads: Optional[int] = typer.Option(None),
) -> None:
    """Pensia (log width) vs Malach (poly width): error and accuracy vs width factor; SubsetSum error vs n."""
    import hashlib

    from rich.console import Console

    from ..train.target import train_target
    from ..data import load_dataset
    from ..experiments import width_curves as wc
    from ..experiments.record import Stopwatch, header, write_record

    eps_v, pn, mn = floats(eps, "--eps"), ints(pensia_n, "--pensia-n"), ints(malach_n, "--malach-n")
    ln = ints(law_n, "--law-n")
    if target is None and not digits:
        raise CommandError("nothing to do: pass --target or keep --digits")
    existing_file(target, "--target")
    output_file(out, "--out")
    set_threads(threads)
    console = Console()
    epochs = 40
    if quick:
        eps_v, pn, mn, ln, law_instances, epochs = [0.1], [4, 8], [4], [4, 8], 100, 1
    targets = []
    with Stopwatch() as sw:
        if digits:
            net, metrics = train_target("digits", hidden=(64,), epochs=epochs, seed=seed)
            ds = load_dataset("digits")
            targets.append(("digits", net, ds.x_test, ds.y_test))
        if target is not None:
            from ..construction.target import load_target

            ds = load_dataset(data, data_dir)
            targets.append((data, load_target(target, arch), ds.x_test, ds.y_test))
        body = wc.run(targets, eps_values=eps_v, pensia_ns=pn, malach_ns=mn, law_ns=ln, law_instances=law_instances,
                      seed=seed, max_values=max_values, quiet=False)
    settings = {"eps": eps_v, "pensia_n": pn, "malach_n": mn, "law_n": ln, "law_instances": law_instances,
                "seed": seed, "digits_epochs": epochs if digits else None,
                "target": None if target is None else str(target),
                "target_sha256": None if target is None else hashlib.sha256(target.read_bytes()).hexdigest(),
                "arch": arch, "data": data, "max_values": max_values, "quick": quick}
    record = {**header("width-curves", settings), **body, "wall_seconds": sw.wall}
    write_record(record, out)
    console.print(f"width curves in {sw.wall:.0f} s; "
                  f"SubsetSum fit error ~ 2^(-{body['subsetsum_law']['fit']['c']:.3f} n)"
                  f" -> {out}")


@app.command("planted")
def planted_command(
    tasks: str = typer.Option("relu,circle,helix,mnist", help="relu, circle, helix (toy) and mnist"),
    methods: str = typer.Option("edge-popup,bernoulli,biprop,iterand,gem-miner", help="supermask methods to run"),
    hidden: str = typer.Option("100,100", help="source hidden widths for the toy tasks"),
    depth: int = typer.Option(3, help="toy target depth (>= 2; extra layers are copy layers)"),
    density_multiples: str = typer.Option("1,10", help="each layer keeps these multiples of its planted count"),
    epochs: int = typer.Option(30, help="epochs per method, toy tasks"),
    n_train: int = typer.Option(4000), n_test: int = typer.Option(2000),
    mnist_hidden: str = typer.Option("200,200", help="source hidden widths for the MNIST task"),
    mnist_epochs: int = typer.Option(3, help="epochs per method, MNIST task"),
    mnist_train_size: int = typer.Option(
        20000, help="MNIST training examples used (all 10,000 test examples are used)"),
    data_dir: Optional[Path] = typer.Option(None, help="MNIST directory (needed for the mnist task)"),
    seed: int = typer.Option(0),
    quick: bool = typer.Option(False, help="tiny setting for tests (relu and circle, 1 epoch, 2 methods)"),
    out: Path = typer.Option(RESULTS / "planted.json"),
    threads: Optional[int] = typer.Option(1, help="torch threads (1 is fastest for these small nets)"),
) -> None:
    """Plant 'n' Seek: hide known sparse targets in random nets; run every supermask method and slth.construct."""
    from rich.console import Console

    from ..experiments import planted as P
    from ..experiments.record import Stopwatch, header, write_record

    from ..supermask.methods import METHODS

    task_list = names(tasks, "--tasks", P.TASKS)
    method_list = names(methods, "--methods", tuple(METHODS))
    construct_n = None
    multiples = floats(density_multiples, "--density-multiples")
    if quick:
        task_list, method_list, epochs, n_train, n_test = ["relu", "circle"], ["edge-popup", "gem-miner"], 1, 256, 256
        construct_n, multiples = 10, [1.0, 10.0]
    if "mnist" in task_list and data_dir is None:
        raise CommandError("the mnist task needs --data-dir (a folder with the MNIST idx files)")
    existing_dir(data_dir, "--data-dir")
    output_file(out, "--out")
    set_threads(threads)
    console = Console()
    results = []
    with Stopwatch() as sw:
        for task in task_list:
            if task == "mnist":
                from ..data import load_dataset

                data = load_dataset("mnist", data_dir)
                results.append(P.run_task("mnist", methods=method_list, hidden=ints(mnist_hidden, "--mnist-hidden"),
                                          epochs=mnist_epochs, seed=seed, n_train=0, n_test=0, data=data,
                                          density_multiples=multiples,
                                          mnist_settings={"train_size": mnist_train_size, "epochs": 3,
                                                          "finetune_epochs": 2},
                                          log=console.print))
            else:
                results.append(P.run_task(task, methods=method_list, hidden=ints(hidden, "--hidden"), epochs=epochs,
                                          seed=seed, n_train=n_train, n_test=n_test, depth=depth,
                                          construct_n=construct_n, density_multiples=multiples,
                                          log=console.print))
    settings = {"tasks": task_list, "methods": method_list, "hidden": ints(hidden, "--hidden"), "depth": depth,
                "epochs": epochs, "density_multiples": multiples,
                "n_train": n_train, "n_test": n_test, "mnist_hidden": ints(mnist_hidden, "--mnist-hidden"),
                "mnist_epochs": mnist_epochs,
                "mnist_train_size": mnist_train_size, "seed": seed, "quick": quick, "threads": threads,
                "lr": "slth.train defaults per method (DEFAULT_LR), SGD momentum 0.9, cosine, batch 128",
                "densities": "each layer keeps its planted count times the density multiple (oracle per-layer density)"}
    record = {**header("planted", settings), "tasks": results, "paper": P.PAPER, "wall_seconds": sw.wall}
    write_record(record, out)
    console.print(f"planted tickets in {sw.wall:.0f} s -> {out}")


@app.command("construct-vs-learn")
def construct_vs_learn_command(
    data: str = typer.Option("digits", help="digits (embedded) or mnist / fashion-mnist with --data-dir"),
    data_dir: Optional[Path] = typer.Option(None),
    hidden: str = typer.Option("64", help="hidden widths of the target MLP"),
    dense_epochs: int = typer.Option(40), mask_epochs: int = typer.Option(40),
    eps: float = typer.Option(0.01), density: float = typer.Option(0.5, help="kept fraction of the learned supermasks"),
    methods: str = typer.Option("edge-popup,biprop", help="supermask methods"),
    seed: int = typer.Option(0),
    quick: bool = typer.Option(False, help="tiny setting for tests (digits, hidden 16, 1 epoch, edge-popup, n = 8)"),
    out: Path = typer.Option(RESULTS / "construct_vs_learn.json"),
    threads: Optional[int] = typer.Option(None),
) -> None:
    """The constructed ticket of a trained target vs learned supermasks vs dense training, same data."""
    from rich.console import Console

    from ..experiments import construct_vs_learn as cvl
    from ..experiments.record import Stopwatch, header, write_record

    from ..supermask.methods import METHODS

    method_list = names(methods, "--methods", tuple(METHODS))
    existing_dir(data_dir, "--data-dir")
    output_file(out, "--out")
    set_threads(threads)
    console = Console()
    construct_n = None
    if quick:
        data, dense_epochs, mask_epochs, method_list, hidden, construct_n = "digits", 1, 1, ["edge-popup"], "16", 8
    with Stopwatch() as sw:
        body = cvl.run(data, data_dir, hidden=ints(hidden, "--hidden"), dense_epochs=dense_epochs,
                       mask_epochs=mask_epochs, eps=eps, methods=method_list, density=density, seed=seed,
                       construct_n=construct_n,
                       log=console.print)
    settings = {"data": data, "hidden": ints(hidden, "--hidden"), "dense_epochs": dense_epochs,
                "mask_epochs": mask_epochs, "eps": eps, "density": density, "methods": method_list, "seed": seed,
                "quick": quick,
                "dense": "slth train-dense setting: bias-free, inputs in [0, 1], SGD lr 0.05 momentum 0.9, cosine",
                "learned": "slth.train defaults per method (inputs normalised), signed-constant init"}
    write_record({**header("construct-vs-learn", settings), **body, "wall_seconds": sw.wall}, out)
    console.print(f"construct vs learn in {sw.wall:.0f} s -> {out}")


@app.command("pensia-exp2")
def pensia_exp2_command(
    data_dir: Optional[Path] = typer.Option(None, help="MNIST directory"),
    nets: str = typer.Option(
        "fc2,lenet5", help="fc2 (784-500-10) and/or lenet5 (random frozen convs, FC 400-120-84-10)"),
    kinds: str = typer.Option("structure-linear,structure-relu,wide"),
    densities: str = typer.Option("0.5,0.1,0.01", help="kept fractions (the paper's sparsity = 1 - density)"),
    epochs: int = typer.Option(1, help="the paper: best over 30..150 epochs"),
    train_size: int = typer.Option(10000, help="MNIST training examples (the paper: all 60,000)"),
    r: int = typer.Option(5, help="copies per input in a RedLayer"),
    lr: float = typer.Option(0.1, help="the paper: 0.1 (FC), 0.01 (LeNet5)"),
    lenet_lr: float = typer.Option(0.01),
    batch_size: int = typer.Option(64),
    seed: int = typer.Option(0),
    quick: bool = typer.Option(False, help="tiny setting for tests (fc2, 512 examples, density 0.1)"),
    out: Path = typer.Option(RESULTS / "pensia_exp2.json"),
    threads: Optional[int] = typer.Option(None),
) -> None:
    """Pensia et al. Exp. 2: RedLayer structure (r copies) vs a parameter-matched wide net, both by edge-popup."""
    from rich.console import Console

    from ..data import load_dataset
    from ..experiments import pensia_exp2 as R
    from ..experiments.record import Stopwatch, header, write_record

    net_list = names(nets, "--nets", ("fc2", "lenet5"))
    kind_list = names(kinds, "--kinds", R.KINDS)
    dens = floats(densities, "--densities")
    if data_dir is None:
        raise CommandError("pensia-exp2 needs --data-dir (a folder with the MNIST idx files)")
    existing_dir(data_dir, "--data-dir")
    output_file(out, "--out")
    set_threads(threads)
    console = Console()
    if quick:
        net_list, dens, epochs, train_size = ["fc2"], [0.1], 1, 512
    data = load_dataset("mnist", data_dir)
    if quick:  # a small test split too
        data.x_test, data.y_test = data.x_test[:500], data.y_test[:500]
    results = []
    with Stopwatch() as sw:
        for net in net_list:
            results.append(R.run(net, data, densities=dens, kinds=kind_list, epochs=epochs, r=r, seed=seed,
                                 lr=lr if net == "fc2" else lenet_lr, batch_size=batch_size, train_size=train_size,
                                 log=console.print))
    settings = {"nets": net_list, "kinds": kind_list, "densities": dens, "epochs": epochs, "train_size": train_size,
                "test_size": int(len(data.y_test)), "r": r, "lr_fc": lr, "lr_lenet5": lenet_lr,
                "batch_size": batch_size, "momentum": 0.9, "weight_decay": 5e-4, "schedule": "cosine per step",
                "seed": seed, "quick": quick,
                "normalisation": "(0.1307, 0.3081)", "method": "edge-popup, same density for every masked tensor"}
    record = {**header("pensia-exp2", settings), "results": results,
              "paper": {"fc2": R.PAPER_FC2, "lenet5": R.PAPER_LENET5}, "wall_seconds": sw.wall}
    write_record(record, out)
    console.print(f"Exp. 2 in {sw.wall:.0f} s -> {out}")


@app.command("variants")
def variants_command(
    data_dir: Optional[Path] = typer.Option(None, help="MNIST directory (not needed with --quick)"),
    methods: str = typer.Option("edge-popup,bernoulli,biprop,iterand,gem-miner", help="supermask methods"),
    models: str = typer.Option("fc,lenet5"),
    densities: str = typer.Option("0.5,0.1", help="kept fractions"),
    seeds: str = typer.Option("0,1,2"),
    epochs: int = typer.Option(6, help="6: Gem-Miner's reference variant prunes once (after epoch 6)"),
    train_size: int = typer.Option(5000, help="training examples (the first ones of the split)"),
    quick: bool = typer.Option(False, help="tiny setting for tests (digits, fc, one density, one seed, 1 epoch)"),
    out: Path = typer.Option(RESULTS / "variants.json"),
    threads: Optional[int] = typer.Option(None),
) -> None:
    """Each supermask method in slth's variant against its reference-code variant, same seeds."""
    from rich.console import Console

    from ..experiments import variants as V
    from ..experiments.record import Stopwatch, header, write_record
    from ..supermask.methods import METHODS

    method_list = names(methods, "--methods", tuple(METHODS))
    model_list = names(models, "--models", ("fc", "lenet5"))
    dens, seed_list = floats(densities, "--densities"), ints(seeds, "--seeds")
    data = "mnist"
    if quick:
        data, model_list, dens, seed_list, epochs, train_size = "digits", ["fc"], [0.5], [0], 1, 256
    elif data_dir is None:
        raise CommandError("variants needs --data-dir (a folder with the MNIST idx files), or --quick")
    existing_dir(data_dir, "--data-dir")
    if epochs < 1 or train_size < 1:
        raise CommandError("--epochs and --train-size must be >= 1")
    output_file(out, "--out")
    set_threads(threads)
    console = Console()
    with Stopwatch() as sw:
        body = V.run(data, data_dir, methods=method_list, models=model_list, densities=dens, seeds=seed_list,
                     epochs=epochs, train_size=train_size, log=console.print)
    settings = {"data": data, "methods": method_list, "models": model_list, "densities": dens, "seeds": seed_list,
                "epochs": epochs, "train_size": train_size, "batch_size": 128, "quick": quick,
                "optimizer": "SGD momentum 0.9, cosine per step; lr, weight decay and init: each variant's defaults",
                "threads": threads}
    write_record({**header("variants", settings), **body, "wall_seconds": sw.wall}, out)
    console.print(V.table(body["runs"]))
    console.print(f"variants in {sw.wall:.0f} s -> {out}")


def _key_values(text: str, what: str) -> dict[str, str]:
    """``"patch=7,depth=4"`` -> {"patch": "7", "depth": "4"} (the registry converts and checks the values)."""
    out: dict[str, str] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        key, sep, value = part.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise CommandError(f"{what} must be comma-separated KEY=VALUE pairs, got {part!r}")
        if key.strip() in out:
            raise CommandError(f"{what}: {key.strip()!r} given twice")
        out[key.strip()] = value.strip()
    return out


def _command_with_dir(argv: list[str], options: tuple[str, ...]) -> str:
    """The command line with the values of ``options`` (data folders) shown as DIR, as every record does."""
    import shlex

    args, hide = [], False
    for a in argv:
        if hide:
            args.append("DIR")
            hide = False
            continue
        name, eq, _ = a.partition("=")
        if name in options:
            if eq:
                args.append(f"{name}=DIR")
            else:
                args.append(a)
                hide = True
            continue
        args.append(a)
    return "slth " + " ".join(a if a.endswith("DIR") else shlex.quote(a) for a in args)


@app.command("transformers")
def transformers_command(
    vit_data: str = typer.Option("mnist,fashion-mnist", help="ViT data sets: digits, mnist, fashion-mnist"),
    data_root: Optional[Path] = typer.Option(None, help="folder with one sub-folder per data set, named as the data "
                                                        "set (mnist/, fashion-mnist/ with the idx files)"),
    vit_args: str = typer.Option("patch=7", help="ViT constructor arguments, KEY=VALUE,... (patch, dim, depth, "
                                                 "heads, mlp_ratio)"),
    vit_epochs: int = typer.Option(8, help="dense training epochs of each ViT"),
    vit_lr: Optional[float] = typer.Option(0.05, help="ViT peak learning rate (SGD, cosine)"),
    eps: str = typer.Option("0.01,0.001", help="eps values of the ViT and GPT tickets"),
    sweep_eps: str = typer.Option("0.1,0.03,0.01,0.003,0.001", help="eps values of the width-vs-eps table "
                                                                     "(first ViT data set)"),
    constructions: Optional[str] = typer.Option(
        None, help="pensia, product (attention='product'), malach; default: all "
                   "available"),
    max_random_params: int = typer.Option(12_000_000, help="build a ticket only below this many random params "
                                                           "(above: its size is computed from the required n)"),
    test_size: int = typer.Option(0, help="ViT test images evaluated (0: the whole test set)"),
    gpt: bool = typer.Option(True, help="run the char-GPT part"),
    gpt_args: str = typer.Option("dim=64,depth=2,heads=4", help="GPT constructor arguments, KEY=VALUE,..."),
    gpt_data_args: str = typer.Option("context=32,max_bytes=2000000", help="pystdlib-chars options, KEY=VALUE,..."),
    gpt_epochs: int = typer.Option(4, help="dense training epochs of the GPT"),
    gpt_lr: Optional[float] = typer.Option(0.3, help="GPT peak learning rate (SGD, cosine; 1.0 diverges)"),
    gpt_test_size: int = typer.Option(0, help="held-out GPT windows evaluated (0: the whole held-out split)"),
    learned_methods: str = typer.Option("dense,edge-popup,biprop", help="slth train runs of the Fashion-MNIST ViT "
                                                                         "shown beside the construction"),
    learned_widths: str = typer.Option("1,2", help="their widths"),
    seed: int = typer.Option(0),
    quick: bool = typer.Option(False, help="tiny setting for tests (digits ViT dim 16, tiny GPT, 1 epoch, eps 0.01)"),
    out: Path = typer.Option(RESULTS / "transformers.json"),
    threads: Optional[int] = typer.Option(1, help="torch threads (1 is fastest on a shared 2-core machine: two "
                                                  "threads made a ViT epoch 8x slower under load)"),
) -> None:
    """Tickets of a trained ViT (MNIST, Fashion-MNIST) and char-GPT: accuracy, agreement, width vs eps, params."""
    from rich.console import Console

    from ..data import load_dataset  # noqa: F401  (fail early on a broken install)
    from ..experiments import transformers as T
    from ..experiments.record import Stopwatch, header, write_record
    from ..models import check_model_args
    from ..data import check_data_args

    data_list = names(vit_data, "--vit-data", T.VIT_DATA)
    available = T.constructions()
    if constructions is None:
        cons = list(available)
    else:
        cons = names(constructions, "--constructions", available)
    eps_v, sweep_v = floats(eps, "--eps"), floats(sweep_eps, "--sweep-eps")
    for e in (*eps_v, *sweep_v):
        if not (0 < e < 1):
            raise CommandError(f"--eps and --sweep-eps values must lie in (0, 1), got {e:g}")
    if not eps_v:
        raise CommandError("--eps is empty")
    vargs, gargs, gdata = (_key_values(vit_args, "--vit-args"), _key_values(gpt_args, "--gpt-args"),
                           _key_values(gpt_data_args, "--gpt-data-args"))
    methods_l = names(learned_methods, "--learned-methods")
    widths_l = floats(learned_widths, "--learned-widths")
    for name, value in (("--vit-epochs", vit_epochs), ("--gpt-epochs", gpt_epochs)):
        if value < 1:
            raise CommandError(f"{name} must be >= 1, got {value}")
    if test_size < 0 or gpt_test_size < 0 or max_random_params < 1:
        raise CommandError("--test-size and --gpt-test-size must be >= 0, --max-random-params >= 1")
    if quick:
        data_list, vargs, vit_epochs, eps_v, sweep_v = ["digits"], {"patch": "4", "dim": "16", "depth": "1",
                                                                   "heads": "2"}, 4, [0.01], [0.1, 0.01]
        gargs, gdata, gpt_epochs, test_size, gpt_test_size = {"dim": "16", "depth": "1", "heads": "2"}, {
            "context": "8", "max_bytes": "120000"}, 1, 200, 200
        vit_lr = 0.05 if vit_lr is None else vit_lr
    try:
        vargs = dict(check_model_args("vit", vargs))
        gargs = dict(check_model_args("gpt", gargs))
        gdata = dict(check_data_args("pystdlib-chars", gdata))
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    folders = []
    for name in data_list:
        if name == "digits":
            folders.append((name, None))
            continue
        if data_root is None:
            raise CommandError(f"--vit-data {name} needs --data-root (a folder holding {name}/ with its idx files)")
        folders.append((name, existing_dir(data_root / name, f"--data-root {name}")))
    output_file(out, "--out")
    set_threads(threads)
    console = Console()
    with Stopwatch() as sw:
        body = T.run(folders, vit_args=vargs, vit_epochs=vit_epochs, eps_values=eps_v, sweep_eps=sweep_v,
                     constructions_=cons, gpt=gpt, gpt_args=gargs, gpt_data_args=gdata, gpt_epochs=gpt_epochs,
                     gpt_eps=eps_v, seed=seed, max_random_params=max_random_params, test_size=test_size,
                     gpt_test_size=gpt_test_size,
                     vit_lr=vit_lr, gpt_lr=gpt_lr, learned_methods=methods_l, learned_widths=widths_l,
                     log=console.print)
    import torch

    settings = {"vit_data": data_list, "vit_args": vargs, "vit_epochs": vit_epochs, "vit_lr": vit_lr, "eps": eps_v,
                "sweep_eps": sweep_v, "constructions": cons, "max_random_params": max_random_params,
                "test_size": test_size, "gpt_test_size": gpt_test_size, "gpt": gpt, "gpt_args": gargs,
                "gpt_data_args": gdata,
                "gpt_epochs": gpt_epochs, "gpt_lr": gpt_lr, "seed": seed, "quick": quick,
                "threads": torch.get_num_threads(),
                "training": "slth.train.train, method dense, SGD momentum 0.9, cosine, batch 128; ViT inputs in "
                            "[0, 1] unnormalised (construct with nonnegative_input=True)"}
    command = _command_with_dir(sys.argv[1:], ("--data-root",))
    record = {**header("transformers", settings, command=command), **body, "wall_seconds": sw.wall}
    write_record(record, out)
    console.print(f"transformers in {sw.wall:.0f} s -> {out}")


@app.command("hf-models")
def hf_models_command(
    models: str = typer.Option("gpt2,llama,bert", help="gpt2 (GPT2LMHeadModel), llama (LlamaForCausalLM), bert "
                                                       "(BertForSequenceClassification)"),
    eps: str = typer.Option("0.01,0.001,0.0001", help="eps values of the tickets (the goals are read at 0.001)"),
    context: int = typer.Option(128, help="pystdlib-chars window length the causal LMs train on"),
    max_bytes: int = typer.Option(1_000_000, help="pystdlib-chars corpus size"),
    lm_steps: int = typer.Option(3000, help="AdamW steps of each causal LM"),
    lm_batch: int = typer.Option(16, help="windows per step"),
    lm_lr: float = typer.Option(3e-3),
    bert_epochs: int = typer.Option(30, help="BERT training epochs on digits as tokens"),
    bert_batch: int = typer.Option(64),
    bert_lr: float = typer.Option(2e-3),
    prompts: int = typer.Option(50, help="generate() prompts (test windows spread over the split)"),
    prompt_tokens: int = typer.Option(32, help="characters of each prompt"),
    new_tokens: int = typer.Option(64, help="greedy tokens generated per prompt"),
    test_windows: int = typer.Option(0, help="test windows for perplexity and agreement (0: the whole split)"),
    seed: int = typer.Option(0),
    quick: bool = typer.Option(False, help="tiny setting for tests (width 16, one layer, few steps)"),
    out: Path = typer.Option(RESULTS / "hf_models.json"),
    threads: Optional[int] = typer.Option(1, help="torch threads (1 trained these models 3-5x faster than 2 on the "
                                                  "shared 2-core machine)"),
) -> None:
    """Tickets of transformers' GPT-2, Llama and BERT classes as downloaded: perplexity, agreement, generate()."""
    from rich.console import Console

    from ..experiments import hf_models as H
    from ..experiments.record import Stopwatch, header, write_record

    model_list = names(models, "--models", H.MODELS)
    eps_v = floats(eps, "--eps")
    if not eps_v or not all(0 < e < 1 for e in eps_v):
        raise CommandError(f"--eps needs values in (0, 1), got {eps!r}")
    if quick:
        context, max_bytes, lm_steps, lm_batch, bert_epochs, eps_v = 24, 150_000, 20, 8, 2, [0.01, 0.001]
        prompts, prompt_tokens, new_tokens, test_windows = 4, 8, 8, 64
    for name, value in (("--context", context), ("--max-bytes", max_bytes), ("--lm-steps", lm_steps),
                        ("--lm-batch", lm_batch), ("--bert-epochs", bert_epochs), ("--bert-batch", bert_batch),
                        ("--prompts", prompts), ("--prompt-tokens", prompt_tokens), ("--new-tokens", new_tokens)):
        if value < 1:
            raise CommandError(f"{name} must be >= 1, got {value}")
    if test_windows < 0 or lm_lr <= 0 or bert_lr <= 0:
        raise CommandError("--test-windows must be >= 0 and the learning rates > 0")
    if prompt_tokens + new_tokens > context:
        raise CommandError(f"--prompt-tokens + --new-tokens ({prompt_tokens} + {new_tokens}) exceed --context "
                           f"{context} (the positions the models are trained on)")
    output_file(out, "--out")
    set_threads(threads)
    console = Console()
    with Stopwatch() as sw:
        body = H.run(models=model_list, quick=quick, context=context, max_bytes=max_bytes, lm_steps=lm_steps,
                     lm_batch=lm_batch, lm_lr=lm_lr, bert_epochs=bert_epochs, bert_batch=bert_batch, bert_lr=bert_lr,
                     eps_values=eps_v, prompts=prompts, prompt_tokens=prompt_tokens, new_tokens=new_tokens,
                     test_windows=test_windows, seed=seed, log=console.print)
    import torch

    settings = {"models": model_list, "eps": eps_v, "context": context, "max_bytes": max_bytes, "lm_steps": lm_steps,
                "lm_batch": lm_batch, "lm_lr": lm_lr, "bert_epochs": bert_epochs, "bert_batch": bert_batch,
                "bert_lr": bert_lr, "prompts": prompts, "prompt_tokens": prompt_tokens, "new_tokens": new_tokens,
                "test_windows": test_windows, "seed": seed, "quick": quick, "threads": torch.get_num_threads()}
    write_record({**header("hf-models", settings), **body, "wall_seconds": sw.wall}, out)
    console.print(f"hf-models in {sw.wall:.0f} s -> {out}")
