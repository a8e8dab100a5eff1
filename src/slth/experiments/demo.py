"""``slth demo``, the main job: train a small target MLP on digits, construct its ticket, report, and plot error
vs n. It sits above construction and training, since it uses both."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from .._io import atomic_write, atomic_write_json


def run_demo(out: str | Path = "slth-demo", *, eps: float = 0.01, seed: int = 0, epochs: int = 40,
             n_values=tuple(range(2, 21, 2)), quiet: bool = False) -> dict[str, Any]:
    from rich.console import Console
    from rich.table import Table

    from ..construction.api import construct
    from ..construction.bound import certified_bound
    from ..construction.methods import METHODS
    from ..construction.report import measure
    from ..data import load_dataset
    from ..train.target import train_target

    console = Console(quiet=quiet)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = load_dataset("digits")
    t0 = time.perf_counter()
    with console.status("training the target MLP on digits"):
        target, train_metrics = train_target(epochs=epochs, seed=seed, quiet=True)
    train_seconds = time.perf_counter() - t0
    ticket = construct(target, eps, seed=seed, nonnegative_input=True, progress=not quiet)
    ticket_path = ticket.save(out / "ticket.slth")
    m = measure(ticket.to_module(), target, data.x_test, data.y_test)
    bound = float(certified_bound(ticket, target).max())
    s = ticket.stats

    table = Table(title=f"slth demo: digits MLP {'-'.join(str(l['d_in']) for l in ticket.config['layers'])}-10, "
                        f"eps={eps}")
    for col in ("network", "test accuracy", "random params", "kept params", "max weight error", "seconds",
                "compile seconds"):
        table.add_column(col, justify="right" if col != "network" else "left")
    table.add_row("target (dense, trained)", f"{m['target_accuracy']:.2%}", "-", f"{s['target_params']:,}", "0",
                  f"{train_seconds:.1f}", "-")
    table.add_row("ticket (pruned random)", f"{m['ticket_accuracy']:.2%}", f"{s['random_params']:,}",
                  f"{s['kept_params']:,}", f"{s['max_weight_error']:.2e}", f"{s['seconds']:.1f}",
                  f"{s['compile_seconds']:.1f}")
    console.print(table)
    console.print("seconds: the work; compile seconds: numba compiling (or loading from its cache) the SubsetSum "
                  "kernels, once per process (cached on disk for later runs)")
    console.print(f"top-1 agreement {m['top1_agreement']:.2%}, max logit difference {m['max_logit_diff']:.3g}, "
                  f"certified bound on [0,1]^64 {bound:.3g}; n per layer {s['n_per_layer']}, "
                  f"{s['redraws']} redraws, {s['failures']} failures; ticket file {ticket_path.stat().st_size:,} bytes")

    # error vs n: the same target, fixed n, no redraws; min-error SubsetSum vs Malach's single pick
    sweep: dict[str, list[dict]] = {name: [] for name in METHODS}  # every construction method
    from rich.progress import Progress

    with Progress(console=console, disable=quiet, transient=True) as bar:
        task = bar.add_task("error vs n", total=len(sweep) * len(n_values))
        for method in sweep:
            for n in n_values:
                t = construct(target, eps, seed=seed, nonnegative_input=True, method=method, n=n, sparse=False,
                              max_redraw_rounds=0)
                mm = measure(t.to_module(), target, data.x_test, data.y_test)
                sweep[method].append({"n": n, "max_weight_error": t.stats["max_weight_error"],
                                      "weight_error_median": t.stats["weight_error_median"],
                                      "weight_error_p99": t.stats["weight_error_p99"],
                                      "max_logit_diff": mm["max_logit_diff"], "ticket_accuracy": mm["ticket_accuracy"]})
                bar.advance(task)
    plot_path = plot_error_vs_n(sweep, out / "error_vs_n.png", eps=eps)
    result = {
        "eps": eps, "seed": seed, "train": {k: train_metrics[k] for k in ("test_accuracy", "seconds")},
        "ticket": s, "measured": m, "certified_bound": bound, "sweep": sweep,
        "files": {"ticket": str(ticket_path), "plot": str(plot_path)},
    }
    atomic_write_json(out / "demo.json", result)
    console.print(f"wrote {ticket_path}, {plot_path}, {out / 'demo.json'}")
    return result


def plot_error_vs_n(sweep: dict[str, list[dict]], path: str | Path, *, eps: float | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    from ..construction.methods import METHODS

    labels = {name: f"{m.label} ({'SubsetSum' if m.subset_sum else 'single pick'} of n)" for name, m in METHODS.items()}
    for (method, rows), color in zip(sweep.items(), ("C0", "C1", "C2", "C3")):
        ns = [r["n"] for r in rows]
        label = labels.get(method, method)
        axes[0].semilogy(ns, [max(r["weight_error_median"], 1e-16) for r in rows], "o-", color=color,
                         label=f"{label}: median")
        axes[0].semilogy(ns, [max(r["weight_error_p99"], 1e-16) for r in rows], "s--", color=color,
                         label=f"{label}: 99th percentile")
        axes[1].semilogy(ns, [max(r["max_logit_diff"], 1e-16) for r in rows], "o-", color=color, label=label)
    if eps is not None:
        axes[0].axhline(eps, color="gray", ls="--", lw=1, label=f"eps = {eps}")
    axes[0].set(xlabel="n random values per weight", ylabel="|realised - target weight|",
                title="weight error (no redraws)")
    axes[1].set(xlabel="n random values per weight", ylabel="max |ticket - target logit| (test set)",
                title="output error")
    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.tight_layout()
    path = Path(path)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    plt.close(fig)
    return path
