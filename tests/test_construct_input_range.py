"""construct(..., input_range=(lo, hi)): a known input box; lo < 0 shifts the input to x - lo >= 0."""

import pytest
import torch
from torch import nn

from slth import ticketfile
from slth.construction import Ticket, construct, mlp
from slth.construction.bound import certified_bound, certified_bound_nd
from slth.construction.network import InputShift


def random_mlp(arch, seed=0, scale=0.5):
    torch.manual_seed(seed)
    net = mlp(arch)
    with torch.no_grad():
        for p in net.parameters():
            p.uniform_(-scale, scale)
    return net.eval()


def box_points(lo, hi, d, count=3000, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = lo + (hi - lo) * torch.rand(count, d, generator=g)
    corners = lo + (hi - lo) * (torch.rand(count // 3, d, generator=g) > 0.5).float()
    return torch.cat([x, corners])


def masks_times_random(ticket):
    pruned = dict(ticket.to_module().named_parameters())
    rand = dict(ticket.random_module().named_parameters())
    assert set(pruned) == set(rand) == set(ticket.masks)
    for name in pruned:
        assert torch.equal(pruned[name], rand[name] * ticket.masks[name]), name


@pytest.mark.parametrize("bias", [False, True])
def test_signed_box_is_shifted_bound_holds_and_costs_less(tmp_path, bias):
    torch.manual_seed(0)
    net = random_mlp([12, 16, 4]) if bias else mlp([12, 16, 4], bias=False).eval()
    lo, hi = -1.5, 2.0
    ticket = construct(net, 0.01, seed=3, input_range=(lo, hi))
    signed = construct(net, 0.01, seed=3)
    assert ticket.stats["failures"] == 0 and ticket.stats["max_weight_error"] <= 0.01
    assert ticket.config["input_range"] == [lo, hi] and not ticket.config["nonnegative_input"]
    assert not ticket.layouts[0].signed_input and ticket.layouts[0].bias  # the shift lives in the bias
    assert signed.layouts[0].signed_input
    assert ticket.stats["kept_params"] < signed.stats["kept_params"]
    module = ticket.to_module()
    shifts = [m for m in module.modules() if isinstance(m, InputShift)]
    assert len(shifts) == 1 and float(shifts[0].offset) == lo  # a fixed buffer, not a parameter
    assert "1.offset" in module.state_dict() and "1.offset" not in dict(module.named_parameters())  # after Flatten
    bound = certified_bound(ticket, net)  # default box: the input range
    x = box_points(lo, hi, 12)
    with torch.no_grad():
        diff = (module(x) - net(x)).abs().max(0).values.double().numpy()
    assert (diff <= bound + 1e-5).all() and diff.max() > 0
    assert (bound < certified_bound(ticket, net, lo - 0.0, hi + 1.0)).all()  # hi bounds the box
    with pytest.raises(ValueError, match="input_range"):
        certified_bound(ticket, net, lo - 0.5, hi)
    masks_times_random(ticket)
    path = ticket.save(tmp_path / "t.slth")
    assert ticketfile.load(path).format_version == 2  # a version-1 reader refuses it cleanly
    loaded = Ticket.load(path)
    assert loaded.digest() == ticket.digest()
    with torch.no_grad():
        assert torch.equal(loaded.to_module()(x), module(x))


def test_zero_one_range_is_nonnegative_input_bit_for_bit(tmp_path):
    net = random_mlp([10, 8, 3])
    a = construct(net, 0.01, seed=1, nonnegative_input=True)
    b = construct(net, 0.01, seed=1, input_range=(0, 1))
    c = construct(net, 0.01, seed=1, input_range=(0.0, 1.0), nonnegative_input=True)
    assert a.digest() == b.digest() == c.digest()
    assert "input_range" not in b.config
    assert ticketfile.load(b.save(tmp_path / "b.slth")).format_version == 1
    # a nonnegative box other than [0, 1] builds the same network, and is the bound's default box
    d = construct(net, 0.01, seed=1, input_range=(0, 3))
    assert d.config["input_range"] == [0.0, 3.0] and d.config["nonnegative_input"]
    assert torch.equal(d.masks["1.b.weight"], a.masks["1.b.weight"])
    assert (certified_bound(d, net) > certified_bound(a, net)).all()


@pytest.mark.parametrize("rng, kwargs, match", [
    ((1.0, 0.0), {}, "lo < hi"),
    ((0.5, 0.5), {}, "lo < hi"),
    ((float("nan"), 1.0), {}, "finite"),
    ((0.0, float("inf")), {}, "finite"),
    (("a", 1.0), {}, "two numbers"),
    ((1.0,), {}, "two numbers"),
    ((-1.0, 1.0), {"nonnegative_input": True}, "contradicts"),
])
def test_bad_ranges_are_refused(rng, kwargs, match):
    with pytest.raises(ValueError, match=match):
        construct(random_mlp([4, 3, 2]), 0.05, input_range=rng, **kwargs)


def test_conv_with_padding_and_batchnorm_takes_the_shift_exactly():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(4, 3, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(3, 2))
    with torch.no_grad():
        net[1].running_mean.uniform_(-0.2, 0.2)
        net[1].running_var.uniform_(0.5, 2.0)
    net.eval()
    lo, hi = -0.8, 1.2
    ticket = construct(net, 0.01, seed=0, input_range=(lo, hi))
    assert ticket.config["ops"][0] == {"op": "shift", "offset": lo, "pad": [1, 1]}
    assert ticket.layouts[0].padding == (0, 0) and not ticket.layouts[0].signed_input
    x = lo + (hi - lo) * torch.rand(4, 2, 9, 9)
    x[0] = lo  # the borders are where a shifted, padded conv would go wrong
    with torch.no_grad():
        diff = (ticket.to_module()(x) - net(x)).abs().double().numpy()
    assert (diff <= certified_bound_nd(ticket, net, x, x, batched=True) + 1e-5).all()
    assert diff.max() < 0.05


def test_cli_input_range(tmp_path):
    from typer.testing import CliRunner

    from slth.cli import app

    net = random_mlp([6, 5, 3])
    torch.save(net.state_dict(), tmp_path / "m.pt")
    r = CliRunner().invoke(app, ["construct", str(tmp_path / "m.pt"), "--arch", "6-5-3", "--input-range", "-1",
                                 "2", "-o", str(tmp_path / "t.slth")])
    assert r.exit_code == 0, r.output
    assert Ticket.load(tmp_path / "t.slth").config["input_range"] == [-1.0, 2.0]
    r = CliRunner().invoke(app, ["construct", str(tmp_path / "m.pt"), "--arch", "6-5-3", "--input-range", "2",
                                 "1", "-o", str(tmp_path / "u.slth")])
    assert r.exit_code != 0 and "lo < hi" in r.output
    assert not (tmp_path / "u.slth").exists()
