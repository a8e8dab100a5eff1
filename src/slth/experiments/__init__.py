"""Evidence experiments: each ``slth experiment <name>`` writes one JSON record that ``slth report`` renders.

=====================  ==========================================================================
width-curves           Pensia vs Malach width factor, error and accuracy; SubsetSum error vs n
pensia-exp1            Pensia et al. Exp. 1: SubsetSum tickets of a 784-500-10 MNIST target
pensia-exp2            RedLayer structure (r copies) vs a parameter-matched wide net, edge-popup
planted                Plant 'n' Seek: known sparse targets hidden in random nets; every method
construct-vs-learn     constructed ticket vs learned supermask vs dense training, same target
width-sweep            dense at width w vs each supermask method at width k*w
transformers           tickets of a trained ViT (MNIST, Fashion-MNIST) and char-GPT; width vs eps
hf-models              tickets of transformers' GPT-2, Llama, BERT as downloaded (module replacement)
variants               each supermask method's slth variant vs its reference-code variant, same seeds
methods                every supermask method and dense on MNIST FC, LeNet-5, Fashion-MNIST ViT; claims
=====================  ==========================================================================

:data:`EXPERIMENTS` is the one registry: the record kind (the record's ``"experiment"`` key), the module
holding the experiment's code and its report section (``render(record, ctx)``), the section's place in
docs/results.md, and the source paths whose change makes a record stale (``slth report`` marks it).
Records of ``slth train`` runs are listed too (kind ``train-run`` for one ``metrics.json``, ``train-runs``
for a sub-folder of them, rendered as one table): the trainer writes them, their section lives in
:mod:`slth.experiments.train_runs`.

Adding an experiment: its module here (a frozen ``Settings`` dataclass with a ``PRESETS`` dict, see
:mod:`slth.experiments.settings`; ``execute(settings, *, out, log)`` returning the record's body; ``render``)
and one entry below. ``slth experiment <name>`` is generated from ``Settings``, and
:func:`slth.experiments.record.run_experiment` runs it and writes the record.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Experiment:
    name: str  # record kind, and the ``slth experiment`` command where ``command`` is true
    module: str  # module under slth.experiments with the experiment's code and ``render``
    order: int  # section order in docs/results.md
    depends_on: tuple[str, ...]  # paths under src/slth/ (a trailing / is a package) that produce the numbers
    command: bool = True
    render: str = "render"  # name of the module's report-section function
    summary: str = ""  # one line for ``slth experiment --help``
    threads: int | None = None  # default torch threads of its command (None: torch's own)
    record_file: str | None = None  # set: ``--out`` is a folder and the record is this file inside it

    def load(self):
        """The experiment's module (``Settings``, ``PRESETS``, ``execute``, ``render``)."""
        return importlib.import_module(f"{__name__}.{self.module}")

    def renderer(self) -> Callable:
        return getattr(self.load(), self.render)


_CONSTRUCTION = ("construction/", "subsetsum/")
_LEARNING = ("supermask/", "train/", "models/", "_hparams.py")  # _hparams: the training settings' defaults

EXPERIMENTS: dict[str, Experiment] = {e.name: e for e in (
    Experiment("width-curves", "width_curves", 10,
               _CONSTRUCTION + ("train/", "models/", "data/", "experiments/width_curves.py"),
               summary="Pensia (log width) vs Malach (poly width): error and accuracy vs width; SubsetSum error vs n"),
    Experiment("pensia-exp1", "pensia_exp1", 20, _CONSTRUCTION + ("data/", "experiments/pensia_exp1.py"),
               summary="Pensia et al. Exp. 1: construct and evaluate tickets of a 784-500-10 MNIST target"),
    Experiment("pensia-exp2", "pensia_exp2", 30,
               ("supermask/", "_hparams.py", "data/", "models/redlayer.py", "experiments/pensia_exp2.py",
                "experiments/masking.py"),
               summary="Pensia et al. Exp. 2: RedLayer structure vs a parameter-matched wide net, by edge-popup"),
    Experiment("planted", "planted", 40,
               _CONSTRUCTION + _LEARNING + ("data/", "experiments/planted.py", "experiments/masking.py"),
               summary="Plant 'n' Seek: known sparse targets hidden in random nets; every method and construct",
               threads=1),
    Experiment("construct-vs-learn", "construct_vs_learn", 50,
               _CONSTRUCTION + _LEARNING + ("data/", "experiments/construct_vs_learn.py"),
               summary="The constructed ticket of a trained target vs learned supermasks vs dense training"),
    Experiment("width-sweep", "width_sweep", 60, _LEARNING + ("data/", "experiments/width_sweep.py"),
               summary="Dense at width w against each supermask method on random networks of width k*w",
               record_file="width_sweep.json"),
    Experiment("transformers", "transformers", 65,
               _CONSTRUCTION + _LEARNING + ("data/", "experiments/transformers.py"),
               summary="Tickets of a trained ViT (MNIST, Fashion-MNIST) and char-GPT: accuracy, width vs eps, params",
               threads=1),
    Experiment("hf-models", "hf_models", 66, _CONSTRUCTION + ("data/", "experiments/hf_models.py"),
               summary="Tickets of transformers' GPT-2, Llama and BERT classes as downloaded: perplexity, "
                       "agreement, generate()",
               threads=1),
    Experiment("variants", "variants", 67, _LEARNING + ("data/", "experiments/variants.py"),
               summary="Each supermask method in slth's variant against its reference-code variant, same seeds"),
    Experiment("methods", "methods", 68, _LEARNING + ("data/", "experiments/methods.py"),
               summary="Every supermask method against dense on MNIST FC, LeNet-5 and a Fashion-MNIST ViT across "
                       "densities; the papers' claims decided from the cells (resumable: --work-dir)",
               threads=1),
    Experiment("train-run", "train_runs", 70, _LEARNING + ("data/",), command=False),
    Experiment("train-runs", "train_runs", 95, _LEARNING + ("data/",), command=False, render="render_set"),
)}
