"""Width curves: logarithmic (Pensia, SubsetSum) vs polynomial (Malach, single pick) width, and the
SubsetSum error-vs-n law.

For each target (a trained bias-free ReLU MLP on inputs in [0, 1]) and each method, tickets are
constructed at fixed n (random values per target weight) without redraws, taking the minimal-error
subset (Pensia) or the nearest single product (Malach), on the same seeded random tensors. The width
factor is random params / target params (block-structured count, about n). Recorded per point: max and
median weight error, max |ticket - target| logit on the test set, ticket accuracy.

"At eps": the smallest width factor of the sweep whose max weight error is <= eps, for each eps.

SubsetSum law: the exact solver's median and 90th-percentile minimal error for random instances
(values U[0,1]·U[-1,1], the construction's products; targets U[-1/2, 1/2]) against n, fitted to
error ~ C·2^(-c·n), beside the single pick's error ~ 1/n.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .settings import option

if TYPE_CHECKING:
    from .sections import Context, Record


@dataclass(frozen=True)
class Settings:
    target: Path | None = option(None, "also a saved bias-free MLP target (state_dict, e.g. from slth "
                                          "train-dense), evaluated on --data")
    arch: str = option("784-500-10", "widths of --target")
    data: str = option("mnist", "data set of --target")
    data_dir: Path | None = option(None, "directory with --data's files")
    digits: bool = option(True, "include a digits 64-64-10 target trained here (--digits-epochs, ~1 min)")
    digits_epochs: int = option(40, "training epochs of the digits target")
    eps: tuple[float, ...] = option((0.1, 0.03, 0.01, 0.003, 0.001), "eps values for the width-needed table")
    pensia_n: tuple[int, ...] = option(tuple(range(2, 25, 2)), "n values of the Pensia sweep")
    malach_n: tuple[int, ...] = option(tuple(2 ** k for k in range(1, 13)), "n values of the Malach sweep")
    law_n: tuple[int, ...] = option(tuple(range(2, 33, 2)), "n values of the SubsetSum law")
    law_instances: int = option(4000, "random SubsetSum instances per n")
    max_values: int = option(40_000_000, "skip constructions with more random values (memory)")
    seed: int = option(0)

    def __post_init__(self):
        if self.target is None and not self.digits:
            raise ValueError("nothing to do: pass --target or keep --digits")
        if self.target is not None and not self.target.is_file():
            raise ValueError(f"no such --target file: {self.target}")
        if self.data_dir is not None and not self.data_dir.is_dir():
            raise ValueError(f"no such --data-dir directory: {self.data_dir}")


PRESETS = {"quick": dict(eps=(0.1,), pensia_n=(4, 8), malach_n=(4,), law_n=(4, 8), law_instances=100,
                         digits_epochs=1)}


def execute(settings: Settings, *, out=None, log=print, quiet: bool = False) -> dict[str, Any]:
    """Train the digits target and/or load ``settings.target``; the record's body (:func:`run`)."""
    import hashlib

    from ..data import load_dataset
    from ..train.target import train_target

    s = settings
    targets = []
    if s.digits:
        net, _ = train_target("digits", hidden=(64,), epochs=s.digits_epochs, seed=s.seed)
        ds = load_dataset("digits")
        targets.append(("digits", net, ds.x_test, ds.y_test))
    if s.target is not None:
        from ..construction.target import load_target

        ds = load_dataset(s.data, s.data_dir)
        targets.append((s.data, load_target(s.target, s.arch), ds.x_test, ds.y_test))
    body = run(targets, eps_values=list(s.eps), pensia_ns=list(s.pensia_n), malach_ns=list(s.malach_n),
               law_ns=list(s.law_n), law_instances=s.law_instances, seed=s.seed, max_values=s.max_values,
               quiet=quiet)
    body["target_sha256"] = None if s.target is None else hashlib.sha256(s.target.read_bytes()).hexdigest()
    log(f"SubsetSum fit error ~ 2^(-{body['subsetsum_law']['fit']['c']:.3f} n)")
    return body

