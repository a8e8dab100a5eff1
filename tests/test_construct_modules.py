"""Module replacement: models torch.fx cannot trace (Hugging Face transformers) become tickets of their own class.

Each weight-holding leaf of a copy of the model is replaced by its pruned random pair; the ticket rebuilds into a
fresh instance (``to_module(model=fresh)``) whose own ``forward`` and ``generate()`` run over the pruned weights.
"""

import pytest
import torch
from torch import nn

import slth
from slth.construction import Ticket, api, certified_bound, measure
from slth.construction.modules import plan_modules

T = pytest.importorskip("transformers")

EPS = 1e-3
# initializer_range 0.1 (not transformers' 0.02) stands in for a trained model's spread of logits: with 0.02 a tiny
# random model's logits are near-ties almost everywhere, and top-1 agreement then measures the ties


def _jitter_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every norm a non-trivial affine (a fresh model's is the identity, which needs no pair)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name.lower() or ".ln_" in name or name.startswith("transformer.ln_f"):
                p.add_(0.1 * torch.randn(p.shape, generator=g))
    return model


def gpt2_config():
    return T.GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=64, n_positions=32, bos_token_id=0,
                        eos_token_id=0, pad_token_id=0, initializer_range=0.1)


def llama_config():
    return T.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, bos_token_id=0,
                         eos_token_id=0, pad_token_id=0, initializer_range=0.1)


def bert_config():
    return T.BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=64, num_labels=3)


def _build(cls, config, seed=0):
    torch.manual_seed(seed)
    return _jitter_norms(cls(config).eval(), seed)


def _construct(target, tmp_path_factory):
    before = {k: v.clone() for k, v in target.state_dict().items()}
    ticket = slth.construct(target, eps=EPS, seed=0)
    after = target.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)  # unchanged
    path = ticket.save(tmp_path_factory.mktemp("t") / "t.slth")
    loaded = Ticket.load(path)
    assert loaded.digest() == ticket.digest()
    return ticket, loaded


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    target = _build(T.GPT2LMHeadModel, gpt2_config())
    return target, *_construct(target, tmp_path_factory)


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    target = _build(T.LlamaForCausalLM, llama_config())
    return target, *_construct(target, tmp_path_factory)


def _prompts(n=8, length=6, seed=1):
    return torch.randint(1, 64, (n, length), generator=torch.Generator().manual_seed(seed))


def _check_causal_lm(target, ticket, loaded, cls, config):
    assert ticket.replaces_modules and ticket.stats["failures"] == 0 and ticket.stats["max_weight_error"] <= EPS
    fresh = cls(config)  # a different random init: its own weights must not matter
    pruned = loaded.to_module(model=fresh)
    assert type(pruned) is cls and pruned is fresh  # rebuilt in place, as supermask.from_ticket(path, model=)
    x = torch.randint(0, 64, (16, 24), generator=torch.Generator().manual_seed(0))
    m = measure(pruned, target, x)
    assert m["examples"] == 16 * 24
    assert m["max_logit_diff"] < 0.25, m
    assert m["top1_agreement"] >= 0.95, m
    with torch.no_grad():
        want, got = target(x).logits, pruned(x).logits
    top2 = want.topk(2, dim=-1).values
    clear = (top2[..., 0] - top2[..., 1]) > 2 * m["max_logit_diff"]  # no tie within the measured error
    assert clear.float().mean() > 0.3 and (want.argmax(-1) == got.argmax(-1))[clear].all()
    prompts = _prompts()
    with torch.no_grad():
        want = target.generate(prompts, max_new_tokens=8, do_sample=False, pad_token_id=0)
        got = pruned.generate(prompts, max_new_tokens=8, do_sample=False, pad_token_id=0)
    assert got.shape == want.shape
    print("generate: identical continuations", (got == want).all(dim=1).float().mean().item(), m)
    assert (got == want).all(dim=1).float().mean() >= 0.75  # a near-tie of a random tiny model may flip a token
    return pruned


def test_gpt2_ticket_is_a_gpt2_that_generates_like_the_target(gpt2):
    target, ticket, loaded = gpt2
    pruned = _check_causal_lm(target, ticket, loaded, T.GPT2LMHeadModel, gpt2_config())
    kinds = {leaf.path: leaf.kind for leaf in ticket.leaves}
    assert kinds["transformer.h.0.attn.c_attn"] == "conv1d_t" and kinds["transformer.wte"] == "embedding"
    assert kinds["transformer.h.1.ln_2"] == "layernorm" and kinds["lm_head"] == "tied_linear"
    assert sorted(ticket.stats["tied_parameters"][0]) == ["lm_head.weight", "transformer.wte.weight"]
    assert pruned.get_output_embeddings() is pruned.lm_head and pruned.get_input_embeddings() is pruned.transformer.wte


