"""Transformers: constructed tickets of a trained ViT (MNIST, Fashion-MNIST) and a char-level GPT.

* **ViT tickets**: the registry ``vit`` (patch 7, the other defaults) trained densely by the one trainer
  (``slth.train.train``, method ``dense``) on unnormalised inputs in [0, 1], so ``construct`` takes
  ``nonnegative_input=True``; tickets at each eps for each construction: Pensia pairs (``method="pensia"``,
  every projection an ordinary random pair), product attention (``attention="product"``, when
  :func:`attentions` lists it) and Malach (``method="malach"``, one random product per weight) where its
  random network stays below a size cap (its per-layer n is computed first; above the cap only the size is
  reported). Measured on the test set: accuracies, top-1 agreement, max |logit difference|; params and the
  construction's work seconds (``ticket.stats["seconds"]``, numba's compilation excluded).
* **Width factor vs eps**: random params / target params of the ViT per construction, from built tickets
  where the size cap allows, else computed from the per-layer n that ``construct`` would choose
  (:func:`plan_size`, the same ``choose_n`` and layouts as ``construct``).
* **char-GPT**: the registry ``gpt`` on ``pystdlib-chars``; tickets at each eps; next-character top-1
  agreement and perplexity of ticket and target on the held-out split.
* **Construction vs learning** (Fashion-MNIST ViT): the record names the ``slth train`` runs of the same ViT
  (``learning-by-pruning/fmnist-vit-<method>-w<width>.json``); :func:`render` reads them when present.

The attention constructions come from one place, :func:`attentions`: ``slth.construction.target.ATTENTION_MODES``
(or ``slth.construction.api.ATTENTIONS``) when defined, else ``("projection",)``; ``"product"`` then joins the
experiment by itself.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .settings import check_at_least, check_names, option

if TYPE_CHECKING:
    from .sections import Context, Record

VIT_DATA = ("digits", "mnist", "fashion-mnist")
GOAL_AGREEMENT = 0.995  # ViT: top-1 agreement at eps 1e-3
GOAL_AGREEMENT_EPS = 1e-3
GOAL_PERPLEXITY = 0.01  # GPT: ticket perplexity within 1 % of the target's
LEARNED_DIR = "learning-by-pruning"
LEARNED_NAME = "fmnist-vit-{method}-w{width}.json"
LABELS = {"pensia": "Pensia pairs", "product": "product attention", "malach": "Malach"}

PAPER = ("Pensia et al. 2020 (arXiv:2006.07990): every weight within eps by a SubsetSum of O(log 1/eps) random "
         "products, width factor logarithmic in 1/eps; Malach et al. 2020: one random product per weight, width "
         "polynomial in 1/eps. Otsuka et al. (arXiv:2511.04217): pruning a random attention layer approximates the "
         "query-key product W_Q W_K^T directly, with logarithmic key/value width. None of them reports tickets "
         "of a trained ViT or GPT.")


TRAINING = ("slth.train.train, method dense, SGD momentum 0.9, cosine, batch 128; ViT inputs in [0, 1] "
            "unnormalised (construct with nonnegative_input=True)")


@dataclass(frozen=True)
class Settings:
    vit_data: tuple[str, ...] = option(("mnist", "fashion-mnist"), "ViT data sets: digits, mnist, fashion-mnist")
    data_root: Path | None = option(None, "folder with one sub-folder per data set, named as the data set "
                                             "(mnist/, fashion-mnist/ with the idx files)")
    vit_args: dict[str, str] = option({"patch": "7"}, "ViT constructor arguments, KEY=VALUE,... (patch, dim, depth, "
                                                       "heads, mlp_ratio)")
    vit_epochs: int = option(8, "dense training epochs of each ViT")
    vit_lr: float | None = option(0.05, "ViT peak learning rate (SGD, cosine)")
    eps: tuple[float, ...] = option((0.01, 0.001), "eps values of the ViT and GPT tickets")
    sweep_eps: tuple[float, ...] = option((0.1, 0.03, 0.01, 0.003, 0.001), "eps values of the width-vs-eps table "
                                                                           "(first ViT data set)")
    constructions: tuple[str, ...] | None = option(None, "pensia, product (attention='product'), malach; "
                                                            "default: all available")
    max_random_params: int = option(12_000_000, "build a ticket only below this many random params (above: its "
                                                "size is computed from the required n)")
    test_size: int = option(0, "ViT test images evaluated (0: the whole test set)")
    gpt: bool = option(True, "run the char-GPT part")
    gpt_args: dict[str, str] = option({"dim": "64", "depth": "2", "heads": "4"}, "GPT constructor arguments, "
                                                                                 "KEY=VALUE,...")
    gpt_data_args: dict[str, str] = option({"context": "32", "max_bytes": "2000000"}, "pystdlib-chars options, "
                                                                                      "KEY=VALUE,...")
    gpt_epochs: int = option(4, "dense training epochs of the GPT")
    gpt_lr: float | None = option(0.3, "GPT peak learning rate (SGD, cosine; 1.0 diverges)")
    gpt_test_size: int = option(0, "held-out GPT windows evaluated (0: the whole held-out split)")
    learned_methods: tuple[str, ...] = option(("dense", "edge-popup", "biprop"), "slth train runs of the "
                                              "Fashion-MNIST ViT shown beside the construction")
    learned_widths: tuple[float, ...] = option((1.0, 2.0), "their widths")
    seed: int = option(0)

    def __post_init__(self):
        from ..data import check_data_args
        from ..models import check_model_args

        check_names(self.vit_data, "vit_data", VIT_DATA)
        if self.constructions is not None:
            check_names(self.constructions, "constructions", constructions())
        if not self.eps:
            raise ValueError("--eps is empty")
        for e in (*self.eps, *self.sweep_eps):
            if not (0 < e < 1):
                raise ValueError(f"--eps and --sweep-eps values must lie in (0, 1), got {e:g}")
        check_names(self.learned_methods, "learned_methods")
        check_at_least(self, 1, "vit_epochs", "gpt_epochs", "max_random_params")
        check_at_least(self, 0, "test_size", "gpt_test_size")
        try:  # the registries convert the values ("7" -> 7): the record holds what the models were built with
            object.__setattr__(self, "vit_args", dict(check_model_args("vit", self.vit_args)))
            object.__setattr__(self, "gpt_args", dict(check_model_args("gpt", self.gpt_args)))
            object.__setattr__(self, "gpt_data_args", dict(check_data_args("pystdlib-chars", self.gpt_data_args)))
        except ValueError as exc:
            raise ValueError(str(exc)) from None
        for name in self.vit_data:
            if name == "digits":
                continue
            if self.data_root is None:
                raise ValueError(f"--vit-data {name} needs --data-root (a folder holding {name}/ with its idx files)")
            if not (self.data_root / name).is_dir():
                raise ValueError(f"no such --data-root {name} directory: {self.data_root / name}")


PRESETS = {"quick": dict(vit_data=("digits",), vit_args={"patch": "4", "dim": "16", "depth": "1", "heads": "2"},
                         vit_epochs=4, eps=(0.01,), sweep_eps=(0.1, 0.01), gpt_args={"dim": "16", "depth": "1",
                                                                                     "heads": "2"},
                         gpt_data_args={"context": "8", "max_bytes": "120000"}, gpt_epochs=1, test_size=200,
                         gpt_test_size=200)}


def execute(settings: Settings, *, out=None, log=print, quiet: bool = False) -> dict[str, Any]:
    """The ViTs, the GPT and their tickets: the record's body (:func:`run`)."""
    s = settings
    folders = [(name, None if name == "digits" else s.data_root / name) for name in s.vit_data]
    body = run(folders, vit_args=dict(s.vit_args), vit_epochs=s.vit_epochs, eps_values=list(s.eps),
               sweep_eps=list(s.sweep_eps),
               constructions_=list(constructions() if s.constructions is None else s.constructions), gpt=s.gpt,
               gpt_args=dict(s.gpt_args), gpt_data_args=dict(s.gpt_data_args), gpt_epochs=s.gpt_epochs,
               gpt_eps=list(s.eps), seed=s.seed, max_random_params=s.max_random_params, test_size=s.test_size,
               gpt_test_size=s.gpt_test_size, vit_lr=s.vit_lr, gpt_lr=s.gpt_lr,
               learned_methods=list(s.learned_methods), learned_widths=list(s.learned_widths), log=log)
    return {**body, "training": TRAINING}


