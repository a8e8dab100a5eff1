"""Nonnegative inputs at construction time (module replacement with example inputs).

Given ``example_inputs``, a module-replacement construction reads the target's exported graph with the one parser;
a Linear-like leaf (``nn.Linear``, transformers' ``Conv1D``) whose input is nonnegative in every call there (a
ReLU's output, as the traced construction decides it) gets a pair with n first-layer units per input, not 2n.
Checked here: which leaves (and not a leaf also called on a signed value), the ticket against its target, the
layout recorded and rebuilt bit for bit (dense and kept storage), the certified bound, and the refusals.
"""

import pytest
import torch
from torch import nn

import slth
from slth.construction import ConstructConfig, Ticket, certified_bound

EPS = 1e-3


class Net(nn.Module):
    """fc1 reads the (signed) input; fc2 and head read ReLU outputs; ``shared`` is called twice, on a ReLU's output
    and on fc1's signed output, so it reads a signed input."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(6, 12), nn.Linear(12, 12)
        self.shared, self.head = nn.Linear(12, 12), nn.Linear(12, 3)

    def forward(self, x):
        h = self.fc1(x)
        y = self.fc2(torch.relu(h))
        z = self.shared(torch.relu(y)) + self.shared(h)
        return self.head(torch.relu(z))


X = torch.randn(64, 6, generator=torch.Generator().manual_seed(1))
EXAMPLE = (X[:4],)


def _net():
    torch.manual_seed(0)
    return Net().eval()


@pytest.fixture(scope="module")
def built():
    target = _net()
    ticket = slth.construct(target, eps=EPS, seed=0, construction="modules", example_inputs=EXAMPLE)
    signed = slth.construct(target, eps=EPS, seed=0, construction="modules", example_inputs=EXAMPLE,
                            nonnegative_leaves=False)
    return target, ticket, signed


def _layouts(ticket):
    return {leaf.path: ticket.layouts[leaf.layers[0]] for leaf in ticket.leaves if leaf.layers}


def test_a_leaf_read_after_a_relu_gets_n_units_and_one_also_read_signed_keeps_2n(built):
    """fc2 and head read a ReLU's output in their every call: n units per input (signed_input False); fc1 reads the
    input and shared is called once on a signed value: 2n. Their pairs' random weights drop accordingly."""
    target, ticket, signed = built
    assert ticket.stats["nonnegative_leaves"] == ["fc2", "head"]
    lay, before = _layouts(ticket), _layouts(signed)
    assert {p: lay[p].signed_input for p in lay} == {"fc1": True, "fc2": False, "shared": True, "head": False}
    assert all(before[p].signed_input for p in before) and "nonnegative_leaves" not in signed.stats
    for p in ("fc2", "head"):
        assert lay[p].n == before[p].n and lay[p].units == lay[p].n == before[p].units // 2
    assert ticket.stats["random_params"] < signed.stats["random_params"]
    assert ticket.stats["eps_met"] and signed.stats["eps_met"]


def test_the_ticket_matches_its_target_within_eps_scaled_tolerance(built):
    """Every realised weight is within eps; the outputs then differ by at most eps times the weights' fan-in
    times the activations' size, a few 1e-3 here (inputs N(0, 1), 64 of them)."""
    target, ticket, signed = built
    with torch.no_grad():
        want = target(X)
        for t in (ticket, signed):
            err = (t.to_module(model=Net())(X) - want).abs().max().item()
            assert err < 20 * EPS, err


def test_the_layout_is_recorded_and_rebuilt_bit_for_bit(built, tmp_path):
    """Saved and loaded, rebuilt in a fresh Net (dense and kept storage), the ticket computes the in-memory
    ticket's outputs bit for bit; kept storage agrees with dense within float32 rounding."""
    target, ticket, _ = built
    loaded = Ticket.load(ticket.save(tmp_path / "t.slth"))
    assert loaded.digest() == ticket.digest() and loaded.layouts == ticket.layouts
    with torch.no_grad():
        dense = ticket.to_module(model=Net())(X)
        assert torch.equal(loaded.to_module(model=Net())(X), dense)
        kept = ticket.to_module(model=Net(), storage="kept")(X)
        assert torch.equal(loaded.to_module(model=Net(), storage="kept")(X), kept)
    assert (kept - dense).abs().max().item() < 1e-5
    assert loaded.to_module(model=Net(), storage="kept").fc2.b.units == _layouts(ticket)["fc2"].n


