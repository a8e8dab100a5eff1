"""Construction of tickets from ReLU MLPs: soundness of the bound, exact masks, files, errors; every refusal of
construct()'s arguments, of unsupported Sequential targets, of target files, of ticket files and of certified_bound's
boxes, each with the message in full (the bad inputs are chosen so that, were the check gone, the run would finish
fast with a different outcome)."""

import os

import numpy as np
import pytest
import torch
from torch import nn

from slth import ticketfile
from slth.construction import Ticket, construct, mlp
from slth.construction.bound import certified_bound, realised_kernels
from slth.construction.report import measure, weight_errors
from slth.construction.target import load_target, parse_target


def random_mlp(arch, bias, seed=0, scale=0.5):
    torch.manual_seed(seed)
    net = mlp(arch, bias=bias)
    with torch.no_grad():
        for p in net.parameters():
            p.uniform_(-scale, scale)
    return net.eval()


def trained_mlp(bias, seed=0):
    """A small MLP trained for a few hundred steps on a synthetic task."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(512, 12, generator=g)
    y = (x[:, :6].sum(1) > x[:, 6:].sum(1)).long() + 2 * (x[:, 0] > 0.5).long()
    torch.manual_seed(seed)
    net = mlp([12, 16, 4], bias=bias)
    opt = torch.optim.SGD(net.parameters(), lr=0.2, momentum=0.9)
    for _ in range(200):
        loss = nn.functional.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


def sample_box(nonneg, d, count=4000, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(count, d, generator=g)
    if not nonneg:
        x = 2 * x - 1
    # include the box's corners direction: extreme points are where bounds are tightest
    corners = (torch.rand(count // 4, d, generator=g) > 0.5).float()
    corners = corners if nonneg else 2 * corners - 1
    return torch.cat([x, corners])


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("nonneg", [False, True])
@pytest.mark.parametrize("kind", ["random", "trained"])
def test_ticket_stays_within_certified_bound(kind, bias, nonneg):
    net = random_mlp([12, 16, 4], bias) if kind == "random" else trained_mlp(bias)
    ticket = construct(net, 0.01, seed=3, nonnegative_input=nonneg)
    assert ticket.stats["failures"] == 0
    assert ticket.stats["max_weight_error"] <= 0.01
    bound = certified_bound(ticket, net)
    x = sample_box(nonneg, 12)
    with torch.no_grad():
        diff = (ticket.to_module()(x) - net(x)).abs().max(0).values.double().numpy()
    # float32 forward passes differ from exact arithmetic by ~1e-6
    assert (diff <= bound + 1e-5).all(), (diff, bound)
    assert diff.max() > 0  # the ticket is an approximation, not a copy
    # the recomputed per-layer errors equal the reported ones
    np.testing.assert_allclose(weight_errors(ticket, net), ticket.stats["max_weight_error_per_layer"], atol=1e-9)


def test_bound_in_a_ball_and_a_box():
    net = random_mlp([8, 8, 3], True)
    ticket = construct(net, 0.02, seed=0)
    center = np.full(8, 0.1)
    small = certified_bound(ticket, net, center=center, radius=0.05).max()
    big = certified_bound(ticket, net, -1, 1).max()
    assert 0 < small < big


@pytest.mark.parametrize("bias", [False, True])
def test_masks_times_random_equals_module(bias):
    net = random_mlp([10, 7, 3], bias)
    ticket = construct(net, 0.01, seed=5)
    pruned = dict(ticket.to_module().named_parameters())
    rand = dict(ticket.random_module().named_parameters())
    assert set(pruned) == set(rand) == set(ticket.masks)
    for name in pruned:
        assert torch.equal(pruned[name], rand[name] * ticket.masks[name]), name
        assert ticket.masks[name].dtype == torch.bool
    kept = sum(int(m.sum()) for m in ticket.masks.values())
    assert kept == ticket.stats["kept_params"]
    assert sum(p.numel() for p in rand.values()) == ticket.stats["random_params"]


def test_a_traced_ticket_refuses_a_model_to_rebuild_in():
    ticket = construct(random_mlp([4, 3, 2], False), 0.05, seed=0)
    for build in (ticket.to_module, ticket.random_module):
        with pytest.raises(ValueError, match="model= is for tickets built by module replacement; this ticket is its "
                                             "own network"):
            build(model=random_mlp([4, 3, 2], False))


def test_same_seed_same_random_network_and_ticket():
    net = random_mlp([10, 6, 3], True)
    a = construct(net, 0.01, seed=11)
    b = construct(net, 0.01, seed=11)
    c = construct(net, 0.01, seed=12)
    for (_name, pa), (_, pb), (_, pc) in zip(a.random_module().named_parameters(), b.random_module().named_parameters(),
                                            c.random_module().named_parameters()):
        assert torch.equal(pa, pb)
        assert not torch.equal(pa, pc)
    assert all(torch.equal(a.masks[k], b.masks[k]) for k in a.masks)


def test_save_load_is_bit_identical(tmp_path):
    net = random_mlp([10, 8, 3], True)
    ticket = construct(net, 0.005, seed=2)
    path = ticket.save(tmp_path / "t.slth")
    loaded = Ticket.load(path)
    x = torch.randn(64, 10)
    with torch.no_grad():
        assert torch.equal(ticket.to_module()(x), loaded.to_module()(x))
    assert loaded.stats == ticket.stats and loaded.config == ticket.config
    assert not [p for p in os.listdir(tmp_path) if p != "t.slth"]  # no temp file left


def test_redraws_are_recorded_and_replayed(tmp_path):
    # n small enough that some blocks cannot reach their weights on the first draw
    net = random_mlp([16, 12, 4], False, scale=0.9)
    ticket = construct(net, 0.05, seed=0, n=6)
    assert ticket.stats["redraws"] > 0
    loaded = Ticket.load(ticket.save(tmp_path / "t.slth"))
    for (_name, p1), (_, p2) in zip(ticket.random_module().named_parameters(),
                                   loaded.random_module().named_parameters()):
        assert torch.equal(p1, p2)
    assert torch.equal(loaded.redraws if isinstance(loaded.redraws, torch.Tensor) else torch.as_tensor(loaded.redraws),
                       torch.as_tensor(ticket.redraws))
    # without redraws the same n leaves failures, and they are reported, not hidden
    strict = construct(net, 0.05, seed=0, n=6, max_redraw_rounds=0)
    assert strict.stats["failures"] > 0 and not strict.stats["eps_met"]
    assert strict.stats["max_weight_error"] > 0.05


def test_large_weights_are_rescaled_soundly():
    net = random_mlp([6, 5, 3], True)
    with torch.no_grad():
        net[1].weight.mul_(8.0)  # weights up to 4: beyond what one block reaches
    ticket = construct(net, 0.01, seed=0)
    assert ticket.stats["layer_scales"][0] > 1
    assert ticket.config["output_scale"] > 1
    assert ticket.stats["max_weight_error"] <= 0.01
    x = sample_box(False, 6)
    with torch.no_grad():
        diff = (ticket.to_module()(x) - net(x)).abs().max(0).values.double().numpy()
    assert (diff <= certified_bound(ticket, net) + 1e-5).all()


def test_sparse_tickets_keep_fewer_weights_than_min_error():
    net = trained_mlp(False)
    sparse = construct(net, 0.01, seed=0, nonnegative_input=True)
    dense = construct(net, 0.01, seed=0, nonnegative_input=True, sparse=False)
    assert sparse.stats["kept_params"] < 0.6 * dense.stats["kept_params"]
    assert sparse.stats["max_weight_error"] <= 0.01


def test_a_module_instance_used_twice_in_a_sequential_is_applied_twice():
    relu = nn.ReLU()
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 8), relu, nn.Linear(8, 8), relu, nn.Linear(8, 3)).eval()
    ticket = construct(net, 0.01, seed=0)
    assert [op["op"] for op in ticket.config["ops"]] == ["layer", "relu", "layer", "relu", "layer"]
    x = sample_box(False, 6)
    with torch.no_grad():
        diff = (ticket.to_module()(x) - net(x)).abs().max(0).values.double().numpy()
    assert (diff <= certified_bound(ticket, net) + 1e-5).all()


def test_nonnegative_input_halves_the_first_layer():
    net = random_mlp([10, 6, 3], False)
    signed = construct(net, 0.01, seed=0, n=10)
    nonneg = construct(net, 0.01, seed=0, n=10, nonnegative_input=True)
    assert signed.config["layers"][0]["signed_input"] and not nonneg.config["layers"][0]["signed_input"]
    assert not signed.config["layers"][1]["signed_input"]  # after a ReLU
    assert nonneg.stats["random_params"] < signed.stats["random_params"]


def test_malach_needs_far_more_width_for_the_same_eps():
    net = random_mlp([6, 5, 3], False)
    pensia = construct(net, 0.02, seed=0)
    malach = construct(net, 0.02, seed=0, method="malach")
    assert malach.stats["max_weight_error"] <= 0.02
    assert malach.stats["random_params"] > 4 * pensia.stats["random_params"]
    # a single pick keeps at most one product per (weight, sign)
    assert malach.masks["1.b.weight"].sum() <= 5 * 6 * 2


def test_error_decays_with_n_for_pensia():
    net = random_mlp([8, 6, 3], False)
    med = [construct(net, 1e-3, seed=0, n=n, sparse=False, max_redraw_rounds=0).stats["weight_error_median"]
           for n in (4, 8, 12, 16)]
    assert med[0] > med[1] > med[2] > med[3]
    assert med[3] < med[0] / 100


def test_nested_sequential_dropout_identity_and_measure():
    inner = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Dropout(0.2))
    net = nn.Sequential(nn.Flatten(), inner, nn.Identity(), nn.Linear(4, 2)).eval()
    ticket = construct(net, 0.01, seed=0)
    x = torch.randn(32, 1, 5)
    y = torch.randint(0, 2, (32,))
    m = measure(ticket.to_module(), net, x, y)
    assert m["top1_agreement"] >= 0.9 and 0 <= m["ticket_accuracy"] <= 1
    assert len(realised_kernels(ticket)) == 2


@pytest.mark.parametrize(
    "net, error, match",
    [
        (nn.Sequential(nn.Linear(4, 3), nn.Conv2d(1, 1, 1)), NotImplementedError,
         r"Conv2d at position 1 \('1'\) after a Linear is not supported \(its input is flat\)"),
        (nn.Sequential(nn.Linear(4, 3), nn.Sequential(nn.Softmax(-1))), NotImplementedError, r"Softmax .*'1.0'"),
        (nn.Linear(4, 3), NotImplementedError, r"target must be an nn.Sequential of .* got Linear"),
        (nn.Sequential(nn.ReLU()), ValueError, r"target has no Linear or Conv2d layer"),
        (nn.Sequential(nn.Linear(4, 3), nn.Linear(5, 2)), ValueError,
         r"Linear '1' expects 5 inputs but the previous Linear gives 3"),
    ],
)
def test_unsupported_targets_raise_clear_errors(net, error, match):
    with pytest.raises(error, match=match):
        construct(net, 0.01)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nonfinite_weights_are_refused(bad):
    net = random_mlp([4, 3, 2], True)
    with torch.no_grad():
        net[3].bias[0] = bad
    with pytest.raises(ValueError, match="bias of Linear '3'"):
        construct(net, 0.01)


def test_corrupt_truncated_and_foreign_files(tmp_path):
    net = random_mlp([6, 4, 2], False)
    path = construct(net, 0.01, seed=0).save(tmp_path / "t.slth")
    data = path.read_bytes()
    (tmp_path / "trunc.slth").write_bytes(data[: len(data) // 2])
    flipped = bytearray(data)
    flipped[-3] ^= 0xFF
    (tmp_path / "flip.slth").write_bytes(bytes(flipped))
    (tmp_path / "foreign.slth").write_bytes(b"PK\x03\x04 definitely a zip file")
    from safetensors.numpy import save_file

    save_file({"w": np.zeros(3, np.float32)}, str(tmp_path / "other.safetensors"))
    for name, match in [("trunc.slth", "truncated"), ("flip.slth", "corrupt|checksum"),
                        ("foreign.slth", "not a slth ticket"), ("other.safetensors", "not a slth ticket")]:
        with pytest.raises(ValueError, match=match):
            Ticket.load(tmp_path / name)
    with pytest.raises(FileNotFoundError):
        Ticket.load(tmp_path / "missing.slth")


def test_failed_save_leaves_nothing(tmp_path):
    ticket = construct(random_mlp([4, 3, 2], False), 0.01)
    with pytest.raises(FileNotFoundError):
        ticket.save(tmp_path / "no-such-dir" / "t.slth")
    ticket.seed = "not an int"  # invalid: refused before anything is written
    with pytest.raises(ValueError, match="seed"):
        ticket.save(tmp_path / "t.slth")
    assert list(tmp_path.iterdir()) == []


def test_ticket_file_is_smaller_than_float32_target(tmp_path):
    net = trained_mlp(False)
    ticket = construct(net, 0.01, seed=0, nonnegative_input=True)
    size = ticket.save(tmp_path / "t.slth").stat().st_size
    # the header dominates at this size; the masks themselves must be far below 32 bits per weight
    masks_bits = sum(m.numel() for m in ticket.masks.values())
    assert masks_bits < 32 * ticket.stats["target_params"]
    assert size < 4 * ticket.stats["target_params"] + 4096


# -- refusals, each fails when its check is deleted (formerly tests/test_safety_construction.py) -----------------------


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)).eval()


# -- api.construct: argument validation (n=4 everywhere: no choose_n, a tiny search) ---------------


@pytest.mark.parametrize("kwargs, match", [
    ({"method": "lottery"}, r"unknown method 'lottery'; valid: pensia"),
    ({"eps": 0.0}, r"eps must be a positive finite number, got 0\.0"),
    ({"eps": float("inf")}, r"eps must be a positive finite number, got inf"),
    ({"eps": float("nan")}, r"eps must be a positive finite number, got nan"),
    ({"eps": "0.1"}, r"eps must be a positive finite number, got '0\.1'"),
    ({"seed": -1}, r"seed must be a nonnegative int, got -1"),
    ({"seed": True}, r"seed must be a nonnegative int, got True"),
    ({"device": "cpu"}, r"device= runs the minimal-error search \(sparse=False\)"),
    ({"chunk_instances": 0}, r"chunk_instances must be an int >= 1, got 0"),
    ({"n": [4]}, r"n has 1 entries but the target has 2 Linear/Conv2d layers"),
    ({"n": 0}, r"n must be between 1 and \d+ for method 'pensia', got 0"),
    ({"n": [4, 0]}, r"n must be between 1 and \d+ for method 'pensia', got \[4, 0\]"),
    ({"p": 1.0}, r"p \(per-weight success probability used to choose n\) must be in \(0, 1\), got 1\.0"),
    ({"p": 0.0, "method": "malach", "n": None},
     r"p \(per-weight success probability used to choose n\) must be in \(0, 1\), got 0\.0"),
    ({"max_redraw_rounds": -1}, r"max_redraw_rounds must be an int >= 0, got -1"),
    ({"backend": "spark"}, r"unknown backend 'spark'; valid: local"),
    ({"workers": 0}, r"workers must be an int >= 1, got 0"),
    ({"attention": "bogus", "construction": "modules"}, r"unknown attention construction 'bogus'; valid: projection"),
])
def test_construct_refuses_bad_arguments(kwargs, match):
    args = {"eps": 0.05, "n": 4, **kwargs}
    with pytest.raises(ValueError, match=match):
        construct(_mlp(), **args)


# -- target.py: unsupported modules, named by position --------------------------------------------------


def _nan_weight():
    net = _mlp()
    with torch.no_grad():
        net[2].weight[0, 0] = float("nan")
    return net


@pytest.mark.parametrize("make, error, match", [
    (_nan_weight, ValueError, r"weight of Linear '2' contains NaN or inf"),
    (lambda: nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3, track_running_stats=False)), NotImplementedError,
     r"BatchNorm1d at position 1 \('1'\) has no running statistics"),
    (lambda: nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(5)), ValueError,
     r"BatchNorm1d '1' has 5 features but '0' gives 3"),
    (lambda: nn.Sequential(nn.Linear(4, 3), nn.Flatten()), NotImplementedError,
     r"Flatten at position 1 \('1'\) after a Linear is not supported"),
    (lambda: nn.Sequential(nn.Linear(4, 3), nn.ELU()), NotImplementedError,
     r"layer ELU at position 1 \('1'\) is not supported by construct\(\)"),
])
def test_parse_target_refuses_unsupported_targets(make, error, match):
    with pytest.raises(error, match=match):
        parse_target(make().eval())


@pytest.mark.parametrize("arch, match", [
    ("784-x-10", r"--arch must look like 784-500-10, got '784-x-10'"),
    ("784", r"an MLP needs at least two positive widths, got \[784\]"),
    ([4, 0, 2], r"an MLP needs at least two positive widths, got \[4, 0, 2\]"),
])
def test_mlp_refuses_bad_widths(arch, match):
    with pytest.raises(ValueError, match=match):
        mlp(arch)


def test_load_target_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no such model file: .*missing\.pt"):
        load_target(tmp_path / "missing.pt", "4-3-2")


def test_load_target_not_torchscript(tmp_path):
    (tmp_path / "m.pt").write_bytes(b"junk")
    with pytest.raises(ValueError, match=r"m\.pt is not a TorchScript module .*for a state_dict pass --arch"):
        load_target(tmp_path / "m.pt")


def test_load_target_unreadable_state_dict(tmp_path):
    (tmp_path / "m.pt").write_bytes(b"junk")
    with pytest.raises(ValueError, match=r"m\.pt is not a readable state_dict file"):
        load_target(tmp_path / "m.pt", "4-3-2")


def test_load_target_not_a_dict_of_tensors(tmp_path):
    torch.save({"0.weight": [1, 2]}, tmp_path / "m.pt")
    with pytest.raises(ValueError, match=r"m\.pt does not hold a state_dict \(a dict of tensors\)"):
        load_target(tmp_path / "m.pt", "4-3-2")


def test_load_target_named_arch_needs_shape_and_classes(tmp_path):
    torch.save({"w": torch.zeros(1)}, tmp_path / "m.pt")
    with pytest.raises(ValueError, match=r"--arch lenet5 needs the input shape and the number of classes"):
        load_target(tmp_path / "m.pt", "lenet5")


def test_load_target_state_dict_of_another_arch(tmp_path):
    torch.save(mlp("4-3-2").state_dict(), tmp_path / "m.pt")
    with pytest.raises(ValueError, match=r"m\.pt does not match --arch 4-5-2: Error\(s\) in loading state_dict"):
        load_target(tmp_path / "m.pt", "4-5-2")


# -- ticket.py ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ticket():
    return construct(_mlp(), 0.05, n=4, seed=0)


def _resave(ticket, path, *, config=None, masks=None):
    tf = ticketfile.TicketFile(seed=ticket.seed,
                               config=dict(ticket.config, kind="constructed", stats=ticket.stats) if config is None
                               else config,
                               masks={k: v.numpy() for k, v in ticket.masks.items()} if masks is None else masks)
    return ticketfile.save(path, tf)


def test_load_refuses_another_kind_of_ticket(ticket, tmp_path):
    path = _resave(ticket, tmp_path / "t.slth", config=dict(ticket.config, kind="supermask"))
    with pytest.raises(ticketfile.TicketFileError, match=r"not a constructed ticket \(kind 'supermask'\)"):
        Ticket.load(path)


def test_load_refuses_a_malformed_config(ticket, tmp_path):
    config = {k: v for k, v in ticket.config.items() if k != "layers"}
    path = _resave(ticket, tmp_path / "t.slth", config=dict(config, kind="constructed"))
    with pytest.raises(ticketfile.TicketFileError, match=r"ticket config is malformed"):
        Ticket.load(path)


def test_load_refuses_a_missing_mask(ticket, tmp_path):
    masks = {k: v.numpy() for k, v in ticket.masks.items()}
    dropped = sorted(masks)[0]
    del masks[dropped]
    path = _resave(ticket, tmp_path / "t.slth", masks=masks)
    with pytest.raises(ticketfile.TicketFileError, match=rf"masks do not match the network layout .*{dropped}"):
        Ticket.load(path)


def test_load_refuses_a_mask_of_the_wrong_shape(ticket, tmp_path):
    masks = {k: v.numpy() for k, v in ticket.masks.items()}
    name = sorted(masks)[0]
    masks[name] = masks[name][:-1]
    path = _resave(ticket, tmp_path / "t.slth", masks=masks)
    with pytest.raises(ticketfile.TicketFileError, match=rf"masks do not match the network layout .*{name}"):
        Ticket.load(path)


# -- bound.py: certified_bound refuses a box it cannot bound, before any work -----------------------


def test_certified_bound_refuses_bad_boxes(ticket):
    from slth.construction.bound import certified_bound

    net = _mlp()
    for kwargs, match in [
        ({"center": [0.0] * 4, "radius": -0.1}, r"a ball needs a center and a radius >= 0"),
        ({"lo": -1.0}, r"give both lo and hi of the input box"),
        ({"lo": [0.0] * 3, "hi": [1.0] * 3}, r"the input box does not fit the input shape \(4,\)"),
        ({"lo": 1.0, "hi": -1.0}, r"input box must be finite with lo <= hi"),
        ({"lo": -float("inf"), "hi": 1.0}, r"input box must be finite with lo <= hi"),
    ]:
        with pytest.raises(ValueError, match=match):
            certified_bound(ticket, net, **kwargs)


def test_certified_bound_refuses_a_box_below_the_tickets_inputs():
    from slth.construction.bound import certified_bound

    net = _mlp()
    nonneg = construct(net, 0.05, n=4, seed=0, nonnegative_input=True)
    with pytest.raises(ValueError, match=r"the ticket was built for nonnegative inputs; the box must have lo >= 0"):
        certified_bound(nonneg, net, lo=-0.5, hi=1.0)


def test_certified_bound_of_a_conv_ticket_needs_the_input_shape():
    from slth.construction.bound import certified_bound

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 2 * 2, 2)).eval()
    ticket = construct(net, 0.05, n=4, seed=0)
    with pytest.raises(ValueError, match=r"a ticket whose first layer is a convolution needs input_shape"):
        certified_bound(ticket, net)


def test_certified_bound_refuses_a_module_replacement_ticket():
    from slth.construction.bound import certified_bound

    net = _mlp()
    ticket = construct(net, 0.05, n=4, seed=0, construction="modules")
    with pytest.raises(NotImplementedError, match=r"certified_bound needs the traced construction graph"):
        certified_bound(ticket, net)
