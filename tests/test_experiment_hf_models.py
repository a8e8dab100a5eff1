"""``slth experiment hf-models``: the tiny run writes a record with every field and renders its section; the goal
lines say met / not met from the numbers; bad options fail before any work."""

import json

import pytest
from typer.testing import CliRunner

from slth.cli import app
from slth.experiments import EXPERIMENTS
from slth.experiments import hf_models as H

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    res = tmp_path_factory.mktemp("res")
    out = res / "hf_models.json"
    result = CliRunner().invoke(app, ["experiment", "hf-models", "--quick", "--models", "gpt2,bert", "--out", str(out)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return res, json.loads(out.read_text())


def test_quick_record_has_the_fields(quick):
    _, rec = quick
    assert rec["experiment"] == "hf-models" and "hf-models" in EXPERIMENTS
    assert rec["machine"] and rec["date"] and rec["git_commit"] and rec["command"].startswith("slth")
    gpt2, bert = rec["models"]
    assert gpt2["class"] == "GPT2LMHeadModel" and bert["class"] == "BertForSequenceClassification"
    assert rec["text_data"]["unigram_perplexity"] > 1 and gpt2["train"]["steps"] == 20
    for m in rec["models"]:
        assert [t["eps"] for t in m["tickets"]] == [0.01, 0.001, 0.001]  # and a closest-subsets ticket at 1e-3
        assert [t["subsets"] for t in m["tickets"]] == ["fewest", "fewest", "closest"]
        fewest, closest = m["tickets"][1:]
        assert closest["random_params"] == fewest["random_params"]  # the same random network (n from eps)
        assert closest["kept_params"] > fewest["kept_params"] and closest["max_weight_error"] <= fewest["eps"]
        assert closest["weight_error_median"] < fewest["weight_error_median"] / 2
        for t in m["tickets"]:
            assert t["random_params"] > t["kept_params"] > 0 and t["eps_met"] and t["max_weight_error"] <= t["eps"]
            assert t["random_ratio"] == t["random_params"] / t["target_params"] and 0 <= t["top1_agreement"] <= 1
    for t in gpt2["tickets"]:
        assert t["perplexity_ratio"] == pytest.approx(t["ticket_perplexity"] / t["target_perplexity"])
        assert t["prompts"] == 4 and 0 <= t["generate_identical"] <= 4 and t["new_tokens"] == 8
        assert len(t["divergences"]) == t["prompts"] - t["generate_identical"]
        assert t["positions"] == 64 * 24
    assert all(t["examples"] == 360 for t in bert["tickets"])


def test_quick_record_renders(quick, tmp_path):
    from slth.report import generate

    res, rec = quick
    text = generate(res, tmp_path / "results.md", experiments=EXPERIMENTS).read_text()
    section = text[text.index("## Downloaded model classes"):]
    for part in ("### Causal language models", "### BERT sequence classification", "### Goals", "GPT2LMHeadModel",
                 rec["git_commit"]):
        assert part in section
    assert section.count("goal within 1 %") == 2 and "generate()` of 8 tokens" in section
    assert "GPT2LMHeadModel (closest subsets), eps 0.001: ticket perplexity" in section
    assert "| 0.001 closest |" in section


def _lm(agreement, ratio, identical):
    return {"class": "GPT2LMHeadModel", "tickets": [
        {"eps": 1e-3, "perplexity_ratio": ratio, "ticket_perplexity": 2 * ratio, "target_perplexity": 2.0,
         "top1_agreement": agreement, "positions": 100, "new_tokens": 64, "generate_identical": identical,
         "prompts": 50, "generate_identical_share": identical / 50}]}


def test_goal_lines_follow_the_numbers():
    met = H.goal_lines([_lm(0.996, 1.009, 45)])
    assert len(met) == 3 and all("**met**" in line for line in met)
    missed = H.goal_lines([_lm(0.994, 1.011, 44)])
    assert len(missed) == 3 and all("**not met**" in line for line in missed)
    assert "not met" not in H.goal_lines([_lm(0.999, 0.991, 50)])[0]  # within 1 % either way
    bert = {"class": "BertForSequenceClassification", "tickets": [{"eps": 1e-3, "top1_agreement": 0.99,
                                                                  "examples": 360}]}
    assert "**not met**" in H.goal_lines([bert])[0]
    assert "not measured" in H.goal_lines([{"class": "X", "tickets": [{"eps": 1e-2}]}])[0]
    both = _lm(0.994, 1.001, 44)
    both["tickets"].append({**both["tickets"][0], "top1_agreement": 0.999, "generate_identical": 48,
                            "generate_identical_share": 0.96, "subsets": "closest"})
    lines = H.goal_lines([both])  # one verdict per ticket at the goal eps, the closest one labelled
    assert len(lines) == 6 and all("closest" not in line for line in lines[:3])
    assert all(line.startswith("* GPT2LMHeadModel (closest subsets), eps 0.001") for line in lines[3:])
    assert "**not met**" in lines[1] and "**met**" in lines[4] and "**met**" in lines[5]


def test_bad_options_fail_before_any_work(tmp_path):
    out = tmp_path / "r.json"
    runner = CliRunner()
    result = runner.invoke(app, ["experiment", "hf-models", "--context", "16", "--prompt-tokens", "8",
                                 "--new-tokens", "16", "--out", str(out)])
    assert result.exit_code != 0 and "--prompt-tokens" in result.output and not out.exists()
    result = runner.invoke(app, ["experiment", "hf-models", "--models", "gpt2,t5", "--out", str(out)])
    assert result.exit_code != 0 and "t5" in result.output and not out.exists()
    result = runner.invoke(app, ["experiment", "hf-models", "--eps", "0.5,2", "--out", str(out)])
    assert result.exit_code != 0 and "--eps" in result.output and not out.exists()
    result = runner.invoke(app, ["experiment", "hf-models", "--quick", "--models", "bert", "--closest-eps", "0.001,1.5",
                                 "--out", str(out)])  # --quick: without the check this would run (and pass) quickly
    assert result.exit_code != 0 and "--closest-eps needs values in (0, 1)" in result.output and not out.exists()


def test_below_the_goal_eps_is_reported_without_a_verdict():
    lm = _lm(0.999, 1.0001, 49)
    lm["tickets"].append({**lm["tickets"][0], "eps": 1e-4, "random_ratio": 40.0, "kept_ratio": 8.0, "seconds": 3.0})
    lm["tickets"][0].update(random_ratio=30.0, kept_ratio=5.0, seconds=2.0)
    lines = H.beyond_lines([lm])
    assert len(lines) == 1 and "eps 0.0001" in lines[0] and "49 / 50" in lines[0] and "met" not in lines[0]
    assert len(H.goal_lines([lm])) == 3  # the goals stay at eps 1e-3
