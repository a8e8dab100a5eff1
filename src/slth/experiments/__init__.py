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
=====================  ==========================================================================

:data:`EXPERIMENTS` is the one registry: the record kind (the record's ``"experiment"`` key), the module
holding the experiment's code and its report section (``render(record, ctx)``), the section's place in
docs/results.md, and the source paths whose change makes a record stale (``slth report`` marks it).
Records of ``slth train`` runs are listed too (kind ``train-run`` for one ``metrics.json``, ``train-runs``
for a sub-folder of them, rendered as one table): the trainer writes them, their section lives in
:mod:`slth.experiments.train_runs`. Adding an experiment: its module here, one entry
below, one command in :mod:`slth.cli.experiment`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Experiment:
    name: str  # record kind, and the ``slth experiment`` command where ``command`` is true
    module: str  # module under slth.experiments with the experiment's code and ``render``
    order: int  # section order in docs/results.md
    depends_on: tuple[str, ...]  # paths under src/slth/ (a trailing / is a package) that produce the numbers
    command: bool = True
    render: str = "render"  # name of the module's report-section function

    def renderer(self) -> Callable:
        return getattr(importlib.import_module(f"{__name__}.{self.module}"), self.render)


_CONSTRUCTION = ("construction/", "subsetsum/")
_LEARNING = ("supermask/", "train/", "models/")

EXPERIMENTS: dict[str, Experiment] = {e.name: e for e in (
    Experiment("width-curves", "width_curves", 10,
               _CONSTRUCTION + ("train/", "models/", "data/", "experiments/width_curves.py")),
    Experiment("pensia-exp1", "pensia_exp1", 20, _CONSTRUCTION + ("data/", "experiments/pensia_exp1.py")),
    Experiment("pensia-exp2", "pensia_exp2", 30,
               ("supermask/", "data/", "models/redlayer.py", "experiments/pensia_exp2.py", "experiments/masking.py")),
    Experiment("planted", "planted", 40,
               _CONSTRUCTION + _LEARNING + ("data/", "experiments/planted.py", "experiments/masking.py")),
    Experiment("construct-vs-learn", "construct_vs_learn", 50,
               _CONSTRUCTION + _LEARNING + ("data/", "experiments/construct_vs_learn.py")),
    Experiment("width-sweep", "width_sweep", 60, _LEARNING + ("data/", "experiments/width_sweep.py")),
    Experiment("transformers", "transformers", 65,
               _CONSTRUCTION + _LEARNING + ("data/", "experiments/transformers.py")),
    Experiment("hf-models", "hf_models", 66, _CONSTRUCTION + ("data/", "experiments/hf_models.py")),
    Experiment("variants", "variants", 67, _LEARNING + ("data/", "experiments/variants.py")),
    Experiment("train-run", "train_runs", 70, _LEARNING + ("data/",), command=False),
    Experiment("train-runs", "train_runs", 95, _LEARNING + ("data/",), command=False, render="render_set"),
)}
