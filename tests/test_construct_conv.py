"""Construction for CNNs and residual nets: conv pairs, BatchNorm folding, pooling, skip paths, errors."""

import numpy as np
import pytest
import torch
from torch import nn

from slth.construction import Ticket, construct
from slth.construction.bound import certified_bound_nd, realised_kernels
from slth.construction.network import LayerLayout, b_rows, bias_tap, layer_tensors
from slth.construction.target import parse_target
from slth.models.zoo import ResNet18, build_target


def randomise_bn(net, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                c = m.num_features
                m.running_mean.copy_(torch.rand(c, generator=g) * 0.4 - 0.2)
                m.running_var.copy_(torch.rand(c, generator=g) * 1.5 + 0.5)
                m.weight.copy_(torch.rand(c, generator=g) + 0.5)
                m.bias.copy_(torch.rand(c, generator=g) * 0.4 - 0.2)
    return net.eval()


def check_pointwise_bound(ticket, net, x, slack=1e-4):
    """Measured |ticket - target| at each x is within the certified bound for the box {x}."""
    module = ticket.to_module()
    with torch.no_grad():
        diff = (module(x) - net(x)).abs().double()
    bound = certified_bound_nd(ticket, net, x, x, batched=True)
    assert (diff.reshape(len(x), -1).numpy() <= bound + slack).all(), (diff.max(), bound.max())
    return float(diff.max())


def masks_times_random(ticket):
    pruned = dict(ticket.to_module().named_parameters())
    rand = dict(ticket.random_module().named_parameters())
    assert set(pruned) == set(rand) == set(ticket.masks)
    for name in pruned:
        assert torch.equal(pruned[name], rand[name] * ticket.masks[name]), name
    assert sum(int(m.sum()) for m in ticket.masks.values()) == ticket.stats["kept_params"]
    assert sum(p.numel() for p in rand.values()) == ticket.stats["random_params"]


def test_conv_pair_shapes_and_block_rows_are_bit_identical():
    lay = LayerLayout(d_in=3, d_out=5, n=4, signed_input=True, bias=True, relu_after=True, kernel=(3, 3),
                      padding=(1, 1))
    t = layer_tensors(7, 2, lay)
    assert t["a.weight"].shape == (3, 8) and t["a.bias"].shape == (4,)
    assert t["b.weight"].shape == (5, 3 * 8 + 4, 3, 3)
    assert np.array_equal(b_rows(7, 2, lay, 2, 4), t["b.weight"][2:4])  # any row block, same bits
    assert bias_tap(lay) == 4  # the centre of a 3x3 kernel
    assert LayerLayout(**lay.to_json()) == lay
    padded = LayerLayout(**dict(lay.to_json(), padding=[2, 1]))  # the parser refuses it; a damaged ticket may not
    with pytest.raises(ValueError, match=r"no kernel tap is inside the image for every output pixel \(kernel \(3, 3\), "
                                         r"padding \(2, 1\)"):
        bias_tap(padded)


def test_conv1d_network_is_within_bound_exact_masks_and_version_3(tmp_path):
    """A 1-D CNN (Conv1d with padding, stride and dilation, BatchNorm1d folded, ReLU, Flatten, Linear) on signed
    inputs, and a traced text model (Embedding, transpose, Conv1d, GELU, mean): each Conv1d is a Conv2d of kernel
    (1, k) between an unsqueeze and a squeeze in the ticket."""
    from slth import ticketfile

    torch.manual_seed(0)
    net = randomise_bn(nn.Sequential(nn.Conv1d(3, 6, 5, padding=2), nn.BatchNorm1d(6), nn.ReLU(),
                                     nn.Conv1d(6, 4, 3, stride=2, dilation=2, bias=False), nn.ReLU(), nn.Flatten(),
                                     nn.Linear(4 * 5, 3)))
    ticket = construct(net, 0.01, seed=0)
    assert [op["op"] for op in ticket.config["ops"]].count("unsqueeze") == 4
    assert ticket.stats["failures"] == 0
    x = torch.rand(16, 3, 14) * 2 - 1
    assert 0 < check_pointwise_bound(ticket, net, x) < 0.1
    masks_times_random(ticket)
    path = ticket.save(tmp_path / "c1.slth")
    assert ticketfile.load(path).format_version == 3
    loaded = Ticket.load(path)
    with torch.no_grad():
        assert torch.equal(loaded.to_module()(x), ticket.to_module()(x))

    class TextCNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.tok = nn.Embedding(9, 6)
            self.conv = nn.Conv1d(6, 5, 3, padding=1)
            self.head = nn.Linear(5, 2)

        def forward(self, idx):
            h = torch.nn.functional.gelu(self.conv(self.tok(idx).transpose(1, 2)))
            return self.head(h.mean(2))

    text = TextCNN().eval()
    with torch.no_grad():
        text.tok.weight.mul_(0.5)
    ticket = construct(text, 0.01, seed=1)
    idx = torch.randint(0, 9, (8, 7), generator=torch.Generator().manual_seed(0))
    assert 0 < check_pointwise_bound(ticket, text, idx) < 0.1
    masks_times_random(ticket)


def test_sequential_cnn_with_batchnorm_and_pools_is_within_bound_and_exact_masks(tmp_path):
    torch.manual_seed(0)
    net = randomise_bn(nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3, stride=2, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.AvgPool2d(2),
        nn.Conv2d(6, 5, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 3)))
    ticket = construct(net, 0.01, seed=1)
    assert ticket.stats["failures"] == 0 and ticket.stats["max_weight_error"] <= 0.01
    assert [lay.conv for lay in ticket.layouts] == [True, True, True, False]
    assert ticket.layouts[0].bias  # the folded BatchNorm's shift
    x = torch.randn(6, 2, 12, 12).clamp(-1, 1)
    diff = check_pointwise_bound(ticket, net, x)
    assert 0 < diff < 0.1
    masks_times_random(ticket)
    loaded = Ticket.load(ticket.save(tmp_path / "cnn.slth"))
    with torch.no_grad():
        assert torch.equal(loaded.to_module()(x), ticket.to_module()(x))
    assert loaded.digest() == ticket.digest()