# --------------------------------------------------------------------------- which constructions exist
def attentions() -> tuple[str, ...]:
    """The attention constructions ``slth.construct`` offers (``slth.construction.target.ATTENTION_MODES``, where
    ``construct`` checks its ``attention=`` keyword): the one place this experiment reads them from."""
    from ..construction.target import ATTENTION_MODES

    return tuple(ATTENTION_MODES)


def constructions() -> tuple[str, ...]:
    """The constructions this experiment runs: pensia (pairs), product (attention="product"), malach."""
    return ("pensia", *(("product",) if "product" in attentions() else ()), "malach")


def construct_kwargs(construction: str) -> dict[str, Any]:
    """``construct``'s keywords for one of :func:`constructions`: a construction method's name (an entry of
    :data:`slth.construction.methods.METHODS`), or product attention over Pensia pairs."""
    from ..construction.methods import METHODS

    if construction in METHODS:
        return {"method": construction}
    if construction == "product":
        return {"method": "pensia", "attention": "product"}
    raise ValueError(f"unknown construction {construction!r}; valid: {', '.join(constructions())}")


# --------------------------------------------------------------------------- sizes without building
def plan_size(target, eps: float, method: str, *, nonnegative_input: bool = False, p: float = 0.99) -> dict[str, Any]:
    """The per-layer n ``construct(target, eps, method=method)`` would choose and the random params that gives,
    without drawing anything (the same ``choose_n``, scales and layouts as :func:`slth.construct`)."""
    from ..construction.build import choose_n
    from ..construction.graph import plan_scales
    from ..construction.network import LayerLayout
    from ..construction.target import input_range_of, parse_target

    box = input_range_of(None, nonnegative_input)
    graph, linears = parse_target(target, input_range=box)
    plan = plan_scales(graph, linears)
    scales, bias_scales = list(plan.layer_scales), list(plan.bias_scales)
    ns, random_params = [], 0
    for index, spec in enumerate(linears):
        if spec.d_in == 0:
            n = choose_n(method, eps / bias_scales[index], spec.bias / bias_scales[index], p)
        else:
            n = choose_n(method, eps / scales[index], spec.weight / scales[index], p)
        conv = spec.conv or {}
        layout = LayerLayout(d_in=spec.d_in, d_out=spec.d_out, n=n, signed_input=not spec.nonnegative_input,
                             bias=spec.bias is not None, relu_after=spec.relu_after,
                             kernel=tuple(conv.get("kernel", ())), stride=tuple(conv.get("stride", (1, 1))),
                             padding=tuple(conv.get("padding", (0, 0))), dilation=tuple(conv.get("dilation", (1, 1))))
        ns.append(int(n))
        random_params += int(layout.random_params)
    target_params = int(sum(spec.params for spec in linears))
    return {"n_per_layer": ns, "random_params": random_params, "target_params": target_params,
            "width_factor": random_params / target_params}


