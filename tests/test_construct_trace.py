"""Tracing ordinary model code (issue 21): the patterns of torchvision's and timm's VisionTransformer written here
(neither library is installed beside the CPU torch), refusals that point into the user's code, and parameters the
construction cannot realise refused before any work.

- torchvision: ``torch._assert`` shape checks, ``n_h = h // p`` and ``x.reshape(n, hidden, n_h * n_w)``, a class
  token ``expand(n, -1, -1)`` + ``torch.cat``, ``nn.MultiheadAttention(..., need_weights=False)`` whose second
  output is unused, an MLP that is an ``nn.Sequential`` subclass.
- timm: ``forward(x, attn_mask=None)``, ``F.layer_norm`` called on the module's own parameters (timm's LayerNorm),
  ``q, k, v = qkv.unbind(0)``, ``F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)``.
Each built ticket is checked like the attention tests: exact masks, measured error <= certified bound and a stated
tolerance, save/load."""

import inspect
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from slth.construction import construct, parse_target
from test_construct_attention import BATCH, EPS, check, seeded, signed

D, HEADS, P, IMG = 8, 2, 4, 8  # 8x8 images, 4x4 patches: 4 tokens + the class token


def _line_of(obj, text: str) -> str:
    """``file:line`` of the first source line of ``obj`` containing ``text``."""
    lines, start = inspect.getsourcelines(obj)
    offset = next(i for i, line in enumerate(lines) if text in line)
    return f"{inspect.getsourcefile(obj)}:{start + offset}"


# -- torchvision's VisionTransformer, its patterns -------------------------------------------------------------
class MLPBlock(nn.Sequential):  # torchvision.ops.MLP: an nn.Sequential subclass, traced through
    def __init__(self):
        super().__init__(nn.Linear(D, 2 * D), nn.GELU(), nn.Dropout(0.0), nn.Linear(2 * D, D), nn.Dropout(0.0))


class EncoderBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.ln_1 = nn.LayerNorm(D, eps=1e-6)
        self.self_attention = nn.MultiheadAttention(D, HEADS, dropout=0.0, batch_first=True)
        self.ln_2 = nn.LayerNorm(D, eps=1e-6)
        self.mlp = MLPBlock()

    def forward(self, input):
        torch._assert(input.dim() == 3, f"Expected (batch_size, seq_length, hidden_dim) got {input.shape}")
        x = self.ln_1(input)
        x, _ = self.self_attention(x, x, x, need_weights=False)
        x = x + input
        return x + self.mlp(self.ln_2(x))


