"""The public ``construct`` entry point, and its core :func:`construct_with` (a :class:`ConstructConfig`, what to
build, and an :class:`Execution`, how to run it)."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import nn

from .._jit import warm_up
from ..subsetsum import compile_kernels
from .build import LayerJob, choose_n, merge_layer
from .config import ConstructConfig, Execution
from .graph import REACH, plan_scales
from .methods import METHODS
from .modules import first_untraceable, plan_modules
from .network import LayerLayout
from .stream import WorkDir, fingerprint, plan_chunks, run_chunks, take_layer_chunks
from .target import (
    ExportedLeaves,
    LinearSpec,
    UntraceableError,
    check_example_inputs,
    export_target,
    exported_leaves,
    parse_target,
)
from .ticket import Ticket


def _progress(enabled: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("weights"),
                    TimeElapsedColumn(), disable=not enabled, transient=False)


_WHAT = ConstructConfig()  # the defaults of slth.construct's keywords: the records' (written once, there)
_HOW = Execution()


def construct(
    target: nn.Module,
    eps: float = _WHAT.eps,
    *,
    seed: int = _WHAT.seed,
    method: str = _WHAT.method,
    nonnegative_input: bool = _WHAT.nonnegative_input,
    input_range: tuple[float, float] | None = _WHAT.input_range,
    sparse: bool = _WHAT.sparse,
    n: int | list[int] | None = None,
    p: float = _WHAT.p,
    max_redraw_rounds: int = _WHAT.max_redraw_rounds,
    progress: bool = _HOW.progress,
    workers: int = _HOW.workers,
    backend: str = _HOW.backend,
    address: str | None = _HOW.address,
    workdir: str | None = _HOW.workdir,
    resume: bool = _HOW.resume,
    chunk_instances: int = _HOW.chunk_instances,
    device: str | None = _HOW.device,
    attention: str = _WHAT.attention,
    example_inputs=None,
    construction: str = _WHAT.construction,
    fold: bool = _WHAT.fold,
    nonnegative_leaves: bool = _WHAT.nonnegative_leaves,
) -> Ticket:
    """Build a ticket: masks over a seeded random network that approximates ``target``.

    The front door: the keywords make the two records :func:`construct_with` takes, a
    :class:`~slth.construction.config.ConstructConfig` (what to build: ``eps``, ``seed``, ``method``, ``n``,
    ``p``, ``sparse``, the input box, ``max_redraw_rounds``, ``attention``, ``construction``, ``example_inputs``)
    and an :class:`~slth.construction.config.Execution` (how to run it: ``workers``, ``backend``, ``address``,
    ``workdir``, ``resume``, ``chunk_instances``, ``device``, ``progress``); both refuse a bad value when made.

    ``eps`` is the per-weight tolerance (as in Pensia et al.): every realised weight and bias is
    within ``eps`` of the target's unless ``stats["failures"] > 0``. ``method``: ``"pensia"`` (a
    SubsetSum of n random products per weight; ``sparse=True`` takes the fewest products within eps)
    or ``"malach"`` (a single random product per weight, polynomial width); the methods are the entries of
    :data:`slth.construction.methods.METHODS`. ``n``: values per instance,
    per layer or for all; by default chosen per layer so that P(error <= eps) >= ``p`` for that layer's
    weights (:func:`slth.subsetsum.required_n`). Blocks that still miss are redrawn (recorded in the
    ticket, at most ``max_redraw_rounds`` rounds; 0 disables redraws). ``nonnegative_input``: the network's
    inputs are >= 0 (e.g. images in [0, 1]), so the first layer needs no units for negative inputs.
    ``input_range=(lo, hi)``: the inputs lie in that box (``nonnegative_input=True`` is ``(0, 1)``); with
    lo < 0 each layer reading the input is fed x - lo >= 0 by a fixed shift in the ticket and the shift goes
    into its bias (b + W lo), so it too needs no negative units; the box is the default box of
    :func:`certified_bound`.

    Targets: ReLU MLPs, CNNs (Conv2d, BatchNorm folded, pooling) and residual nets (traced with
    torch.fx); see docs/construction.md. The work is split into chunks (row blocks of a layer, at most
    ``chunk_instances`` SubsetSum instances each) run by ``workers`` local processes or, with
    ``backend="ray"``, on a Ray cluster (``address``); ``workdir`` checkpoints every finished chunk and
    ``resume=True`` reuses them. The ticket does not depend on any of these (only ``stats["seconds"]``
    does); ``ticket.run`` says how the run went. ``stats["seconds"]`` is the construction's work; numba's
    one-time compilation of the SubsetSum kernels (the first call in a process) is done before its clock
    starts and reported as ``stats["compile_seconds"]``. ``device``: PyTorch device for the minimal-error search
    (``sparse=False``).

    ``attention``: how an ``nn.MultiheadAttention`` (alone or in a Transformer encoder layer) is built:
    ``"projection"`` (default; W_q, W_k, W_v, W_o each a random ReLU pair) or ``"product"`` (one random
    multi-head attention pruned for the merged maps W_q^h W_k^h^T and W_v^h W_o^h, Otsuka et al.,
    arXiv:2511.04217). Attention written by hand (``scaled_dot_product_attention``, matmul + softmax) is built
    per projection in both modes (listed in ``stats["attention"]``). See docs/construction.md, "Attention".

    ``example_inputs``: a tuple of inputs (one tensor, with its batch dimension) the target is run on before any
    work, so that a target that fails on its inputs (a shape assertion, a dtype) is refused at once. A traced
    ticket does not depend on them: sizes are read from the ticket's own input when it runs. Optional ``forward``
    arguments that default to None are fixed to None when tracing. A target built by module replacement is also
    exported with torch.export on them, and with ``fold=True`` (default) the affine of each LayerNorm / RMSNorm
    whose output only Linear layers (``nn.Linear``, transformers' ``Conv1D``) read is folded into those layers
    (recorded in ``config["folds"]``; docs/construction.md, "Folding norms into their readers"); with
    ``nonnegative_leaves=True`` (default) each such Linear-like leaf whose input is nonnegative in every call of
    the exported graph (a ReLU's output, ...) gets n first-layer units per input, not 2n (its layouts' ``signed_input``
    is False; listed in ``stats["nonnegative_leaves"]``; docs/construction.md, "Nonnegative inputs").

    ``construction``: ``"auto"`` (default) reads the target into a construction graph (a chain, or a torch.fx
    trace) and, when torch.fx cannot trace it (any Hugging Face model, say), builds a ticket that replaces every
    weight-holding leaf module by its pair instead (``slth.construction.modules``; the ticket rebuilds with
    ``ticket.to_module(model=fresh_instance)``, its certified bound reads the target with torch.export on example
    inputs, ``certified_bound(ticket, target, example_inputs=...)``, and it names the first module torch.fx could
    not trace in ``config["untraced"]``); ``"graph"`` only the former, ``"modules"`` only the latter. See
    docs/construction.md, "Any model: module replacement".
    """
    config = ConstructConfig(eps=eps, seed=seed, method=method, n=n, p=p, sparse=sparse,
                             nonnegative_input=nonnegative_input, input_range=input_range,
                             max_redraw_rounds=max_redraw_rounds, attention=attention, construction=construction,
                             example_inputs=example_inputs, fold=fold,
                             nonnegative_leaves=nonnegative_leaves)
    execution = Execution(workers=workers, backend=backend, address=address, workdir=workdir, resume=resume,
                          chunk_instances=chunk_instances, device=device, progress=progress)
    return construct_with(target, config, execution)


def construct_with(target: nn.Module, config: ConstructConfig, execution: Execution = _HOW) -> Ticket:
    """Build a ticket of ``target``: what to build is ``config`` (:class:`ConstructConfig`), how to run it
    ``execution`` (:class:`Execution`). :func:`construct` is this with the two records made from its keywords;
    see it for what each field does. The ticket records the config that ran (its ``config``: method, eps,
    sparse, input box, attention, and every layer's n in its layout) and not the execution; ``ticket.run`` says
    how the run went."""
    if not isinstance(config, ConstructConfig):
        raise TypeError(f"config must be a ConstructConfig, got {type(config).__name__}")
    if not isinstance(execution, Execution):
        raise TypeError(f"execution must be an Execution, got {type(execution).__name__}")
    execution.check(config)
    if config.example_inputs is not None:
        check_example_inputs(target, config.example_inputs)
    start = time.perf_counter()
    box = config.box
    untraced = None
    if config.construction == "modules":
        untraced = "construct(..., construction='modules') replaced the modules without tracing the model"
    else:
        try:
            graph, linears = parse_target(target, input_range=box, attention=config.attention)
        except UntraceableError as exc:
            if config.construction == "graph":
                raise
            untraced = first_untraceable(target, str(exc))
    # SubsetSum's n and its subsets come from the numba kernels: compile them off the clock (after the target was
    # read, so that a target the construction cannot take is refused first)
    compile_seconds = warm_up(compile_kernels) if METHODS[config.method].subset_sum else 0.0
    start += compile_seconds
    clock = _Clock(start, compile_seconds)
    if untraced is not None:
        if box is not None or config.attention != "projection":
            raise ValueError(f"{type(target).__name__} is built by module replacement ({untraced}), which reads "
                             "every layer's input as signed: nonnegative_input / input_range and attention='product' "
                             "need the traced construction")
        return _construct_modules(target, untraced, config, execution, clock)
    ns = config.ns(len(linears))
    plan = plan_scales(graph, linears)
    graph = graph.with_plan(plan)  # the planned join factors
    scales, bias_scales, output_scale = list(plan.layer_scales), list(plan.bias_scales), plan.output_scale
    ops = graph.to_json()
    selector_layers = [i for i, spec in enumerate(linears) if spec.selector]
    prefixes = [str(pos) for pos in graph.layer_positions()]
    results, masks, redraws, stats, run = solve_layers(linears, ns, scales, bias_scales, ops, prefixes, config,
                                                       execution, clock)
    if config.attention == "product":  # only here: projection tickets (and their digests) stay as they were
        kinds = [node.kind for node in graph.nodes]
        stats["attention"] = {
            "construction": "product",
            "product_attentions": kinds.count("vo_mix"),
            "product_layers": selector_layers,
            "per_projection_fallback": [f"{kind} op at position {pos} (not an nn.MultiheadAttention)"
                                        for pos, kind in enumerate(kinds) if kind in ("attention", "softmax")],
        }
    ticket_config = {
        "method": config.method,
        "eps": config.eps,
        "sparse": config.sparse,
        "nonnegative_input": box is not None and box[0] >= 0,
        "reach": REACH,
        "ops": ops,
        "layers": [r.layout.to_json() for r in results],
        "output_scale": output_scale,
    }
    if config.attention != "projection":
        ticket_config["attention"] = config.attention
    if box is not None and box != (0.0, 1.0):  # (0, 1) = nonnegative_input=True, the same ticket bit for bit
        ticket_config["input_range"] = [box[0], box[1]]
    ticket = Ticket(seed=config.seed, config=ticket_config, packed=masks, redraws=redraws, stats=stats)
    ticket.run = _run_record(run, execution)
    return ticket


@dataclass(frozen=True)
class _Clock:
    """When the construction's clock started (after the kernels' compilation) and how long that took."""

    start: float
    compile_seconds: float


def _run_record(run, execution: Execution) -> dict[str, Any]:
    """``ticket.run``: how the chunks ran (not part of the ticket's digest)."""
    return {"chunks": run.chunks, "reused": run.reused, "computed": run.computed, "workers": execution.workers,
            "backend": execution.backend, "computed_names": run.computed_names}


def _construct_modules(target: nn.Module, untraced: str, config: ConstructConfig, execution: Execution,
                       clock: _Clock) -> Ticket:
    """Module replacement (``modules.py``): every weight-holding leaf of a copy of ``target`` becomes its pair,
    solved by the same layer jobs and chunk runner as the traced construction. Refuses (before any work) a
    parameter it cannot realise, by its full name."""
    why: list[str] = []  # why nothing was folded, when the exported graph could not be read
    reads = config.example_inputs is not None and (config.fold or config.nonnegative_leaves)
    plan = plan_modules(target, (lambda kinds: module_graph(target, config, kinds, why)) if reads else None)
    folds = plan.folds
    specs = list(plan.specs)
    if not specs:
        raise ValueError(f"{type(target).__name__} has no weight to construct (its norms have identity affines)")
    ns = config.ns(len(specs))
    by_layer = {i: (s, prefix) for leaf in plan.leaves for i, s, prefix in zip(leaf.layers, leaf.scales,
                                                                                  leaf.prefixes)}
    scales = [by_layer[i][0] for i in range(len(specs))]
    prefixes = [by_layer[i][1] for i in range(len(specs))]
    modules = [leaf.to_json() for leaf in plan.leaves]
    results, masks, redraws, stats, run = solve_layers(specs, ns, scales, scales, modules, prefixes, config,
                                                       execution, clock)
    stats["tied_parameters"] = [list(group) for group in plan.tied]
    ticket_config = {
        "construction": "modules",
        "model": plan.model,
        "method": config.method,
        "eps": config.eps,
        "sparse": config.sparse,
        "reach": REACH,
        "modules": modules,
        "layers": [r.layout.to_json() for r in results],
        "untraced": untraced,
    }
    if folds:  # only here: tickets built without example inputs (and their digests) stay as they were
        ticket_config["folds"] = {norm: list(readers) for norm, readers in folds.items()}
    if why:
        stats["folds"] = why[0]
    if plan.nonnegative:  # (their layouts record it: signed_input False)
        stats["nonnegative_leaves"] = list(plan.nonnegative)
    ticket = Ticket(seed=config.seed, config=ticket_config, packed=masks, redraws=redraws, stats=stats)
    ticket.run = _run_record(run, execution)
    return ticket


def module_graph(target: nn.Module, config: ConstructConfig, kinds: dict[str, str], why: list[str]) -> ExportedLeaves:
    """What the target exported on ``config.example_inputs`` says of its leaves
    (:func:`~slth.construction.target.exported_leaves`; ``kinds``: module path -> leaf kind): the norms whose affine
    module replacement folds into their readers (with ``config.fold``) and the Linear-like leaves whose input is
    nonnegative in every call (with ``config.nonnegative_leaves``). When torch.export or the parser cannot read it,
    neither, and ``why`` gets the reason (the ticket is then built as without example inputs)."""
    try:
        read = exported_leaves(target, export_target(target, config.example_inputs), kinds)
    except (UntraceableError, NotImplementedError, ValueError) as exc:
        why.append(f"not folded: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
        return ExportedLeaves({}, ())
    return ExportedLeaves(read.folds if config.fold else {}, read.nonnegative if config.nonnegative_leaves else ())


def layer_jobs(linears: list[LinearSpec], ns: list[int | None], scales, bias_scales, config: ConstructConfig,
               device: str | None = None) -> list[LayerJob]:
    """One :class:`LayerJob` per target layer: its random pair's layout (n chosen from eps unless given) and
    its planned scales. Shared by the traced construction and the module replacement (``modules.py``)."""
    jobs = []
    method, eps, p = config.method, config.eps, config.p
    for index, spec in enumerate(linears):
        if spec.d_in == 0:  # a constant of the target: only bias units, n from its entries
            n_l = ns[index] or choose_n(method, eps / bias_scales[index], spec.bias / bias_scales[index], p)
        else:
            n_l = ns[index] or choose_n(method, eps / scales[index], spec.weight / scales[index], p)
        conv = spec.conv or {}
        layout = LayerLayout(
            d_in=spec.d_in, d_out=spec.d_out, n=n_l, signed_input=not (spec.nonnegative_input or spec.selector),
            bias=spec.bias is not None, relu_after=spec.relu_after, kernel=tuple(conv.get("kernel", ())),
            stride=tuple(conv.get("stride", (1, 1))), padding=tuple(conv.get("padding", (0, 0))),
            dilation=tuple(conv.get("dilation", (1, 1))),
        )
        jobs.append(LayerJob(index, layout, config.seed, scales[index], bias_scales[index], eps, method,
                             config.sparse, config.max_redraw_rounds, device))
    return jobs


def solve_layers(linears: list[LinearSpec], ns: list[int | None], scales, bias_scales, ops, prefixes: list[str],
                 config: ConstructConfig, execution: Execution, clock: _Clock):
    """The layers' jobs (:func:`layer_jobs`), then run every layer's chunks (checkpointed in ``workdir``), merge
    them and collect the masks (named
    ``"<prefix>.a.weight"`` etc.), the canonical redraw records and the ticket's stats. ``ops`` fingerprints the
    construction's structure for the work dir. Empties ``linears`` once its chunks are solved (their float64
    weights are the largest thing held). Returns (results, masks, redraws, stats, run)."""
    jobs = layer_jobs(linears, ns, scales, bias_scales, config, execution.device)
    chunks = plan_chunks(jobs, execution.chunk_instances)
    target_params = sum(spec.params for spec in linears)
    work = None
    if execution.workdir is not None:
        work = WorkDir(execution.workdir, fingerprint(jobs, linears, ops, chunks), resume=execution.resume)
    with _progress(execution.progress) as bar:
        task = bar.add_task("constructing", total=len(chunks))
        bar.update(task, description=f"{len(linears)} layers, {len(chunks)} chunks")
        computed, run = run_chunks(jobs, linears, chunks, workers=execution.workers, backend=execution.backend,
                                   address=execution.address, workdir=work,
                                   on_chunk=lambda c: bar.update(task, advance=1))
        linears.clear()  # the target's float64 weights (1 GB for GPT-2 small) are no longer needed
        # one copy of the per-weight errors (10^8 of them for GPT-2 small): each layer's go into one array
        all_errors = np.empty(sum(job.layout.d_out * (job.layout.d_in * job.layout.taps + job.layout.bias)
                                  for job in jobs))
        results, at = [], 0
        for job in jobs:
            r = merge_layer(job, take_layer_chunks(job.index, chunks, computed, work))
            errors = r.errors
            assert errors is not None  # merge_layer returns them; they are dropped from the result here
            all_errors[at : at + errors.size] = errors
            at += errors.size
            results.append(dataclasses.replace(r, errors=None))
        del computed
        if at != all_errors.size:
            raise AssertionError(f"merged {at} weight errors, expected {all_errors.size}")
    masks = {f"{prefix}.{name}": m for prefix, r in zip(prefixes, results) for name, m in r.masks.items()}
    redraws = np.array([rd for r in results for rd in r.redraws], dtype=np.int64).reshape(-1, 4)
    # canonical order: the same ticket whatever the chunking, workers or backend (replay is per block, by round)
    redraws = redraws[np.lexsort((redraws[:, 3], redraws[:, 2], redraws[:, 1], redraws[:, 0]))]
    stats = {
        "target_params": int(target_params),
        "random_params": int(sum(r.layout.random_params for r in results)),
        "random_params_counting": "block-structured: first random layer as its block-diagonal entries "
        "(n or 2n per input, + bias units), second random layer dense; = n x target weights + first-layer scalars",
        "random_params_dense_theorem": int(sum(r.layout.dense_theorem_params for r in results)),
        "kept_params": int(sum(m.count() for m in masks.values())),
        "max_weight_error": float(max(r.max_weight_error for r in results)),
        "max_weight_error_per_layer": [r.max_weight_error for r in results],
        "weight_error_median": float(np.median(all_errors, overwrite_input=True)),  # partitions in place
        "weight_error_p99": float(np.quantile(all_errors, 0.99, overwrite_input=True)),
        "eps_met": bool(all(r.failures == 0 for r in results)),
        "n_per_layer": [r.layout.n for r in results],
        "failures": int(sum(r.failures for r in results)),
        "failures_per_layer": [r.failures for r in results],
        "redraws": int(len(redraws)),
        "layer_scales": [job.scale for job in jobs],
        "seconds": time.perf_counter() - clock.start,
        "compile_seconds": clock.compile_seconds,
    }
    return results, masks, redraws, stats, run
