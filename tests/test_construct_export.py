"""The certified bound of module-replacement tickets, through torch.export.

Hugging Face models cannot be traced by torch.fx, so their tickets are built by module replacement; given example
inputs, ``certified_bound`` exports the target with torch.export, reads the ATen graph with the construction's one
parser (``slth.construction.exported`` normalises it) and propagates each leaf pair's realised kernels through it.
The bound must hold on every input it covers: it is checked against the measured error elementwise.
"""

import inspect

import pytest
import torch
from torch import nn

import slth
from slth.construction import certified_bound
from slth.construction.bound import certified_bound_nd
from slth.construction.exported import linear_t
from slth.construction.target import export_target
from test_construct_modules import _build, bert_config, gpt2_config, llama_config

T = pytest.importorskip("transformers")

EPS = 1e-3
VOCAB = 64


def _ids(batch, length, seed):
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def gpt2():
    target = _build(T.GPT2LMHeadModel, gpt2_config())
    return target, slth.construct(target, eps=EPS, seed=0)


@pytest.fixture(scope="module")
def bert():
    target = _build(T.BertForSequenceClassification, bert_config())
    return target, slth.construct(target, eps=EPS, seed=0)


def _errors(ticket, target, cls, config, ids, output="logits"):
    pruned = ticket.to_module(model=cls(config))
    with torch.no_grad():
        got, want = getattr(pruned(ids), output).double(), getattr(target(ids), output).double()
    return (got - want).abs().reshape(len(ids), -1)


@pytest.fixture(scope="module")
def llama():
    target = _build(T.LlamaForCausalLM, llama_config())
    return target, slth.construct(target, eps=EPS, seed=0)


CLASSES = {"gpt2": (T.GPT2LMHeadModel, gpt2_config), "bert": (T.BertForSequenceClassification, bert_config),
           "llama": (T.LlamaForCausalLM, llama_config)}


@pytest.mark.parametrize("name", ["gpt2", "bert", "llama"])
def test_bound_of_a_transformers_ticket_holds_on_every_input_of_its_shape(name, request):
    """At the example inputs (a point) and over every token sequence of their shape (the box of all ids), the bound
    is finite and at least the measured |ticket - target| of each logit, on many inputs. (Llama: RMSNorm, rotary
    embeddings as x * cos + rotate_half(x) * sin, the SiLU-gated MLP and grouped-query attention's repeated heads.)"""
    target, ticket = request.getfixturevalue(name)
    cls, config = CLASSES[name][0], CLASSES[name][1]()
    assert ticket.replaces_modules
    ids = _ids(1, 6, 3)
    point = certified_bound(ticket, target, example_inputs=(ids,))
    measured = _errors(ticket, target, cls, config, ids)[0].numpy()
    assert point.shape == measured.shape and torch.isfinite(torch.from_numpy(point)).all()
    assert (point >= measured).all(), (point - measured).min()
    box = certified_bound(ticket, target, 0, VOCAB - 1, example_inputs=(ids,))
    assert (box >= point - 1e-9 * abs(point).max()).all()  # a box holds the point
    many = _ids(64, 6, 4)
    errors = torch.cat([_errors(ticket, target, cls, config, many[i:i + 16]) for i in range(0, 64, 16)]).numpy()
    assert (box[None, :] >= errors).all()
    print(name, "bound at a point", point.max(), "over all ids", box.max(), "measured", errors.max())


class TinyLM(nn.Module):
    """Token and (free-parameter) position embeddings, LayerNorm, GELU MLP: shallow enough for a tight bound. Its
    forward branches on a size, so torch.fx cannot trace it (module replacement builds it)."""

    def __init__(self):
        super().__init__()
        self.emb, self.norm = nn.Embedding(16, 8), nn.LayerNorm(8)
        self.pos = nn.Parameter(0.5 * torch.randn(6, 8))
        self.fc, self.out = nn.Linear(8, 12), nn.Linear(12, 16)

    def forward(self, idx):
        h = self.emb(idx)
        if idx.shape[1] > 1:
            h = h + self.pos[: idx.shape[1]]
        return self.out(nn.functional.gelu(self.fc(self.norm(h))))


