"""Planted tickets (after Fischer & Burkholz, "Plant 'n' Seek", arXiv:2111.11153).

A known sparse target network is hidden ("planted") inside a wider random network of the same depth;
the planted mask is then the ground truth, and we ask whether each supermask method (at the planted
per-layer densities: an oracle density) and the constructive method recover it.

Targets (bias-free ReLU nets; a bias is the weight from a constant input 1 appended to the data, carried
through hidden layers by a constant neuron relu(1) = 1, docs/theory.md §2.7):

* ``relu``   1 -> 1 regression: a piecewise-linear function with 8 knots, Σ a_i relu(±(x - k_i)).
* ``circle`` 2 -> 4 classes by squared radius x1² + x2² with thresholds 0.2 / 0.5 / 0.7: x_i² is
             approximated with 10 knots per coordinate; class logit c = c·r² - Σ_{t<=c} τ_t, so the
             argmax is the number of thresholds below r².
* ``helix``  1 -> 3 regression (cos 2πx, sin 2πx, x), piecewise linear with 30 knots.
* ``mnist``  784 -> 100 -> 100 -> 10 trained on MNIST, magnitude-pruned to 10 % per layer and fine-tuned
             (the MNIST-sized target; inputs in [0, 1], no constant input).

The toy targets have one knot layer; ``depth`` > 2 inserts copy layers (one weight 1 per neuron:
relu(h) = h for h >= 0), so the ticket is deeper and sparser.

Planting (simplified from the paper: target neurons go to *randomly chosen* distinct source neurons, not
to the best-aligned ones): source weights ~ N(0, 2/fan_in); layer l's target weights are scaled by
c_l = std_l / rms(target nonzeros) and written into the mapped entries; the network ends with a fixed
output scale 1 / Π c_l (a buffer, identical for every method), so the planted mask reproduces the target
exactly (ReLU positive homogeneity).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from .._names import METHOD_NAMES
from ..models.planted import Planted
from .settings import check_at_least, check_names, option

if TYPE_CHECKING:
    from .sections import Context, Record

TASKS = ("relu", "circle", "helix", "mnist")

PAPER = ("Fischer & Burkholz (Plant 'n' Seek): planted tickets of known, extreme sparsity are *not* recovered "
         "by current pruning algorithms, which reach worse accuracy than the planted ticket at the same "
         "sparsity; they conclude the sparsity limits are algorithmic. (Their exact numbers are not "
         "verified in our copy of the paper, docs/theory.md §8.6; only the qualitative claim is quoted.)")
LR = "slth.train defaults per method (DEFAULT_LR), SGD momentum 0.9, cosine, batch 128"


@dataclass(frozen=True)
class Settings:
    tasks: tuple[str, ...] = option(TASKS, "relu, circle, helix (toy) and mnist")
    methods: tuple[str, ...] = option(METHOD_NAMES, "supermask methods to run")
    hidden: tuple[int, ...] = option((100, 100), "source hidden widths for the toy tasks")
    depth: int = option(3, "toy target depth (>= 2; extra layers are copy layers)")
    density_multiples: tuple[float, ...] = option((1.0, 10.0), "each layer keeps these multiples of its planted "
                                                               "count")
    epochs: int = option(30, "epochs per method, toy tasks")
    n_train: int = option(4000, "toy training points")
    n_test: int = option(2000, "toy test points")
    construct_n: int | None = option(None, "random values per weight of slth.construct on the toy tasks "
                                              "(default: planned from eps 0.01)")
    mnist_hidden: tuple[int, ...] = option((200, 200), "source hidden widths for the MNIST task")
    mnist_epochs: int = option(3, "epochs per method, MNIST task")
    mnist_train_size: int = option(20000, "MNIST training examples used (all 10,000 test examples are used)")
    mnist_target_epochs: int = option(3, "training epochs of the MNIST target (before pruning it to 10 %)")
    mnist_finetune_epochs: int = option(2, "fine-tuning epochs of the pruned MNIST target")
    data_dir: Path | None = option(None, "MNIST directory (needed for the mnist task)")
    seed: int = option(0)

    def __post_init__(self):
        check_names(self.tasks, "tasks", TASKS)
        check_names(self.methods, "methods", METHOD_NAMES)
        if "mnist" in self.tasks and self.data_dir is None:
            raise ValueError("the mnist task needs --data-dir (a folder with the MNIST idx files)")
        if self.data_dir is not None and not self.data_dir.is_dir():
            raise ValueError(f"no such --data-dir directory: {self.data_dir}")
        check_at_least(self, 2, "depth")
        check_at_least(self, 1, "epochs", "n_train", "n_test", "mnist_epochs", "mnist_target_epochs")


PRESETS = {"quick": dict(tasks=("relu", "circle"), methods=("edge-popup", "gem-miner"), epochs=1, n_train=256,
                         n_test=256, construct_n=10, density_multiples=(1.0, 10.0))}


def execute(settings: Settings, *, out=None, log=print, quiet: bool = False) -> dict[str, Any]:
    """Every task with every method and slth.construct; the record's body."""
    s = settings
    results = []
    for task in s.tasks:
        if task == "mnist":
            from ..data import load_dataset

            results.append(run_task("mnist", methods=list(s.methods), hidden=list(s.mnist_hidden),
                                    epochs=s.mnist_epochs, seed=s.seed, n_train=0, n_test=0,
                                    data=load_dataset("mnist", s.data_dir),
                                    density_multiples=list(s.density_multiples), train_size=s.mnist_train_size,
                                    target_epochs=s.mnist_target_epochs, finetune_epochs=s.mnist_finetune_epochs,
                                    log=log))
        else:
            results.append(run_task(task, methods=list(s.methods), hidden=list(s.hidden), epochs=s.epochs,
                                    seed=s.seed, n_train=s.n_train, n_test=s.n_test, depth=s.depth,
                                    construct_n=s.construct_n, density_multiples=list(s.density_multiples),
                                    log=log))
    return {"tasks": results, "paper": PAPER, "lr": LR}


