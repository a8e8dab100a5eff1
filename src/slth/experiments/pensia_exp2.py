"""Pensia et al. Exp. 2: the "redundant" structure (RedLayer, r copies) trained by edge-popup.

``RedLayer(d_in, d_out, r)`` (their ``pruning/utils/red_fc.py``): ``expand.weight`` (r, d_in) multiplies
each input x_j by r scalars (the block-diagonal first random layer stored compactly; hidden index
j·r + k), optional ReLU (the paper's structure; without it the "linear" variant), then ``mix.weight``
(d_out, r·d_in) dense. Both are frozen N(0, 2/fan) draws with fan = 1 for ``expand`` and fan = d_in
(not r·d_in) for ``mix``; scores ~ U(-std, std); each tensor is pruned to the same per-tensor density
by edge-popup. The baseline is a wide FC net of about the same size, pruned by edge-popup.

LeNet-5: the convolutions are random and frozen (never trained or pruned, shared by every model); only
the FC part 400-120-84-10 is replaced by RedLayers or by a wide FC net (docs/theory.md §2.9).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..models.redlayer import Expand, RedLayer
from .masking import normal_weight
from .settings import check_at_least, check_names, option

if TYPE_CHECKING:
    from .sections import Context, Record

KINDS = ("structure-linear", "structure-relu", "wide")  # the compared networks
NETS = ("fc2", "lenet5")
MEAN, STD = 0.1307, 0.3081  # the paper's normalisation
WEIGHT_DECAY, MOMENTUM = 5e-4, 0.9  # the paper's


@dataclass(frozen=True)
class Settings:
    data_dir: Path | None = option(None, "MNIST directory")
    nets: tuple[str, ...] = option(NETS, "fc2 (784-500-10) and/or lenet5 (random frozen convs, FC 400-120-84-10)")
    kinds: tuple[str, ...] = option(KINDS, "the compared networks")
    densities: tuple[float, ...] = option((0.5, 0.1, 0.01), "kept fractions (the paper's sparsity = 1 - density)")
    epochs: int = option(1, "the paper: best over 30..150 epochs")
    train_size: int = option(10000, "MNIST training examples (the paper: all 60,000)")
    test_size: int = option(0, "MNIST test examples evaluated (0: all 10,000)")
    r: int = option(5, "copies per input in a RedLayer")
    lr: float = option(0.1, "learning rate of fc2 (the paper: 0.1)")
    lenet_lr: float = option(0.01, "learning rate of lenet5 (the paper: 0.01)")
    batch_size: int = option(64)
    seed: int = option(0)

    def __post_init__(self):
        check_names(self.nets, "nets", NETS)
        check_names(self.kinds, "kinds", KINDS)
        if self.data_dir is None:
            raise ValueError("pensia-exp2 needs --data-dir (a folder with the MNIST idx files)")
        if not self.data_dir.is_dir():
            raise ValueError(f"no such --data-dir directory: {self.data_dir}")
        check_at_least(self, 1, "epochs", "r", "batch_size")
        check_at_least(self, 0, "train_size", "test_size")


PRESETS = {"quick": dict(nets=("fc2",), densities=(0.1,), epochs=1, train_size=512, test_size=500)}


def execute(settings: Settings, *, out=None, log=print, quiet: bool = False) -> dict[str, Any]:
    """Every net and kind at every density; the record's body."""
    from ..data import load_dataset

    s = settings
    data = load_dataset("mnist", s.data_dir)
    if s.test_size:
        data.x_test, data.y_test = data.x_test[:s.test_size], data.y_test[:s.test_size]
    results = [run(net, data, densities=s.densities, kinds=s.kinds, epochs=s.epochs, r=s.r, seed=s.seed,
                   lr=s.lr if net == "fc2" else s.lenet_lr, batch_size=s.batch_size, train_size=s.train_size,
                   log=log) for net in s.nets]
    return {"results": results, "paper": {"fc2": PAPER_FC2, "lenet5": PAPER_LENET5},
            "training": {"momentum": MOMENTUM, "weight_decay": WEIGHT_DECAY, "schedule": "cosine per step",
                         "normalisation": str((MEAN, STD)), "method": "edge-popup, same density for every masked "
                                                                       "tensor"}}