# --------------------------------------------------------------------------- measurements
def _ticket_stats(ticket) -> dict[str, Any]:
    s = ticket.stats
    return {"target_params": s["target_params"], "random_params": s["random_params"], "kept_params": s["kept_params"],
            "random_ratio": s["random_params"] / s["target_params"],
            "kept_ratio": s["kept_params"] / s["target_params"],
            "seconds": s["seconds"], "compile_seconds": s["compile_seconds"], "n_per_layer": s["n_per_layer"],
            "eps_met": s["eps_met"], "redraws": s["redraws"], "max_weight_error": s["max_weight_error"]}


def measure_lm(ticket_module, target, x, y, *, batch_size: int = 256) -> dict[str, Any]:
    """Next-token top-1 agreement, accuracies, perplexities (exp mean cross-entropy per position) and the max
    |logit difference| of ticket and target on token windows x (N, T) with next-token targets y."""
    import torch
    import torch.nn.functional as F

    target, ticket_module = target.eval(), ticket_module.eval()
    agree = right_t = right_k = 0
    ce_t = ce_k = max_diff = 0.0
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            xb, yb = x[start:start + batch_size], y[start:start + batch_size]
            ft, fk = target(xb).double(), ticket_module(xb).double()
            max_diff = max(max_diff, float((ft - fk).abs().max()))
            pt, pk = ft.argmax(-1), fk.argmax(-1)
            agree += int((pt == pk).sum())
            right_t += int((pt == yb).sum())
            right_k += int((pk == yb).sum())
            ce_t += float(F.cross_entropy(ft.flatten(0, 1), yb.flatten(), reduction="sum"))
            ce_k += float(F.cross_entropy(fk.flatten(0, 1), yb.flatten(), reduction="sum"))
    count = y.numel()
    pt_, pk_ = math.exp(ce_t / count), math.exp(ce_k / count)
    return {"top1_agreement": agree / count, "target_accuracy": right_t / count, "ticket_accuracy": right_k / count,
            "target_perplexity": pt_, "ticket_perplexity": pk_, "perplexity_ratio": pk_ / pt_,
            "max_logit_diff": max_diff, "positions": int(count)}


def _train(model: str, data: str, data_dir, *, model_args: dict, data_args: dict | None = None, epochs: int,
           seed: int, lr: float | None, normalize: bool):
    from ..train import TrainConfig, train
    from .record import Stopwatch

    cfg = TrainConfig(method="dense", model=model, data=data, data_dir=None if data_dir is None else str(data_dir),
                      model_args=model_args, data_args=data_args or {}, epochs=epochs, seed=seed, lr=lr,
                      normalize=normalize, device="cpu")
    with Stopwatch() as sw:
        run = train(cfg, None, quiet=True)
    net = run.model.cpu().eval()
    for p in net.parameters():
        p.requires_grad_(False)
    info = {"epochs": epochs, "lr": cfg.resolved().lr, "wall_seconds": sw.wall, "cpu_seconds": sw.cpu,
            "train_seconds": run.metrics["seconds"], "test_accuracy": run.metrics["test_accuracy"],
            "model_params": int(sum(p.numel() for p in net.parameters())),
            "model_args": {k: v for k, v in cfg.model_args}, "data_args": {k: v for k, v in cfg.data_args}}
    if run.metrics.get("test_perplexity") is not None:
        info["test_perplexity"] = run.metrics["test_perplexity"]
    if run.metrics.get("data_info"):
        info["data_info"] = run.metrics["data_info"]
    return net, info


