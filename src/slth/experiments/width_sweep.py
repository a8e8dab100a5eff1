"""``slth experiment width-sweep``: dense at width w against every supermask method at width k * w.

Each run lives in ``out/<method>-w<width>/`` and is resumed if present, so re-running the sweep reuses
finished runs. The result is ``out/width_sweep.json``, a markdown table ``out/width_sweep.md`` and a plot
``out/width_sweep.png`` (test accuracy against width multiple k, dense as a horizontal line).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from .._io import atomic_write_json, atomic_write_text
from .._names import METHOD_NAMES
from .settings import check_names, option

if TYPE_CHECKING:
    from ..train import TrainConfig
    from .sections import Context, Record


@dataclass(frozen=True)
class Settings:
    model: str = option("fc", "model of every run (slth train --model)")
    data: str = option("digits", "data set of every run")
    data_dir: Path | None = option(None, "directory with --data's files")
    width: float = option(1.0, "width w of the dense network")
    multiples: tuple[int, ...] = option((1, 2, 4, 8), "supermask networks have width k*w for these k")
    methods: tuple[str, ...] = option(METHOD_NAMES, "supermask methods")
    density: float = option(0.5, "kept fraction of the supermask networks")
    epochs: int = option(10, "epochs of every run")
    seed: int = option(0)
    hidden: tuple[int, ...] | None = option(None, "fc hidden sizes, e.g. 300,100")

    def __post_init__(self):
        check_names(self.methods, "methods", METHOD_NAMES)
        check_names([str(k) for k in self.multiples], "multiples")
        for method in ("dense", *self.methods):
            self.config(method)  # TrainConfig checks the model, data and numbers: before any work

    def config(self, method: str = "dense") -> TrainConfig:
        from ..train import TrainConfig

        return TrainConfig(method=method, model=self.model, data=self.data,
                           data_dir=None if self.data_dir is None else str(self.data_dir), density=self.density,
                           width=self.width, epochs=self.epochs, seed=self.seed, hidden=self.hidden)


PRESETS = {"quick": dict(multiples=(1, 2), methods=("edge-popup",), epochs=1, width=0.25)}


def execute(settings: Settings, *, out, log=print, quiet: bool = False) -> dict:
    """The runs (in the folder ``out``, resumed where present), ``width_sweep.md``/``.png``; the record's body."""
    result = width_sweep(settings.config(), settings.methods, settings.multiples, out, quiet=quiet)
    log(table(result))
    return {k: result[k] for k in ("config", "methods", "multiples", "runs")}


def width_sweep(base: TrainConfig, methods: Sequence[str], multiples: Sequence[int], out: str | Path, *,
                quiet: bool = False, command: str | None = None) -> dict:
    """Run dense at ``base.width`` and each method at ``k * base.width``; ``base.method`` is ignored."""
    from ..train import train

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    runs = []

    def run(method: str, k: int) -> None:
        cfg = replace(base, method=method, width=base.width * k)
        m = train(cfg, out / f"{method}-w{cfg.width:g}", resume=True, quiet=quiet).metrics
        runs.append({"method": method, "k": k, "width": cfg.width, "test_accuracy": m["test_accuracy"],
                     "best_test_accuracy": m["best_test_accuracy"], "density": m["density"],
                     "kept_params": m["kept_params"], "params": m["params"], "seconds": m["seconds"]})

    run("dense", 1)
    for method in methods:
        for k in multiples:
            run(method, k)
    import datetime

    from ..provenance import git_commit, machine

    result = {"config": base.to_dict(), "methods": list(methods), "multiples": list(multiples), "runs": runs,
              "machine": machine(), "date": datetime.date.today().isoformat(), "git_commit": git_commit()}
    if command:
        result["command"] = command
    atomic_write_json(out / "width_sweep.json", result)
    atomic_write_text(out / "width_sweep.md", table(result))
    plot(result, out / "width_sweep.png")
    return result


def table(result: dict) -> str:
    runs = result["runs"]
    dense = next(r for r in runs if r["method"] == "dense")
    ks = result["multiples"]
    lines = ["| method | " + " | ".join(f"k = {k}" for k in ks) + " |", "|---|" + "---:|" * len(ks)]
    lines.append(f"| dense (width {dense['width']:g}, {dense['params']:,} weights) | "
                 + " | ".join(f"{100 * dense['test_accuracy']:.2f}" if k == 1 else "" for k in ks) + " |")
    for method in result["methods"]:
        cells = []
        for k in ks:
            r = next(r for r in runs if r["method"] == method and r["k"] == k)
            cells.append(f"{100 * r['test_accuracy']:.2f} ({r['kept_params']:,} kept)")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .._io import atomic_write

    runs = result["runs"]
    dense = next(r for r in runs if r["method"] == "dense")
    fig, ax = plt.subplots(figsize=(6, 4))
    for method in result["methods"]:
        rs = sorted((r for r in runs if r["method"] == method), key=lambda r: r["k"])
        ax.plot([r["k"] for r in rs], [100 * r["test_accuracy"] for r in rs], marker="o", label=method)
    ax.axhline(100 * dense["test_accuracy"], color="k", linestyle="--", label=f"dense, width {dense['width']:g}")
    ax.set_xscale("log", base=2)
    ax.set_xticks(result["multiples"], [str(k) for k in result["multiples"]])
    cfg = result["config"]
    ax.set_xlabel(f"width multiple k of the random network (density {cfg['density']:g} kept)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{cfg['model']} on {cfg['data']}: dense at width {dense['width']:g} vs supermasks at k x width")
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    plt.close(fig)


# --------------------------------------------------------------------------- report section
def render(record: Record, ctx: Context) -> str:
    """The docs/results.md section of one record (called by ``slth report``)."""
    from .sections import provenance

    d = record.data
    path = ctx.plot_path(record)
    plot(d, path)
    cfg = d["config"]
    return "\n".join([f"## Learning by pruning: width sweep ({cfg['model']} on {cfg['data']}, "
                      f"{cfg['epochs']} epochs, density {cfg['density']:g})\n",
                      "Dense at width w against each supermask method on a random network of width k·w "
                      f"(`slth experiment width-sweep`; record `{record.path.name}`).\n",
                      ctx.image(path, "width sweep"), "", table(d),
                      provenance(d) if "machine" in d else f"*machine: {d['runs'][0].get('machine', 'see runs')}*"])
