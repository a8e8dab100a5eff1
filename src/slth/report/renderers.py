"""One renderer per record kind: markdown (tables beside the papers' numbers) and PNG plots."""

from __future__ import annotations

from typing import Any

from . import plots
from .core import Context, Record, ReportError, renderer


def provenance(data: dict[str, Any]) -> str:
    bits = [f"machine: {data.get('machine', 'not recorded')}"]
    if data.get("machine_note"):
        bits.append(data["machine_note"])
    bits.append(f"date: {data.get('date', 'not recorded')}")
    if isinstance(data.get("wall_seconds"), (int, float)):
        bits.append(f"whole run {data['wall_seconds'] / 60:.1f} min wall")
    if data.get("git_commit"):
        bits.append(f"commit {data['git_commit']}")
    cmd = data.get("command")
    return "*" + "; ".join(bits) + ".*" + (f" Command: `{cmd}`" if cmd else "")


def pct(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{100 * x:.{digits}f}"


def table(header: list[str], rows: list[list[Any]], align: str | None = None) -> str:
    align = align or "|" + "|".join("---" for _ in header) + "|"
    lines = ["| " + " | ".join(header) + " |", align]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------- width curves
@renderer("width-curves", 10)
def width_curves(record: Record, ctx: Context) -> str:
    d = record.data
    plt = plots.pyplot()
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
            plots.plain_log_ticks(ax.xaxis)
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=7)
        fig.tight_layout()
        path = plots.save(fig, ctx.plot_path(record, f"-{t['name']}"))
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
                   "P(error <= eps) >= 0.99, failing blocks redrawn), which aims at max weight error <= eps; cells marked "
                   "'> eps' did not reach it (`eps_met` false in the record).\n")
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
    ax.semilogy(ns, [2.0 ** (fit["log2_C"] - fit["c"] * n) for n in ns], "k:", label=f"fit 2^({fit['log2_C']:.2f} - {fit['c']:.2f} n)")
    ax.semilogy(ns, [2.0 ** -n for n in ns], color="gray", lw=0.8, label="2^-n")
    ax.set(xlabel="n random values", ylabel="|best subset sum - target|",
           title=f"SubsetSum error vs n ({law['instances']:,} instances per n)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = plots.save(fig, ctx.plot_path(record, "-subsetsum"))
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


# --------------------------------------------------------------------------------------- Pensia Exp. 1
@renderer("pensia-exp1", 20)
def pensia_exp1(record: Record, ctx: Context) -> str:
    from ..construct.experiments import exp1_markdown

    d = record.data
    for run in d["runs"]:
        if run["eps"] == 0.01:
            ctx.summary.append(("Exp. 1: MNIST 784-500-10 ticket at eps 0.01",
                                f"{d['paper']['kept_params']:,} kept of {d['paper']['random_params']:,}, "
                                f"{d['paper']['target_accuracy']:.2%} (target's), {d['paper']['seconds'] / 3600:.1f} h",
                                f"{run['stats']['kept_params']:,} kept of {run['stats']['random_params']:,}, "
                                f"{run['measured']['ticket_accuracy']:.2%} (pruned net), "
                                f"{run['construct_wall_seconds']:.1f} s"))
    return "\n".join(["## Pensia et al. Exp. 1: SubsetSum tickets of a 784-500-10 MNIST target\n",
                      "Ours (`slth experiment pensia-exp1`) beside the paper's committed output (THEORY.md 2.8).\n",
                      exp1_markdown(d), "", provenance(d)])


# --------------------------------------------------------------------------------------- engineer A's records
@renderer("width-sweep", 60)
def width_sweep(record: Record, ctx: Context) -> str:
    from ..supermask.experiment import plot, table as sweep_table

    d = record.data
    path = ctx.plot_path(record)
    plot(d, path)
    cfg = d["config"]
    return "\n".join([f"## Learning by pruning: width sweep ({cfg['model']} on {cfg['data']}, "
                      f"{cfg['epochs']} epochs, density {cfg['density']:g})\n",
                      "Dense at width w against each supermask method on a random network of width k·w "
                      f"(`slth experiment width-sweep`; record `{record.path.name}`).\n",
                      ctx.image(path, "width sweep"), "", sweep_table(d),
                      provenance(d) if "machine" in d else f"*machine: {d['runs'][0].get('machine', 'see runs')}*"])


@renderer("train-run", 70)
def train_run(record: Record, ctx: Context) -> str:
    d = record.data
    rows = [[d["method"], d["model"], d["data"], f"{d['width']:g}", f"{d['density']:.4f}", f"{d['kept_params']:,}",
             f"{d['params']:,}", d["epochs_done"], pct(d["test_accuracy"]), pct(d["best_test_accuracy"]),
             f"{d['seconds']:.0f}"]]
    return "\n".join([f"## Training run `{record.path.name}`\n",
                      table(["method", "model", "data", "width", "density", "kept", "params", "epochs",
                             "test acc. %", "best %", "seconds"], rows), "",
                      f"*machine: {d.get('machine', 'not recorded')}; finished: {d['finished']}.*"])


@renderer("markdown", 90)
def markdown(record: Record, ctx: Context) -> str:
    if not isinstance(record.data, str):
        raise ReportError(f"{record.path}: a markdown fragment must be text")
    return f"<!-- included verbatim from {record.path.name} -->\n" + record.data


# --------------------------------------------------------------------------------------- planted tickets
def _label(row: dict) -> str:
    m = row.get("density_multiple", 1)
    return row["method"] if m == 1 else f"{row['method']} x{m:g}"


@renderer("planted", 40)
def planted(record: Record, ctx: Context) -> str:
    d = record.data
    s = d["settings"]
    out = ["## Planted tickets (Plant 'n' Seek)\n",
           "A known sparse target is planted in a random He-initialised network of the same depth (target neurons at "
           "random distinct source neurons, weights rescaled to the source's scale, fixed output rescaling); each "
           "supermask method then searches the source network keeping exactly the planted number of weights per "
           "layer (an oracle density; rows marked x10 keep ten times as many), and `slth.construct` builds a "
           "ticket of the same target in its own random network. *Overlap* = |found ∩ planted| / |planted| over "
           "all layers (a random mask expects overlap = its density). Regression tasks report test MSE (target variance beside it), "
           "classification tasks test accuracy. The planted ticket itself reproduces the target exactly.\n",
           f"Settings: toy tasks {s['n_train']:,} training / {s['n_test']:,} test points, {s['epochs']} epochs per method, "
           f"source hidden widths {s['hidden']}, target depth {s['depth']}; MNIST: {s['mnist_train_size']:,} training "
           f"examples, {s['mnist_epochs']} epochs, source hidden {s['mnist_hidden']}; {s['lr']}.\n"]
    plt = plots.pyplot()
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
    path = plots.save(fig, ctx.plot_path(record))
    out.append(ctx.image(path, "overlap of found and planted masks") + "\n")
    for t in tasks:
        reg = t["kind"] == "regression"
        head = f"### {t['task']}: target {'-'.join(map(str, t['target_widths']))} ({t['target_nonzeros']:,} nonzero weights) " \
               f"in source {'-'.join(map(str, t['source_widths']))}"
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


# --------------------------------------------------------------------------------------- construction vs learning
@renderer("construct-vs-learn", 50)
def construct_vs_learn(record: Record, ctx: Context) -> str:
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
    plt = plots.pyplot()
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
    path = plots.save(fig, ctx.plot_path(record))
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
         "784-5500-10 net; its record is rendered in its own section when present).\n" if d["data"] == "digits" else ""),
        provenance(d)])


