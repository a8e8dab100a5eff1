"""Construction vs learning, on one target architecture and data set.

* **dense**: the target itself, trained (bias-free ReLU MLP, inputs in [0, 1]; ``slth train-dense``'s setting).
* **constructed**: ``slth.construct`` of that trained target (Pensia's SubsetSum construction), evaluated as
  the pruned random network itself.
* **learned**: supermasks (edge-popup by default) trained by ``slth.train`` on the same architecture at
  width 1, and at the width multiple whose random-parameter count matches the constructed ticket's.

Reported: test accuracy, random params (the frozen random network), kept params, trained params, wall time.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._names import METHOD_NAMES
from .settings import check_at_least, check_names, option

if TYPE_CHECKING:
    from .sections import Context, Record

DENSE = "slth train-dense setting: bias-free, inputs in [0, 1], SGD lr 0.05 momentum 0.9, cosine"
LEARNED = "slth.train defaults per method (inputs normalised), signed-constant init"


@dataclass(frozen=True)
class Settings:
    data: str = option("digits", "digits (embedded) or mnist / fashion-mnist with --data-dir")
    data_dir: Path | None = option(None, "directory with --data's files")
    hidden: tuple[int, ...] = option((64,), "hidden widths of the target MLP")
    dense_epochs: int = option(40, "training epochs of the dense target")
    mask_epochs: int = option(40, "training epochs of each learned supermask")
    eps: float = option(0.01, "per-weight tolerance of the construction")
    density: float = option(0.5, "kept fraction of the learned supermasks")
    methods: tuple[str, ...] = option(("edge-popup", "biprop"), "supermask methods")
    construct_n: int | None = option(None, "random values per weight of the construction (default: planned "
                                              "from --eps)")
    seed: int = option(0)

    def __post_init__(self):
        check_names(self.methods, "methods", METHOD_NAMES)
        if self.data_dir is not None and not self.data_dir.is_dir():
            raise ValueError(f"no such --data-dir directory: {self.data_dir}")
        check_at_least(self, 1, "dense_epochs", "mask_epochs")
        if not (0 < self.eps < 1 and 0 < self.density <= 1):
            raise ValueError(f"--eps must lie in (0, 1) and --density in (0, 1], got {self.eps:g}, {self.density:g}")


PRESETS = {"quick": dict(data="digits", dense_epochs=1, mask_epochs=1, methods=("edge-popup",), hidden=(16,),
                         construct_n=8)}


def execute(settings: Settings, *, out=None, log=print, quiet: bool = False) -> dict[str, Any]:
    """The record's body (:func:`run`) and what the dense and learned runs' settings are."""
    s = settings
    body = run(s.data, s.data_dir, hidden=list(s.hidden), dense_epochs=s.dense_epochs, mask_epochs=s.mask_epochs,
               eps=s.eps, methods=list(s.methods), density=s.density, seed=s.seed, construct_n=s.construct_n,
               log=log)
    return {**body, "training": {"dense": DENSE, "learned": LEARNED}}

PAPER = ("Pensia et al. Exp. 1 (MNIST 784-500-10, eps 0.01): constructed ticket with 8,337,000 random / 3,725,871 "
         "kept params in 21.5 h on 36 cores, reported at the target's 97.19 %. Ramanujan et al. (edge-popup): a "
         "supermask of a wide enough random net matches the dense net trained at the same size (e.g. WRN-50 at "
         "30 % kept, ImageNet 73.3 % top-1). Neither paper compares the two on the same target.")


def run(data_name: str, data_dir, *, hidden: Sequence[int], dense_epochs: int, mask_epochs: int, eps: float,
        methods: Sequence[str], density: float, seed: int, max_width: float = 64.0, construct_n: int | None = None,
        log=print) -> dict[str, Any]:
    from ..construction import construct
    from ..construction.report import measure
    from ..data import load_dataset
    from ..train import TrainConfig, train
    from ..train.target import train_target
    from .record import Stopwatch

    data = load_dataset(data_name, data_dir)
    with Stopwatch() as sw:
        target, tm = train_target(data_name, data_dir, hidden=tuple(hidden), epochs=dense_epochs, seed=seed)
    widths = [math.prod(data.input_shape), *hidden, data.num_classes]
    target_params = sum(a * b for a, b in zip(widths[:-1], widths[1:]))
    rows = [{"row": "dense (trained target)", "accuracy": tm["test_accuracy"], "random_params": 0,
             "kept_params": target_params, "trained_params": target_params, "wall_seconds": sw.wall,
             "cpu_seconds": sw.cpu,
             "epochs": dense_epochs}]
    log(f"dense {tm['test_accuracy']:.4f} in {sw.wall:.0f} s")
    # numba compiles (or loads) the SubsetSum kernels on first use; not part of a construction's cost
    from .._jit import warm_up
    from ..subsetsum import compile_kernels

    warm_up(compile_kernels)
    with Stopwatch() as sw:
        ticket = construct(target, eps, seed=seed, nonnegative_input=True, n=construct_n)
    m = measure(ticket.to_module(), target, data.x_test, data.y_test)
    s = ticket.stats
    rows.append({"row": f"constructed (Pensia, eps {eps:g})", "accuracy": m["ticket_accuracy"],
                 "random_params": s["random_params"], "random_params_dense_theorem": s["random_params_dense_theorem"],
                 "kept_params": s["kept_params"], "trained_params": 0, "wall_seconds": sw.wall, "cpu_seconds": sw.cpu,
                 "wall_seconds_with_target_training": sw.wall + rows[0]["wall_seconds"],
                 "n_per_layer": s["n_per_layer"],
                 "eps_met": s["eps_met"], "max_logit_diff": m["max_logit_diff"], "top1_agreement": m["top1_agreement"]})
    log(f"constructed {m['ticket_accuracy']:.4f} in {sw.wall:.1f} s")
    # width multiple whose random network has about as many weights as the constructed ticket's
    def params_at(k: float) -> int:
        w = [widths[0], *(max(1, int(round(h * k))) for h in hidden), widths[-1]]
        return sum(a * b for a, b in zip(w[:-1], w[1:]))
    lo, hi = 1.0, max_width
    for _ in range(40):
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if params_at(mid) < s["random_params"] else (lo, mid)
    matched = round(hi, 2)
    for method in methods:
        for k in sorted({1.0, matched}):
            cfg = TrainConfig(method=method, model="fc", data=data_name,
                              data_dir=None if data_dir is None else str(data_dir), hidden=tuple(hidden),
                              width=k, density=density, epochs=mask_epochs, seed=seed)
            with tempfile.TemporaryDirectory() as tmp, Stopwatch() as sw:
                r = train(cfg, tmp, quiet=True).metrics
            label = "same width" if k == 1.0 else f"width x{k:g} (random params matched to the constructed ticket)"
            rows.append({"row": f"learned: {method}, {label}", "accuracy": r["test_accuracy"],
                         "random_params": r["params"], "kept_params": r["kept_params"],
                         "trained_params": r["trainable_params"], "wall_seconds": sw.wall, "cpu_seconds": sw.cpu,
                         "epochs": mask_epochs,
                         "width": k, "density": r["density"]})
            log(f"{method} width {k:g}: {r['test_accuracy']:.4f} in {sw.wall:.0f} s")
    return {"data": data_name, "arch": "-".join(map(str, widths)), "target_params": target_params, "rows": rows,
            "matched_width": matched, "paper": PAPER}


# --------------------------------------------------------------------------- report section
def render(record: Record, ctx: Context) -> str:
    """The docs/results.md section of one record (called by ``slth report``)."""
    from . import sections
    from .sections import pct, provenance, table

    d = record.data
    s = d["settings"]
    ctx.summary.append((f"construction vs learning, {d['data']} {d['arch']}", "not compared in the papers",
                        "; ".join(f"{r['row'].split(' (')[0]} {pct(r['accuracy'])} %" for r in d["rows"])))
    rows = []
    for r in d["rows"]:
        wall = f"{r['wall_seconds']:.1f}"
        if "cpu_seconds" in r:
            wall += f" / {r['cpu_seconds']:.1f}"
        if "wall_seconds_with_target_training" in r:
            wall += f" ({r['wall_seconds_with_target_training']:.1f} wall with target training)"
        rows.append([r["row"], f"{pct(r['accuracy'])} %", f"{r['random_params']:,}" if r["random_params"] else "-",
                     f"{r['kept_params']:,}", f"{r['trained_params']:,}", wall])
    plt = sections.pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for i, r in enumerate(d["rows"]):
        x = max(r["random_params"], r["kept_params"])
        ax.scatter(x, 100 * r["accuracy"], s=40, color=f"C{i}", label=r["row"])
    ax.set_xscale("log")
    ax.set(xlabel="network size (random params; dense: trained params)", ylabel="test accuracy (%)",
           title=f"{d['data']} {d['arch']}: construction vs learning")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=6)
    fig.tight_layout()
    path = sections.save(fig, ctx.plot_path(record))
    return "\n".join([
        f"## Construction vs learning ({d['data']}, target {d['arch']})\n",
        f"The same target architecture and data: dense training ({s['dense_epochs']} epochs), the ticket "
        f"`slth.construct` builds from that trained target (eps {s['eps']:g}), and supermasks learned by "
        f"`slth.train` ({s['mask_epochs']} epochs, density {s['density']:g}) at the same width and at the width "
        f"whose random network matches the constructed ticket's random-parameter count (x{d['matched_width']:g}). "
        "*Random params*: the frozen random network the ticket is cut from; *trained*: parameters optimised "
        "(scores for supermasks, weights for dense; construction optimises none).\n",
        ctx.image(path, "construction vs learning") + "\n",
        table(["", "test accuracy", "random params", "kept params", "trained params", "wall / CPU seconds"], rows), "",
        f"Papers: *{d['paper']}*\n",
        ("*Larger setting*: `slth experiment construct-vs-learn --data mnist --data-dir DIR --hidden 500 "
         "--dense-epochs 10 --mask-epochs 10` (Exp. 1's target; the matched-width supermask is then about a "
         "784-5500-10 net; its record is rendered in its own section when present).\n"
         if d["data"] == "digits" else ""),
        provenance(d)])