PAPER = {
    "pensia": "Pensia et al. 2020: width factor O(log(d·l/eps)); their Exp. 1 used n = 21 products per weight "
              "at eps = 0.01 (8,337,000 random params for 397,000 target weights, 21x)",
    "malach": "Malach et al. 2020: polynomial width, O(d^4 l^2) factor in Pensia's summary; one random path per "
              "weight, so the candidates needed per weight grow like 1/eps",
    "lueker": "Lueker 1998: with n i.i.d. uniform values the best subset sum is within 2^(-Theta(n)) of every "
              "target in the range, w.h.p.; n = O(log 1/eps) values suffice",
}


def subsetsum_law(ns: Sequence[int], instances: int, seed: int = 0) -> list[dict[str, Any]]:
    """Minimal SubsetSum error vs n (exact solver) and the single-pick error on the same instances."""
    from ..subsetsum import solve

    rng = np.random.default_rng(seed)
    rows = []
    for n in ns:
        values = rng.uniform(0, 1, (instances, n)) * rng.uniform(-1, 1, (instances, n))
        targets = rng.uniform(-0.5, 0.5, instances)
        err = solve(values, targets).error
        single = np.minimum(np.abs(values - targets[:, None]).min(axis=1), np.abs(targets))
        rows.append({"n": int(n), "median_error": float(np.median(err)), "p90_error": float(np.quantile(err, 0.9)),
                     "single_pick_median_error": float(np.median(single)),
                     "single_pick_p90_error": float(np.quantile(single, 0.9))})
    return rows


def fit_exponent(rows: list[dict[str, Any]], key: str = "median_error", min_n: int = 8) -> dict[str, float]:
    """Least-squares fit of log2(error) = log2(C) - c·n over rows with n >= min_n (the small-n end is range-bound)."""
    pts = [(r["n"], math.log2(r[key])) for r in rows if r["n"] >= min_n and r[key] > 0]
    if len(pts) < 2:
        return {"c": float("nan"), "log2_C": float("nan")}
    n, y = np.array(pts).T
    slope, intercept = np.polyfit(n, y, 1)
    return {"c": float(-slope), "log2_C": float(intercept), "min_n": min_n}


def sweep_target(name: str, target, x_test, y_test, *, pensia_ns: Sequence[int], malach_ns: Sequence[int],
                 seed: int, max_values: int, progress=None) -> dict[str, Any]:
    from ..construction import construct
    from ..construction.report import measure
    from ..construction.target import parse_target

    _, linears = parse_target(target, nonnegative_input=True)
    target_params = sum(s.params for s in linears)
    points: dict[str, list[dict[str, Any]]] = {"pensia": [], "malach": []}
    skipped = []
    for method, ns in (("pensia", pensia_ns), ("malach", malach_ns)):
        for n in ns:
            if n * target_params > max_values:
                skipped.append({"method": method, "n": int(n), "reason": f"n x target params > {max_values:,}"})
                continue
            t = construct(target, 1e-3, seed=seed, method=method, n=int(n), sparse=False, max_redraw_rounds=0,
                          nonnegative_input=True)
            m = measure(t.to_module(), target, x_test, y_test)
            s = t.stats
            points[method].append({
                "n": int(n), "random_params": s["random_params"], "kept_params": s["kept_params"],
                "width_factor": s["random_params"] / s["target_params"],
                "max_weight_error": s["max_weight_error"], "weight_error_median": s["weight_error_median"],
                "weight_error_p99": s["weight_error_p99"],
                "max_logit_diff": m["max_logit_diff"], "ticket_accuracy": m["ticket_accuracy"],
                "top1_agreement": m["top1_agreement"], "seconds": s["seconds"]})
            if progress is not None:
                progress()
    target_accuracy = measure(target, target, x_test, y_test)["target_accuracy"]
    return {"name": name, "arch": "-".join([str(linears[0].d_in)] + [str(s.d_out) for s in linears]),
            "target_params": int(target_params), "target_accuracy": target_accuracy, "points": points,
            "skipped": skipped}