def test_a_tied_head_stays_tied_one_pair_used_at_both_places(gpt2):
    target, ticket, loaded = gpt2
    assert target.lm_head.weight is target.transformer.wte.weight  # the class ties them
    pruned = loaded.to_module(model=T.GPT2LMHeadModel(gpt2_config()))
    assert pruned.lm_head.weight is pruned.transformer.wte.weight  # so does the rebuilt ticket: one pair
    assert pruned.lm_head.embedding is pruned.transformer.wte
    assert not any(name.startswith("lm_head.") for name in loaded.masks)  # no pair of its own
    assert not any(name.startswith("lm_head.") for name, _ in pruned.named_parameters())
    # the head computes x Ê^T with Ê the table the embedding realises (its output for every token)
    h = torch.randn(5, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        table = pruned.transformer.wte(torch.arange(64))
        torch.testing.assert_close(pruned.lm_head(h), h @ table.T, rtol=1e-5, atol=1e-5)
        assert (table - target.transformer.wte.weight).abs().max() <= EPS * 1.0001  # within eps of E
        # the whole rebuilt model: the ticket's outputs, through the tie
        x = torch.randint(0, 64, (4, 10), generator=torch.Generator().manual_seed(1))
        want = pruned.lm_head(pruned.transformer(x).last_hidden_state)
        torch.testing.assert_close(pruned(x).logits, want)
    pruned.tie_weights()  # transformers' own re-tie (head.weight = embedding.weight) keeps it as it is
    assert pruned.lm_head.weight is pruned.transformer.wte.weight and pruned.lm_head.embedding is pruned.transformer.wte
    with pytest.raises(AttributeError, match="a tied head's weight is its embedding pair's"):
        pruned.lm_head.weight = nn.Parameter(torch.zeros(64, 32))
    assert pruned.lm_head.weight is pruned.transformer.wte.weight
    # half the random network an untied head pair would add (n per token instead of 2n per hidden feature)
    wte = next(leaf for leaf in ticket.leaves if leaf.path == "transformer.wte")
    assert ticket.layouts[wte.layers[0]].d_in == 64 and not ticket.layouts[wte.layers[0]].signed_input


def test_a_tied_ticket_refuses_an_untied_fresh_instance(gpt2):
    _, _, loaded = gpt2
    untied = T.GPT2LMHeadModel(T.GPT2Config(**{**gpt2_config().to_dict(), "tie_word_embeddings": False}))
    assert untied.lm_head.weight is not untied.transformer.wte.weight
    before = {k: v.clone() for k, v in untied.state_dict().items()}
    with pytest.raises(ValueError, match="'lm_head' of the model is not tied to 'transformer.wte'"):
        loaded.to_module(model=untied)
    assert all(torch.equal(v, untied.state_dict()[k]) for k, v in before.items())  # refused before any change
    other = T.GPT2LMHeadModel(gpt2_config())
    other.lm_head = nn.Identity()
    with pytest.raises(ValueError, match="'lm_head' of the model is a Identity, the ticket replaces a Linear tied"):
        loaded.to_module(model=other)
    from slth.construction.modules import Leaf

    head = next(leaf for leaf in loaded.leaves if leaf.kind == "tied_linear")  # a damaged ticket: no table built
    with pytest.raises(ValueError, match="'lm_head' is tied to the embedding 'transformer.wte': build that first"):
        Leaf.from_json(head.to_json()).module(loaded.layouts, None)


def test_a_tied_head_with_a_bias_bert_masked_lm(tmp_path_factory):
    target = _build(T.BertForMaskedLM, bert_config())
    assert target.cls.predictions.decoder.weight is target.bert.embeddings.word_embeddings.weight
    ticket, loaded = _construct(target, tmp_path_factory)
    kinds = {leaf.path: leaf.kind for leaf in ticket.leaves}
    assert kinds["cls.predictions.decoder"] == "tied_linear"
    pruned = loaded.to_module(model=T.BertForMaskedLM(bert_config()))
    head = pruned.cls.predictions.decoder
    assert head.weight is pruned.bert.embeddings.word_embeddings.weight and head.bias is not None
    with torch.no_grad():
        torch.testing.assert_close(head.bias(), target.cls.predictions.decoder.bias, rtol=0, atol=EPS * 1.0001)
        x = torch.randint(0, 64, (8, 12), generator=torch.Generator().manual_seed(0))
        want, got = target(x).logits, pruned(x).logits
    assert want.shape == got.shape and (want - got).abs().max() < 0.1
    assert (want.argmax(-1) == got.argmax(-1)).float().mean() >= 0.95
    with pytest.raises(ValueError, match="has bias=False, the ticket's True"):  # a head without its bias
        fresh = T.BertForMaskedLM(bert_config())
        fresh.cls.predictions.decoder.bias = None
        loaded.to_module(model=fresh)


def test_llama_gqa_rmsnorm_ticket_generates_like_the_target(llama):
    target, ticket, loaded = llama
    assert target.config.num_key_value_heads < target.config.num_attention_heads
    _check_causal_lm(target, ticket, loaded, T.LlamaForCausalLM, llama_config())
    kinds = {leaf.path: leaf.kind for leaf in ticket.leaves}
    assert kinds["model.layers.0.input_layernorm"] == "rmsnorm"  # LlamaRMSNorm, by duck typing
    assert kinds["model.layers.1.mlp.gate_proj"] == "linear"


def t5_config(tie: str):
    """"tied": T5's config; "unscaled": tie_word_embeddings=False, which transformers 5 reads as T5 v1.1's (still
    tied, without the d_model**-0.5 scaling of the decoder's output before the head); "untied": the attribute set
    after the config is made, which unties the head and the three embeddings (and keeps the scaling)."""
    config = T.T5Config(vocab_size=64, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=4,
                        relative_attention_num_buckets=8, relative_attention_max_distance=16, dropout_rate=0.0,
                        decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
                        tie_word_embeddings=tie != "unscaled")
    if tie == "untied":
        config.tie_word_embeddings = False
    return config


@pytest.mark.parametrize("tie", ["tied", "unscaled", "untied"])
def test_t5_encoder_decoder_ticket_generates_like_the_target(tie, tmp_path_factory):
    """T5: T5LayerNorm is an RMSNorm by the numerical check (not by its name), relative_attention_bias an Embedding
    read at computed position buckets, shared / encoder.embed_tokens / decoder.embed_tokens one table (one pair)
    and the head tied to it, with and without the decoder output's scaling; untied, a pair per module."""
    target = _build(T.T5ForConditionalGeneration, t5_config(tie))
    assert target.config.scale_decoder_outputs is (tie != "unscaled")
    assert (target.lm_head.weight is target.shared.weight) is (tie != "untied")
    ticket, loaded = _construct(target, tmp_path_factory)
    assert ticket.replaces_modules and ticket.stats["failures"] == 0 and ticket.stats["max_weight_error"] <= EPS
    leaves = {leaf.path: leaf for leaf in ticket.leaves}
    assert leaves["encoder.block.1.layer.1.layer_norm"].kind == "rmsnorm"  # T5LayerNorm
    assert leaves["decoder.final_layer_norm"].options["eps"] == target.config.layer_norm_epsilon
    assert leaves["encoder.block.0.layer.0.SelfAttention.relative_attention_bias"].kind == "embedding"
    fresh = T.T5ForConditionalGeneration(t5_config(tie))
    if tie == "untied":
        assert leaves["lm_head"].kind == "linear" and not leaves["shared"].aliases and not ticket.stats[
            "tied_parameters"] and leaves["decoder.embed_tokens"].kind == "embedding"
    else:
        assert leaves["shared"].aliases == ("encoder.embed_tokens", "decoder.embed_tokens")  # one table, one pair
        assert leaves["lm_head"].kind == "tied_linear" and leaves["lm_head"].options["tie"] == "shared"
    pruned = loaded.to_module(model=fresh).eval()
    assert pruned is fresh
    if tie != "untied":
        assert pruned.lm_head.weight is pruned.shared.weight is pruned.decoder.embed_tokens.weight
    g = torch.Generator().manual_seed(0)
    x, d = torch.randint(2, 64, (16, 12), generator=g), torch.randint(2, 64, (16, 10), generator=g)
    with torch.no_grad():
        want, got = (m(input_ids=x, decoder_input_ids=d).logits for m in (target, pruned))
    err, top1 = (want - got).abs().max().item(), (want.argmax(-1) == got.argmax(-1)).float().mean().item()
    print(f"T5 tie={tie} eps={EPS}: max logit error {err:.4f} (logits up to {want.abs().max():.2f}), top-1 {top1}")
    assert err < 0.03 * want.abs().max() and top1 >= 0.95  # measured: 0.7-1.3 % of the largest logit, top-1 >= 0.98
    with torch.no_grad():
        want = target.generate(x[:8], max_new_tokens=8, do_sample=False)
        got = pruned.generate(x[:8], max_new_tokens=8, do_sample=False)
    assert got.shape == want.shape and (got == want).all(dim=1).float().mean() >= 0.75


def test_t5_encoder_model_ticket_agrees_with_the_target(tmp_path_factory):
    target = _build(T.T5EncoderModel, t5_config("tied"))
    ticket, loaded = _construct(target, tmp_path_factory)
    leaves = {leaf.path: leaf for leaf in ticket.leaves}
    assert leaves["shared"].aliases == ("encoder.embed_tokens",)
    assert leaves["encoder.final_layer_norm"].kind == "rmsnorm"
    pruned = loaded.to_module(model=T.T5EncoderModel(t5_config("tied"))).eval()
    x = torch.randint(2, 64, (16, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want, got = target(input_ids=x).last_hidden_state, pruned(input_ids=x).last_hidden_state
    assert want.shape == got.shape == (16, 12, 32)
    print(f"T5EncoderModel eps={EPS}: max error {(want - got).abs().max():.4f} of {want.abs().max():.2f}")
    assert (want - got).abs().max() < 0.03 * want.abs().max()  # measured at eps 1e-3: 0.034 of 3.6 (0.9 %)


def test_bert_classifier_ticket_agrees_with_the_target(tmp_path_factory):
    target = _build(T.BertForSequenceClassification, bert_config())
    ticket, loaded = _construct(target, tmp_path_factory)
    pruned = loaded.to_module(model=T.BertForSequenceClassification(bert_config()))
    x = torch.randint(0, 64, (32, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want, got = target(x).logits, pruned(x).logits
    assert want.shape == got.shape == (32, 3)
    assert (want - got).abs().max() < 0.05
    assert (want.argmax(-1) == got.argmax(-1)).float().mean() >= 0.95


def test_pruned_weights_are_random_weights_times_masks(gpt2):
    _, ticket, loaded = gpt2
    pruned = loaded.to_module(model=T.GPT2LMHeadModel(gpt2_config()))
    random = loaded.random_module(model=T.GPT2LMHeadModel(gpt2_config()))
    assert set(loaded.masks) <= dict(pruned.named_parameters()).keys()
    for name, mask in loaded.masks.items():
        assert torch.equal(pruned.get_parameter(name), random.get_parameter(name) * mask)
    assert sum(int(m.sum()) for m in loaded.masks.values()) == ticket.stats["kept_params"]
    with pytest.raises(ValueError, match="'transformer.wte' of the model is a EmbeddingLeaf"):
        loaded.to_module(model=pruned)  # not a fresh instance: refused
    random_head = random.lm_head  # the unpruned network is tied too
    assert random_head.weight is random.transformer.wte.weight


def test_to_module_without_a_fresh_instance_is_refused(gpt2):
    _, _, loaded = gpt2
    with pytest.raises(ValueError, match="GPT2LMHeadModel; pass a fresh instance"):
        loaded.to_module()


def test_a_fresh_instance_of_another_shape_is_refused_before_anything_is_built(gpt2):
    _, _, loaded = gpt2
    other = T.GPT2LMHeadModel(T.GPT2Config(n_layer=2, n_embd=16, n_head=4, vocab_size=64, n_positions=32))
    before = {k: v.clone() for k, v in other.state_dict().items()}
    with pytest.raises(ValueError, match="transformer.wte.*shape"):
        loaded.to_module(model=other)
    assert other.state_dict().keys() == before.keys()  # refused before any change
    assert all(torch.equal(v, other.state_dict()[k]) for k, v in before.items())
    with pytest.raises(ValueError, match="has no module 'transformer.h.1"):
        loaded.to_module(model=T.GPT2LMHeadModel(T.GPT2Config(n_layer=1, n_embd=32, n_head=4, vocab_size=64,
                                                                n_positions=32)))


def test_certified_bound_names_the_first_piece_torch_fx_could_not_trace(gpt2):
    target, ticket, _ = gpt2
    assert ticket.config["untraced"].startswith("GPT2Attention 'transformer.h.0.attn'")
    with pytest.raises(NotImplementedError, match="certified_bound needs the traced.*transformer.h.0.attn"):
        certified_bound(ticket, target)


# -- refusals, before any work ----------------------------------------------------------------------------------
class WithLSTM(nn.Module):
    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(4, 8)
        self.rnn = nn.LSTM(8, 8, batch_first=True)

    def forward(self, x):
        return self.rnn(self.inp(x))[0]


class WithPReLU(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.act = nn.PReLU()

    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow: torch.fx cannot trace this model
            x = -x
        return self.act(self.fc(x))


class WithClassToken(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.cls_token = nn.Parameter(torch.randn(1, 4))

    def forward(self, x):
        if x.sum() > 0:
            x = -x
        return self.fc(torch.cat([self.cls_token.expand(len(x), 1, 4), x], dim=1))


class GemmaStyleRMSNorm(nn.Module):
    """Named like an RMSNorm, but scales by (1 + weight): the duck-typing check must refuse it."""

    def __init__(self, d):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(d))
        self.eps = 1e-6

    def forward(self, x):
        return nn.functional.rms_norm(x, (x.shape[-1],), None, self.eps) * (1 + self.weight)


class CenteredNorm(nn.Module):
    """A weight-only LayerNorm (mean subtracted, no bias): not an RMSNorm, whatever its attributes."""

    def __init__(self, d):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.variance_epsilon = 1e-6

    def forward(self, x):
        return self.weight * nn.functional.layer_norm(x, (x.shape[-1],), None, None, self.variance_epsilon)


class ScaleOnly(nn.Module):
    """A learned scale with an epsilon attribute but no normalisation."""

    def __init__(self, d):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = 1e-6

    def forward(self, x):
        return self.weight * x


class IgnoresWeight(nn.Module):
    """rms_norm(x) with a weight of ones it never reads: equal to weight * rms_norm(x) for its own weight only."""

    def __init__(self, d):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = 1e-6

    def forward(self, x):
        return nn.functional.rms_norm(x, (x.shape[-1],), None, self.eps)


class Normaliser(nn.Module):
    """An RMSNorm written out under a name that does not say so (as T5's T5LayerNorm): recognised numerically."""

    def __init__(self, d):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.variance_epsilon = 1e-6

    def forward(self, x):
        return self.weight * (x * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + self.variance_epsilon))


class WithOddNorm(nn.Module):
    def __init__(self, norm=None):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.norm = GemmaStyleRMSNorm(4) if norm is None else norm

    def forward(self, x):
        return self.norm(self.fc(x))


@pytest.fixture
def no_work(monkeypatch):
    """Fails the test if any layer would be solved."""
    def boom(*args, **kwargs):
        raise AssertionError("work started before the refusal")

    monkeypatch.setattr(api, "solve_layers", boom)


@pytest.mark.parametrize("model, name", [(WithLSTM(), "rnn.weight_ih_l0"), (WithPReLU(), "act.weight"),
                                         (WithOddNorm(), "norm.weight"),
                                         (WithOddNorm(CenteredNorm(4)), "norm.weight"),
                                         (WithOddNorm(ScaleOnly(4)), "norm.weight"),
                                         (WithOddNorm(IgnoresWeight(4)), "norm.weight")])
def test_unrealisable_parameters_are_refused_by_full_name_before_any_work(model, name, no_work):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(NotImplementedError, match=f"parameter '{name}'"):
        slth.construct(model, eps=0.01, construction="modules")
    if isinstance(model, WithPReLU):  # untraceable: auto falls back to module replacement, which refuses
        with pytest.raises(NotImplementedError, match=f"parameter '{name}'"):
            slth.construct(model, eps=0.01)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_an_rms_norm_is_recognised_numerically_whatever_its_name():
    target = _jitter_norms(WithOddNorm(Normaliser(4)))
    ticket = slth.construct(target, eps=EPS, construction="modules", seed=0)
    leaf = next(leaf for leaf in ticket.leaves if leaf.path == "norm")
    assert leaf.kind == "rmsnorm" and leaf.options == {"shape": (4,), "eps": 1e-6}
    pruned = ticket.to_module(model=WithOddNorm(Normaliser(4)))
    x = torch.randn(16, 4, generator=torch.Generator().manual_seed(0)) * 3
    with torch.no_grad():
        assert (pruned(x) - target(x)).abs().max() < 0.05


def test_module_replacement_refuses_what_only_the_traced_construction_can_do(gpt2, no_work):
    target, _, _ = gpt2
    with pytest.raises(ValueError, match="input_range.*need the traced construction"):
        slth.construct(target, eps=0.01, input_range=(0, 1))
    with pytest.raises(ValueError, match="unknown construction"):
        slth.construct(target, eps=0.01, construction="trace")
    with pytest.raises(NotImplementedError, match="torch.fx cannot trace"):
        slth.construct(target, eps=0.01, construction="graph")


# -- plain torch models by module replacement -------------------------------------------------------------------
class ConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv1d(3, 4, 3, padding=1)
        self.bn1 = nn.BatchNorm1d(4)
        self.c2 = nn.Conv2d(1, 2, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(2)
        self.ln = nn.LayerNorm(8)
        self.rms = nn.RMSNorm(8)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):  # x: (N, 3, 8)
        h = torch.relu(self.bn1(self.c1(x)))  # (N, 4, 8)
        h = self.bn2(self.c2(h.unsqueeze(1))).mean(1)  # (N, 4, 8)
        return self.fc(self.rms(self.ln(h))).mean(1)


def test_torch_leaves_conv_batchnorm_norms_by_module_replacement():
    torch.manual_seed(0)
    target = _jitter_norms(ConvNet())
    with torch.no_grad():
        for bn in (target.bn1, target.bn2):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
    target.eval()
    ticket = slth.construct(target, eps=EPS, seed=0, construction="modules")
    assert [leaf.kind for leaf in ticket.leaves] == ["conv1d", "batchnorm", "conv2d", "batchnorm", "layernorm",
                                                     "rmsnorm", "linear"]
    pruned = ticket.to_module(model=ConvNet())
    x = torch.randn(64, 3, 8)
    with torch.no_grad():
        assert (pruned(x) - target(x)).abs().max() < 0.02


def test_a_shared_module_instance_is_one_pair_at_both_paths():
    shared = nn.Linear(4, 4)
    model = nn.ModuleDict({"a": shared, "b": shared})
    plan = plan_modules(model)
    assert len(plan.specs) == 1 and plan.leaves[0].aliases == ("b",) and plan.tied == ()


def test_measure_compares_sequence_outputs_position_by_position():
    class Seq(nn.Module):
        def forward(self, x):
            return x

    x = torch.randn(4, 5, 7)
    m = measure(Seq(), Seq(), x)
    assert m["examples"] == 20 and m["top1_agreement"] == 1.0 and m["max_logit_diff"] == 0.0
    y = x.argmax(-1)
    assert measure(Seq(), Seq(), x, y)["target_accuracy"] == 1.0


# -- slth construct DIR (a save_pretrained directory) -----------------------------------------------------------
def test_cli_constructs_a_save_pretrained_directory(tmp_path):
    from typer.testing import CliRunner

    from slth.cli import app

    target = _build(T.GPT2LMHeadModel, gpt2_config())
    target.save_pretrained(tmp_path / "gpt2")
    out = tmp_path / "t.slth"
    r = CliRunner().invoke(app, ["construct", str(tmp_path / "gpt2"), "--eps", "0.01", "-o", str(out)])
    assert r.exit_code == 0, r.output
    ticket = Ticket.load(out)
    assert ticket.config["model"].endswith("GPT2LMHeadModel") and ticket.config["eps"] == 0.01
    pruned = ticket.to_module(model=T.GPT2LMHeadModel(gpt2_config()))
    x = _prompts()
    with torch.no_grad():
        assert (pruned(x).logits - target(x).logits).abs().max() < 0.5
    r = CliRunner().invoke(app, ["evaluate", str(out)])
    assert r.exit_code != 0 and "evaluate it in Python" in str(r.output) + str(r.exception)
    (tmp_path / "empty").mkdir()
    r = CliRunner().invoke(app, ["construct", str(tmp_path / "empty"), "-o", str(tmp_path / "u.slth")])
    assert r.exit_code != 0 and "without config.json" in str(r.output) + str(r.exception)
    assert not (tmp_path / "u.slth").exists()


class Encoder(nn.Module):
    """An nn.TransformerEncoderLayer (its MultiheadAttention called with a causal mask and a padding mask) and a
    sequence-first MultiheadAttention with kdim != embed_dim, behind data-dependent control flow."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(20, 16)
        self.layer = nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0, batch_first=True)
        self.cross = nn.MultiheadAttention(16, 2, kdim=8, vdim=8)
        self.mem = nn.Linear(16, 8)
        self.head = nn.Linear(16, 20)

    def forward(self, idx):
        if idx.sum() < 0:
            idx = -idx
        h = self.emb(idx)
        causal = torch.ones(idx.shape[1], idx.shape[1], dtype=torch.bool).triu(1)  # True = not attended
        h = self.layer(h, src_mask=causal, src_key_padding_mask=idx == 0, is_causal=True)
        m = self.mem(h).transpose(0, 1)
        out, weights = self.cross(h.transpose(0, 1), m, m, need_weights=True)
        return self.head(out.transpose(0, 1) + h), weights


def test_multihead_attention_by_module_replacement():
    torch.manual_seed(0)
    target = _jitter_norms(Encoder()).eval()
    ticket = slth.construct(target, eps=EPS, seed=0)
    kinds = {leaf.path: leaf.kind for leaf in ticket.leaves}
    assert kinds["layer.self_attn"] == "mha" and kinds["cross"] == "mha" and "layer.self_attn.out_proj" not in kinds
    pruned = ticket.to_module(model=Encoder())
    idx = torch.randint(0, 20, (6, 9), generator=torch.Generator().manual_seed(0))
    idx[:, -2:] = 0  # padding
    with torch.no_grad():
        (want, w_want), (got, w_got) = target(idx), pruned(idx)
    assert torch.isfinite(got).all() and (got - want).abs().max() < 0.02
    assert w_got.shape == w_want.shape and (w_got - w_want).abs().max() < 0.01


@pytest.mark.parametrize("module, message", [
    (nn.MultiheadAttention(8, 2, add_bias_kv=True), "add_bias_kv"),
    (nn.Conv2d(4, 4, 3, groups=2), "groups=2"),
    (nn.Conv2d(2, 2, 3, padding="same"), "only explicit zero padding"),
    (nn.Conv2d(2, 2, 3, padding=2), "bias and padding"),
    (nn.BatchNorm1d(4, track_running_stats=False), "no running statistics"),
    (nn.Embedding(5, 4, max_norm=1.0), "max_norm"),
    (nn.LayerNorm((3, 4)), "only the last dimension"),
])
def test_leaves_module_replacement_cannot_realise_are_refused_by_name(module, message, no_work):
    model = nn.ModuleDict({"piece": module, "fc": nn.Linear(4, 4)})
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.5)  # non-trivial norm affines
    with pytest.raises(NotImplementedError, match=message):
        slth.construct(model, eps=0.01, construction="modules")


def test_a_fresh_instance_with_other_options_is_refused():
    target = nn.ModuleDict({"attn": nn.MultiheadAttention(8, 2), "fc": nn.Linear(8, 8)})
    ticket = slth.construct(target, eps=0.05, construction="modules")
    other = nn.ModuleDict({"attn": nn.MultiheadAttention(8, 4), "fc": nn.Linear(8, 8)})
    with pytest.raises(ValueError, match="'attn' of the model has .*'heads': 4"):
        ticket.to_module(model=other)
    assert isinstance(other.attn, nn.MultiheadAttention)  # unchanged
    assert type(ticket.to_module(model=nn.ModuleDict({"attn": nn.MultiheadAttention(8, 2),
                                                      "fc": nn.Linear(8, 8)})).attn).__name__ == "AttentionLeaf"


def test_cli_refuses_arch_with_a_directory(tmp_path):
    from typer.testing import CliRunner

    from slth.cli import app

    (tmp_path / "m").mkdir()
    r = CliRunner().invoke(app, ["construct", str(tmp_path / "m"), "--arch", "4-4", "-o", str(tmp_path / "t.slth")])
    assert r.exit_code != 0 and "--arch is for state_dict files" in str(r.output) + str(r.exception)


def test_a_free_parameter_is_a_constant_realised_by_bias_units(tmp_path):
    torch.manual_seed(0)
    target = WithClassToken().eval()
    ticket = slth.construct(target, eps=EPS, seed=0)  # untraceable: module replacement
    const = [leaf for leaf in ticket.leaves if leaf.kind == "const"]
    assert [(c.path, c.options["shape"]) for c in const] == [("cls_token", (1, 4))]
    fresh = WithClassToken()
    pruned = Ticket.load(ticket.save(tmp_path / "t.slth")).to_module(model=fresh)
    assert "cls_token" in dict(pruned.named_buffers()) and "cls_token" not in dict(pruned.named_parameters())
    assert (pruned.cls_token - target.cls_token).abs().max() <= EPS  # every entry within eps
    x = torch.randn(5, 3, 4)
    with torch.no_grad():
        assert (pruned(x) - target(x)).abs().max() < 0.02
    other = WithClassToken()
    other.cls_token = nn.Parameter(torch.zeros(1, 5))
    with pytest.raises(ValueError, match="parameter 'cls_token' of the model has shape"):
        ticket.to_module(model=other)


def test_module_replacement_uses_the_chunk_runner_and_its_work_dir(tmp_path):
    torch.manual_seed(0)
    target = WithClassToken().eval()
    whole = slth.construct(target, eps=EPS, seed=0)
    chunked = slth.construct(target, eps=EPS, seed=0, chunk_instances=3, workdir=str(tmp_path / "w"))
    assert chunked.run["chunks"] > len(chunked.layouts) and chunked.digest() == whole.digest()
    resumed = slth.construct(target, eps=EPS, seed=0, chunk_instances=3, workdir=str(tmp_path / "w"), resume=True)
    assert resumed.run["computed"] == 0 and resumed.digest() == whole.digest()


class _Small(nn.Module):
    """An embedding, a Linear and a free additive parameter, for the rebuild checks below."""

    def __init__(self, max_norm=None, pos: bool = True):
        super().__init__()
        self.emb = nn.Embedding(10, 4, max_norm=max_norm)
        self.lin = nn.Linear(4, 3)
        if pos:
            self.pos = nn.Parameter(torch.randn(3))

    def forward(self, idx):
        h = self.lin(self.emb(idx))
        return h + self.pos if hasattr(self, "pos") else h


def test_module_replacement_refuses_what_is_not_a_model_or_has_nothing_to_build():
    with pytest.raises(TypeError, match="model must be an nn.Module, got str"):
        plan_modules("not a model")
    with pytest.raises(ValueError, match="no weight-holding module to construct"):
        plan_modules(nn.Sequential(nn.ReLU()))
    from slth.construction.modules import Leaf

    with pytest.raises(ValueError, match="unknown module kind 'lstm' for 'rnn'"):  # a damaged ticket
        Leaf.from_json({"path": "rnn", "kind": "lstm", "layers": [0], "scales": [1.0]})


def test_a_module_ticket_refuses_a_fresh_instance_that_does_not_match():
    torch.manual_seed(0)
    ticket = slth.construct(_Small(), eps=0.05, seed=0, construction="modules")
    with pytest.raises(TypeError, match="model must be an nn.Module .a fresh .*_Small"):
        ticket.to_module(model="not a model")
    with pytest.raises(ValueError, match="the model has no parameter 'pos', which the ticket realises"):
        ticket.to_module(model=_Small(pos=False))
    with pytest.raises(ValueError, match="module 'emb' of the model does not match the ticket"):
        ticket.to_module(model=_Small(max_norm=1.0))
    with pytest.raises(ValueError, match=r"replaced the modules of a \S*_Small and has no construction graph"):
        ticket.graph  # noqa: B018 (the property refuses)
    assert ticket.to_module(model=_Small())(torch.arange(10)).shape == (10, 3)  # a matching instance rebuilds


@pytest.mark.parametrize("cls", ["ViTForImageClassification", "ViTModel"])
def test_vit_ticket_runs_its_own_forward_and_agrees_with_the_target(cls, tmp_path_factory):
    # ViT's forward casts its pixels to patch_embeddings.projection.weight.dtype: a replaced leaf's ``weight`` is
    # its pair's last layer (dtype and device), so the class's own forward runs unchanged
    config = T.ViTConfig(image_size=8, patch_size=4, num_channels=1, hidden_size=16, num_hidden_layers=2,
                         num_attention_heads=2, intermediate_size=32, num_labels=3, initializer_range=0.1)
    target = _build(getattr(T, cls), config)
    ticket, loaded = _construct(target, tmp_path_factory)
    kinds = {leaf.path: leaf.kind for leaf in ticket.leaves}
    assert kinds["vit.embeddings.patch_embeddings.projection".removeprefix("vit." if cls == "ViTModel" else "")] \
        == "conv2d"
    assert kinds["embeddings.cls_token" if cls == "ViTModel" else "vit.embeddings.cls_token"] == "const"
    pruned = loaded.to_module(model=getattr(T, cls)(config))
    projection = (pruned if cls == "ViTModel" else pruned.vit).embeddings.patch_embeddings.projection
    assert projection.weight is projection.b.weight and projection.weight.dtype == torch.float32
    x = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want, got = target(x), pruned(x)
    for key in ("logits",) if cls == "ViTForImageClassification" else ("last_hidden_state", "pooler_output"):
        assert want[key].shape == got[key].shape
        assert (want[key] - got[key]).abs().max() < 0.05, key
    if cls == "ViTForImageClassification":
        assert (want.logits.argmax(-1) == got.logits.argmax(-1)).all()


@pytest.mark.parametrize("construction", ["graph", "modules"])
def test_to_module_draws_the_random_layers_blockwise_bit_for_bit(construction):
    from slth.construction.network import apply_redraws, layer_tensors

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 9), nn.ReLU(), nn.Linear(9, 4))
    ticket = slth.construct(net, eps=0.01, n=4, seed=0, construction=construction)  # n too small: redraws
    assert len(ticket.redraws) > 0
    fresh = (lambda: None) if construction == "graph" else (lambda: nn.Sequential(nn.Linear(6, 9), nn.ReLU(),
                                                                                  nn.Linear(9, 4)))
    for masked in (True, False):
        # the reference: each layer's whole tensors, its redraws replayed, times its mask
        want = {}
        for index, (prefix, layout) in enumerate(zip(ticket._prefixes(), ticket.layouts)):
            tensors = layer_tensors(ticket.seed, index, layout)
            apply_redraws(ticket.seed, index, layout, tensors["b.weight"], ticket.redraws)
            for name, arr in tensors.items():
                value = torch.from_numpy(arr)
                want[f"{prefix}.{name}"] = value * ticket.masks[f"{prefix}.{name}"] if masked else value
        for block in (1, 7, 10**9):  # a row at a time, blocks across a row boundary, whole layers
            got = dict(ticket._fill(masked, None, fresh(), block_values=block).named_parameters())
            assert want.keys() == got.keys()
            assert all(torch.equal(want[k].view(torch.int32), got[k].view(torch.int32)) for k in want)


def test_embedding_and_tied_head_compute_the_pairs_maps_a_block_at_a_time(gpt2, monkeypatch):
    from slth.construction import modules
    from slth.construction.network import EmbeddingPair

    _, _, loaded = gpt2
    pruned = loaded.to_module(model=T.GPT2LMHeadModel(gpt2_config()))
    wte, head = pruned.transformer.wte, pruned.lm_head
    idx = torch.randint(0, 64, (3, 7), generator=torch.Generator().manual_seed(0))
    h = torch.randn(3, 7, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        # the gather is the pair's own map on the one-hot index (the same products, fewer zeros summed)
        torch.testing.assert_close(wte(idx), EmbeddingPair.forward(wte, idx) * wte.factor, rtol=1e-6, atol=1e-6)
        whole = head(h)
        monkeypatch.setattr(modules, "TABLE_BLOCK_VALUES", 1)  # one column of the table at a time
        torch.testing.assert_close(head(h), whole, rtol=1e-5, atol=1e-5)  # torch matmuls of other shapes
        for bad in (-1, 64):  # a negative index would wrap around in a gather: refused like one_hot refuses it
            with pytest.raises(IndexError, match="index out of range: the embedding has 64 entries"):
                wte(torch.tensor([[3, bad]]))


# -- refusals, each fails when its check is deleted (formerly tests/test_safety_construction.py) -----------------------


def test_module_replacement_of_a_model_with_nothing_to_construct():
    norm_only = nn.Sequential(nn.LayerNorm(4)).eval()  # identity affine: no weight a pair would realise
    with pytest.raises(ValueError, match=r"Sequential has no weight to construct \(its norms have identity affines\)"):
        slth.construct(norm_only, 0.05, n=4, construction="modules")
