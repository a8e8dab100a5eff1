"""The typed construction graph: tickets are bit-identical to those of the list-of-dicts code (commit aec9e8e),
and ticket files of format version 1 written by that code still load into the same module."""

import json
from pathlib import Path

import pytest
import torch

from slth.construction import Ticket, construct

FIXTURES = Path(__file__).parent / "fixtures"
EXPECTED = json.loads((FIXTURES / "v1" / "expected.json").read_text())


def _maker():
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_v1_tickets", FIXTURES / "make_v1_tickets.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _case(name):
    mod = _maker()
    build, kwargs, shape = mod.CASES[name]
    net = build()
    net.load_state_dict(torch.load(FIXTURES / "v1" / f"{name}.target.pt", weights_only=True))
    return net.eval(), kwargs, mod.check_input(shape)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_v1_ticket_files_load_into_the_same_module(name):
    _, _, x = _case(name)
    ticket = Ticket.load(FIXTURES / "v1" / f"{name}.slth")
    assert ticket.digest() == EXPECTED[name]["digest"]
    module = ticket.to_module()
    assert _maker().module_digest(module) == EXPECTED[name]["module_sha256"]  # every weight and buffer, bit for bit
    with torch.no_grad():
        out = module(x).reshape(-1)
    # float32 conv results depend on the thread count in their last bits (other tests set 1 thread)
    torch.testing.assert_close(out, torch.tensor(EXPECTED[name]["output"], dtype=torch.float32), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_construct_gives_the_v1_digests(name):
    net, kwargs, _ = _case(name)
    ticket = construct(net, **kwargs)
    assert ticket.stats["redraws"] == EXPECTED[name]["redraws"]
    assert ticket.digest() == EXPECTED[name]["digest"]


def test_graph_json_round_trip_and_planning_returns_new_values():
    from slth.construction.graph import AddNode, Graph, plan_scales
    from slth.construction.target import parse_target

    net, _, _ = _case("resnet20")
    graph, specs = parse_target(net)
    assert Graph.from_json(graph.to_json()) == graph
    plan = plan_scales(graph, specs)
    planned = graph.with_plan(plan)
    assert all(node.factors == (1.0, 1.0) for node in graph.nodes if isinstance(node, AddNode))  # untouched
    assert any(node.factors != (1.0, 1.0) for node in planned.nodes if isinstance(node, AddNode))
    assert Graph.from_json(planned.to_json()) == planned
    # replaying the plan from its layer scales gives the same plan
    assert plan_scales(graph, specs, plan.layer_scales) == plan
    damaged = graph.to_json()
    damaged[3] = dict(damaged[3], op="lstm")  # an op this version does not know (a damaged or newer ticket)
    with pytest.raises(ValueError, match="unknown op 'lstm' at position 3"):
        Graph.from_json(damaged)


def test_adaptive_max_pool_builds_its_module():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.ReLU(), torch.nn.AdaptiveMaxPool2d(2),
                              torch.nn.Flatten(), torch.nn.Linear(12, 2)).eval()
    ticket = construct(net, 0.02, seed=0, nonnegative_input=True)
    x = torch.rand(4, 2, 7, 7)
    from slth.construction.bound import certified_bound_nd

    with torch.no_grad():
        diff = (ticket.to_module()(x) - net(x)).abs().double().numpy()
    assert (diff <= certified_bound_nd(ticket, net, x, x, batched=True) + 1e-5).all()
