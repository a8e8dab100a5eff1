"""The typed construction graph: tickets are bit-identical to those of the list-of-dicts code (commit aec9e8e),
and ticket files of format version 1 written by that code still load into the same module."""

import json
from pathlib import Path

import pytest
import torch

from slth.construction import Ticket, construct

FIXTURES = Path(__file__).parent / "fixtures"
EXPECTED = json.loads((FIXTURES / "v1" / "expected.json").read_text())


def _case(name):
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_v1_tickets", FIXTURES / "make_v1_tickets.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    build, kwargs, shape = mod.CASES[name]
    net = build()
    net.load_state_dict(torch.load(FIXTURES / "v1" / f"{name}.target.pt", weights_only=True))
    return net.eval(), kwargs, mod.check_input(shape)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_v1_ticket_files_load_into_the_same_module(name):
    _, _, x = _case(name)
    ticket = Ticket.load(FIXTURES / "v1" / f"{name}.slth")
    assert ticket.digest() == EXPECTED[name]["digest"]
    with torch.no_grad():
        out = ticket.to_module()(x).reshape(-1)
    assert torch.equal(out, torch.tensor(EXPECTED[name]["output"], dtype=torch.float32))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_construct_gives_the_v1_digests(name):
    net, kwargs, _ = _case(name)
    ticket = construct(net, **kwargs)
    assert ticket.stats["redraws"] == EXPECTED[name]["redraws"]
    assert ticket.digest() == EXPECTED[name]["digest"]
