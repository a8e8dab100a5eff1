"""What vs how: ConstructConfig (what to build) and Execution (how to run it), the core construct_with, the one
registry of construction methods and the typed realised kernels (issue 22)."""

from __future__ import annotations

import dataclasses
import inspect
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import slth
from slth._hparams import ConstructSettings, ExecutionSettings
from slth.construction import api
from slth.construction.api import construct_with
from slth.construction.bound import realised_kernels
from slth.construction.build import choose_n
from slth.construction.config import ConstructConfig, Execution
from slth.construction.methods import METHODS, ConstructionMethod
from slth.construction.network import RealisedKernels


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3)).eval()


def test_the_front_door_and_the_core_build_the_same_ticket_and_it_records_no_execution(tmp_path):
    kw = dict(eps=0.05, seed=2, n=[6, 7], nonnegative_input=True, max_redraw_rounds=2)
    front = slth.construct(_mlp(), **kw, chunk_instances=5, workdir=str(tmp_path / "w"))
    core = construct_with(_mlp(), ConstructConfig(**kw), Execution())
    assert front.digest() == core.digest() and front.config == core.config
    assert front.stats["n_per_layer"] == [6, 7]
    assert front.run["chunks"] != core.run["chunks"]  # the execution differed, the ticket did not
    recorded = str(front.config)
    for name in ("workers", "backend", "workdir", "chunk_instances", "resume", "device"):
        assert name not in recorded


def test_the_front_doors_defaults_are_the_records():
    params = inspect.signature(slth.construct).parameters
    for record in (ConstructConfig(), Execution()):
        for f in dataclasses.fields(record):
            assert params[f.name].default == getattr(record, f.name), f.name


def test_records_are_frozen_and_normalised():
    c = ConstructConfig(eps=1, n=[4, 5], input_range=[-1, 2])
    assert (c.eps, c.n, c.input_range, c.box) == (1.0, (4, 5), (-1.0, 2.0), (-1.0, 2.0))
    assert ConstructConfig(nonnegative_input=True).box == (0.0, 1.0) and ConstructConfig().box is None
    assert c == ConstructConfig(eps=1.0, n=(4, 5), input_range=(-1.0, 2.0)) and hash(c) == hash(
        ConstructConfig(eps=1.0, n=(4, 5), input_range=(-1.0, 2.0)))
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.eps = 0.5  # type: ignore[misc]
    assert c.ns(2) == [4, 5] and ConstructConfig(n=3).ns(2) == [3, 3] and ConstructConfig().ns(2) == [None, None]
    assert Execution(workdir=Path("some/dir")).workdir == "some/dir"  # type: ignore[arg-type]


@pytest.mark.parametrize("record, kwargs, match", [
    (ConstructConfig, {"construction": "bogus"}, r"unknown construction 'bogus'; valid: auto, graph, modules"),
    (ConstructConfig, {"input_range": (2, 1)}, r"input_range needs lo < hi, got \(2\.0, 1\.0\)"),
    (ConstructConfig, {"nonnegative_input": True, "input_range": (-1, 1)}, r"nonnegative_input=True contradicts"),
    (ConstructConfig, {"method": "malach", "n": 100_001}, r"n must be between 1 and 100000 for method 'malach'"),
    (Execution, {"workers": 0}, r"workers must be an int >= 1, got 0"),
    (Execution, {"backend": "spark"}, r"unknown backend 'spark'; valid: local, ray"),
    (Execution, {"chunk_instances": 0}, r"chunk_instances must be an int >= 1, got 0"),
])
def test_records_refuse_a_bad_value_when_made(record, kwargs, match):
    with pytest.raises(ValueError, match=match):
        record(**kwargs)


@pytest.mark.parametrize("kwargs, match", [({"workers": 0}, "workers must be"), ({"backend": "spark"}, "backend"),
                                           ({"input_range": (2, 1)}, "lo < hi")])
def test_a_bad_execution_or_box_is_refused_before_the_target_is_read(monkeypatch, kwargs, match):
    def boom(*args, **kw):
        raise AssertionError("the target was read before the refusal")

    monkeypatch.setattr(api, "parse_target", boom)
    with pytest.raises(ValueError, match=match):
        slth.construct(_mlp(), eps=0.05, n=4, **kwargs)


def test_construct_with_takes_only_the_records():
    with pytest.raises(TypeError, match="config must be a ConstructConfig, got dict"):
        construct_with(_mlp(), {"eps": 0.05})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="execution must be an Execution, got dict"):
        construct_with(_mlp(), ConstructConfig(n=4), {"workers": 2})  # type: ignore[arg-type]