def _knots_layer(n_in: int, knots: list[tuple[int, float, float]]) -> np.ndarray:
    """Rows relu(s·x_j - k) on inputs (x, 1) for each (j, s, k); the last row is the constant neuron."""
    w = np.zeros((len(knots) + 1, n_in + 1))
    for r, (j, s, k) in enumerate(knots):
        w[r, j], w[r, n_in] = s, -k
    w[-1, n_in] = 1.0
    return w


def _interpolate(f, lo: float, hi: float, n_knots: int) -> tuple[list[tuple[int, float, float]], np.ndarray]:
    """Piecewise-linear interpolant of f on [lo, hi]: value at lo + slope·(x - lo) + Σ Δslope_i relu(x - k_i),
    written with relu(x - lo) and relu(lo - x) for the linear part (both needed on x in [lo, hi] only for the first)."""
    xs = np.linspace(lo, hi, n_knots + 2)
    ys = np.array([np.atleast_1d(f(x)) for x in xs])  # (K+2, out)
    slopes = np.diff(ys, axis=0) / np.diff(xs)[:, None]  # (K+1, out)
    knots = [(0, 1.0, lo)] + [(0, 1.0, float(k)) for k in xs[1:-1]]
    coeffs = np.vstack([slopes[:1], np.diff(slopes, axis=0)])  # on relu(x - lo), relu(x - k_i)
    out = np.hstack([coeffs.T, ys[:1].T])  # + constant neuron carries f(lo)
    return knots, out


def toy_target(task: str, depth: int = 2) -> tuple[list[np.ndarray], str]:
    """Weight matrices of the toy target (input has a constant 1 appended) and its task type."""
    if task == "relu":
        rng = np.random.default_rng(1)
        ks = np.sort(rng.uniform(-0.9, 0.9, 8))
        amps = rng.uniform(-2, 2, 8)
        knots, out = _interpolate(lambda x: float(np.sum(amps * np.maximum(x - ks, 0))), -1.0, 1.0, 10)
        ws, kind = [_knots_layer(1, knots), out], "regression"
    elif task == "helix":
        knots, out = _interpolate(lambda x: [math.cos(2 * math.pi * x), math.sin(2 * math.pi * x), x], -1.0, 1.0, 30)
        ws, kind = [_knots_layer(1, knots), out], "regression"
    elif task == "circle":
        # x_j² on [-1, 1] from relu(x_j - k) and relu(-x_j - k) at 10 knots k in [0, 1) per coordinate
        ks = np.linspace(0.0, 1.0, 11)[:-1]
        knots, sq = [], []
        for j in range(2):
            for s in (1.0, -1.0):
                for i, k in enumerate(ks):
                    knots.append((j, s, float(k)))
                    # slope of x² between knots k_i and k_{i+1} is k_i + k_{i+1}; the increment over the previous piece
                    sq.append((ks[i] + (ks[i + 1] if i + 1 < len(ks) else 1.0)) - (0 if i == 0 else ks[i - 1] + ks[i]))
        first = _knots_layer(2, knots)
        r2 = np.array(sq + [0.0])  # r² as a combination of the hidden neurons
        taus = np.array([0.2, 0.5, 0.7])
        out = np.zeros((4, len(r2)))
        for c in range(4):
            out[c] = c * r2
            out[c, -1] = -taus[:c].sum()
        ws, kind = [first, out], "classification"
    else:
        raise ValueError(f"unknown toy task {task!r}; valid: relu, circle, helix")
    for _ in range(depth - 2):  # copy layers: relu(h) = h for h >= 0
        ws.insert(-1, np.eye(ws[-2].shape[0]))
    return ws, kind