def _construct_each(target, eps_values: Sequence[float], constructions_: Sequence[str], evaluate: Callable, *,
                    seed: int, nonnegative_input: bool, max_random_params: int, log: Callable) -> list[dict[str, Any]]:
    """One row per (eps, construction), in that order: :func:`_build`, then ``evaluate(ticket, row, label)`` on
    every ticket built (rows of tickets above the cap say so instead). Each ticket is dropped once measured."""
    rows = []
    for eps in eps_values:
        for c in constructions_:
            ticket, row = _build(target, eps, c, seed=seed, nonnegative_input=nonnegative_input,
                                 max_random_params=max_random_params, log=log)
            if ticket is not None:
                evaluate(ticket, row, f"  {c} eps {eps:g}")
            rows.append(row)
            del ticket
    return rows


def _build(target, eps: float, construction: str, *, seed: int, nonnegative_input: bool, max_random_params: int,
           log: Callable) -> tuple[Any, dict[str, Any]]:
    """(ticket or None, row): Malach (and Pensia) are sized first and not built above ``max_random_params``."""
    from ..construction.methods import METHODS

    row: dict[str, Any] = {"construction": construction, "eps": eps}
    method = construct_kwargs(construction)["method"]
    # a method whose chosen n is unbounded (Malach's) is sized first; Pensia's is at most 32 (n x target params)
    if METHODS[method].chosen_n_max is None:
        size = plan_size(target, eps, method, nonnegative_input=nonnegative_input)
        row["planned"] = size
        if size["random_params"] > max_random_params:
            row.update(skipped=f"needs {size['random_params']:,} random params (n per layer "
                               f"{min(size['n_per_layer'])}-{max(size['n_per_layer'])}), above the cap "
                               f"{max_random_params:,} of this run",
                       random_params=size["random_params"], target_params=size["target_params"],
                       random_ratio=size["width_factor"], n_per_layer=size["n_per_layer"])
            log(f"  {construction} eps {eps:g}: not built ({row['skipped']})")
            return None, row
    from ..construction import construct

    try:
        ticket = construct(target, eps, seed=seed, nonnegative_input=nonnegative_input,
                           **construct_kwargs(construction))
    except (NotImplementedError, ValueError, TypeError) as exc:  # e.g. a construction that refuses this target
        row["error"] = f"{type(exc).__name__}: {exc}"
        log(f"  {construction} eps {eps:g}: failed ({row['error']})")
        return None, row
    row.update(_ticket_stats(ticket))
    return ticket, row


def run_vit(data: str, data_dir, *, model_args: dict, epochs: int, eps_values: Sequence[float],
            sweep_eps: Sequence[float], constructions_: Sequence[str], seed: int, max_random_params: int,
            test_size: int, lr: float | None, sweep: bool, log: Callable = print) -> dict[str, Any]:
    from ..construction.report import measure
    from ..data import load_dataset
    from .record import Stopwatch

    ds = load_dataset(data, data_dir)
    x, y = ds.x_test, ds.y_test
    if test_size:
        x, y = x[:test_size], y[:test_size]
    lo, hi = float(ds.x_train.min()), float(ds.x_train.max())
    if lo < 0 or hi > 1:
        raise ValueError(f"{data}: inputs in [{lo}, {hi}], expected [0, 1] for nonnegative_input=True")
    target, info = _train("vit", data, data_dir, model_args=model_args, epochs=epochs, seed=seed, lr=lr,
                          normalize=False)
    log(f"vit on {data}: test accuracy {info['test_accuracy']:.4f} after {epochs} epochs "
        f"({info['wall_seconds']:.0f} s)")

    def evaluate(ticket, row: dict, label: str) -> None:
        with Stopwatch() as sw:
            m = measure(ticket.to_module(), target, x, y, batch_size=500)
        row.update(target_accuracy=m["target_accuracy"], ticket_accuracy=m["ticket_accuracy"],
                   top1_agreement=m["top1_agreement"], max_logit_diff=m["max_logit_diff"],
                   test_examples=m["examples"], measure_seconds=sw.wall)
        log(f"{label}: ticket {m['ticket_accuracy']:.4f} (target {m['target_accuracy']:.4f}), "
            f"agreement {m['top1_agreement']:.4f}, max |dlogit| {m['max_logit_diff']:.3g}, "
            f"{row['random_params']:,} random / {row['kept_params']:,} kept, {row['seconds']:.1f} s")

    tickets = _construct_each(target, eps_values, constructions_, evaluate, seed=seed, nonnegative_input=True,
                              max_random_params=max_random_params, log=log)
    built = {(row["construction"], row["eps"]): row for row in tickets}
    out = {"data": data, "train": info, "input_range": [lo, hi], "test_examples": int(len(y)), "tickets": tickets}
    if sweep:
        out["width_vs_eps"] = width_sweep(target, sweep_eps, constructions_, built, seed=seed,
                                          max_random_params=max_random_params, log=log)
    return out