class TinyGated(nn.Module):
    """RMSNorm (a library-style class), a SiLU-gated MLP (act(gate) * up) and a fixed table multiplied in (as a
    rotary embedding's cos): the elementwise products of the bound's graph, shallow enough to be tight."""

    def __init__(self):
        super().__init__()
        self.emb, self.norm = nn.Embedding(16, 8), LibraryRMSNorm(8)
        self.gate, self.up, self.out = nn.Linear(8, 12), nn.Linear(8, 12), nn.Linear(12, 16)
        self.register_buffer("table", torch.cos(torch.arange(6.0)[:, None] * torch.arange(12.0)[None] / 5))

    def forward(self, idx):
        h = self.norm(self.emb(idx))
        if idx.shape[1] > 1:
            h = nn.functional.silu(self.gate(h)) * self.up(h)
        return self.out(h * self.table[: idx.shape[1]])


class LibraryRMSNorm(nn.Module):
    """weight * x / rms(x), written out as transformers' LlamaRMSNorm is."""

    def __init__(self, d, eps=1e-6):
        super().__init__()
        self.weight, self.variance_epsilon = nn.Parameter(1 + 0.2 * torch.randn(d)), eps

    def forward(self, x):
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon))


@pytest.mark.parametrize("cls", [TinyLM, TinyGated])
def test_a_shallow_models_bound_is_tight_and_holds_on_every_point(cls):
    """Every output's bound at its own input is at least the measured error, and within a small factor of it: the
    realised pairs (embedding, a free parameter's bias units, the norm's diagonal pair, the Linears) are all
    counted, none twice."""
    torch.manual_seed(0)
    target = cls().eval()
    with torch.no_grad():
        target.norm.weight.add_(0.2 * torch.randn(8))
        if getattr(target.norm, "bias", None) is not None:
            target.norm.bias.add_(0.2 * torch.randn(8))
    ticket = slth.construct(target, eps=0.01, seed=0)
    assert ticket.replaces_modules
    ids = torch.randint(0, 16, (32, 6), generator=torch.Generator().manual_seed(1))
    bound = certified_bound(ticket, target, example_inputs=(ids,)).reshape(32, -1)
    with torch.no_grad():
        got = ticket.to_module(model=cls())(ids).double()
        measured = (got - target(ids).double()).abs().reshape(32, -1)
    assert (torch.from_numpy(bound) >= measured).all()
    ratio = float(bound.max() / measured.max())
    print(cls.__name__, "bound", bound.max(), "measured", float(measured.max()), "ratio", ratio)
    assert ratio < 100


def test_the_bound_refuses_a_target_the_ticket_was_not_built_from(gpt2):
    target, ticket = gpt2
    other = _build(T.GPT2LMHeadModel, gpt2_config(), seed=1)
    with pytest.raises(ValueError, match="not the target the ticket was built from"):
        certified_bound(ticket, other, example_inputs=(_ids(1, 4, 0),))


def test_the_bound_of_a_module_ticket_checks_its_box_and_arguments(gpt2):
    target, ticket = gpt2
    ids = _ids(2, 5, 0)
    with pytest.raises(ValueError, match=r"broadcast to the example inputs. shape \(2, 5\)"):
        certified_bound(ticket, target, torch.zeros(3), torch.ones(3), example_inputs=(ids,))
    with pytest.raises(ValueError, match="lo <= hi"):
        certified_bound(ticket, target, 5, 1, example_inputs=(ids,))
    with pytest.raises(ValueError, match="no center, radius"):
        certified_bound(ticket, target, example_inputs=(ids,), input_shape=(5,))
    with pytest.raises(ValueError, match="example_inputs must be a tuple of tensors"):
        certified_bound(ticket, target, example_inputs=[1, 2])
    with pytest.raises(NotImplementedError, match="give example_inputs="):
        certified_bound(ticket, target)


class ReadsALayersBias(nn.Module):
    """Adds a Linear's bias a second time, outside the layer: the ticket realises that bias inside a pair only."""

    def __init__(self):
        super().__init__()
        self.emb, self.fc = nn.Embedding(10, 8), nn.Linear(8, 8)

    def forward(self, idx):
        h = self.fc(self.emb(idx))
        return h + self.fc.bias if idx.shape[1] > 2 else h


def test_a_layers_parameter_used_outside_its_layer_is_refused_by_the_bound():
    torch.manual_seed(0)
    target = ReadsALayersBias().eval()
    ticket = slth.construct(target, eps=0.05, seed=0)
    with pytest.raises(NotImplementedError, match="the constant 'fc.bias' is computed from the weights of a layer "
                                                  "that the ticket realises as a pair"):
        certified_bound(ticket, target, example_inputs=(torch.randint(0, 10, (1, 4)),))


