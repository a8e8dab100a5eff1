"""Folding norm affines into their readers at construction time (module replacement with example inputs).

Given ``example_inputs``, a module-replacement construction exports the target with torch.export and reads the graph
with the one parser: a LayerNorm / RMSNorm whose output only Linear-like leaves read keeps no affine pair, and each
reader's pair realises W diag(gamma), b + W beta. Checked here: the folds found (and the ones refused: a norm that
also feeds a residual add, a head tied to an embedding, a Linear also called on another value), the ticket's outputs
against the target's, the fold recorded and rebuilt bit for bit, and the certified bound of a folded ticket.
"""

import pytest
import torch
from torch import nn

import slth
from slth.construction import ConstructConfig, Ticket, certified_bound
from test_construct_modules import _build, gpt2_config, llama_config

T = pytest.importorskip("transformers")

EPS = 1e-3
VOCAB = 64


def _ids(batch, length, seed):
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


EXAMPLE = _ids(1, 6, 3)
CLASSES = {"gpt2": (T.GPT2LMHeadModel, gpt2_config), "llama": (T.LlamaForCausalLM, llama_config)}


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def built(request):
    cls, config = CLASSES[request.param]
    target = _build(cls, config())
    folded = slth.construct(target, eps=EPS, seed=0, example_inputs=(EXAMPLE,))
    plain = slth.construct(target, eps=EPS, seed=0, example_inputs=(EXAMPLE,), fold=False)
    return request.param, target, folded, plain


WANT = {
    "gpt2": {f"transformer.h.{i}.{ln}": [f"transformer.h.{i}.{r}"] for i in range(2)
             for ln, r in (("ln_1", "attn.c_attn"), ("ln_2", "mlp.c_fc"))},
    "llama": {**{f"model.layers.{i}.input_layernorm": [f"model.layers.{i}.self_attn.{p}_proj" for p in "qkv"]
                 for i in range(2)},
              **{f"model.layers.{i}.post_attention_layernorm": [f"model.layers.{i}.mlp.{p}_proj"
                                                                 for p in ("gate", "up")] for i in range(2)},
              "model.norm": ["lm_head"]},  # this config's head is not tied: it absorbs the final norm's gamma
}


def _logits(ticket, name, ids):
    cls, config = CLASSES[name]
    with torch.no_grad():
        return ticket.to_module(model=cls(config()))(ids).logits


def test_norms_read_only_by_linears_are_folded_and_the_ticket_stays_close(built):
    """GPT-2: ln_1 -> c_attn and ln_2 -> c_fc fold, ln_f (read by the head tied to wte) does not; Llama: every
    RMSNorm folds into its projections. The folded ticket has one pair less per fold, fewer random weights, and
    matches the target as closely as the unfolded one (eps 1e-3, 64 sequences)."""
    name, target, folded, plain = built
    assert folded.folds == WANT[name] and folded.config["folds"] == WANT[name]
    assert plain.folds == {} and "folds" not in plain.config
    assert len(folded.layouts) == len(plain.layouts) - len(WANT[name])
    assert folded.stats["random_params"] < plain.stats["random_params"]
    assert folded.stats["eps_met"] and plain.stats["eps_met"]
    norms = {leaf.path: leaf for leaf in folded.leaves if leaf.kind in ("layernorm", "rmsnorm")}
    assert all(not norms[n].layers for n in WANT[name])  # no affine pair left
    ids = _ids(64, 12, 5)
    with torch.no_grad():
        want = target(ids).logits.double()
    err_fold = (_logits(folded, name, ids).double() - want).abs().max().item()
    err_plain = (_logits(plain, name, ids).double() - want).abs().max().item()
    assert err_fold < 0.2 and err_plain < 0.2, (err_fold, err_plain)
    module = folded.to_module(model=CLASSES[name][0](CLASSES[name][1]()))
    for norm in WANT[name]:
        assert module.get_submodule(norm).affine is None  # its normalisation alone