# best final accuracy over epoch budgets, from their committed result files (docs/theory.md §2.9); keyed by kept %
PAPER_FC2 = {
    "total_params": {"structure": 1_991_420, "wide": 1_991_352}, "dense_accuracy": 98.5,
    "rows": {50: (97.2, 94.0, 98.0), 25: (96.7, 90.2, 98.1), 10: (93.7, 74.6, 97.2), 5: (86.7, 53.9, 95.7),
             1: (39.3, 18.2, 87.8)},  # (structure linear, structure ReLU, wide net)
    "settings": "SGD lr 0.1 (FC) / 0.01 (LeNet5), momentum 0.9, wd 5e-4, cosine, batch 64, epochs in "
                "{30, 50, 100, 125, 150} (best over budgets), full MNIST normalised (0.1307, 0.3081), r = 5",
}
PAPER_LENET5 = {"total_params": 300_170, "dense_accuracy": 98.4,
                "note": "their LeNet5 curves behave like FC2's (docs/theory.md §2.9); "
                        "per-sparsity numbers not in our copy"}


def lenet5_features(seed: int) -> nn.Sequential:
    """LeNet-5's random, frozen convolutions (He-normal, seeded): 28x28 -> 400 features."""
    f = nn.Sequential(nn.Conv2d(1, 6, 5, padding=2, bias=False), nn.ReLU(), nn.MaxPool2d(2),
                      nn.Conv2d(6, 16, 5, bias=False), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten())
    with torch.no_grad():
        for i in (0, 3):
            w = f[i].weight
            w.copy_(normal_weight(w.shape, math.prod(w.shape[1:]), seed, "lenet5-conv", i))
    for p in f.parameters():
        p.requires_grad_(False)
    return f


def build(kind: str, widths: Sequence[int], *, r: int = 5, seed: int, features: nn.Module | None = None,
          ) -> tuple[nn.Module, dict[str, int]]:
    """``kind``: "structure-relu", "structure-linear" (RedLayers over ``widths``) or "wide" (FC over ``widths``).
    Returns the model and the fan used for each masked tensor's init and score scale."""
    layers: list[nn.Module] = [] if features is None else [features]
    layers.append(nn.Flatten())
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        last = i == len(widths) - 2
        if kind == "wide":
            layers.append(nn.Linear(a, b, bias=False))
        else:
            layers.append(RedLayer(a, b, r, relu=(kind == "structure-relu")))
        if not last:
            layers.append(nn.ReLU())
    model = nn.Sequential(*layers)
    fans: dict[str, int] = {}
    with torch.no_grad():
        for name, m in model.named_modules():
            if isinstance(m, Expand):
                fans[name] = 1
            elif isinstance(m, nn.Linear):
                parent = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else None
                fans[name] = parent.d_in if isinstance(parent, RedLayer) else m.in_features
            else:
                continue
            m.weight.copy_(normal_weight(m.weight.shape, fans[name], seed, "exp2", name))
    return model, fans


def masked_params(model: nn.Module, fans: dict[str, int]) -> int:
    mods = dict(model.named_modules())
    return sum(mods[n].weight.numel() for n in fans)


def wide_widths(base: Sequence[int], total: int) -> list[int]:
    """Scale the hidden widths of ``base`` by one factor so the FC net has about ``total`` weights."""
    def count(k):
        w = [base[0], *(max(1, round(h * k)) for h in base[1:-1]), base[-1]]
        return sum(a * b for a, b in zip(w[:-1], w[1:])), w
    lo, hi = 0.1, 100.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if count(mid)[0] < total else (lo, mid)
    return min((count(lo), count(hi)), key=lambda c: abs(c[0] - total))[1]


