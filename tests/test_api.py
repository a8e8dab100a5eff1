"""The public API as the README shows it, each call in a fresh interpreter and after any other import."""

import subprocess
import sys
import textwrap

import pytest

PRELUDES = [
    "",
    "import slth.construction",
    "from slth.construction import mlp",
    "import slth.construction.api, slth.construction.ticket",
    "from slth.supermask import build",
    "import slth.cli",
    "from slth import construction; from slth.construction.target import parse_target",
]

CALLS = textwrap.dedent("""
    import torch
    import slth

    torch.manual_seed(0)
    target = torch.nn.Sequential(torch.nn.Linear(6, 5, bias=False), torch.nn.ReLU(),
                                 torch.nn.Linear(5, 3, bias=False))
    ticket = slth.construct(target, eps=0.05, seed=0, nonnegative_input=True, n=10)
    assert isinstance(ticket, slth.Ticket), type(ticket)
    path = ticket.save(OUT)
    again = slth.Ticket.load(path)
    assert again.digest() == ticket.digest()
    x = torch.rand(8, 6)
    assert (again.to_module()(x) - target(x)).abs().max().item() < 1.0
    assert callable(slth.construct) and slth.construct.__module__ == "slth.construction.api"
    print("OK", ticket.digest())
""")


@pytest.mark.parametrize("prelude", PRELUDES, ids=lambda p: p or "fresh")
def test_documented_api_in_a_fresh_interpreter(prelude, tmp_path):
    code = prelude + "\n" + CALLS.replace("OUT", repr(str(tmp_path / "t.slth")))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.startswith("OK ")


def test_same_ticket_whatever_was_imported_first(tmp_path):
    digests = set()
    for prelude in PRELUDES[:3]:
        code = prelude + "\n" + CALLS.replace("OUT", repr(str(tmp_path / "t.slth")))
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-3000:]
        digests.add(r.stdout.split()[1])
    assert len(digests) == 1


def test_unknown_attribute_is_an_attribute_error():
    import slth

    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        slth.nope  # noqa: B018
    assert {"construct", "Ticket"} <= set(dir(slth))


def test_no_subpackage_shadows_an_export():
    """The root of the old bug: a subpackage named like a function the package exports."""
    import pkgutil

    import slth

    subpackages = {m.name for m in pkgutil.iter_modules(slth.__path__)}
    assert not subpackages & set(slth.__all__), subpackages & set(slth.__all__)