def test_a_traced_ticket_refuses_example_inputs():
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    ticket = slth.construct(net, eps=0.05, seed=0)
    with pytest.raises(ValueError, match="example_inputs is for tickets built by module replacement"):
        certified_bound(ticket, net, example_inputs=(torch.zeros(1, 3),))


def test_exported_graph_is_read_as_torch_level_calls(gpt2):
    """GPT-2's Conv1D (aten.addmm) reads as linear_t, its checks and unused nodes are gone, every parameter is a
    get_attr under its own name, and the mask-building ops read constants only (no op reads the input but the
    embedding's path)."""
    target, _ = gpt2
    exported = export_target(target, (_ids(2, 5, 0),))
    gm = exported.module
    assert exported.shape == (2, 5)
    targets = [n.target for n in gm.graph.nodes if n.op == "call_function"]
    assert linear_t in targets and nn.functional.layer_norm in targets
    assert nn.functional.scaled_dot_product_attention in targets and nn.functional.embedding in targets
    assert not any("assert" in str(t) for t in targets)
    attrs = {n.target for n in gm.graph.nodes if n.op == "get_attr"}
    # the tied table is one parameter: torch.export names it once (here by the head's name)
    assert "transformer.h.0.attn.c_attn.weight" in attrs
    assert len({"transformer.wte.weight", "lm_head.weight"} & attrs) == 1


class Branches(nn.Module):
    """A forward that branches on a size (torch.fx cannot trace it; torch.export can) and takes exp of an
    activation (no op of the construction graph)."""

    def __init__(self):
        super().__init__()
        self.emb, self.fc = nn.Embedding(10, 8), nn.Linear(8, 8)

    def forward(self, idx):
        h = self.fc(self.emb(idx))
        if idx.shape[1] > 2:
            h = h + 1.0
        return torch.exp(h)  # refused


def test_a_refused_op_of_the_exported_graph_names_the_line_of_the_models_code():
    torch.manual_seed(0)
    target = Branches().eval()
    ticket = slth.construct(target, eps=0.05, seed=0)
    assert ticket.replaces_modules
    lines, start = inspect.getsourcelines(Branches.forward)
    line = start + next(i for i, text in enumerate(lines) if "return torch.exp(h)" in text)
    with pytest.raises(NotImplementedError) as info:
        certified_bound(ticket, target, example_inputs=(torch.randint(0, 10, (1, 4)),))
    first = str(info.value).splitlines()[0]
    assert first.startswith("call_function 'exp") and "is not supported" in first, first
    assert f"test_construct_export.py:{line}, the target's own forward]" in first, first
    assert "supported:" in str(info.value)  # the list of supported ops after the first line


class FunctionalEmbedding(nn.Module):
    """F.embedding of a table parameter, on the input reshaped: the ops the exported graphs brought to the parser,
    here on the torch.fx path (a traced target, built from its graph)."""

    def __init__(self):
        super().__init__()
        self.table = nn.Parameter(torch.randn(10, 6))
        self.fc = nn.Linear(6, 3)

    def forward(self, idx):
        return self.fc(nn.functional.embedding(idx.reshape(-1, 4), self.table))


def test_functional_embedding_of_a_reshaped_input_is_built_from_the_fx_graph():
    torch.manual_seed(0)
    target = FunctionalEmbedding().eval()
    ticket = slth.construct(target, eps=0.01, seed=0)
    assert not ticket.replaces_modules and [op["op"] for op in ticket.config["ops"]][:2] == ["reshape", "embedding"]
    ids = torch.randint(0, 10, (8, 4), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        err = (ticket.to_module()(ids) - target(ids)).abs()
    bound = certified_bound_nd(ticket, target, ids.double(), ids.double(), batched=True)  # (8, 4 * 3)
    assert (err.reshape(8, -1).numpy() <= bound + 1e-6).all() and err.max() < 0.1


class DataDependent(nn.Module):
    """Branches on the input's values: neither torch.fx nor torch.export can trace it."""

    def __init__(self):
        super().__init__()
        self.emb, self.fc = nn.Embedding(10, 8), nn.Linear(8, 8)

    def forward(self, idx):
        h = self.emb(idx)
        if idx.sum() > 0:
            h = torch.relu(h)
        return self.fc(h)


def test_a_model_torch_export_cannot_export_is_refused_by_name():
    torch.manual_seed(0)
    target = DataDependent().eval()
    ticket = slth.construct(target, eps=0.05, seed=0)
    with pytest.raises(NotImplementedError, match=r"^torch.export cannot export DataDependent \("):
        certified_bound(ticket, target, example_inputs=(torch.randint(0, 10, (1, 4)),))