def test_realised_kernels_match_the_reported_weight_errors():
    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 25, 2)).eval()
    ticket = construct(net, 0.02, seed=0)
    _, specs = parse_target(net)
    for spec, real, reported in zip(specs, realised_kernels(ticket), ticket.stats["max_weight_error_per_layer"]):
        err = (real.pos.numpy() - spec.weight).__abs__().max()
        if real.neg is not None:
            err = max(err, np.abs(real.neg.numpy() + spec.weight).max())
        assert real.bias is not None
        err = max(err, np.abs(real.bias.numpy() - spec.bias).max())
        assert err == pytest.approx(reported, abs=1e-6)


def test_conv_bias_survives_zero_padding_at_the_borders():
    # a conv that is all bias: the target's output is the bias at every pixel, borders included
    conv = nn.Conv2d(3, 2, 5, padding=2)
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.copy_(torch.tensor([0.7, -0.4]))
    net = nn.Sequential(conv).eval()
    ticket = construct(net, 0.001, seed=0, n=14, nonnegative_input=True)  # n from the (zero) weights would be 1
    assert ticket.stats["failures"] == 0
    with torch.no_grad():
        out = ticket.to_module()(torch.rand(2, 3, 9, 9))
    assert torch.allclose(out[:, 0], torch.full_like(out[:, 0], 0.7), atol=1.1e-3)
    assert torch.allclose(out[:, 1], torch.full_like(out[:, 1], -0.4), atol=1.1e-3)
    # only the centre tap of the bias channels is ever kept
    b_mask = ticket.masks["0.b.weight"]
    bias_channels = b_mask[:, 3 * ticket.layouts[0].units :]
    assert bias_channels[:, :, 2, 2].any() and bias_channels.sum() == bias_channels[:, :, 2, 2].sum()


@pytest.mark.parametrize("name, shape", [("lenet5", (1, 28, 28)), ("conv4", (3, 16, 16))])
def test_registry_cnns_construct(name, shape):
    torch.manual_seed(0)
    net = build_target(name, shape, 10, width=0.25 if name == "conv4" else 1.0).eval()
    ticket = construct(net, 0.01, seed=0, nonnegative_input=True)
    assert ticket.stats["failures"] == 0
    x = torch.rand(4, *shape)
    check_pointwise_bound(ticket, net, x[:2])
    with torch.no_grad():
        assert (ticket.to_module()(x).argmax(1) == net(x).argmax(1)).float().mean() >= 0.75


def test_resnet20_skip_paths_with_different_branch_scales():
    torch.manual_seed(0)
    net = randomise_bn(build_target("resnet20", (3, 8, 8), 4, width=0.25))
    with torch.no_grad():
        net.layers[1].conv1.weight.mul_(20)  # this branch must be rescaled: the join gets factors != 1
    ticket = construct(net, 0.01, seed=0, nonnegative_input=True)
    adds = [op for op in ticket.config["ops"] if op["op"] == "add"]
    assert len(adds) == 9
    assert any(op["factors"] != [1.0, 1.0] for op in adds)
    assert max(ticket.stats["layer_scales"]) > 1
    x = torch.rand(3, 3, 8, 8)
    diff = check_pointwise_bound(ticket, net, x)
    assert diff > 0
    masks_times_random(ticket)


def test_resnet18_layout_constructs():
    torch.manual_seed(0)
    net = randomise_bn(ResNet18((3, 32, 32), 5, width=1 / 16))  # ImageNet layout, 4-32 channels
    ticket = construct(net, 0.02, seed=0, n=10)
    ops = ticket.config["ops"]
    assert sum(op["op"] == "add" for op in ops) == 8
    assert sum(op["op"] == "maxpool2d" for op in ops) == 1
    lay0 = ticket.layouts[0]
    assert lay0.kernel == (7, 7) and lay0.stride == (2, 2) and lay0.padding == (3, 3) and lay0.signed_input
    assert sum(lay.kernel == (1, 1) for lay in ticket.layouts) == 3  # projection shortcuts
    x = torch.randn(2, 3, 32, 32).clamp(-1, 1)
    check_pointwise_bound(ticket, net, x[:1])


