"""``slth experiment variants``: each supermask method in slth's variant against its reference variant.

For every method, both variants (:class:`slth.supermask.SupermaskConfig` ``variant="slth"`` and
``"reference"``, each with its own default learning rate and weight decay) train the same models from the
same seeds, through :func:`slth.train.fit` (the loop of ``slth train``), on the first ``train_size`` training
examples, evaluated on the whole test split after every epoch. Per run the record holds the final test
accuracy (eval-mode masks: the ticket's), the per-epoch accuracies, the steps to reach the final accuracy
(the first epoch whose accuracy is within ``REACH`` points of it, times the steps per epoch), the kept
fraction under the final masks and the wall time. The report section puts the variants side by side.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .._names import METHOD_NAMES
from .settings import check_at_least, check_names, option

if TYPE_CHECKING:
    from .sections import Context, Record

REACH = 0.005  # "reached": within half a point of the run's final accuracy
BATCH_SIZE = 128
OPTIMIZER = "SGD momentum 0.9, cosine per step; lr, weight decay and init: each variant's defaults"


@dataclass(frozen=True)
class Settings:
    data: str = option("mnist", "mnist (with --data-dir) or digits (embedded)")
    data_dir: Path | None = option(None, "MNIST directory")
    methods: tuple[str, ...] = option(METHOD_NAMES, "supermask methods")
    models: tuple[str, ...] = option(("fc", "lenet5"), "fc and/or lenet5")
    densities: tuple[float, ...] = option((0.5, 0.1), "kept fractions")
    seeds: tuple[int, ...] = option((0, 1, 2), "one run per seed")
    epochs: int = option(6, "6: Gem-Miner's reference variant prunes once (after epoch 6)")
    train_size: int = option(5000, "training examples (the first ones of the split)")

    def __post_init__(self):
        check_names(self.methods, "methods", METHOD_NAMES)
        check_names(self.models, "models", ("fc", "lenet5"))
        if self.data != "digits" and self.data_dir is None:
            raise ValueError(f"variants on {self.data} needs --data-dir (a folder with its idx files), or --quick")
        if self.data_dir is not None and not self.data_dir.is_dir():
            raise ValueError(f"no such --data-dir directory: {self.data_dir}")
        check_at_least(self, 1, "epochs", "train_size")


PRESETS = {"quick": dict(data="digits", models=("fc",), densities=(0.5,), seeds=(0,), epochs=1, train_size=256)}


def execute(settings: Settings, *, out=None, log=print, quiet: bool = False) -> dict:
    """Every method's two variants; the record's body (:func:`run`)."""
    s = settings
    body = run(s.data, s.data_dir, methods=list(s.methods), models=list(s.models), densities=list(s.densities),
               seeds=list(s.seeds), epochs=s.epochs, train_size=s.train_size, batch_size=BATCH_SIZE, log=log)
    log(table(body["runs"]))
    return {**body, "batch_size": BATCH_SIZE, "optimizer": OPTIMIZER}


def _loaders(data, train_size: int, batch_size: int, seed: int):
    import torch

    from ..seeding import generator

    x, y = data.x_train[:train_size], data.y_train[:train_size]
    train = torch.utils.data.TensorDataset(data.normalized(x), y)
    test = torch.utils.data.TensorDataset(data.normalized(data.x_test), data.y_test)
    return (torch.utils.data.DataLoader(train, batch_size=batch_size, shuffle=True,
                                        generator=generator(seed, "variants-order")),
            torch.utils.data.DataLoader(test, batch_size=1000))


def steps_to_reach(per_epoch: Sequence[float], steps_per_epoch: int) -> int:
    """Steps until the test accuracy first came within :data:`REACH` of the final one (epoch resolution)."""
    final = per_epoch[-1]
    epoch = next(i for i, a in enumerate(per_epoch, 1) if a >= final - REACH)
    return epoch * steps_per_epoch


def run(data_name: str, data_dir, *, methods: Sequence[str], models: Sequence[str], densities: Sequence[float],
        seeds: Sequence[int], epochs: int, train_size: int, batch_size: int = BATCH_SIZE,
        log: Callable[[str], None] = print) -> dict:
    """Train every (method, variant, model, density, seed); returns the record's body (``runs``)."""
    from ..data import load_dataset
    from ..supermask import SupermaskConfig, build
    from ..train import TrainConfig, fit

    data = load_dataset(data_name, data_dir)
    train_size = min(train_size, len(data.x_train))
    runs = []
    for method in methods:  # untimed: compile the kernels (numba, first call) before any run is timed
        for variant in ("slth", "reference"):
            net = build(models[0], data.input_shape, data.num_classes, seed=0,
                        supermask=SupermaskConfig(method=method, density=densities[0], variant=variant))
            net(data.x_train[:2]).sum().backward()
    for method in methods:
        for model in models:
            for density in densities:
                for seed in seeds:
                    for variant in ("slth", "reference"):
                        train_loader, test_loader = _loaders(data, train_size, batch_size, seed)
                        cfg = TrainConfig(method=method, variant=variant, density=density, epochs=epochs, seed=seed,
                                          batch_size=batch_size, device="cpu")
                        net = build(model, data.input_shape, data.num_classes, seed=seed,
                                    supermask=cfg.supermask_config())
                        start = time.perf_counter()
                        m = fit(net, train_loader, test_loader, cfg).metrics
                        wall = time.perf_counter() - start
                        per_epoch = m["test_accuracy_per_epoch"]
                        r = {"method": method, "variant": variant, "model": model, "density": density, "seed": seed,
                             "test_accuracy": m["test_accuracy"], "test_accuracy_per_epoch": per_epoch,
                             "steps_per_epoch": len(train_loader),
                             "steps_to_reach": steps_to_reach(per_epoch, len(train_loader)),
                             "kept_fraction": m["density"], "lr": m["config"]["lr"],
                             "weight_decay": m["config"]["weight_decay"], "init": m["config"]["init"],
                             "seconds": wall}
                        runs.append(r)
                        log(f"{method} {variant} {model} d={density:g} seed {seed}: {100 * r['test_accuracy']:.2f} % "
                            f"(kept {r['kept_fraction']:.3f}) in {wall:.1f} s")
    return {"runs": runs, "train_size": train_size, "test_size": len(data.x_test)}