def width_at_eps(points: list[dict[str, Any]], eps: float, key: str = "weight_error_p99") -> dict[str, Any] | None:
    """The smallest-width point of a sweep whose ``key`` error is <= eps (None if the sweep never gets there)."""
    ok = [p for p in points if p[key] <= eps]
    return min(ok, key=lambda p: p["width_factor"]) if ok else None


def planned_n(target, eps: float, method: str, p: float = 0.99) -> list[int]:
    """The n per layer that ``construct`` would choose (to skip constructions too large for this machine)."""
    from ..construction.build import choose_n, plan_scales
    from ..construction.target import parse_target

    _, linears = parse_target(target, nonnegative_input=True)
    scales, _ = plan_scales(linears)
    return [choose_n(method, eps / s, spec.weight / s, p) for spec, s in zip(linears, scales)]


def construct_at_eps(target, x_test, y_test, eps: float, method: str, *, seed: int, max_values: int) -> dict[str, Any]:
    """``construct`` with its defaults (n from eps, redraws): the width that certifies max weight error <= eps."""
    from ..construction import construct
    from ..construction.report import measure
    from ..construction.target import parse_target

    _, linears = parse_target(target, nonnegative_input=True)
    ns = planned_n(target, eps, method)
    values = sum(n * spec.params for n, spec in zip(ns, linears))
    if values > max_values:
        return {"skipped": f"n per layer {ns}: {values:,} random values > {max_values:,} (memory cap of this machine)",
                "n_per_layer": ns, "width_factor": values / sum(spec.params for spec in linears)}
    t = construct(target, eps, seed=seed, method=method, nonnegative_input=True)
    m = measure(t.to_module(), target, x_test, y_test)
    s = t.stats
    return {"n_per_layer": s["n_per_layer"], "width_factor": s["random_params"] / s["target_params"],
            "random_params": s["random_params"], "kept_params": s["kept_params"], "eps_met": s["eps_met"],
            "max_weight_error": s["max_weight_error"], "redraws": s["redraws"], "ticket_accuracy": m["ticket_accuracy"],
            "max_logit_diff": m["max_logit_diff"], "seconds": s["seconds"]}


def run(targets: Sequence[tuple[str, Any, Any, Any]], *, eps_values: Sequence[float], pensia_ns: Sequence[int],
        malach_ns: Sequence[int], law_ns: Sequence[int], law_instances: int, seed: int = 0,
        max_values: int = 40_000_000, quiet: bool = True) -> dict[str, Any]:
    """``targets``: (name, target module, x_test, y_test). Returns the record body (without the header)."""
    from rich.progress import Progress

    out: dict[str, Any] = {"targets": []}
    with Progress(disable=quiet, transient=True) as bar:
        task = bar.add_task("width curves", total=len(targets) * (len(pensia_ns) + len(malach_ns)))
        for name, target, x, y in targets:
            res = sweep_target(name, target, x, y, pensia_ns=pensia_ns, malach_ns=malach_ns, seed=seed,
                               max_values=max_values, progress=lambda: bar.advance(task))
            res["at_eps"] = []
            for eps in eps_values:
                row: dict[str, Any] = {"eps": eps}
                for method in ("pensia", "malach"):
                    p = width_at_eps(res["points"][method], eps)
                    row[f"{method}_sweep_p99"] = None if p is None else {
                        k: p[k] for k in ("n", "width_factor", "ticket_accuracy", "max_logit_diff")}
                    row[f"{method}_constructed"] = construct_at_eps(target, x, y, eps, method, seed=seed,
                                                                    max_values=max_values)
                res["at_eps"].append(row)
            out["targets"].append(res)
    law = subsetsum_law(law_ns, law_instances, seed)
    out["subsetsum_law"] = {"rows": law, "fit": fit_exponent(law), "fit_p90": fit_exponent(law, "p90_error"),
                            "instances": law_instances,
                            "values": "U[0,1]*U[-1,1] (the construction's products)", "targets": "U[-1/2,1/2]"}
    out["paper"] = PAPER
    return out


