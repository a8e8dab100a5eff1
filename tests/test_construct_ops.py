"""Parameter-free ops between layers (GELU, SiLU, tanh, sigmoid, identity), LayerNorm and Embedding.

The random pairs replace only the linear maps; each op stays as it is in the ticket. Every test checks the
measured error against the certified bound and a stated tolerance, ticket = random x masks exactly, and
that save/load gives the same module (files of format version 2 where a new op is used)."""

import numpy as np
import pytest
import torch
from torch import nn

from slth import ticketfile
from slth.construction import Ticket, construct
from slth.construction.bound import certified_bound_nd
from slth.construction.graph import V1_KINDS, V3_KINDS, LayerNormNode, RMSNormNode


def seeded(net, seed=0, scale=0.6):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(net.named_parameters()):
            if not name.startswith("ln"):
                p.copy_((torch.rand(p.shape, generator=g) * 2 - 1) * scale)
    return net.eval()


def check(ticket, net, x, tolerance, tmp_path):
    """Measured |ticket - target| <= certified bound (pointwise) and <= tolerance; exact masks; save/load."""
    module = ticket.to_module()
    with torch.no_grad():
        out = module(x)
        diff = (out - net(x)).abs().double()
    bound = certified_bound_nd(ticket, net, x, x, batched=True)
    assert (diff.reshape(len(x), -1).numpy() <= bound + 1e-5).all(), (float(diff.max()), bound.max())
    assert 0 < float(diff.max()) <= tolerance
    pruned = dict(module.named_parameters())
    rand = dict(ticket.random_module().named_parameters())
    assert set(pruned) == set(rand) == set(ticket.masks)
    for name in pruned:
        assert torch.equal(pruned[name], rand[name] * ticket.masks[name]), name
    path = ticket.save(tmp_path / "t.slth")
    kinds = {op["op"] for op in ticket.config["ops"]}
    assert ticketfile.load(path).format_version == (3 if kinds & V3_KINDS else 2 if kinds - V1_KINDS else 1)
    loaded = Ticket.load(path)
    assert loaded.digest() == ticket.digest()
    with torch.no_grad():
        assert torch.equal(loaded.to_module()(x), out)
    return float(diff.max())