def toy_data(task: str, ws: list[np.ndarray], kind: str, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    d = ws[0].shape[1] - 1
    x = rng.uniform(-1, 1, (n, d))
    x = np.hstack([x, np.ones((n, 1))]).astype(np.float32)
    h = torch.from_numpy(x).double()
    for i, w in enumerate(ws):
        h = h @ torch.from_numpy(w).T
        if i < len(ws) - 1:
            h = torch.relu(h)
    xt = torch.from_numpy(x)
    if kind == "classification":
        return xt, h.argmax(1)
    return xt, h.float()


def mnist_target(data, *, epochs: int, finetune_epochs: int, hidden=(100, 100), density: float = 0.1,
                 seed: int = 0, train_size: int | None = None) -> tuple[list[np.ndarray], dict]:
    """Train a bias-free MLP, keep the largest ``density`` of each layer, fine-tune with the mask fixed."""
    from .masking import evaluate, fit

    x_tr, y_tr = data.x_train.flatten(1), data.y_train
    if train_size:
        x_tr, y_tr = x_tr[:train_size], y_tr[:train_size]
    widths = [x_tr.shape[1], *hidden, data.num_classes]
    torch.manual_seed(seed)
    net = Planted(widths)
    for i, m in enumerate(l for l in net.layers if isinstance(l, nn.Linear)):
        with torch.no_grad():
            m.weight.copy_(torch.randn(m.weight.shape, generator=torch.Generator().manual_seed(seed + i))
                           * math.sqrt(2.0 / m.in_features))
    d = (x_tr, y_tr, data.x_test.flatten(1), data.y_test)
    dense = fit(net, d, task="classification", epochs=epochs, lr=0.05, seed=seed, weight_decay=5e-4)
    masks = []
    for m in (l for l in net.layers if isinstance(l, nn.Linear)):
        k = max(1, round(density * m.weight.numel()))
        thr = m.weight.abs().flatten().kthvalue(m.weight.numel() - k + 1).values
        masks.append(m.weight.abs() >= thr)
        with torch.no_grad():
            m.weight.mul_(masks[-1])
    hooks = [m.weight.register_hook(lambda g, mask=mask: g * mask)
             for m, mask in zip((l for l in net.layers if isinstance(l, nn.Linear)), masks)]
    pruned_acc = evaluate(net, *d[2:], "classification")
    tuned = fit(net, d, task="classification", epochs=finetune_epochs, lr=0.01, seed=seed + 1, weight_decay=0.0)
    for h in hooks:
        h.remove()
    ws = [(m.weight.detach() * mask).double().numpy() for m, mask in
          zip((l for l in net.layers if isinstance(l, nn.Linear)), masks)]
    info = {"widths": widths, "density": density, "dense_accuracy": dense["test_metric"],
            "pruned_accuracy_before_finetune": pruned_acc, "accuracy": tuned["test_metric"],
            "train_size": len(x_tr), "epochs": epochs, "finetune_epochs": finetune_epochs,
            "seconds": dense["seconds"] + tuned["seconds"]}
    return ws, info


def plant(ws: list[np.ndarray], hidden: list[int], seed: int) -> tuple[Planted, dict[str, torch.Tensor], list[float]]:
    """Source network (He-normal weights, hidden widths ``hidden``) with ``ws`` planted; returns the
    network, the planted masks by module name, and the per-layer scales c_l."""
    from .masking import normal_weight

    if len(hidden) != len(ws) - 1:
        raise ValueError(f"the source needs {len(ws) - 1} hidden layers for this target, got {hidden}")
    widths = [ws[0].shape[1], *hidden, ws[-1].shape[0]]
    for i, w in enumerate(ws[:-1]):
        if w.shape[0] > hidden[i]:
            raise ValueError(f"source layer {i + 1} (width {hidden[i]}) is narrower than the target's ({w.shape[0]})")
    rng = np.random.default_rng(seed)
    maps = [np.arange(widths[0])] + [rng.choice(h, w.shape[0], replace=False) for h, w in zip(hidden, ws[:-1])] \
        + [np.arange(widths[-1])]
    net = Planted(widths)
    masks, scales = {}, []
    for l, (name, w) in enumerate(zip(net.linear_names(), ws)):
        module = dict(net.named_modules())[name]
        src = normal_weight(module.weight.shape, module.in_features, seed, "source", name)
        nz = w != 0
        c = math.sqrt(2.0 / module.in_features) / float(np.sqrt(np.mean(w[nz] ** 2)))
        rows, cols = np.nonzero(nz)
        src[maps[l + 1][rows], maps[l][cols]] = torch.from_numpy(c * w[rows, cols]).float()
        mask = torch.zeros(module.weight.shape, dtype=torch.bool)
        mask[maps[l + 1][rows], maps[l][cols]] = True
        with torch.no_grad():
            module.weight.copy_(src)
        masks[name] = mask
        scales.append(c)
    net.scale.fill_(1.0 / math.prod(scales))
    return net, masks, scales


def with_masks(net: Planted, masks: dict[str, torch.Tensor]) -> Planted:
    import copy

    out = copy.deepcopy(net)
    mods = dict(out.named_modules())
    with torch.no_grad():
        for name, m in masks.items():
            mods[name].weight.mul_(m)
    return out


def target_module(ws: list[np.ndarray]) -> nn.Sequential:
    """The target as an nn.Sequential of bias-free Linear + ReLU (what slth.construct takes)."""
    mods: list[nn.Module] = []
    for i, w in enumerate(ws):
        lin = nn.Linear(w.shape[1], w.shape[0], bias=False)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(w).float())
        mods.append(lin)
        if i < len(ws) - 1:
            mods.append(nn.ReLU())
    return nn.Sequential(*mods).eval()