def width_sweep(target, eps_values: Sequence[float], constructions_: Sequence[str], built: dict, *, seed: int,
                max_random_params: int, log: Callable = print) -> list[dict[str, Any]]:
    """Random params / target params per construction and eps: built where the cap allows, else computed from
    the per-layer n ``construct`` would choose. ``built``: (construction, eps) -> row of the ViT part, reused."""
    rows = []
    for eps in eps_values:
        for c in constructions_:
            ticket = None
            if (c, eps) in built:
                r = built[(c, eps)]
            else:
                ticket, r = _build(target, eps, c, seed=seed, nonnegative_input=True,
                                   max_random_params=max_random_params, log=log)
            if "seconds" in r:
                rows.append({"construction": c, "eps": eps, "source": "built", "width_factor": r["random_ratio"],
                             "random_params": r["random_params"], "target_params": r["target_params"],
                             "n_per_layer": r["n_per_layer"], "eps_met": r["eps_met"], "seconds": r["seconds"]})
            elif "skipped" in r:
                rows.append({"construction": c, "eps": eps, "source": "computed from the required n",
                             "width_factor": r["random_ratio"], "random_params": r["random_params"],
                             "target_params": r["target_params"], "n_per_layer": r["n_per_layer"]})
            else:
                rows.append({"construction": c, "eps": eps, "source": "failed", "error": r.get("error")})
            log(f"  width eps {eps:g} {c}: {rows[-1].get('width_factor', float('nan')):.1f}x ({rows[-1]['source']})")
            del ticket
    return rows


def run_gpt(*, model_args: dict, data_args: dict, epochs: int, eps_values: Sequence[float],
            constructions_: Sequence[str], seed: int, max_random_params: int, test_size: int, lr: float | None,
            log: Callable = print) -> dict[str, Any]:
    """``test_size``: held-out windows evaluated (0: all)."""
    from ..data import load_dataset
    from .record import Stopwatch

    target, info = _train("gpt", "pystdlib-chars", None, model_args=model_args, data_args=data_args, epochs=epochs,
                          seed=seed, lr=lr, normalize=True)
    ds = load_dataset("pystdlib-chars", None, **data_args)
    x, y = ds.x_test, ds.y_test
    if test_size:
        x, y = x[:test_size], y[:test_size]
    log(f"gpt: test perplexity {info.get('test_perplexity', float('nan')):.3f} after {epochs} epochs "
        f"({info['wall_seconds']:.0f} s)")

    def evaluate(ticket, row: dict, label: str) -> None:
        with Stopwatch() as sw:
            m = measure_lm(ticket.to_module(), target, x, y)
        row.update(m, measure_seconds=sw.wall)
        log(f"{label}: perplexity ticket {m['ticket_perplexity']:.4f} / target "
            f"{m['target_perplexity']:.4f}, agreement {m['top1_agreement']:.4f}, "
            f"{row['random_params']:,} random / {row['kept_params']:,} kept, {row['seconds']:.1f} s")

    tickets = _construct_each(target, eps_values, constructions_, evaluate, seed=seed, nonnegative_input=False,
                              max_random_params=max_random_params, log=log)
    return {"data": "pystdlib-chars", "train": info, "test_windows": int(len(y)), "tickets": tickets}


def run(vit_data: Sequence[tuple[str, Any]], *, vit_args: dict, vit_epochs: int, eps_values: Sequence[float],
        sweep_eps: Sequence[float], constructions_: Sequence[str], gpt: bool, gpt_args: dict, gpt_data_args: dict,
        gpt_epochs: int, gpt_eps: Sequence[float], seed: int, max_random_params: int, test_size: int,
        gpt_test_size: int = 0, vit_lr: float | None = None, gpt_lr: float | None = None,
        learned_methods: Sequence[str] = (), learned_widths: Sequence[float] = (),
        log: Callable = print) -> dict[str, Any]:
    """``vit_data``: (data set name, its folder or None). Returns the record body (without the header)."""
    from .._jit import warm_up
    from ..subsetsum import compile_kernels

    unknown = [c for c in constructions_ if c not in constructions()]
    if unknown:
        raise ValueError(f"unknown or unavailable construction(s) {', '.join(unknown)}; available here: "
                         f"{', '.join(constructions())} (attention constructions of slth.construct: "
                         f"{', '.join(attentions())})")
    compile_seconds = warm_up(compile_kernels)  # numba: once per process, not part of any construction's seconds
    start = time.perf_counter()
    out: dict[str, Any] = {"attentions": list(attentions()), "constructions": list(constructions_),
                           "numba_compile_seconds": compile_seconds, "vit": []}
    for i, (name, folder) in enumerate(vit_data):
        out["vit"].append(run_vit(name, folder, model_args=vit_args, epochs=vit_epochs, eps_values=eps_values,
                                  sweep_eps=sweep_eps, constructions_=constructions_, seed=seed,
                                  max_random_params=max_random_params, test_size=test_size, lr=vit_lr,
                                  sweep=i == 0, log=log))
    if gpt:
        out["gpt"] = run_gpt(model_args=gpt_args, data_args=gpt_data_args, epochs=gpt_epochs, eps_values=gpt_eps,
                             constructions_=constructions_,
                             seed=seed, max_random_params=max_random_params, test_size=gpt_test_size, lr=gpt_lr,
                             log=log)
    out["learned"] = {"folder": LEARNED_DIR, "name": LEARNED_NAME, "methods": list(learned_methods),
                      "widths": list(learned_widths)}
    out["paper"] = PAPER
    out["experiment_seconds"] = time.perf_counter() - start
    return out