def test_the_records_declare_the_settings_fields():
    assert [f.name for f in dataclasses.fields(ConstructConfig)] == [f.name for f in dataclasses.fields(
        ConstructSettings)]
    assert [f.name for f in dataclasses.fields(Execution)] == [f.name for f in dataclasses.fields(ExecutionSettings)]


# -- the construction methods' registry ------------------------------------------------------------------------


def test_one_registry_entry_per_method_with_its_rules():
    assert tuple(METHODS) == ("pensia", "malach")
    assert all(isinstance(m, ConstructionMethod) and m.name == k for k, m in METHODS.items())
    assert METHODS["pensia"].subset_sum and not METHODS["malach"].subset_sum
    assert "arXiv 2006.07990" in METHODS["pensia"].paper and "arXiv 2002.00585" in METHODS["malach"].paper
    w = torch.linspace(-0.9, 0.9, 50).double().numpy()
    assert choose_n("pensia", 0.01, w, 0.99) <= METHODS["pensia"].chosen_n_max
    assert choose_n("malach", 0.01, w, 0.99) > choose_n("pensia", 0.01, w, 0.99)  # poly vs log width
    assert choose_n("malach", 0.5, w * 0.1, 0.99) == 1  # every weight within eps: the empty subset


def test_a_method_registry_out_of_step_with_its_names_is_refused_at_import():
    code = ("import slth._names as n; n.CONSTRUCTION_METHOD_NAMES = ('pensia',)\n"
            "import slth.construction.methods")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode != 0
    assert "the construction method registry holds ('pensia', 'malach') but slth._names lists ('pensia',)" in \
        done.stderr


def test_the_device_refusal_reads_the_methods_entry():
    with pytest.raises(ValueError, match=r"device= runs the minimal-error search"):
        Execution(device="cpu").check(ConstructConfig(method="pensia"))
    Execution(device="cpu").check(ConstructConfig(method="malach"))  # a single pick has no search to move
    Execution(device="cpu").check(ConstructConfig(method="pensia", sparse=False))


# -- realised kernels ------------------------------------------------------------------------------------------


def test_realised_kernels_are_typed_records():
    signed = slth.construct(_mlp(), eps=0.05, n=6)
    nonneg = slth.construct(_mlp(), eps=0.05, n=6, nonnegative_input=True)
    for ticket, first_neg in ((signed, True), (nonneg, False)):
        real = realised_kernels(ticket)
        assert all(isinstance(r, RealisedKernels) for r in real)
        assert (real[0].neg is not None) == first_neg and real[1].neg is None  # layer 2 reads ReLUs (>= 0)
        assert real[0].pos.shape == (5, 6) and real[0].bias is not None and real[0].bias.shape == (5,)
    with pytest.raises(dataclasses.FrozenInstanceError):
        real[0].pos = real[0].pos  # type: ignore[misc]


# -- the command line reads its options from the records ----------------------------------------------------------


def test_construct_command_has_an_option_per_record_field():
    from slth.cli.construct import construct_cmd

    options = set(inspect.signature(construct_cmd).parameters)
    for record in (ConstructSettings, ExecutionSettings):
        for f in dataclasses.fields(record):
            if f.metadata.get("cli", True):
                assert f.name in options, f.name
    assert {"n", "input_range", "min_error"} <= options  # the fields written by hand


def test_construct_command_passes_the_given_options_into_the_records(tmp_path):
    from typer.testing import CliRunner

    from slth.cli import app
    from slth.construction import mlp
    from slth.construction.ticket import Ticket

    torch.manual_seed(0)
    net = mlp("6-5-3").eval()
    torch.save(net.state_dict(), tmp_path / "m.pt")
    r = CliRunner().invoke(app, ["construct", str(tmp_path / "m.pt"), "--arch", "6-5-3", "--eps", "0.05",
                                 "--method", "malach", "--p", "0.9", "--max-redraw-rounds", "0", "--construction",
                                 "graph", "--chunk-instances", "7", "-o", str(tmp_path / "t.slth")])
    assert r.exit_code == 0, r.output
    python = slth.construct(net, eps=0.05, method="malach", p=0.9, max_redraw_rounds=0, construction="graph")
    assert Ticket.load(tmp_path / "t.slth").digest() == python.digest()
    r = CliRunner().invoke(app, ["construct", str(tmp_path / "m.pt"), "--arch", "6-5-3", "--method", "lottery",
                                 "-o", str(tmp_path / "u.slth")])
    assert r.exit_code != 0 and "unknown method 'lottery'; valid: pensia, malach" in r.output
    assert not (tmp_path / "u.slth").exists()