def _seek(net: Planted, planted: dict[str, torch.Tensor], method: str, multiple: float, d, kind: str, epochs: int,
          seed: int, log, task: str) -> dict[str, Any]:
    """Train ``method``'s supermask over the source net, each layer keeping ``multiple`` x its planted count."""
    import copy

    from ..supermask.methods import METHODS
    from .masking import attach, fit, masks_of, normal_weight

    model = copy.deepcopy(net)
    mods = dict(model.named_modules())
    density = {n: min(1.0, multiple * float(m.float().mean())) for n, m in planted.items()}
    attach(model, method, density, seed,
           redraw=lambda name, g: normal_weight(mods[name].parametrizations.weight.original.shape,
                                                mods[name].in_features, seed, "redraw", name, g))
    r = fit(model, d, task=kind, epochs=epochs, lr=METHODS[method].lr, seed=seed,
            weight_decay=METHODS[method].weight_decay)
    found = masks_of(model)
    planted_count = sum(int(m.sum()) for m in planted.values())
    hit = sum(int((found[n] & planted[n]).sum()) for n in planted)
    kept = sum(int(m.sum()) for m in found.values())
    total = sum(m.numel() for m in planted.values())
    per_layer = {n: int((found[n] & planted[n]).sum()) / max(1, int(planted[n].sum())) for n in planted}
    log(f"{task}: {method} at {multiple:g}x planted density: metric {r['test_metric']:.4g}, "
        f"overlap {hit / planted_count:.3f}, {r['seconds']:.0f} s")
    return {"method": method, "density_multiple": multiple, "metric": r["test_metric"], "density": kept / total,
            "kept": kept, "random_params": total, "overlap": hit / planted_count, "overlap_per_layer": per_layer,
            "seconds": r["seconds"], "per_epoch": r["test_metric_per_epoch"], "lr": r["lr"]}


