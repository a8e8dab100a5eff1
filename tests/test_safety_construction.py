"""Safety checks of slth.construction: argument validation, refusals of unsupported targets, ticket
loading and work-dir resume. Each test provokes one check and matches its message; the bad inputs are
chosen so that, were the check gone, the run would finish fast with a different outcome."""

from __future__ import annotations

import sys

import pytest
import torch
from torch import nn

from slth import ticketfile
from slth.construction import construct
from slth.construction.target import load_target, mlp, parse_target
from slth.construction.ticket import Ticket


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)).eval()


# -- api.construct: argument validation (n=4 everywhere: no choose_n, a tiny search) ---------------


@pytest.mark.parametrize("kwargs, match", [
    ({"method": "lottery"}, r"unknown method 'lottery'; valid: pensia"),
    ({"eps": 0.0}, r"eps must be a positive finite number, got 0\.0"),
    ({"eps": float("inf")}, r"eps must be a positive finite number, got inf"),
    ({"eps": "0.1"}, r"eps must be a positive finite number, got '0\.1'"),
    ({"seed": -1}, r"seed must be a nonnegative int, got -1"),
    ({"seed": True}, r"seed must be a nonnegative int, got True"),
    ({"device": "cpu"}, r"device= runs the minimal-error search \(sparse=False\)"),
    ({"chunk_instances": 0}, r"chunk_instances must be an int >= 1, got 0"),
    ({"n": [4]}, r"n has 1 entries but the target has 2 Linear/Conv2d layers"),
    ({"n": 0}, r"n must be between 1 and \d+ for method 'pensia', got 0"),
    ({"n": [4, 0]}, r"n must be between 1 and \d+ for method 'pensia', got \[4, 0\]"),
    ({"p": 1.0}, r"p \(per-weight success probability used to choose n\) must be in \(0, 1\), got 1\.0"),
    ({"max_redraw_rounds": -1}, r"max_redraw_rounds must be an int >= 0, got -1"),
    ({"backend": "spark"}, r"unknown backend 'spark'; valid: local"),
    ({"workers": 0}, r"workers must be an int >= 1, got 0"),
    ({"attention": "bogus", "construction": "modules"}, r"unknown attention construction 'bogus'; valid: projection"),
])
def test_construct_refuses_bad_arguments(kwargs, match):
    args = {"eps": 0.05, "n": 4, **kwargs}
    with pytest.raises(ValueError, match=match):
        construct(_mlp(), **args)



def test_module_replacement_of_a_model_with_nothing_to_construct():
    norm_only = nn.Sequential(nn.LayerNorm(4)).eval()  # identity affine: no weight a pair would realise
    with pytest.raises(ValueError, match=r"Sequential has no weight to construct \(its norms have identity affines\)"):
        construct(norm_only, 0.05, n=4, construction="modules")

# -- target.py: unsupported modules, named by position or node ------------------------------------


class _Traced(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 3)


class _DataDependent(_Traced):
    def forward(self, x):
        return self.fc(x) if x.sum() > 0 else x


class _Exponentiates(_Traced):
    def forward(self, x):
        return torch.exp(self.fc(x))


class _TwoInputs(_Traced):
    def forward(self, x, y):
        return self.fc(x)


class _Multiplies(_Traced):
    def forward(self, x):
        return self.fc(x) * x


def _nan_weight():
    net = _mlp()
    with torch.no_grad():
        net[2].weight[0, 0] = float("nan")
    return net