def signed_inputs(d, count=200, seed=1):
    return torch.rand(count, d, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.mark.parametrize("op", [nn.GELU(), nn.GELU(approximate="tanh"), nn.SiLU(), nn.Tanh(), nn.Sigmoid(),
                                nn.Identity()])
def test_elementwise_op_between_linear_layers(op, tmp_path):
    net = seeded(nn.Sequential(nn.Linear(6, 10), op, nn.Linear(10, 8), op, nn.Linear(8, 3)))
    with torch.no_grad():
        net[2].weight.mul_(4)  # weights beyond REACH: this layer is rescaled, the op must undo it first
    ticket = construct(net, 0.01, seed=0)
    assert ticket.stats["failures"] == 0 and ticket.stats["max_weight_error"] <= 0.01
    assert max(ticket.stats["layer_scales"]) > 1
    # signed inputs everywhere except after a sigmoid (its output is >= 0: n units per input, not 2n)
    assert [lay.signed_input for lay in ticket.layouts] == [True] + [not isinstance(op, nn.Sigmoid)] * 2
    # tolerance: eps x (sum of |inputs| <= 10) per layer, amplified by the later layers' |W| and Lipschitz constants
    check(ticket, net, signed_inputs(6), 0.25, tmp_path)


def test_layernorm_affine_is_folded_into_the_next_linear(tmp_path):
    class Block(nn.Module):  # traced with torch.fx: functional GELU, a residual and a LayerNorm read twice
        def __init__(self):
            super().__init__()
            self.inp = nn.Linear(5, 8)
            self.ln = nn.LayerNorm(8)
            self.up = nn.Linear(8, 12)
            self.down = nn.Linear(12, 8)
            self.side = nn.Linear(8, 8)
            self.out = nn.Linear(8, 3)

        def forward(self, x):
            h = self.inp(x)
            z = self.ln(h)
            h = h + self.down(torch.nn.functional.gelu(self.up(z))) + self.side(z)
            return self.out(torch.tanh(h))

    net = seeded(Block())
    with torch.no_grad():
        net.ln.weight.uniform_(0.5, 1.5)
        net.ln.bias.uniform_(-0.3, 0.3)
    ticket = construct(net, 0.005, seed=0)
    kinds = [op["op"] for op in ticket.config["ops"]]
    assert kinds.count("layernorm") == 1 and kinds.count("activation") == 2 and kinds.count("add") == 2
    assert ticket.stats["failures"] == 0
    x = signed_inputs(5)
    diff = check(ticket, net, x, 0.1, tmp_path)
    assert diff < 0.1


class RMSBlock(nn.Module):
    """Pre-norm residual block with RMSNorm (Llama-style), its weight read by Linear layers only or (``side``)
    also by the residual path, where it becomes a diagonal pair."""

    def __init__(self, eps=1e-6, side=False):
        super().__init__()
        self.side = side
        self.inp = nn.Linear(5, 8)
        self.norm = nn.RMSNorm(8, eps=eps)
        self.up, self.down, self.out = nn.Linear(8, 12), nn.Linear(12, 8), nn.Linear(8, 3)

    def forward(self, x):
        h = self.inp(x)
        z = self.norm(h)
        h = h + self.down(torch.nn.functional.silu(self.up(z)))
        if self.side:
            h = h + z
        return self.out(h)


@pytest.mark.parametrize("eps, side", [(1e-6, False), (None, False), (1e-5, True)])
def test_rmsnorm_weight_is_folded_or_a_diagonal_pair(eps, side, tmp_path):
    net = seeded(RMSBlock(eps, side))
    with torch.no_grad():
        net.norm.weight.uniform_(0.5, 1.5)
    ticket = construct(net, 0.005, seed=0)
    kinds = [op["op"] for op in ticket.config["ops"]]
    assert kinds.count("rmsnorm") == 1 and "layernorm" not in kinds
    assert len(ticket.layouts) == (5 if side else 4)  # the weight realised once more for the residual reader
    x = signed_inputs(5)
    check(ticket, net, x, 0.1, tmp_path)  # within the certified bound (1/sqrt(eps) Jacobian) and 0.1
    with pytest.raises(ticketfile.TicketFileError, match="version"):  # a version-2 reader refuses the new op
        ticketfile.from_bytes(ticketfile.to_bytes(ticketfile.load(ticket.save(tmp_path / "r.slth"))).replace(
            b'"format_version":"3"', b'"format_version":"9"'))


def test_rmsnorm_bound_counts_its_epsilon():
    """The RMSNorm node's certified reach is sqrt(D) and its error gain 1/sqrt(eps), whatever eps is."""
    from slth.construction.graph import RMSNormNode

    node = RMSNormNode((0,), (4,), 1e-4)
    lo, hi = torch.full((1, 4), -1.0, dtype=torch.float64), torch.full((1, 4), 1.0, dtype=torch.float64)
    d = torch.tensor([[0.03, 0.0, 0.04, 0.0]], dtype=torch.float64)
    blo, bhi, bd = node.bound([(lo, hi, d)], None)
    assert torch.allclose(bhi, torch.full_like(bhi, 2.0)) and torch.allclose(blo, -bhi)
    assert torch.allclose(bd, torch.full_like(bd, 0.05 / 1e-2))


def test_embedding_is_a_linear_map_on_one_hot_inputs(tmp_path):
    net = nn.Sequential(nn.Embedding(11, 6), nn.Linear(6, 8), nn.GELU(), nn.LayerNorm(8), nn.Linear(8, 4)).eval()
    seeded(net)
    ticket = construct(net, 0.01, seed=0)
    assert not ticket.layouts[0].signed_input and not ticket.layouts[0].bias  # one-hot: n units per token
    assert ticket.layouts[0].d_in == 11 and ticket.layouts[0].d_out == 6
    idx = torch.randint(0, 11, (7, 5), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():  # the embedding alone: each token's error is its realised column's, <= eps
        emb = ticket.to_module()[0](idx) * ticket.stats["layer_scales"][0]
        assert (emb - net[0](idx)).abs().max() <= 0.01 + 1e-6
    check(ticket, net, idx, 0.1, tmp_path)


@pytest.mark.parametrize("net, match", [
    (nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.ReLU(), nn.Linear(4, 2)), "only Linear layers may read"),
    (nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4)), "no Linear to fold into"),
    (nn.Sequential(nn.Linear(4, 4), nn.LayerNorm([2, 2]), nn.Linear(4, 2)), "only the last dimension"),
    (nn.Sequential(nn.LayerNorm(4), nn.Conv2d(1, 2, 3)),
     r"Conv2d at position 1 \('1'\) reads LayerNorm '0', whose affine can only be folded into a Linear"),
    (nn.Sequential(nn.Linear(4, 4), nn.Softmax(-1), nn.Linear(4, 2)), "layer Softmax at position 1"),
    (nn.Sequential(nn.Linear(4, 4), nn.Embedding(4, 2)), "must read the network input"),
    (nn.Sequential(nn.Embedding(4, 2, max_norm=1.0), nn.Flatten(), nn.Linear(2, 2)),
     r"Embedding at position 0 \('0'\) with max_norm \(it renormalises rows\) is not supported"),
])
def test_unsupported_uses_name_the_node(net, match):
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.fill_(2.0)
    with pytest.raises(NotImplementedError, match=match):
        construct(net.eval(), 0.05)