def run_task(task: str, *, methods, hidden: list[int], epochs: int, seed: int, n_train: int, n_test: int,
             depth: int = 2, data=None, train_size: int = 0, target_epochs: int = 0, finetune_epochs: int = 0,
             construct_eps: float = 0.01, construct_n: int | None = None, density_multiples=(1.0,),
             log=print) -> dict[str, Any]:
    """One task; ``mnist``: ``data`` and the target's ``train_size`` (0: all), ``target_epochs``,
    ``finetune_epochs``."""
    from ..construction import construct
    from .masking import evaluate

    info: dict[str, Any] = {}
    if task == "mnist":
        ws, info = mnist_target(data, seed=seed, epochs=target_epochs, finetune_epochs=finetune_epochs,
                                train_size=train_size or None)
        kind = "classification"
        x_tr, y_tr = data.x_train.flatten(1), data.y_train
        if train_size:
            x_tr, y_tr = x_tr[:train_size], y_tr[:train_size]
        x_te, y_te = data.x_test.flatten(1), data.y_test
        # labels: the data's (the target is an imperfect classifier); its own accuracy is the reference
    else:
        ws, kind = toy_target(task, depth)
        x_tr, y_tr = toy_data(task, ws, kind, n_train, seed)
        x_te, y_te = toy_data(task, ws, kind, n_test, seed + 1)
    net, planted, scales = plant(ws, hidden, seed)
    d = (x_tr, y_tr, x_te, y_te)
    layer_density = {name: float(m.float().mean()) for name, m in planted.items()}
    total = sum(m.numel() for m in planted.values())
    kept = sum(int(m.sum()) for m in planted.values())
    var = None if kind == "classification" else float(((y_te - y_te.mean(0)) ** 2).mean())
    mean_square = None if kind == "classification" else float((y_te**2).mean())  # the MSE of a zero output
    planted_metric = evaluate(with_masks(net, planted), x_te, y_te, kind)
    rows = [{"method": "planted ticket", "metric": planted_metric, "density": kept / total, "kept": kept,
             "random_params": total, "overlap": 1.0, "seconds": 0.0}]
    log(f"{task}: planted {kept:,} of {total:,} ({kept / total:.4f}); planted-ticket metric {planted_metric:.4g}")
    for multiple in density_multiples:
        for method in methods:
            rows.append(_seek(net, planted, method, multiple, d, kind, epochs, seed, log, task))
    # constructive: a ticket of the target inside Pensia's block-structured random network (not the source net)
    target = target_module(ws)
    params = sum(w.size for w in ws)
    signed = task != "mnist"
    t = construct(target, construct_eps, seed=seed, nonnegative_input=not signed, n=construct_n)
    m = evaluate(t.to_module(), x_te, y_te, kind)
    rows.append({"method": f"constructed (slth.construct, eps {construct_eps:g})", "metric": m,
                 "density": t.stats["kept_params"] / t.stats["random_params"], "kept": t.stats["kept_params"],
                 "random_params": t.stats["random_params"], "overlap": None, "seconds": t.stats["seconds"],
                 "eps_met": t.stats["eps_met"], "n_per_layer": t.stats["n_per_layer"],
                 "target_params_dense": int(params)})
    log(f"{task}: constructed metric {m:.4g} ({t.stats['kept_params']:,} kept of {t.stats['random_params']:,})")
    return {"task": task, "kind": kind, "target_widths": [ws[0].shape[1]] + [w.shape[0] for w in ws],
            "target_nonzeros": int(sum(int((w != 0).sum()) for w in ws)),
            "source_widths": [ws[0].shape[1], *hidden, ws[-1].shape[0]], "planted_density": kept / total,
            "planted_density_per_layer": layer_density, "plant_scales": scales, "epochs": epochs,
            "n_train": int(len(x_tr)), "n_test": int(len(x_te)), "target_variance": var,
            "target_mean_square": mean_square, "mnist_target": info or None,
            "rows": rows}


# --------------------------------------------------------------------------- report section
def _label(row: dict) -> str:
    m = row.get("density_multiple", 1)
    return row["method"] if m == 1 else f"{row['method']} x{m:g}"