def test_the_bound_holds(built):
    """The certified bound reads the n-unit pairs (P on h itself, no negative group): at the example it is at
    least the measured error, and over the box [-3, 3]^(4 x 6) at least the error of 32 sampled inputs."""
    target, ticket, _ = built
    point = certified_bound(ticket, target, example_inputs=EXAMPLE)
    with torch.no_grad():
        pruned = ticket.to_module(model=Net())
        err = (pruned(EXAMPLE[0]) - target(EXAMPLE[0])).double().abs().reshape(-1).numpy()
        assert (point >= err).all()
        box = certified_bound(ticket, target, -3.0, 3.0, example_inputs=EXAMPLE)
        xs = torch.rand(32, 4, 6, generator=torch.Generator().manual_seed(2)) * 6 - 3
        errs = torch.stack([(pruned(x) - target(x)).double().abs().reshape(-1) for x in xs]).numpy()
    assert (box[None, :] >= errs).all()


def test_without_example_inputs_or_with_the_option_off_nothing_changes(built):
    """No example inputs: every pair reads a signed input, the ticket built before this existed (the same digest
    as nonnegative_leaves=False on a target with no norm to fold)."""
    target, ticket, signed = built
    plain = slth.construct(target, eps=EPS, seed=0, construction="modules")
    assert plain.digest() == signed.digest() != ticket.digest()
    assert "nonnegative_leaves" not in plain.stats


def test_nonnegative_leaves_must_be_a_bool_before_any_work():
    with pytest.raises(ValueError, match="nonnegative_leaves must be True or False"):
        ConstructConfig(nonnegative_leaves="yes")
    with pytest.raises(ValueError, match="nonnegative_leaves must be True or False"):
        slth.construct(_net(), eps=1e-2, construction="modules", example_inputs=EXAMPLE, nonnegative_leaves=1)


class Branchy(nn.Module):
    """fc2 reads a ReLU's output for a batch of more than 2, fc1's signed output otherwise (torch.export
    specialises the branch on the example's shape)."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(6, 8), nn.Linear(8, 3)

    def forward(self, x):
        h = self.fc1(x)
        return self.fc2(torch.relu(h) if x.shape[0] > 2 else h)


def test_the_bound_refuses_a_graph_in_which_a_nonnegative_pair_reads_a_signed_input():
    torch.manual_seed(0)
    model = Branchy().eval()
    ticket = slth.construct(model, eps=1e-2, seed=0, construction="modules", example_inputs=(X[:4],))
    assert ticket.stats["nonnegative_leaves"] == ["fc2"]
    assert (certified_bound(ticket, model, example_inputs=(X[:4],)) >= 0).all()
    with pytest.raises(NotImplementedError, match="pair for 'fc2' reads a nonnegative input"):
        certified_bound(ticket, model, example_inputs=(X[:2],))


T = pytest.importorskip("transformers")


def _gpt2_relu():
    return T.GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=64, n_positions=32, bos_token_id=0,
                        eos_token_id=0, pad_token_id=0, initializer_range=0.1, activation_function="relu")


def test_gpt2_with_relu_builds_its_mlp_output_projections_on_nonnegative_inputs():
    """GPT-2 with activation_function="relu": each block's mlp.c_proj (a Conv1D) reads the ReLU's output, n units
    per input; every other leaf reads a signed input. The ticket (dense and kept) matches its target."""
    from test_construct_modules import _build

    target = _build(T.GPT2LMHeadModel, _gpt2_relu())
    ids = torch.randint(0, 64, (1, 6), generator=torch.Generator().manual_seed(3))
    ticket = slth.construct(target, eps=EPS, seed=0, example_inputs=(ids,))
    want = [f"transformer.h.{i}.mlp.c_proj" for i in range(2)]
    assert ticket.stats["nonnegative_leaves"] == want
    lay = _layouts(ticket)
    leaf_kinds = {leaf.path: leaf.kind for leaf in ticket.leaves}
    assert [p for p, v in lay.items() if not v.signed_input and v.d_in and leaf_kinds[p] != "embedding"] == want
    test = torch.randint(0, 64, (16, 12), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        ref = target(test).logits
        dense = ticket.to_module(model=T.GPT2LMHeadModel(_gpt2_relu()))(test).logits
        kept = ticket.to_module(model=T.GPT2LMHeadModel(_gpt2_relu()), storage="kept")(test).logits
    assert (dense - ref).abs().max().item() < 0.2
    assert (kept - dense).abs().max().item() < 1e-4