def test_random_module_refuses_huge_networks():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 36, 2)).eval()
    ticket = construct(net, 0.05, seed=0)
    with pytest.raises(ValueError, match=r"the random network has [\d,]+ parameters \(> max_params=10,"):
        ticket.random_module(max_params=10)
    assert ticket.random_module(max_params=None) is not None


class BNFirst(nn.Module):
    def __init__(self):
        super().__init__()
        self.bn = nn.BatchNorm2d(3)
        self.conv = nn.Conv2d(3, 2, 3)

    def forward(self, x):
        return self.conv(self.bn(x))


class Mul(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 3)

    def forward(self, x):
        return self.fc(x) * x


@pytest.mark.parametrize("net, error, match", [
    (nn.Sequential(nn.Conv2d(4, 4, 3, groups=2)), NotImplementedError,
     r"Conv2d at position 0 \('0'\) has groups=2: grouped/depthwise"),
    (nn.Sequential(nn.Conv2d(4, 4, 3, padding="same")), NotImplementedError,
     r"padding='same', padding_mode='zeros'; only explicit zero padding"),
    (nn.Sequential(nn.Conv2d(2, 2, 1, padding=1)), NotImplementedError,
     r"Conv2d '0' has a bias \(or a folded BatchNorm\) and padding \[1, 1\]"),
    (nn.Sequential(nn.Conv2d(2, 2, 3), nn.Softmax(1)), NotImplementedError, r"Softmax at position 1"),
    (nn.Sequential(nn.Conv2d(2, 2, 3), nn.ReLU(), nn.Conv1d(2, 2, 1)), NotImplementedError,
     r"Conv1d at position 2 .* reads the 4-D output of Conv2d"),
    (nn.Sequential(nn.Conv2d(2, 2, 3), nn.ReLU(), nn.BatchNorm2d(2)), NotImplementedError,
     r"BatchNorm2d at position 2 \('2'\) does not directly follow a Linear/Conv1d/Conv2d"),
    (nn.Sequential(nn.Linear(4, 4), nn.LSTM(4, 4)), NotImplementedError, r"LSTM at position 1"),
    (BNFirst(), NotImplementedError, r"BatchNorm2d at node 'bn' .* does not directly follow"),
    (Mul(), NotImplementedError, r"call_function 'mul' at node 'mul': the product of two activations"),
])
def test_unsupported_layers_name_the_layer(net, error, match):
    with pytest.raises(error, match=match):
        construct(net.eval(), 0.01)


def test_cli_constructs_and_evaluates_a_named_cnn(tmp_path):
    import json

    from typer.testing import CliRunner

    from slth.cli import app

    torch.manual_seed(0)
    net = build_target("conv2", (1, 8, 8), 10, width=0.125).eval()
    model = tmp_path / "conv2.pt"
    torch.save(net.state_dict(), model)
    out, report = tmp_path / "t.slth", tmp_path / "r.json"
    runner = CliRunner()
    r = runner.invoke(app, ["construct", str(model), "--arch", "conv2", "--width", "0.125", "--input-shape", "1,8,8",
                            "--classes", "10", "--eps", "0.01", "--nonnegative-input", "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert "ticket digest" in r.output
    r = runner.invoke(app, ["evaluate", str(out), "--data", "digits", "--target", str(model), "--arch", "conv2",
                            "--width", "0.125", "--json", str(report)])
    assert r.exit_code == 0, r.output
    rec = json.loads(report.read_text())
    assert rec["top1_agreement"] > 0.9 and max(rec["max_weight_error_per_layer"]) <= 0.01
    assert rec["certified_bound"] >= rec["max_logit_diff"]
    r = runner.invoke(app, ["construct", str(model), "--arch", "conv2", "-o", str(out)])
    assert r.exit_code == 2 and "--input-shape" in r.output


# -- refusals, each fails when its check is deleted (formerly tests/test_safety_construction.py) -----------------------


@pytest.mark.parametrize("make, match", [
    (lambda: nn.Sequential(nn.Conv2d(2, 2, 3, padding=1, padding_mode="reflect")),
     r"padding_mode='reflect'; only explicit zero padding"),
    (lambda: nn.Sequential(nn.Conv2d(1, 1, 1), nn.MaxPool2d(2, return_indices=True)),
     r"MaxPool2d at position 1 \('1'\) with return_indices is not supported"),
])
def test_parse_target_refuses_unsupported_conv_layers(make, match):
    from slth.construction.target import parse_target

    with pytest.raises(NotImplementedError, match=match):
        parse_target(make().eval())