def render(record: Record, ctx: Context) -> str:
    """The docs/results.md section of one record (called by ``slth report``)."""
    from . import sections
    from .sections import pct, provenance, table

    d = record.data
    s = d["settings"]
    out = ["## Planted tickets (Plant 'n' Seek)\n",
           "A known sparse target is planted in a random He-initialised network of the same depth (target neurons at "
           "random distinct source neurons, weights rescaled to the source's scale, fixed output rescaling); each "
           "supermask method then searches the source network keeping exactly the planted number of weights per "
           "layer (an oracle density; rows marked x10 keep ten times as many), and `slth.construct` builds a "
           "ticket of the same target in its own random network. *Overlap* = |found ∩ planted| / |planted| over "
           "all layers (a random mask expects overlap = its density). Regression tasks report test MSE "
           "(target variance beside it), classification tasks test accuracy. The planted ticket itself reproduces "
           "the target exactly.\n",
           f"Settings: toy tasks {s['n_train']:,} training / {s['n_test']:,} test points, {s['epochs']} epochs "
           f"per method, source hidden widths {s['hidden']}, target depth {s['depth']}; MNIST: "
           f"{s['mnist_train_size']:,} training examples, {s['mnist_epochs']} epochs, source hidden "
           f"{s['mnist_hidden']}; {d.get('lr', s.get('lr'))}.\n"]
    plt = sections.pyplot()
    tasks = d["tasks"]
    at1 = [r for t in tasks for r in t["rows"] if r.get("overlap") is not None and r["method"] != "planted ticket"
           and r.get("density_multiple", 1) == 1]
    if at1:
        ctx.summary.append(("Plant 'n' Seek: supermask methods recover planted tickets?", "no (qualitative)",
                            f"overlap at the planted density {min(r['overlap'] for r in at1):.2f}-"
                            f"{max(r['overlap'] for r in at1):.2f} over {len(tasks)} tasks and "
                            f"{len({r['method'] for r in at1})} methods"))
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.6), squeeze=False)
    for ax, t in zip(axes[0], tasks):
        rows = [r for r in t["rows"] if r.get("overlap") is not None and r["method"] != "planted ticket"]
        ax.bar([_label(r) for r in rows], [r["overlap"] for r in rows],
               color=["C0" if r.get("density_multiple", 1) == 1 else "C1" for r in rows])
        ax.axhline(t["planted_density"], color="k", ls=":", lw=1, label="random mask")
        ax.set_ylim(0, 1)
        ax.set_title(f"{t['task']}: planted density {t['planted_density']:.4f}", fontsize=9)
        ax.set_ylabel("overlap with planted mask")
        ax.tick_params(axis="x", rotation=45, labelsize=7)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = sections.save(fig, ctx.plot_path(record))
    out.append(ctx.image(path, "overlap of found and planted masks") + "\n")
    for t in tasks:
        reg = t["kind"] == "regression"
        head = (f"### {t['task']}: target {'-'.join(map(str, t['target_widths']))} "
                f"({t['target_nonzeros']:,} nonzero weights) in source {'-'.join(map(str, t['source_widths']))}")
        out.append(head + "\n")
        if t.get("mnist_target"):
            m = t["mnist_target"]
            out.append(f"MNIST target: dense {pct(m['dense_accuracy'])} % after {m['epochs']} epochs on "
                       f"{m['train_size']:,} examples, magnitude-pruned to {m['density']:g} per layer "
                       f"({pct(m['pruned_accuracy_before_finetune'])} %), fine-tuned {m['finetune_epochs']} epoch: "
                       f"{pct(m['accuracy'])} %.\n")
        rows = []
        for r in t["rows"]:
            metric = f"{r['metric']:.4g}" if reg else f"{pct(r['metric'])} %"
            rows.append([_label(r), metric, f"{r['density']:.4f}", f"{r['kept']:,}",
                         f"{r['random_params']:,}" if r["random_params"] else "-",
                         "-" if r.get("overlap") is None else f"{r['overlap']:.3f}", f"{r['seconds']:.0f}"])
        out.append(table(["method", "test MSE" if reg else "test accuracy", "density", "kept", "random params",
                          "overlap", "seconds"], rows))
        if reg:
            ms = t.get("target_mean_square")
            out.append(f"\nTarget variance on the test set: {t['target_variance']:.4g} (MSE of the best constant)"
                       + (f"; mean square {ms:.4g} (MSE of the zero output)." if ms is not None else ".")
                       + " A method whose MSE equals the targets' mean square outputs 0 on every test point: its "
                       "final mask leaves no active input-to-output path (with none at initialisation, no "
                       "gradient reaches the scores either).")
        out.append("")
    out.append(f"Paper: *{d['paper']}* Constructed tickets live in a different random network (Pensia's "
               "block-structured one, signed inputs), so overlap does not apply; their density is kept / random.\n")
    out.append("*Bigger machines*: `--epochs 100 --n-train 20000 --hidden 1000,1000 --mnist-train-size 60000 "
               "--mnist-epochs 20 --mnist-hidden 1000,1000` (wider sources make the planted ticket sparser).\n")
    out.append(provenance(d))
    return "\n".join(out)
