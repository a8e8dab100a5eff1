"""Report section for one ``slth train`` run (its ``metrics.json`` copied into docs/results/)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .sections import Context, Record


def render(record: Record, ctx: Context) -> str:
    """The docs/results.md section of one training run."""
    from .sections import pct, table

    d = record.data
    rows = [[d["method"], d["model"], d["data"], f"{d['width']:g}", f"{d['density']:.4f}", f"{d['kept_params']:,}",
             f"{d['params']:,}", d["epochs_done"], pct(d["test_accuracy"]), pct(d["best_test_accuracy"]),
             f"{d['seconds']:.0f}"]]
    return "\n".join([f"## Training run `{record.path.name}`\n",
                      table(["method", "model", "data", "width", "density", "kept", "params", "epochs",
                             "test acc. %", "best %", "seconds"], rows), "",
                      f"*machine: {d.get('machine', 'not recorded')}; finished: {d['finished']}.*"])


# Published numbers shown beside a run, keyed by (method, model, data, kept fraction); docs/theory.md §2.9, §8
PUBLISHED = {
    ("dense", "fc", "mnist", 1.0): "dense FC2 98.5 (Pensia Exp. 2, best over 30-150 epochs)",
    ("edge-popup", "fc", "mnist", 0.3): "98.1 at 25 % kept, wide FC2 (Pensia Exp. 2)",
    ("edge-popup", "fc", "mnist", 0.5): "98.0 at 50 % kept, wide FC2 (Pensia Exp. 2)",
    ("bernoulli", "fc", "mnist", 0.5): "≈95 learned supermask, MNIST FC (Zhou et al.; unverified)",
    ("biprop", "fc", "mnist", 0.5): "no MNIST number (CIFAR-10 ResNet-18, 20 % kept: 94.66)",
    ("iterand", "fc", "mnist", 0.5): "no MNIST number (unverified CIFAR-10 ResNet-18: 92.47)",
    ("gem-miner", "fc", "mnist", 0.5): "no MNIST number",
    ("dense", "lenet5", "mnist", 1.0): "dense LeNet5 98.4 (Pensia Exp. 2)",
    ("edge-popup", "lenet5", "mnist", 0.5): "— (Pensia Exp. 2 prunes only the FC part)",
}


def render_set(record: Record, ctx: Context) -> str:
    """One table for a folder of ``slth train`` runs, each row marked with its freshness."""
    from . import EXPERIMENTS
    from .sections import pct, table

    depends_on = EXPERIMENTS["train-runs"].depends_on
    rows, marks = [], {}
    order = {"fc": 0, "lenet5": 1}
    runs = sorted(record.data, key=lambda r: (order.get(r[1]["model"], 9), r[1]["data"], r[1]["width"],
                                              r[1]["method"] != "dense", r[1]["method"], r[1]["target_density"]))
    for name, d in runs:
        fresh = ctx.freshness(d, depends_on)
        if fresh is None:
            code = d.get("git_commit") or "—"
        else:
            commit = d.get("git_commit") or "not recorded"
            code = {"current": f"{commit}, current", "stale": f"{commit}, **stale**"}.get(fresh.status, commit)
            if fresh.status != "current":
                changes = f" ({'; '.join(fresh.changes[:3])})" if fresh.changes else ""
                marks.setdefault(fresh.detail + changes, []).append(f"`{name}`")
        last = d["epochs"][-1] if d.get("epochs") else {}
        key = (d["method"], d["model"], d["data"], round(float(d["target_density"]), 2))
        rows.append([f"`{name}`", d["method"], d["model"], d["data"], f"{d['width']:g}", f"{d['density']:.2f}",
                     f"{d['kept_params']:,} / {d['params']:,}", d["epochs_done"], pct(d["test_accuracy"]),
                     pct(d["best_test_accuracy"]), pct(last.get("train_accuracy")), f"{d['seconds']:.0f}",
                     PUBLISHED.get(key, "—"), code])
    out = [f"## Training runs (`slth train`, records in `{record.path.name}/`)\n",
           "Each row is one run's `metrics.json` (settings, per-epoch numbers, machine). *train acc.* is the last "
           "epoch's, with training-mode masks; *code* is the commit the run was made at and whether the code it "
           "depends on is unchanged since.\n",
           table(["run", "method", "model", "data", "width", "density (kept)", "kept / weights", "epochs",
                  "test acc. % (final)", "best epoch %", "train acc. %", "seconds", "published", "code"], rows)]
    for detail, names in marks.items():
        out += ["", f"> **Not current** ({', '.join(names)}): {detail}. Re-run with the run's own settings "
                "(its `config`) to refresh it."]
    return "\n".join(out)