# --------------------------------------------------------------------------------------- Pensia Exp. 2
@renderer("pensia-exp2", 30)
def pensia_exp2(record: Record, ctx: Context) -> str:
    d = record.data
    s = d["settings"]
    paper = d["paper"]
    paper_rows = {int(k): v for k, v in paper["fc2"]["rows"].items()}  # JSON keys are strings
    for res in d["results"]:
        if res["net"] == "fc2":
            ten = {r["kind"]: r["accuracy"] for r in res["rows"] if abs(r["density"] - 0.1) < 1e-9}
            if len(ten) == 3:
                ctx.summary.append(("Exp. 2 (FC2, 10 % kept): structure linear / ReLU / wide",
                                    " / ".join(f"{v}" for v in paper_rows[10]) + " %",
                                    " / ".join(pct(ten[k], 1) for k in ("structure-linear", "structure-relu", "wide"))
                                    + f" % (reduced setting: {s['train_size']:,} examples, {s['epochs']} "
                                    f"epoch(s), one run)"))
    nets = ", ".join(r["net"] for r in d["results"])
    out = [f"## Pensia et al. Exp. 2: the RedLayer structure vs a wide network, by edge-popup ({nets}; "
           f"{s['train_size']:,} examples, {s['epochs']} epochs)\n",
           f"RedLayer(in, out, r = {s['r']}) as in their `red_fc.py` (r scalars per input, ReLU or linear, then a dense "
           "mix), and a wide FC net with about the same number of weights, all pruned by edge-popup to the same "
           "density per tensor. **Reduced setting** (what differs from the paper): "
           f"{s['train_size']:,} of 60,000 MNIST training examples, {s['epochs']} epoch(s) instead of the best over "
           f"30-150, densities {s['densities']} only; same lr ({s['lr_fc']} FC, {s['lr_lenet5']} LeNet5), momentum, "
           f"wd {s['weight_decay']}, cosine, batch {s['batch_size']}, normalisation {s['normalisation']}. LeNet5: "
           "random frozen convolutions, their features computed once (the same function).\n"]
    plt = plots.pyplot()
    fig, axes = plt.subplots(1, len(d["results"]), figsize=(5.5 * len(d["results"]), 4), squeeze=False)
    for ax, res in zip(axes[0], d["results"]):
        for i, kind in enumerate(("structure-linear", "structure-relu", "wide")):
            rs = sorted((r for r in res["rows"] if r["kind"] == kind), key=lambda r: r["density"])
            if rs:
                ax.semilogx([100 * r["density"] for r in rs], [100 * r["accuracy"] for r in rs], "o-", color=f"C{i}",
                            label=f"{kind} (slth)")
        if res["net"] == "fc2":
            ks = sorted(paper_rows)
            for i, kind in enumerate(("structure-linear", "structure-relu", "wide")):
                ax.semilogx(ks, [paper_rows[k][i] for k in ks], "s--", color=f"C{i}", alpha=0.5,
                            label=f"{kind} (paper)")
        ax.set(xlabel="kept weights (%)", ylabel="test accuracy (%)", title=f"{res['net']} on MNIST")
        plots.plain_log_ticks(ax.xaxis)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = plots.save(fig, ctx.plot_path(record))
    out.append(ctx.image(path, "Exp. 2 accuracy vs kept fraction") + "\n")
    for res in d["results"]:
        by = {(r["kind"], round(100 * r["density"], 6)): r for r in res["rows"]}
        dens = sorted({round(100 * r["density"], 6) for r in res["rows"]}, reverse=True)
        rows = []
        for k in dens:
            cells = [f"{k:g} %"]
            for i, kind in enumerate(("structure-linear", "structure-relu", "wide")):
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
                      f"2,550 frozen conv weights, dense {paper['lenet5']['dense_accuracy']} %; {paper['lenet5']['note']}")
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
