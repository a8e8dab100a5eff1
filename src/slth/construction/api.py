"""The public ``construct`` entry point."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
from torch import nn

from .._jit import warm_up
from ..subsetsum import compile_kernels
from .build import MAX_N_PER_METHOD, MAX_REDRAW_ROUNDS, METHODS, LayerJob, choose_n, merge_layer
from .graph import REACH, plan_scales
from .network import LayerLayout
from .stream import CHUNK_INSTANCES, WorkDir, fingerprint, plan_chunks, run_chunks, take_layer_chunks
from .target import check_example_inputs, input_range_of, parse_target
from .ticket import Ticket


def _progress(enabled: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("weights"),
                    TimeElapsedColumn(), disable=not enabled, transient=False)


def construct(
    target: nn.Module,
    eps: float = 0.01,
    *,
    seed: int = 0,
    method: str = "pensia",
    nonnegative_input: bool = False,
    input_range: tuple[float, float] | None = None,
    sparse: bool = True,
    n: int | list[int] | None = None,
    p: float = 0.99,
    max_redraw_rounds: int = MAX_REDRAW_ROUNDS,
    progress: bool = False,
    workers: int = 1,
    backend: str = "local",
    address: str | None = None,
    workdir: str | None = None,
    resume: bool = False,
    chunk_instances: int = CHUNK_INSTANCES,
    device: str | None = None,
    attention: str = "projection",
    example_inputs=None,
) -> Ticket:
    """Build a ticket: masks over a seeded random network that approximates ``target``.

    ``eps`` is the per-weight tolerance (as in Pensia et al.): every realised weight and bias is
    within ``eps`` of the target's unless ``stats["failures"] > 0``. ``method``: ``"pensia"`` (a
    SubsetSum of n random products per weight; ``sparse=True`` takes the fewest products within eps)
    or ``"malach"`` (a single random product per weight, polynomial width). ``n``: values per instance,
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
    work, so that a target that fails on its inputs (a shape assertion, a dtype) is refused at once. The ticket
    does not depend on them: sizes are read from the ticket's own input when it runs. Optional ``forward``
    arguments that default to None are fixed to None when tracing.
    """
    from .target import ATTENTION_MODES

    if attention not in ATTENTION_MODES:
        raise ValueError(f"unknown attention construction {attention!r}; valid: {', '.join(ATTENTION_MODES)}")
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; valid: {', '.join(METHODS)}")
    if not (isinstance(eps, (int, float)) and np.isfinite(eps) and eps > 0):
        raise ValueError(f"eps must be a positive finite number, got {eps!r}")
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a nonnegative int, got {seed!r}")
    if device is not None and sparse and method == "pensia":
        raise ValueError("device= runs the minimal-error search (sparse=False); sparsest subsets run on the CPU")
    if not isinstance(chunk_instances, int) or chunk_instances < 1:
        raise ValueError(f"chunk_instances must be an int >= 1, got {chunk_instances!r}")
    if example_inputs is not None:
        check_example_inputs(target, example_inputs)
    start = time.perf_counter()
    box = input_range_of(input_range, nonnegative_input)
    graph, linears = parse_target(target, input_range=box, attention=attention)  # refuses a bad target first
    # pensia's n and its subsets come from the numba SubsetSum kernels: compile them off the clock
    compile_seconds = warm_up(compile_kernels) if method == "pensia" else 0.0
    start += compile_seconds
    if n is None:
        ns = [None] * len(linears)
    elif isinstance(n, (int, np.integer)):
        ns = [int(n)] * len(linears)
    else:
        ns = [int(x) for x in n]
        if len(ns) != len(linears):
            raise ValueError(f"n has {len(ns)} entries but the target has {len(linears)} Linear/Conv2d layers")
    max_n = MAX_N_PER_METHOD[method]
    if any(x is not None and not (1 <= x <= max_n) for x in ns):
        raise ValueError(f"n must be between 1 and {max_n} for method {method!r}, got {n}")
    if not (isinstance(p, (int, float)) and 0 < p < 1):
        raise ValueError(f"p (per-weight success probability used to choose n) must be in (0, 1), got {p!r}")
    if not isinstance(max_redraw_rounds, int) or max_redraw_rounds < 0:
        raise ValueError(f"max_redraw_rounds must be an int >= 0, got {max_redraw_rounds!r}")
    plan = plan_scales(graph, linears)
    graph = graph.with_plan(plan)  # the planned join factors
    scales, bias_scales, output_scale = list(plan.layer_scales), list(plan.bias_scales), plan.output_scale
    ops = graph.to_json()
    jobs = []
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
        jobs.append(LayerJob(index, layout, int(seed), scales[index], bias_scales[index], float(eps), method,
                             bool(sparse), max_redraw_rounds, device))
    chunks = plan_chunks(jobs, chunk_instances)
    target_params = sum(spec.params for spec in linears)
    selector_layers = [i for i, spec in enumerate(linears) if spec.selector]
    work = None
    if workdir is not None:
        work = WorkDir(workdir, fingerprint(jobs, linears, ops, chunks), resume=resume)
    with _progress(progress) as bar:
        task = bar.add_task("constructing", total=len(chunks))
        bar.update(task, description=f"{len(linears)} layers, {len(chunks)} chunks")
        computed, run = run_chunks(jobs, linears, chunks, workers=workers, backend=backend, address=address,
                                   workdir=work, on_chunk=lambda c: bar.update(task, advance=1))
        del linears, spec  # the target's float64 weights (1 GB for GPT-2 small) are no longer needed
        # one copy of the per-weight errors (10^8 of them for GPT-2 small): each layer's go into one array
        all_errors = np.empty(sum(job.layout.d_out * (job.layout.d_in * job.layout.taps + job.layout.bias)
                                  for job in jobs))
        results, at = [], 0
        for job in jobs:
            r = merge_layer(job, take_layer_chunks(job.index, chunks, computed, work))
            all_errors[at : at + r.errors.size] = r.errors
            at += r.errors.size
            results.append(dataclasses.replace(r, errors=None))
        del computed
        if at != all_errors.size:
            raise AssertionError(f"merged {at} weight errors, expected {all_errors.size}")
    prefixes = [str(pos) for pos in graph.layer_positions()]
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
        "layer_scales": scales,
        "seconds": time.perf_counter() - start,
        "compile_seconds": compile_seconds,
    }
    if attention == "product":  # only here: projection tickets (and their digests) stay as they were
        kinds = [node.kind for node in graph.nodes]
        stats["attention"] = {
            "construction": "product",
            "product_attentions": kinds.count("vo_mix"),
            "product_layers": selector_layers,
            "per_projection_fallback": [f"{kind} op at position {pos} (not an nn.MultiheadAttention)"
                                        for pos, kind in enumerate(kinds) if kind in ("attention", "softmax")],
        }
    config = {
        "method": method,
        "eps": float(eps),
        "sparse": bool(sparse),
        "nonnegative_input": box is not None and box[0] >= 0,
        "reach": REACH,
        "ops": ops,
        "layers": [r.layout.to_json() for r in results],
        "output_scale": output_scale,
    }
    if attention != "projection":
        config["attention"] = attention
    if box is not None and box != (0.0, 1.0):  # (0, 1) = nonnegative_input=True, the same ticket bit for bit
        config["input_range"] = [box[0], box[1]]
    ticket = Ticket(seed=int(seed), config=config, packed=masks, redraws=redraws, stats=stats)
    ticket.run = {"chunks": run.chunks, "reused": run.reused, "computed": run.computed, "workers": workers,
                  "backend": backend, "computed_names": run.computed_names}
    return ticket