def summary(runs: list[dict]) -> list[dict]:
    """Per (method, model, density, variant): mean and spread of accuracy, steps, kept fraction, seconds."""
    import statistics

    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        groups.setdefault((r["method"], r["model"], r["density"], r["variant"]), []).append(r)
    out = []
    for (method, model, density, variant), rs in groups.items():
        acc = [r["test_accuracy"] for r in rs]
        out.append({"method": method, "model": model, "density": density, "variant": variant, "seeds": len(rs),
                    "accuracy": statistics.mean(acc), "accuracy_sd": statistics.pstdev(acc),
                    "steps": statistics.mean(r["steps_to_reach"] for r in rs),
                    "kept": statistics.mean(r["kept_fraction"] for r in rs),
                    "seconds": statistics.mean(r["seconds"] for r in rs)})
    return out


def verdicts(runs: list[dict]) -> dict[str, str]:
    """Per method: the variant with the higher mean accuracy over all its (model, density, seed) runs."""
    import statistics

    out = {}
    for method in dict.fromkeys(r["method"] for r in runs):
        mean = {v: statistics.mean(r["test_accuracy"] for r in runs if r["method"] == method and r["variant"] == v)
                for v in ("slth", "reference")}
        out[method] = max(mean, key=mean.get) if mean["slth"] != mean["reference"] else "tie"
    return out


def table(runs: list[dict]) -> str:
    from .sections import table as md_table

    rows = []
    s = summary(runs)
    find = {(x["method"], x["model"], x["density"], x["variant"]): x for x in s}
    for method, model, density in dict.fromkeys((x["method"], x["model"], x["density"]) for x in s):
        a, b = find[(method, model, density, "slth")], find[(method, model, density, "reference")]
        better = "slth" if a["accuracy"] > b["accuracy"] else "reference" if b["accuracy"] > a["accuracy"] else "tie"
        rows.append([method, model, f"{density:g}",
                     f"{100 * a['accuracy']:.2f} ± {100 * a['accuracy_sd']:.2f}",
                     f"{100 * b['accuracy']:.2f} ± {100 * b['accuracy_sd']:.2f}",
                     f"{a['steps']:.0f}", f"{b['steps']:.0f}", f"{a['kept']:.3f}", f"{b['kept']:.3f}",
                     f"{a['seconds']:.1f}", f"{b['seconds']:.1f}", better])
    return md_table(["method", "model", "density", "slth acc. %", "reference acc. %", "slth steps", "ref. steps",
                     "slth kept", "ref. kept", "slth s", "ref. s", "better"], rows)


def plot(record: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .._io import atomic_write

    s = summary(record["runs"])
    cells = list(dict.fromkeys((x["method"], x["model"], x["density"]) for x in s))
    find = {(x["method"], x["model"], x["density"], x["variant"]): x for x in s}
    fig, ax = plt.subplots(figsize=(max(6, 0.45 * len(cells)), 4))
    for offset, variant in ((-0.2, "slth"), (0.2, "reference")):
        ax.bar([i + offset for i in range(len(cells))], [100 * find[c + (variant,)]["accuracy"] for c in cells],
               width=0.4, yerr=[100 * find[c + (variant,)]["accuracy_sd"] for c in cells], label=variant)
    ax.set_xticks(range(len(cells)), [f"{m}\n{n} {d:g}" for m, n, d in cells], fontsize=6, rotation=90)
    ax.set_ylabel("test accuracy (%)")
    low = min(100 * x["accuracy"] for x in s)
    ax.set_ylim(max(0, low - 5), 100)
    ax.legend(fontsize=8)
    ax.set_title("supermask variants: slth vs reference (mean ± sd over seeds)")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    plt.close(fig)


# --------------------------------------------------------------------------- report section
def render(record: Record, ctx: Context) -> str:
    """The docs/results.md section of one record (called by ``slth report``)."""
    from .sections import provenance

    d = record.data
    st = d["settings"]
    path = ctx.plot_path(record)
    plot(d, path)
    verdict = verdicts(d["runs"])
    lines = [f"## Supermask variants: slth vs reference code ({st['data']}, {st['epochs']} epochs, "
             f"{d['train_size']:,} training examples)\n",
             "Each method in slth's variant and in its reference variant (`SupermaskConfig(variant=\"reference\")`: "
             "the reference code's kept count, ties, ranking, gradients, schedule and default hyper-parameters; "
             "docs/reference-code.md), same seeds "
             f"({', '.join(str(s) for s in st['seeds'])}), each with its own default learning rate and weight decay, "
             f"trained by `slth.train.fit` (record `{record.path.name}`). *acc.*: final test accuracy under the "
             "eval-mode (ticket) masks, mean ± sd over seeds; *steps*: steps until the test accuracy first came "
             f"within {100 * REACH:g} points of the final one (epoch resolution); *kept*: kept fraction of the "
             "final masks; *s*: wall seconds per run.\n",
             ctx.image(path, "variants"), "", table(d["runs"]), "",
             "Better variant by mean accuracy over all its runs: "
             + "; ".join(f"{m}: **{v}**" for m, v in verdict.items()) + ".", "", provenance(d)]
    return "\n".join(lines)