class TorchvisionViT(nn.Module):
    def __init__(self):
        super().__init__()
        self.image_size, self.patch_size, self.hidden_dim = IMG, P, D
        self.conv_proj = nn.Conv2d(3, D, kernel_size=P, stride=P)
        self.class_token = nn.Parameter(torch.zeros(1, 1, D))
        self.pos_embedding = nn.Parameter(torch.empty(1, (IMG // P) ** 2 + 1, D))
        self.layers = nn.Sequential(EncoderBlock())
        self.ln = nn.LayerNorm(D, eps=1e-6)
        self.heads = nn.Sequential(nn.Linear(D, 3))

    def _process_input(self, x):
        n, c, h, w = x.shape
        p = self.patch_size
        torch._assert(h == self.image_size, f"Wrong image height! Expected {self.image_size} but got {h}!")
        torch._assert(w == self.image_size, f"Wrong image width! Expected {self.image_size} but got {w}!")
        n_h = h // p
        n_w = w // p
        x = self.conv_proj(x)
        x = x.reshape(n, self.hidden_dim, n_h * n_w)
        return x.permute(0, 2, 1)

    def forward(self, x):
        x = self._process_input(x)
        n = x.shape[0]
        batch_class_token = self.class_token.expand(n, -1, -1)
        x = torch.cat([batch_class_token, x], dim=1)
        torch._assert(x.dim() == 3, f"Expected (batch_size, seq_length, hidden_dim) got {x.shape}")
        x = self.ln(self.layers(x + self.pos_embedding))
        return self.heads(x[:, 0])


def test_torchvision_vit_patterns(tmp_path):
    net = seeded(TorchvisionViT())
    graph, _ = parse_target(net)
    kinds = [node.kind for node in graph.nodes]
    reshape = next(node for node in graph.nodes if node.kind == "reshape")
    assert reshape.spec == ((0, 0, 1, 1), D, -1)  # n from the image, the hidden size, n_h * n_w left to reshape
    ticket = construct(net, EPS, seed=0)
    x = signed(BATCH, 3, IMG, IMG)
    check(ticket, net, x, 0.15, tmp_path, kinds=("reshape", "expand", "cat", "attention", "getitem"))
    assert "attention" in kinds


class Products(nn.Module):
    """Arithmetic of traced sizes: 2 * x, a product of sizes, and a size used twice."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        n, c, h, w = x.shape
        y = self.conv(x).reshape(n, 4, (h // 2) * (w // 1) * 2)  # == h * w for even h
        z = y.reshape(n * 1, 4, h, w)
        return self.fc(z.flatten(2).transpose(1, 2)).reshape(n, (h * w) * 3)


def test_products_of_sizes_any_image_size(tmp_path):
    net = seeded(Products())
    ticket = construct(net, EPS, seed=0)
    module = ticket.to_module()
    for h, w in ((4, 6), (6, 2)):  # the ticket computes the sizes from its input: any even height
        x = signed(BATCH, 2, h, w)
        with torch.no_grad():
            torch.testing.assert_close(module(x), net(x), rtol=0, atol=0.1)
    check(ticket, net, signed(BATCH, 2, 4, 6), 0.1, tmp_path)


class TwoProducts(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        n, a, b = x.shape
        return self.fc(x).reshape(n, a + 0, b * b)


def test_two_unknown_sizes_are_refused_at_their_line():
    with pytest.raises(NotImplementedError, match="at most one size of a reshape") as info:
        parse_target(seeded(TwoProducts()))
    assert _line_of(TwoProducts.forward, ".reshape(n,") in str(info.value).splitlines()[0]


# -- timm's VisionTransformer, its patterns ----------------------------------------------------------------------
class TimmLayerNorm(nn.LayerNorm):  # timm.layers.LayerNorm: the module's parameters through F.layer_norm
    def forward(self, x):
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)


class TimmAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.num_heads, self.head_dim = HEADS, D // HEADS
        self.qkv = nn.Linear(D, 3 * D)
        self.proj = nn.Linear(D, D)

    def forward(self, x, attn_mask=None):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=0.0)
        x = x.transpose(1, 2).reshape(B, N, C)
        return self.proj(x)


class TimmBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.norm1, self.norm2 = TimmLayerNorm(D, eps=1e-6), TimmLayerNorm(D, eps=1e-6)
        self.attn = TimmAttention()
        self.mlp = nn.Sequential(nn.Linear(D, 2 * D), nn.GELU(), nn.Linear(2 * D, D))

    def forward(self, x, attn_mask=None):
        x = x + self.attn(self.norm1(x), attn_mask=attn_mask)
        return x + self.mlp(self.norm2(x))


class TimmViT(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Conv2d(3, D, P, stride=P)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, D))
        self.pos_embed = nn.Parameter(torch.zeros(1, (IMG // P) ** 2 + 1, D))
        self.blocks = nn.ModuleList([TimmBlock()])
        self.norm = TimmLayerNorm(D, eps=1e-6)
        self.head = nn.Linear(D, 3)

    def forward(self, x, attn_mask=None):
        B, C, H, W = x.shape
        torch._assert(H == IMG, f"Input height ({H}) doesn't match model ({IMG}).")
        x = self.proj(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        for blk in self.blocks:
            x = blk(x, attn_mask=attn_mask)
        return self.head(self.norm(x)[:, 0])


def _norm_affines(net, seed=3):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=g))
                m.bias.copy_((torch.rand(m.bias.shape, generator=g) * 2 - 1) * 0.3)
    return net


def test_timm_vit_patterns(tmp_path):
    net = _norm_affines(seeded(TimmViT()))
    x = signed(BATCH, 3, IMG, IMG)
    ticket = construct(net, EPS, seed=0, example_inputs=(x,))
    kinds = [op["op"] for op in ticket.config["ops"]]
    assert kinds.count("layernorm") == 3 and "attention" in kinds and kinds.count("getitem") >= 3  # unbind: 3 items
    check(ticket, net, x, 0.2, tmp_path, kinds=("layernorm", "attention", "getitem", "cat", "expand"))


def test_functional_layer_norm_folds_like_the_module(tmp_path):
    """``F.layer_norm`` on the module's parameters gives the same graph and layers as ``nn.LayerNorm``."""
    as_function = _norm_affines(seeded(TimmBlock()))
    as_module = TimmBlock()
    as_module.norm1, as_module.norm2 = nn.LayerNorm(D, eps=1e-6), nn.LayerNorm(D, eps=1e-6)
    as_module.load_state_dict(as_function.state_dict())
    (g1, l1), (g2, l2) = parse_target(as_function), parse_target(as_module)
    assert [n.kind for n in g1.nodes] == [n.kind for n in g2.nodes]
    for a, b in zip(l1, l2):
        assert (a.weight == b.weight).all() and (a.bias == b.bias).all()


def test_functional_linear_is_a_layer(tmp_path):
    """``F.linear(x, self.weight, self.bias)`` on the module's parameters: a Linear layer, its LayerNorm folded."""
    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm, self.fc1, self.fc2 = nn.LayerNorm(D), nn.Linear(D, 2 * D), nn.Linear(2 * D, 3, bias=False)

        def forward(self, x):
            h = F.relu(F.linear(self.norm(x), self.fc1.weight, self.fc1.bias))
            return F.linear(h, self.fc2.weight)

    net = _norm_affines(seeded(Functional()))
    _, layers = parse_target(net)
    assert [spec.path for spec in layers] == ["norm+fc1", "fc2"] and layers[0].relu_after
    ticket = construct(net, EPS, seed=0)
    check(ticket, net, signed(BATCH, D), 0.05, tmp_path)


def test_unbind_along_a_negative_dim(tmp_path):
    class Unbinds(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(D, 2 * D)

        def forward(self, x):
            a, b = self.fc(x).reshape(x.shape[0], D, 2).unbind(-1)
            return a + b * 0.5

    net = seeded(Unbinds())
    ticket = construct(net, EPS, seed=0)
    check(ticket, net, signed(BATCH, D), 0.05, tmp_path, kinds=("getitem",))


# -- refusals point into the user's code -------------------------------------------------------------------------
class Exponent(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return torch.exp(self.fc(x))


class Outer(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = nn.Sequential(nn.Linear(4, 4), Exponent())

    def forward(self, x):
        return self.inner(x)


def test_refusal_names_file_line_and_module_on_its_first_line():
    with pytest.raises(NotImplementedError) as info:
        parse_target(Outer())
    first, *rest = str(info.value).splitlines()
    assert "call_function 'exp'" in first and "is not supported by construct()" in first
    assert _line_of(Exponent.forward, "torch.exp") in first
    assert "module 'inner.1'" in first
    assert rest and rest[0].startswith("supported: ")


def test_shape_asserts_and_dead_code_are_dropped():
    class Checks(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.unused = nn.Linear(4, 3), nn.Linear(4, 5)

        def forward(self, x):
            torch._assert(x.shape[-1] == 4, "four features")
            torch._assert(x.dim() >= 2, "batched")
            self.unused(torch.exp(x))  # does not reach the output: dropped, exp included
            return self.fc(x)

    graph, layers = parse_target(Checks())
    assert [n.kind for n in graph.nodes] == ["layer"] and len(layers) == 1


def test_in_place_calls_are_not_dropped():
    """A call that changes its input in place stays in the traced graph even when its result is unused (it is then
    refused, not silently dropped)."""
    class InPlace(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 3)

        def forward(self, x):
            y = self.fc(x)
            y.exp_()
            return y

    with pytest.raises(NotImplementedError, match="'exp_'"):
        parse_target(InPlace())


# -- inputs fixed to None, example inputs ------------------------------------------------------------------------
def test_optional_input_defaulting_to_none_is_fixed():
    class Optional(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 3)

        def forward(self, x, mask=None, *, scale=None):
            if mask is not None:
                x = x * mask
            return self.fc(x) if scale is None else self.fc(x) * scale

    graph, layers = parse_target(Optional())
    assert [n.kind for n in graph.nodes] == ["layer"] and len(layers) == 1


def test_example_inputs_are_checked_before_any_work(tmp_path):
    net = seeded(TorchvisionViT())
    with pytest.raises(ValueError, match=r"example_inputs.*Wrong image height"):
        construct(net, EPS, example_inputs=(signed(1, 3, 12, 12),), workdir=str(tmp_path / "wd"))
    assert not (tmp_path / "wd").exists()
    with pytest.raises(ValueError, match="example_inputs must be a tuple of tensors"):
        construct(net, EPS, example_inputs=[[1.0]])


# -- parameters the construction cannot realise: one error naming them, before any work, nothing written ---------
class WithLSTM(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.rnn = nn.LSTM(4, 3, batch_first=True)

    def forward(self, x):
        out, _ = self.rnn(self.fc(x))
        return out


class WithPReLU(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = nn.Sequential(nn.Linear(4, 4), nn.PReLU(4))
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        return self.head(self.block(x))


class Gain(nn.Module):
    def __init__(self):
        super().__init__()
        self.gain = nn.Parameter(torch.full((4,), 0.5))

    def forward(self, x):
        return x * self.gain


class WithGain(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc, self.scale, self.head = nn.Linear(4, 4), Gain(), nn.Linear(4, 2)

    def forward(self, x):
        return self.head(self.scale(self.fc(x)))


@pytest.mark.parametrize("make, parameter, module", [
    (WithLSTM, "'rnn.weight_ih_l0'", "module 'rnn'"),
    (WithPReLU, "'block.1.weight'", "module 'block.1'"),
    (WithGain, "'scale.gain'", "module 'scale'"),
])
def test_unrealisable_parameters_are_named_before_any_work(make, parameter, module, tmp_path):
    work = tmp_path / "work"
    with pytest.raises(NotImplementedError) as info:
        construct(make().eval(), EPS, workdir=str(work))
    first = str(info.value).splitlines()[0]
    assert parameter in first and module in first and "cannot realise" in first, first
    assert not work.exists()


def test_cli_refuses_an_unrealisable_parameter_and_writes_nothing(tmp_path):
    from typer.testing import CliRunner

    from slth.cli import app

    model = tmp_path / "net.ts"
    torch.jit.save(torch.jit.script(nn.Sequential(nn.Linear(4, 4), nn.PReLU(), nn.Linear(4, 2))), str(model))
    out, work = tmp_path / "new" / "t.slth", tmp_path / "work"
    r = CliRunner().invoke(app, ["construct", str(model), "-o", str(out), "--workdir", str(work)])
    assert r.exit_code == 2, r.output
    assert "'1.weight'" in r.output and "PReLU" in r.output
    assert not out.parent.exists() and not work.exists()


# -- refusals, each fails when its check is deleted (formerly tests/test_safety_construction.py) -----------------------


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


@pytest.mark.parametrize("make, match", [
    (_DataDependent, r"target _DataDependent is not an nn.Sequential and torch.fx cannot trace"),
    (_Exponentiates, r"call_function 'exp' at node 'exp' is not supported by construct\(\)"),
    (_TwoInputs, r"target takes more than one input \('y'\)"),
])
def test_parse_target_refuses_what_it_cannot_trace(make, match):
    with pytest.raises(NotImplementedError, match=match):
        parse_target(make().eval())


# -- traced ops the construction cannot build: each refused by name, pointing at the node ---------------------------
class Traced(nn.Module):
    """A Linear, then ``body(self, y)`` traced by torch.fx; buffers a body may read: an index, attention masks,
    a gain."""

    def __init__(self, body):
        super().__init__()
        self.fc, self.body = nn.Linear(4, 4), body
        self.register_buffer("index", torch.tensor([0, 1]))
        self.register_buffer("mask_3d", torch.zeros(2, 3, 3))
        self.register_buffer("mask_nan", torch.tensor([[0.0, math.nan], [0.0, 0.0]]))
        self.register_buffer("mask_zero", torch.zeros(3, 3))
        self.register_buffer("gain", torch.full((4,), 0.5))

    def forward(self, x):
        return self.body(self, self.fc(x))


@pytest.mark.parametrize("body, match", [
    (lambda s, y: torch.relu(y.size(1)), r"call_function 'relu' \('relu'\) takes a non-tensor argument size"),
    (lambda s, y: y.expand(y.shape), r"'expand' at node 'expand' with size _Shape"),
    (lambda s, y: F.silu(y, inplace=True), r"call_function 'silu' at node 'silu' with \{'inplace': True\}"),
    (lambda s, y: y + True, "add at node 'add' of True"),
    (lambda s, y: y * s.gain, "call_function 'mul' at node 'mul': activations multiplied elementwise by the tensor "
                              "'gain' of the target; only a number factor is supported"),
    (lambda s, y: torch.softmax(y, 0), r"softmax at node 'softmax' over dim 0: only dim=-1 \(the last\)"),
    (lambda s, y: F.scaled_dot_product_attention(y, y, y, dropout_p=0.1),
     "scaled_dot_product_attention at node 'scaled_dot_product_attention' with dropout_p > 0 or enable_gqa"),
    (lambda s, y: y.mean(), r"mean at node 'mean' over every dimension \(give dim\)"),
    (lambda s, y: F.linear(y, y), "linear at node 'linear': its weight and bias must be parameters or constants"),
    (lambda s, y: F.linear(y, s.fc.bias), r"linear at node 'linear': weight 'fc.bias' has shape \(4,\)"),
    (lambda s, y: F.layer_norm(y, (4,), weight=y[0]),
     "layer_norm at node 'layer_norm': its weight must be a parameter or constant of the target"),
    (lambda s, y: y[:, : y.size(1)], "indexing at node 'getitem' with a non-constant slice"),
    (lambda s, y: y[s.index], r"indexing at node 'getitem' with index \(only ints, slices, None and \.\.\.\)"),
    (lambda s, y: F.scaled_dot_product_attention(y, y, y, attn_mask=s.mask_3d),
     "the mask must be a constant 2-D tensor"),
    (lambda s, y: F.scaled_dot_product_attention(y, y, y, attn_mask=s.mask_nan), r"the mask has NaN or \+inf entries"),
    (lambda s, y: F.scaled_dot_product_attention(y, y, y, attn_mask=s.mask_zero, is_causal=True),
     "is_causal=True with a mask that is not the causal mask"),
])
def test_unsupported_traced_ops_are_refused_by_name(body, match):
    with pytest.raises(NotImplementedError, match=match) as info:
        parse_target(Traced(body).eval())
    assert "test_construct_trace.py:" in str(info.value).splitlines()[0]  # points at the line of the body