# --------------------------------------------------------------------------- report section
def _params(n: int | None, ratio: float | None = None) -> str:
    if n is None:
        return "-"
    return f"{n:,}" + ("" if ratio is None else f" ({ratio:.1f}x)")


def _base(rows: list[dict]) -> int | None:
    """The target's own weight count, the common denominator of every ratio: the per-projection constructions'
    ``target_params`` (product attention counts the entries of its merged maps instead, which are more)."""
    return next((r["target_params"] for r in rows if r.get("construction") != "product" and r.get("target_params")),
                None)


def _ratio(row: dict, key: str, base: int | None) -> float | None:
    if row.get(key) is None:
        return None
    return row[key] / base if base else row[key] / row["target_params"]


def _met(ok: bool | None) -> str:
    return "not measured" if ok is None else ("**met**" if ok else "**not met**")


def _learned(ctx: Context, spec: dict) -> list[tuple[str, float, dict | None]]:
    import json

    rows = []
    for method in spec.get("methods", []):
        for width in spec.get("widths", []):
            path = ctx.results_dir / spec["folder"] / spec["name"].format(method=method, width=f"{width:g}")
            data = None
            if path.is_file():
                try:
                    data = json.loads(path.read_text(encoding="utf-8"))
                except json.JSONDecodeError:
                    data = None
            rows.append((method, width, data))
    return rows