def run(net: str, data, *, densities: Sequence[float], kinds: Sequence[str], epochs: int, r: int, seed: int,
        lr: float, batch_size: int, train_size: int | None, log=print) -> dict[str, Any]:
    from .masking import attach, fit

    base = [784, 500, 10] if net == "fc2" else [400, 120, 84, 10]
    mean, std = MEAN, STD
    x_tr, y_tr = (data.x_train - mean) / std, data.y_train
    if train_size:
        x_tr, y_tr = x_tr[:train_size], y_tr[:train_size]
    x_te = (data.x_test - mean) / std
    if net == "lenet5":  # the convolutions are frozen and never trained: compute their features once
        feats = lenet5_features(seed)
        with torch.no_grad():
            x_tr = torch.cat([feats(x_tr[i : i + 2000]) for i in range(0, len(x_tr), 2000)])
            x_te = torch.cat([feats(x_te[i : i + 2000]) for i in range(0, len(x_te), 2000)])
    d = (x_tr, y_tr, x_te, data.y_test)
    structure_total = None
    rows = []
    for kind in kinds:
        if kind == "wide":
            if structure_total is None:
                probe, fans = build("structure-relu", base, r=r, seed=seed)
                structure_total = masked_params(probe, fans)
            widths = wide_widths(base, structure_total)
        else:
            widths = base
        for density in densities:
            model, fans = build(kind, widths, r=r, seed=seed)
            total = masked_params(model, fans)
            if kind != "wide":
                structure_total = total
            attach(model, "edge-popup", {n: density for n in fans}, seed, fan_in=fans)
            res = fit(model, d, task="classification", epochs=epochs, lr=lr, seed=seed, batch_size=batch_size,
                      momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
            kept = sum(max(1, math.floor(dict(model.named_modules())[n].parametrizations.weight.original.numel()
                                         * density + 0.5)) for n in fans)
            rows.append({"net": net, "kind": kind, "widths": list(widths), "density": density, "total_params": total,
                         "kept_params": kept, "accuracy": res["test_metric"], "per_epoch": res["test_metric_per_epoch"],
                         "seconds": res["seconds"]})
            log(f"{net} {kind} density {density:g}: {100 * res['test_metric']:.2f} % ({total:,} params) "
                f"in {res['seconds']:.0f} s")
    return {"net": net, "rows": rows}


# --------------------------------------------------------------------------- report section
def render(record: Record, ctx: Context) -> str:
    """The docs/results.md section of one record (called by ``slth report``)."""
    from . import sections
    from .sections import pct, provenance, table

    d = record.data
    s = d["settings"]
    training = d.get("training", s)  # records before the settings dataclass kept these in their settings
    lr_fc, lr_lenet5 = s.get("lr_fc", s.get("lr")), s.get("lr_lenet5", s.get("lenet_lr"))
    paper = d["paper"]
    paper_rows = {int(k): v for k, v in paper["fc2"]["rows"].items()}  # JSON keys are strings
    for res in d["results"]:
        if res["net"] == "fc2":
            ten = {r["kind"]: r["accuracy"] for r in res["rows"] if abs(r["density"] - 0.1) < 1e-9}
            if len(ten) == 3:
                ctx.summary.append(("Exp. 2 (FC2, 10 % kept): structure linear / ReLU / wide",
                                    " / ".join(f"{v}" for v in paper_rows[10]) + " %",
                                    " / ".join(pct(ten[k], 1) for k in KINDS)
                                    + f" % (reduced setting: {s['train_size']:,} examples, {s['epochs']} "
                                    f"epoch(s), one run)"))
    nets = ", ".join(r["net"] for r in d["results"])
    out = [f"## Pensia et al. Exp. 2: the RedLayer structure vs a wide network, by edge-popup ({nets}; "
           f"{s['train_size']:,} examples, {s['epochs']} epochs)\n",
           f"RedLayer(in, out, r = {s['r']}) as in their `red_fc.py` (r scalars per input, ReLU or linear, then a "
           "dense mix), and a wide FC net with about the same number of weights, all pruned by edge-popup to the same "
           "density per tensor. **Reduced setting** (what differs from the paper): "
           f"{s['train_size']:,} of 60,000 MNIST training examples, {s['epochs']} epoch(s) instead of the best over "
           f"30-150, densities {s['densities']} only; same lr ({lr_fc} FC, {lr_lenet5} LeNet5), momentum, "
           f"wd {training['weight_decay']}, cosine, batch {s['batch_size']}, "
           f"normalisation {training['normalisation']}. LeNet5: "
           "random frozen convolutions, their features computed once (the same function).\n"]
    plt = sections.pyplot()
    fig, axes = plt.subplots(1, len(d["results"]), figsize=(5.5 * len(d["results"]), 4), squeeze=False)
    for ax, res in zip(axes[0], d["results"]):
        for i, kind in enumerate(KINDS):
            rs = sorted((r for r in res["rows"] if r["kind"] == kind), key=lambda r: r["density"])
            if rs:
                ax.semilogx([100 * r["density"] for r in rs], [100 * r["accuracy"] for r in rs], "o-", color=f"C{i}",
                            label=f"{kind} (slth)")
        if res["net"] == "fc2":
            ks = sorted(paper_rows)
            for i, kind in enumerate(KINDS):
                ax.semilogx(ks, [paper_rows[k][i] for k in ks], "s--", color=f"C{i}", alpha=0.5,
                            label=f"{kind} (paper)")
        ax.set(xlabel="kept weights (%)", ylabel="test accuracy (%)", title=f"{res['net']} on MNIST")
        sections.plain_log_ticks(ax.xaxis)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = sections.save(fig, ctx.plot_path(record))
    out.append(ctx.image(path, "Exp. 2 accuracy vs kept fraction") + "\n")
    for res in d["results"]:
        by = {(r["kind"], round(100 * r["density"], 6)): r for r in res["rows"]}
        dens = sorted({round(100 * r["density"], 6) for r in res["rows"]}, reverse=True)
        rows = []
        for k in dens:
            cells = [f"{k:g} %"]
            for i, kind in enumerate(KINDS):
                r = by.get((kind, k))
                ours = "-" if r is None else f"{pct(r['accuracy'])} ({r['kept_params']:,} kept)"
                theirs = paper_rows.get(int(k)) if res["net"] == "fc2" and float(k).is_integer() else None
                cells.append(ours + (f" / paper {theirs[i]}" if theirs else ""))
            rows.append(cells)
        totals = {r["kind"]: r["total_params"] for r in res["rows"]}
        out.append(f"### {res['net']} (slth totals: " + ", ".join(f"{k} {v:,}" for k, v in totals.items())
                   + (f"; paper: structure {paper['fc2']['total_params']['structure']:,}, wide "
                      f"{paper['fc2']['total_params']['wide']:,}, dense FC2 {paper['fc2']['dense_accuracy']} %"
                      if res["net"] == "fc2" else f"; paper total {paper['lenet5']['total_params']:,} incl. "
                      f"2,550 frozen conv weights, dense {paper['lenet5']['dense_accuracy']} %; "
                      f"{paper['lenet5']['note']}")
                   + ")\n")
        out.append(table(["kept", "structure, linear: ours / paper", "structure, ReLU: ours / paper",
                          "wide net: ours / paper"], rows))
        out.append("")
    out.append(f"Paper settings: {paper['fc2']['settings']}. Ours are single short runs, so they sit below the "
               "paper's best-over-budgets numbers; compare the ordering of the three curves, not the levels.\n")
    out.append("*Bigger machines*: `slth experiment pensia-exp2 --data-dir DIR --train-size 60000 --epochs 30 "
               "--densities 0.5,0.25,0.1,0.05,0.01` is the paper's setting at one epoch budget (about 9,000 "
               "edge-popup steps of the 2M-weight structure per run, x15 runs per net; hours on 2 cores).\n")
    out.append(provenance(d))
    return "\n".join(out)