@pytest.mark.parametrize("make, error, match", [
    (_nan_weight, ValueError, r"weight of Linear '2' contains NaN or inf"),
    (lambda: nn.Sequential(nn.Linear(4, 3), nn.Conv2d(1, 1, 1)), NotImplementedError,
     r"Conv2d at position 1 \('1'\) after a Linear is not supported \(its input is flat\)"),
    (lambda: nn.Sequential(nn.Conv2d(4, 4, 1, groups=2)), NotImplementedError,
     r"Conv2d at position 0 \('0'\) has groups=2: grouped/depthwise"),
    (lambda: nn.Sequential(nn.Conv2d(2, 2, 3, padding="same")), NotImplementedError,
     r"padding='same', padding_mode='zeros'; only explicit zero padding"),
    (lambda: nn.Sequential(nn.Conv2d(2, 2, 3, padding=1, padding_mode="reflect")), NotImplementedError,
     r"padding_mode='reflect'; only explicit zero padding"),
    (lambda: nn.Sequential(nn.Linear(4, 3), nn.Linear(5, 2)), ValueError,
     r"Linear '1' expects 5 inputs but the previous Linear gives 3"),
    (lambda: nn.Sequential(nn.Conv2d(2, 2, 1), nn.ReLU(), nn.BatchNorm2d(2)), NotImplementedError,
     r"BatchNorm2d at position 2 \('2'\) does not directly follow a Linear/Conv1d/Conv2d"),
    (lambda: nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3, track_running_stats=False)), NotImplementedError,
     r"BatchNorm1d at position 1 \('1'\) has no running statistics"),
    (lambda: nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(5)), ValueError,
     r"BatchNorm1d '1' has 5 features but '0' gives 3"),
    (lambda: nn.Sequential(nn.Linear(4, 3), nn.Flatten()), NotImplementedError,
     r"Flatten at position 1 \('1'\) after a Linear is not supported"),
    (lambda: nn.Sequential(nn.Conv2d(1, 1, 1), nn.MaxPool2d(2, return_indices=True)), NotImplementedError,
     r"MaxPool2d at position 1 \('1'\) with return_indices is not supported"),
    (lambda: nn.Sequential(nn.Linear(4, 3), nn.ELU()), NotImplementedError,
     r"layer ELU at position 1 \('1'\) is not supported by construct\(\)"),
    (lambda: nn.Sequential(nn.ReLU()), ValueError, r"target has no Linear or Conv2d layer"),
    (lambda: nn.Sequential(nn.Conv2d(2, 2, 1, padding=1)), NotImplementedError,
     r"Conv2d '0' has a bias \(or a folded BatchNorm\) and padding \[1, 1\]"),
    (lambda: nn.Linear(4, 3), NotImplementedError, r"target must be an nn.Sequential of .* got Linear"),
    (_DataDependent, NotImplementedError, r"target _DataDependent is not an nn.Sequential and torch.fx cannot trace"),
    (_Exponentiates, NotImplementedError, r"call_function 'exp' at node 'exp' is not supported by construct\(\)"),
    (_TwoInputs, NotImplementedError, r"target takes more than one input \('y'\)"),
])
def test_parse_target_refuses_unsupported_targets(make, error, match):
    with pytest.raises(error, match=match):
        parse_target(make().eval())


def test_a_product_of_two_activations_is_refused_naming_the_node():
    from slth.construction import construct

    with pytest.raises(NotImplementedError, match=r"call_function 'mul' at node 'mul': the product of two activations"):
        construct(_Multiplies().eval(), 0.05)


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


def test_random_module_refuses_a_huge_network(ticket):
    with pytest.raises(ValueError, match=r"the random network has [\d,]+ parameters \(> max_params=1,"):
        ticket.random_module(max_params=1)


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


# -- stream.py: the work dir and the Ray backend --------------------------------------------------------


def test_workdir_of_another_construction_is_refused(tmp_path):
    construct(_mlp(), 0.05, n=4, seed=0, workdir=str(tmp_path))
    with pytest.raises(ValueError, match=r"holds chunks of a different construction .*use a new --workdir"):
        construct(_mlp(), 0.05, n=4, seed=1, workdir=str(tmp_path), resume=True)


def test_workdir_with_chunks_needs_resume(tmp_path):
    first = construct(_mlp(), 0.05, n=4, seed=0, workdir=str(tmp_path))
    with pytest.raises(ValueError, match=r"already holds finished chunks; pass --resume"):
        construct(_mlp(), 0.05, n=4, seed=0, workdir=str(tmp_path))
    again = construct(_mlp(), 0.05, n=4, seed=0, workdir=str(tmp_path), resume=True)
    assert again.digest() == first.digest() and again.run["computed"] == 0


def test_ray_backend_without_ray(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(ImportError, match=r"the ray backend needs Ray: pip install 'slth\[ray\]'"):
        construct(_mlp(), 0.05, n=4, backend="ray")


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