def render(record: Record, ctx: Context) -> str:
    """The docs/results.md section of one record (called by ``slth report``)."""
    from . import sections
    from .sections import pct, provenance, table

    d = record.data
    s = d["settings"]
    out = ["## Transformers\n",
           f"Tickets of trained Transformers built by `slth.construct`: a ViT (`vit`, {_args(s['vit_args'])}) on "
           f"{' and '.join(v['data'] for v in d['vit'])}, trained densely by `slth.train` ({s['vit_epochs']} epochs, "
           "inputs in [0, 1] without normalisation, so `nonnegative_input=True`), and a char-level GPT on "
           "`pystdlib-chars`. Constructions: *Pensia pairs* (`method=\"pensia\"`: every Linear map, the attention "
           "projections included, an ordinary random pair), "
           + ("*product attention* (`attention=\"product\"`), " if "product" in d["constructions"] else
              "*product attention* (`attention=\"product\"`: not available in `slth.construct` when this record was "
              "made), ")
           + "*Malach* (`method=\"malach\"`: one random product per weight), built only below "
           f"{s['max_random_params']:,} random params (above: its required size, computed, not built). "
           "*Target/random/kept params*: the weights the construction approximates, the random network's "
           "weights, the kept ones; the ratios (and every width factor below) are to the target's own weights as "
           "the per-projection constructions count them, for all constructions alike (product attention counts "
           "the entries of its merged per-head maps W_q W_k^T and W_v W_o as its target params, more than the "
           "projections' weights). *Seconds*: the construction's work "
           "(`ticket.stats[\"seconds\"]`, numba compilation excluded). Agreement and max |logit difference| over "
           "the test set.\n"]
    goals = []
    for v in d["vit"]:
        tr = v["train"]
        rows, notes = [], []
        base = _base(v["tickets"])
        for t in v["tickets"]:
            label = LABELS.get(t["construction"], t["construction"])
            if "skipped" in t or "error" in t:
                rows.append([label, f"{t['eps']:g}", "-", "not built" + _mark(notes, t), "-", "-",
                             _params(t.get("target_params")),
                             _params(t.get("random_params"), _ratio(t, "random_params", base)), "-", "-"])
                if t["eps"] == GOAL_AGREEMENT_EPS:
                    goals.append((f"ViT {v['data']}, {label}", None))
                continue
            rows.append([label, f"{t['eps']:g}", pct(t["target_accuracy"]), pct(t["ticket_accuracy"]),
                         pct(t["top1_agreement"]), f"{t['max_logit_diff']:.2g}", _params(t["target_params"]),
                         _params(t["random_params"], _ratio(t, "random_params", base)),
                         _params(t["kept_params"], _ratio(t, "kept_params", base)),
                         f"{t['seconds']:.1f}" + ("" if t["eps_met"] else " (eps not met)")])
            if t["eps"] == GOAL_AGREEMENT_EPS:
                goals.append((f"ViT {v['data']}, {label}", t["top1_agreement"]))
        out.append(f"### ViT on {v['data']}\n")
        out.append(f"Target: {tr['model_params']:,} parameters, test accuracy {pct(tr['test_accuracy'])} % after "
                   f"{tr['epochs']} epochs ({tr['train_seconds']:.0f} s training, lr {tr['lr']:g}); "
                   f"{v['test_examples']:,} test images.\n")
        out.append(table(["construction", "eps", "target acc. %", "ticket acc. %", "top-1 agreement %",
                          "max abs logit diff", "target params", "random params", "kept params",
                          "seconds"], rows))
        out.append(_notes(notes))
    sweep = next((v for v in d["vit"] if "width_vs_eps" in v), None)
    if sweep is not None:
        base = _base(sweep["width_vs_eps"])
        rows_ = [{**r, "width_factor": _ratio(r, "random_params", base)} if "random_params" in r else r
                 for r in sweep["width_vs_eps"]]
        cons = list(dict.fromkeys(r["construction"] for r in rows_))
        eps_list = sorted({r["eps"] for r in rows_}, reverse=True)
        cells = {(r["construction"], r["eps"]): r for r in rows_}
        table_rows = []
        for eps in eps_list:
            row = [f"{eps:g}"]
            for c in cons:
                r = cells.get((c, eps))
                if r is None or "width_factor" not in r:
                    row.append("-" if r is None else f"failed: {r.get('error')}")
                    continue
                ns = r.get("n_per_layer") or []
                nr = f"n {min(ns)}-{max(ns)}" if ns else ""
                src = "built" if r["source"] == "built" else "computed"
                row.append(f"{r['width_factor']:.1f}x ({nr}; {src})")
            table_rows.append(row)
        plt = sections.pyplot()
        fig, ax = plt.subplots(figsize=(6.5, 4))
        for i, c in enumerate(cons):
            pts = sorted((r["eps"], r["width_factor"], r["source"] == "built") for r in rows_
                         if r["construction"] == c and "width_factor" in r)
            if not pts:
                continue
            ax.loglog([p[0] for p in pts], [p[1] for p in pts], "-", color=f"C{i}", label=LABELS.get(c, c))
            ax.scatter([p[0] for p in pts if p[2]], [p[1] for p in pts if p[2]], color=f"C{i}", marker="o")
            ax.scatter([p[0] for p in pts if not p[2]], [p[1] for p in pts if not p[2]], facecolors="none",
                       edgecolors=f"C{i}", marker="o")
        ax.invert_xaxis()
        ax.set(xlabel="eps (per-weight tolerance)", ylabel="width factor (random / target params)",
               title=f"ViT ({sweep['data']}): width needed vs eps (filled: built, open: computed)")
        sections.plain_log_ticks(ax.yaxis)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = sections.save(fig, ctx.plot_path(record))
        out.append(f"### Width factor needed vs eps (ViT, {sweep['data']})\n")
        out.append("Random params / target params of the ViT ticket that `construct` builds for each eps (n per "
                   "layer chosen for P(error <= eps) >= 0.99). *Built*: a ticket was constructed; *computed*: from "
                   "the per-layer n that `construct` would choose and its layouts, not built (above the size cap).\n")
        out.append(ctx.image(path, "ViT width factor vs eps") + "\n")
        out.append(table(["eps", *(LABELS.get(c, c) for c in cons)], table_rows))
        out.append("")
        for c in cons:
            r = cells.get((c, 0.01))
            if r is not None and "width_factor" in r:
                ctx.summary.append((f"width needed for eps = 0.01, ViT {sweep['data']}, {LABELS.get(c, c)}",
                                    "Pensia: O(log 1/eps); Malach: polynomial",
                                    f"{r['width_factor']:.1f}x ({'built' if r['source'] == 'built' else 'computed'})"))
    g = d.get("gpt")
    ppl_goals = []
    if g is not None:
        tr = g["train"]
        rows, notes = [], []
        base = _base(g["tickets"])
        for t in g["tickets"]:
            label = LABELS.get(t["construction"], t["construction"])
            if "skipped" in t or "error" in t:
                rows.append([label, f"{t['eps']:g}", "-", "not built" + _mark(notes, t), "-", "-", "-",
                             _params(t.get("target_params")),
                             _params(t.get("random_params"), _ratio(t, "random_params", base)), "-", "-"])
                continue
            rows.append([label, f"{t['eps']:g}", f"{t['target_perplexity']:.4f}", f"{t['ticket_perplexity']:.4f}",
                         f"{100 * (t['perplexity_ratio'] - 1):+.3f} %", pct(t["top1_agreement"]),
                         f"{t['max_logit_diff']:.2g}", _params(t["target_params"]),
                         _params(t["random_params"], _ratio(t, "random_params", base)),
                         _params(t["kept_params"], _ratio(t, "kept_params", base)),
                         f"{t['seconds']:.1f}" + ("" if t["eps_met"] else " (eps not met)")])
            ppl_goals.append((f"GPT, {label}, eps {t['eps']:g}", t["perplexity_ratio"]))
        info = tr.get("data_info", {})
        out.append("### char-GPT on pystdlib-chars\n")
        out.append(f"Target: `gpt` ({_args(tr['model_args'])}), data options {_args(tr['data_args'])}, "
                   f"{tr['model_params']:,} parameters, trained {tr['epochs']} epochs ({tr['train_seconds']:.0f} s, "
                   f"lr {tr['lr']:g}); held-out split: {g['test_windows']:,} windows "
                   f"(Python {info.get('python', info.get('python_version', '?'))} stdlib). Perplexity = exp(mean "
                   "cross-entropy per next character); agreement = same top-1 next character.\n")
        out.append(table(["construction", "eps", "target perplexity", "ticket perplexity", "ticket vs target",
                          "top-1 agreement %", "max abs logit diff", "target params", "random params", "kept params",
                          "seconds"], rows))
        out.append(_notes(notes))
    # construction vs learning (Fashion-MNIST ViT)
    fm = next((v for v in d["vit"] if v["data"] == "fashion-mnist"), None)
    spec = d.get("learned", {})
    if fm is not None:
        rows = [["dense target (this record)", pct(fm["train"]["test_accuracy"]), "-",
                 f"{fm['train']['model_params']:,}", f"{fm['train']['model_params']:,}",
                 f"{fm['train']['train_seconds']:.0f} (training)", f"{fm['train']['epochs']}"]]
        for t in fm["tickets"]:
            if "ticket_accuracy" in t:
                rows.append([f"constructed: {LABELS.get(t['construction'], t['construction'])}, eps {t['eps']:g}",
                             pct(t["ticket_accuracy"]), f"{t['random_params']:,}", f"{t['kept_params']:,}", "0",
                             f"{t['seconds']:.1f} (construction)", "-"])
        for method, width, data in _learned(ctx, spec):
            label = f"learned: {method}, width {width:g}"
            if data is None:
                rows.append([label, "not run yet", "-", "-", "-", "-", "-"])
                continue
            rows.append([label, pct(data.get("test_accuracy")), "-" if method == "dense" else f"{data['params']:,}",
                         f"{data['kept_params']:,}", f"{data['trainable_params']:,}",
                         f"{data['seconds']:.0f} (training)", data.get("epochs_done", "-")])
        out.append("### Construction vs learning (ViT, fashion-mnist)\n")
        out.append("The constructed tickets above beside supermasks learned by `slth train` on the same ViT "
                   f"(records `{spec.get('folder')}/{spec.get('name')}`, read when the report is made; their "
                   "settings are their own, see the training-runs table). *Trained params*: weights optimised "
                   "(dense) or scores (supermasks); construction trains none (it needs the trained target).\n")
        out.append(table(["", "test accuracy %", "random params", "kept params", "trained params", "seconds",
                          "epochs"], rows))
        out.append("")
    # goals
    text = ["### Goals\n"]
    if goals:
        for label, a in goals:
            if a is None:
                text.append(f"* {label}: no ticket at eps {GOAL_AGREEMENT_EPS:g} (not built, see above): "
                            f"{_met(None)}.")
                continue
            text.append(f"* {label}: top-1 agreement {pct(a)} % at eps {GOAL_AGREEMENT_EPS:g} against the goal "
                        f">= {pct(GOAL_AGREEMENT, 1)} %: {_met(a >= GOAL_AGREEMENT)}.")
            ctx.summary.append((f"{label}: ticket/target top-1 agreement at eps {GOAL_AGREEMENT_EPS:g}",
                                f"goal >= {pct(GOAL_AGREEMENT, 1)} % (ours, not a paper's)", f"{pct(a)} %"))
    else:
        text.append(f"* ViT agreement at eps {GOAL_AGREEMENT_EPS:g}: {_met(None)} (no ticket at that eps).")
    if ppl_goals:
        for label, ratio in ppl_goals:
            text.append(f"* {label}: ticket perplexity {100 * (ratio - 1):+.3f} % from the target's, goal within "
                        f"{100 * GOAL_PERPLEXITY:g} %: {_met(abs(ratio - 1) <= GOAL_PERPLEXITY)}.")
        ctx.summary.append(("char-GPT ticket perplexity vs target", f"goal within {100 * GOAL_PERPLEXITY:g} % (ours)",
                            "; ".join(f"{label.removeprefix('GPT, ')} {100 * (r - 1):+.3f} %"
                                      for label, r in ppl_goals)))
    elif g is not None:
        text.append(f"* GPT perplexity: {_met(None)} (no ticket built).")
    out.append("\n".join(text) + "\n")
    out.append(f"Papers: *{d['paper']}*\n")
    out.append(provenance(d))
    return "\n".join(out)


def _mark(notes: list[str], row: dict) -> str:
    """A footnote mark for a ticket that was not built; the note says why (and its computed size)."""
    notes.append(f"{LABELS.get(row['construction'], row['construction'])}, eps {row['eps']:g}: "
                 + (f"not built: it {row['skipped']}; its random params and width factor in the table are computed "
                    "from the per-layer n `construct` would choose" if "skipped" in row else
                    f"construction failed: {row['error']}"))
    return f" ({len(notes)})"


def _notes(notes: list[str]) -> str:
    return "".join(f"\n({i}) {note}." for i, note in enumerate(notes, 1)) + "\n"


def _args(args: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(args.items())) or "defaults"