# --------------------------------------------------------------------------- report section
def render(record: Record, ctx: Context) -> str:
    """The docs/results.md section of one record (called by ``slth report``)."""
    from . import sections
    from .sections import pct, provenance, table

    d = record.data
    plt = sections.pyplot()
    out = ["## Width: logarithmic (Pensia) vs polynomial (Malach)\n",
           "Tickets of the same trained targets over the same seeded random tensors, at fixed n random products "
           "per target weight, no redraws: Pensia = minimal-error SubsetSum of the n products, Malach = the single "
           "nearest product (or none). Width factor = random params / target params (block-structured count, "
           "about n). Curves: 99th-percentile and median |realised - target weight|, the largest logit "
           "difference on the test set, and ticket accuracy.\n"]
    for t in d["targets"]:
        fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
        for method, color in (("pensia", "C0"), ("malach", "C1")):
            pts = t["points"][method]
            if not pts:
                continue
            w = [p["width_factor"] for p in pts]
            axes[0].loglog(w, [max(p["weight_error_p99"], 1e-12) for p in pts], "o-", color=color,
                           label=f"{method}: 99th pct")
            axes[0].loglog(w, [max(p["weight_error_median"], 1e-12) for p in pts], "s--", color=color,
                           label=f"{method}: median")
            axes[1].loglog(w, [max(p["max_logit_diff"], 1e-12) for p in pts], "o-", color=color, label=method)
            axes[2].semilogx(w, [100 * p["ticket_accuracy"] for p in pts], "o-", color=color, label=method)
        for eps in [r["eps"] for r in t["at_eps"]]:
            axes[0].axhline(eps, color="gray", lw=0.6, ls=":")
        axes[2].axhline(100 * t["target_accuracy"], color="k", ls="--", label="target")
        axes[0].set(xlabel="width factor (random / target params)", ylabel="weight error",
                    title=f"{t['name']} {t['arch']}: weight error (dotted: eps values)")
        axes[1].set(xlabel="width factor", ylabel="max |ticket - target| logit (test set)", title="output error")
        axes[2].set(xlabel="width factor", ylabel="test accuracy (%)", title="ticket accuracy")
        for ax in axes:
            sections.plain_log_ticks(ax.xaxis)
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=7)
        fig.tight_layout()
        path = sections.save(fig, ctx.plot_path(record, f"-{t['name']}"))
        out.append(f"### Target: {t['name']} ({t['arch']}, {t['target_params']:,} weights, "
                   f"test accuracy {pct(t['target_accuracy'])} %)\n")
        out.append(ctx.image(path, f"width curves, {t['name']}") + "\n")
        rows = []
        for r in t["at_eps"]:
            cells = [f"{r['eps']:g}"]
            for method in ("pensia", "malach"):
                sw = r.get(f"{method}_sweep_p99")
                cells.append("not reached in sweep" if sw is None else
                             f"{sw['width_factor']:.1f}x (n = {sw['n']}; acc. {pct(sw['ticket_accuracy'])} %)")
            for method in ("pensia", "malach"):
                c = r.get(f"{method}_constructed")
                if c is None:
                    cells.append("-")
                elif "skipped" in c:
                    cells.append(f"needs ~{c['width_factor']:.0f}x (n = {c['n_per_layer']}); not built: too large here")
                else:
                    cells.append(f"{c['width_factor']:.1f}x (n = {c['n_per_layer']}, {c['redraws']:,} redraws; "
                                 f"max err {c['max_weight_error']:.1e}{'' if c['eps_met'] else ' > eps'}; "
                                 f"acc. {pct(c['ticket_accuracy'])} %)")
            rows.append(cells)
        out.append("Width factor needed for eps. *Sweep*: smallest swept width with 99th-percentile weight error "
                   "<= eps (no redraws). *Constructed*: `slth.construct` with its defaults (n per layer chosen for "
                   "P(error <= eps) >= 0.99, failing blocks redrawn), which aims at max weight error <= eps; cells "
                   "marked '> eps' did not reach it (`eps_met` false in the record).\n")
        out.append(table(["eps", "Pensia, sweep", "Malach, sweep", "Pensia, constructed", "Malach, constructed"], rows))
        if t.get("skipped"):
            out.append("\nNot run (memory): " + ", ".join(f"{s['method']} n = {s['n']}" for s in t["skipped"]) + ".")
        out.append("")
    for t in d["targets"]:
        for r in t["at_eps"]:
            p, m = r.get("pensia_constructed") or {}, r.get("malach_constructed") or {}
            if r["eps"] == 0.01 and "width_factor" in p and "width_factor" in m:
                ctx.summary.append((
                    f"width needed for eps = 0.01, {t['name']} {t['arch']}",
                    "Pensia: O(log 1/eps) (n = 21 in Exp. 1); Malach: polynomial",
                    f"Pensia {p['width_factor']:.1f}x vs Malach {m['width_factor']:.0f}x"
                    + (" (Malach not built: memory)" if "skipped" in m else "")))
    law = d["subsetsum_law"]
    ctx.summary.append(("SubsetSum error vs n", "2^(-Theta(n)) (Lueker)",
                        f"median error ~ 2^(-{law['fit']['c']:.2f} n); single pick ~ 1/n"))
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    ns = [r["n"] for r in law["rows"]]
    ax.semilogy(ns, [r["median_error"] for r in law["rows"]], "o-", label="SubsetSum (exact): median")
    ax.semilogy(ns, [r["p90_error"] for r in law["rows"]], "s--", label="SubsetSum (exact): 90th pct")
    ax.semilogy(ns, [r["single_pick_median_error"] for r in law["rows"]], "^-", label="single pick: median")
    fit = law["fit"]
    ax.semilogy(ns, [2.0 ** (fit["log2_C"] - fit["c"] * n) for n in ns], "k:",
                label=f"fit 2^({fit['log2_C']:.2f} - {fit['c']:.2f} n)")
    ax.semilogy(ns, [2.0 ** -n for n in ns], color="gray", lw=0.8, label="2^-n")
    ax.set(xlabel="n random values", ylabel="|best subset sum - target|",
           title=f"SubsetSum error vs n ({law['instances']:,} instances per n)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = sections.save(fig, ctx.plot_path(record, "-subsetsum"))
    out.append("### SubsetSum error vs n against the 2^-n law\n")
    out.append(f"Values {law['values']}, targets {law['targets']}; exact minimal error (`slth.subsetsum.solve`). "
               f"Least-squares fit of log2(median error) over n >= {fit.get('min_n', '?')}: "
               f"**error ~ 2^({fit['log2_C']:.2f} - {fit['c']:.3f} n)** (90th percentile: slope "
               f"{law['fit_p90']['c']:.3f}); the single pick's error falls only like 1/n.\n")
    out.append(ctx.image(path, "SubsetSum error vs n") + "\n")
    out.append(table(["n", "median error", "90th pct", "single pick median"],
                     [[r["n"], f"{r['median_error']:.2e}", f"{r['p90_error']:.2e}",
                       f"{r['single_pick_median_error']:.2e}"] for r in law["rows"]]))
    out.append("\nPapers: " + " ".join(f"*{v}*." for v in d["paper"].values()) + " Measured: the exponent "
               f"c = {fit['c']:.2f} per value (2^(-c n)), i.e. each extra random value about halves the error, "
               "while a single pick needs about 2x the values to halve it.\n")
    out.append(provenance(d))
    return "\n".join(out)