def test_a_folded_ticket_is_recorded_and_rebuilt_bit_for_bit(built, tmp_path):
    """The folds are in the ticket's config: saved, loaded and rebuilt in a fresh instance, the ticket computes the
    in-memory ticket's logits bit for bit; without example inputs nothing is folded (and the ticket is the one
    built before folding existed: the same digest as fold=False)."""
    name, target, folded, plain = built
    loaded = Ticket.load(folded.save(tmp_path / "t.slth"))
    assert loaded.digest() == folded.digest() and loaded.folds == folded.folds
    ids = _ids(4, 9, 6)
    assert torch.equal(_logits(loaded, name, ids), _logits(folded, name, ids))
    assert folded.digest() != plain.digest()
    assert slth.construct(target, eps=EPS, seed=0).digest() == plain.digest()


def test_the_bound_of_a_folded_ticket_holds(built):
    """The certified bound reads the folded readers (W diag(gamma)) against the graph: at the example's shape it is
    at least the measured error at the example and, over all token ids of that shape, on 32 sampled inputs."""
    name, target, folded, _ = built
    point = certified_bound(folded, target, example_inputs=(EXAMPLE,))
    with torch.no_grad():
        err = (_logits(folded, name, EXAMPLE).double() - target(EXAMPLE).logits.double()).abs().reshape(-1).numpy()
    assert (point >= err).all()
    box = certified_bound(folded, target, 0, VOCAB - 1, example_inputs=(EXAMPLE,))
    many = _ids(32, 6, 8)
    with torch.no_grad():
        errs = (_logits(folded, name, many).double() - target(many).logits.double()).abs().reshape(32, -1).numpy()
    assert (box[None, :] >= errs).all()


class Block(nn.Module):
    """embedding -> norm -> q (a Linear); ``residual``: the norm's output is also added to q's; ``reuse``: q is also
    called on the embedding; ``tied``: a head whose weight is the embedding's table reads the final norm."""

    def __init__(self, residual=False, reuse=False, tied=False):
        super().__init__()
        self.residual, self.reuse = residual, reuse
        self.emb = nn.Embedding(VOCAB, 16)
        self.norm, self.q, self.ln_f = nn.LayerNorm(16), nn.Linear(16, 16), nn.LayerNorm(16)
        self.head = nn.Linear(16, VOCAB, bias=False)
        if tied:
            self.head.weight = self.emb.weight
        with torch.no_grad():
            for ln in (self.norm, self.ln_f):
                ln.weight.uniform_(0.5, 1.5)
                ln.bias.uniform_(-0.5, 0.5)

    def forward(self, idx):
        h = self.emb(idx)
        z = self.norm(h)
        y = self.q(z)
        if self.residual:
            y = y + z
        if self.reuse:
            y = y + self.q(h)
        return self.head(self.ln_f(torch.relu(y)))


def _folds(model):
    torch.manual_seed(0)
    return slth.construct(model, eps=1e-2, seed=0, construction="modules", example_inputs=(EXAMPLE,)).folds


def test_only_a_norm_read_by_linears_alone_is_folded():
    """norm -> q folds (and ln_f -> an untied head); a norm also added to a residual does not, nor one whose reader is
    also called on another value, nor the final norm of a head tied to the embedding (its weight is the table)."""
    torch.manual_seed(0)
    assert _folds(Block()) == {"norm": ["q"], "ln_f": ["head"]}
    torch.manual_seed(0)
    assert _folds(Block(residual=True)) == {"ln_f": ["head"]}
    torch.manual_seed(0)
    assert _folds(Block(reuse=True)) == {"ln_f": ["head"]}
    torch.manual_seed(0)
    assert _folds(Block(tied=True)) == {"norm": ["q"]}


@pytest.mark.parametrize("kind", ["plain", "residual", "tied"])
def test_folded_or_not_the_ticket_matches_its_target(kind):
    torch.manual_seed(0)
    model = Block(residual=kind == "residual", tied=kind == "tied").eval()
    ticket = slth.construct(model, eps=1e-3, seed=0, construction="modules", example_inputs=(EXAMPLE,))
    ids = _ids(16, 6, 9)
    pruned = ticket.to_module(model=Block(residual=kind == "residual", tied=kind == "tied"))
    with torch.no_grad():
        err = (pruned(ids) - model(ids)).abs().max().item()
    assert err < 0.2, err  # embeddings N(0, 1): logits of |x| up to ~10
    bound = certified_bound(ticket, model, 0, VOCAB - 1, example_inputs=(EXAMPLE,))
    with torch.no_grad():
        errs = (pruned(_ids(16, 6, 2)) - model(_ids(16, 6, 2))).abs().reshape(16, -1)
    assert (bound[None, :] >= errs.double().numpy()).all()