def test_product_of_activations_is_refused_naming_the_fx_node():
    class Gate(nn.Module):  # attention ops are supported (tests/test_construct_attention.py); x * y is not
        def __init__(self):
            super().__init__()
            self.q, self.k = nn.Linear(4, 4), nn.Linear(4, 4)

        def forward(self, x):
            return self.q(x) * torch.sigmoid(self.k(x))

    with pytest.raises(NotImplementedError, match="'mul' at node 'mul'"):
        construct(Gate().eval(), 0.05)


def test_activation_bound_is_sound_on_a_box():
    net = seeded(nn.Sequential(nn.Linear(5, 7), nn.GELU(), nn.Linear(7, 7), nn.SiLU(), nn.Linear(7, 2)))
    ticket = construct(net, 0.01, seed=0)
    bound = certified_bound_nd(ticket, net, -torch.ones(5), torch.ones(5))
    x = torch.cat([signed_inputs(5, 3000), (torch.rand(500, 5) > 0.5).float() * 2 - 1])
    with torch.no_grad():
        diff = (ticket.to_module()(x) - net(x)).abs().max(0).values.double().numpy()
    assert (diff <= bound + 1e-5).all()
    assert np.isfinite(bound).all()


@pytest.mark.parametrize("node", [LayerNormNode((0,), (6,), 1e-5), RMSNormNode((0,), (6,), 1e-6)])
@pytest.mark.parametrize("width", [0.0, 0.05, 3.0])
def test_norm_bound_holds_for_sampled_inputs_and_errors(node, width):
    """The norms' bound (the spread of the input lower-bounded over the box and the errors): sampled target inputs
    x in [lo, hi] and ticket inputs within d of them never move the output by more than it says; at a point
    (width 0) the output interval is the output itself."""
    g = torch.Generator().manual_seed(0)
    c = torch.randn(4, 6, generator=g, dtype=torch.float64)
    lo, hi = c - width, c + width
    d = 0.02 * torch.rand(4, 6, generator=g, dtype=torch.float64)
    blo, bhi, bd = node.bound([(lo, hi, d)], None)
    f = torch.nn.functional.layer_norm if isinstance(node, LayerNormNode) and node.centre else \
        (lambda x, s, eps: torch.nn.functional.rms_norm(x, s, eps=eps))
    for _ in range(200):
        x = lo + (hi - lo) * torch.rand(4, 6, generator=g, dtype=torch.float64)
        x_hat = x + d * (2 * torch.rand(4, 6, generator=g, dtype=torch.float64) - 1)
        z, z_hat = f(x, (6,), eps=node.eps), f(x_hat, (6,), eps=node.eps)
        assert ((z_hat - z).abs() <= bd + 1e-12).all()
        assert (z >= blo - 1e-12).all() and (z <= bhi + 1e-12).all()
    if width == 0:
        assert torch.allclose(blo, f(c, (6,), eps=node.eps)) and torch.equal(blo, bhi)
        assert bd.max() < 1.0  # 1 / std of the input, not 1 / sqrt(eps)


def test_a_layernorm_after_a_relu_feeds_a_signed_input():
    """x - mean(x) is signed even when x >= 0: the Linear after ReLU -> LayerNorm gets a negative group (it got
    none, and the ticket was off by ~1 at eps 1e-3); RMSNorm's x / rms(x) keeps the ReLU's nonnegative output."""
    torch.manual_seed(0)
    for norm, signed in ((nn.LayerNorm(12), True), (nn.RMSNorm(12), False)):
        target = nn.Sequential(nn.Linear(6, 12), nn.ReLU(), norm, nn.Linear(12, 3)).eval()
        ticket = construct(target, 1e-3, seed=0)
        assert [lay.signed_input for lay in ticket.layouts] == [True, signed]
        x = torch.randn(32, 6, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            assert (ticket.to_module()(x) - target(x)).abs().max().item() < 0.05