class Rewired(Block):
    """Block's modules, with the norm's output also added after q: not the graph a folded ticket of Block was built
    from."""

    def forward(self, idx):
        z = self.norm(self.emb(idx))
        return self.head(self.ln_f(torch.relu(self.q(z) + z)))


def test_the_bound_refuses_a_graph_in_which_a_folded_norm_has_another_reader():
    torch.manual_seed(0)
    model = Block().eval()
    ticket = slth.construct(model, eps=1e-2, seed=0, construction="modules", example_inputs=(EXAMPLE,))
    assert ticket.folds["norm"] == ["q"]
    other = Rewired().eval()
    other.load_state_dict(model.state_dict())
    with pytest.raises(NotImplementedError, match="folded the affine of 'norm'"):
        certified_bound(ticket, other, example_inputs=(EXAMPLE,))


def test_fold_must_be_a_bool_before_any_work():
    with pytest.raises(ValueError, match="fold must be True or False"):
        ConstructConfig(fold="yes")
    with pytest.raises(ValueError, match="fold must be True or False"):
        slth.construct(Block(), eps=1e-2, construction="modules", example_inputs=(EXAMPLE,), fold=1)


def test_a_target_torch_export_cannot_export_is_built_unfolded_and_says_why():
    """Folding needs the exported graph: when torch.export fails the ticket is built as without example inputs and
    ``stats["folds"]`` says why."""

    class Branchy(Block):
        def forward(self, idx):
            h = self.emb(idx)
            if h.sum() > 0:  # a branch on the input's values: torch.export cannot export it
                h = -h
            return self.head(self.ln_f(self.q(self.norm(h))))

    torch.manual_seed(0)
    model = Branchy().eval()
    ticket = slth.construct(model, eps=1e-2, seed=0, construction="modules", example_inputs=(EXAMPLE,))
    assert ticket.folds == {} and ticket.stats["folds"].startswith("not folded: UntraceableError")


class Attending(nn.Module):
    """embedding -> norm -> MultiheadAttention (self-attention; the residual reads the norm's input): the norm's only
    readers are the attention's input projections, which are not Linear leaves (the attention is replaced whole)."""

    def __init__(self):
        super().__init__()
        self.emb, self.norm = nn.Embedding(VOCAB, 16), nn.LayerNorm(16)
        self.attn = nn.MultiheadAttention(16, 2, batch_first=True)
        self.head = nn.Linear(16, VOCAB)
        with torch.no_grad():
            self.norm.weight.uniform_(0.5, 1.5)

    def forward(self, idx):
        h = self.emb(idx)
        z = self.norm(h)
        return self.head(h + self.attn(z, z, z, need_weights=False)[0])


def test_a_norm_read_by_an_attention_is_not_folded():
    torch.manual_seed(0)
    model = Attending().eval()
    assert _folds(model) == {}


class FreeWeight(nn.Module):
    """A norm read by ``F.linear`` on a free parameter of the model (realised as a constant, not a Linear leaf)."""

    def __init__(self):
        super().__init__()
        self.emb, self.norm, self.head = nn.Embedding(VOCAB, 16), nn.LayerNorm(16), nn.Linear(16, VOCAB)
        self.w = nn.Parameter(torch.randn(16, 16) * 0.3)
        with torch.no_grad():
            self.norm.weight.uniform_(0.5, 1.5)

    def forward(self, idx):
        return self.head(nn.functional.linear(self.norm(self.emb(idx)), self.w))


def test_a_norm_read_by_a_free_parameter_is_not_folded():
    torch.manual_seed(0)
    assert _folds(FreeWeight().eval()) == {}
