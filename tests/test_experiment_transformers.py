"""``slth experiment transformers``: the tiny end-to-end run writes a record with every field and renders; the
computed sizes equal the built ones; the attention constructions come from one place; bad options fail early."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from slth.cli import app
from slth.experiments import EXPERIMENTS
from slth.experiments import transformers as T

TICKET_KEYS = {"construction", "eps", "target_accuracy", "ticket_accuracy", "top1_agreement", "max_logit_diff",
               "target_params", "random_params", "kept_params", "random_ratio", "kept_ratio", "seconds",
               "compile_seconds", "n_per_layer", "eps_met"}


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    res = tmp_path_factory.mktemp("res")
    out = res / "transformers.json"
    result = CliRunner().invoke(app, ["experiment", "transformers", "--quick", "--threads", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return res, json.loads(out.read_text())


def test_quick_record_has_the_fields(quick):
    _, rec = quick
    assert rec["experiment"] == "transformers" and "transformers" in EXPERIMENTS
    assert rec["machine"] and rec["date"] and rec["git_commit"] and rec["command"].startswith("slth")
    assert rec["attentions"] == list(T.attentions()) and rec["constructions"] == list(T.constructions())
    vit = rec["vit"][0]
    assert vit["data"] == "digits" and vit["input_range"][0] >= 0 and vit["train"]["model_params"] > 0
    pensia = next(t for t in vit["tickets"] if t["construction"] == "pensia")
    assert TICKET_KEYS <= set(pensia)
    assert pensia["random_params"] > pensia["kept_params"] > 0 and pensia["eps_met"]
    assert pensia["random_ratio"] == pensia["random_params"] / pensia["target_params"]
    assert 0 <= pensia["top1_agreement"] <= 1 and pensia["test_examples"] == 200
    malach = [t for t in vit["tickets"] if t["construction"] == "malach"]
    assert malach and all("ticket_accuracy" in t or "skipped" in t for t in malach)
    sweep = vit["width_vs_eps"]
    assert {(r["construction"], r["eps"]) for r in sweep} == {(c, e) for c in rec["constructions"] for e in (0.1, 0.01)}
    assert {r["source"] for r in sweep} <= {"built", "computed from the required n"}
    by = {(r["construction"], r["eps"]): r["width_factor"] for r in sweep}
    assert by[("malach", 0.01)] > by[("malach", 0.1)] > by[("pensia", 0.1)]  # polynomial vs logarithmic
    gpt = rec["gpt"]
    assert gpt["test_windows"] == 200 and gpt["train"]["test_perplexity"] > 1
    for t in gpt["tickets"]:
        if "ticket_perplexity" in t:
            assert t["perplexity_ratio"] == pytest.approx(t["ticket_perplexity"] / t["target_perplexity"])
            assert 0 <= t["top1_agreement"] <= 1 and t["positions"] == 200 * 8
    assert rec["learned"]["name"] == "fmnist-vit-{method}-w{width}.json"


def test_quick_record_renders(quick, tmp_path):
    from slth.report import generate

    res, _ = quick
    text = generate(res, tmp_path / "results.md", experiments=EXPERIMENTS).read_text()
    section = text[text.index("## Transformers"):]
    for heading in ("### ViT on digits", "### Width factor needed vs eps", "### char-GPT", "### Goals"):
        assert heading in section
    assert (res / "transformers.png").is_file()


def test_construction_vs_learning_reads_the_learned_runs(quick, tmp_path):
    """With a Fashion-MNIST ViT in the record, the learned runs are read at report time ('not run yet' if absent)."""
    from slth.report.core import Context, Record

    _, rec = quick
    rec = json.loads(json.dumps(rec))
    rec["vit"][0]["data"] = "fashion-mnist"
    res = tmp_path / "res"
    (res / T.LEARNED_DIR).mkdir(parents=True)
    run = {"method": "edge-popup", "model": "vit", "data": "fashion-mnist", "test_accuracy": 0.8123, "params": 2000,
           "kept_params": 1000, "trainable_params": 2000, "seconds": 12.0, "epochs_done": 15}
    (res / T.LEARNED_DIR / "fmnist-vit-edge-popup-w2.json").write_text(json.dumps(run))
    ctx = Context(results_dir=res, out_dir=tmp_path, check_freshness=False)
    text = T.render(Record(res / "transformers.json", "transformers", rec), ctx)
    part = text[text.index("### Construction vs learning"):]
    assert "| learned: edge-popup, width 2 | 81.23 |" in part
    assert "| learned: dense, width 1 | not run yet |" in part
    assert "constructed: Pensia pairs, eps 0.01" in part


def test_plan_size_equals_the_built_tickets():
    from slth.construction import construct
    from slth.models import build_model

    torch.manual_seed(0)
    net = build_model("vit", (1, 8, 8), 3, patch=4, dim=8, depth=1, heads=2).eval()
    for method, eps in (("malach", 0.1), ("pensia", 0.01)):
        size = T.plan_size(net, eps, method, nonnegative_input=True)
        stats = construct(net, eps, method=method, nonnegative_input=True).stats
        assert size["n_per_layer"] == stats["n_per_layer"]
        assert size["random_params"] == stats["random_params"] and size["target_params"] == stats["target_params"]


def test_attention_constructions_come_from_the_api(monkeypatch):
    from slth.construction import target

    assert T.attentions() == target.ATTENTION_MODES
    assert T.constructions() == ("pensia", "product", "malach")
    monkeypatch.setattr(target, "ATTENTION_MODES", ("projection",))
    assert T.constructions() == ("pensia", "malach")
    assert T.construct_kwargs("product") == {"method": "pensia", "attention": "product"}
    with pytest.raises(ValueError, match="unknown construction"):
        T.construct_kwargs("bogus")



def test_run_refuses_unknown_constructions_before_any_work():
    with pytest.raises(ValueError, match=r"unknown or unavailable construction\(s\) bogus; available here: pensia"):
        T.run([], vit_args={}, vit_epochs=1, eps_values=[0.1], sweep_eps=[], constructions_=["pensia", "bogus"],
              gpt=False, gpt_args={}, gpt_data_args={}, gpt_epochs=1, gpt_eps=[], seed=0, max_random_params=1,
              test_size=0)


def test_vit_run_refuses_inputs_outside_the_unit_box(monkeypatch):
    """nonnegative_input=True certifies [0, 1] inputs only: a data set reaching outside is refused before training."""
    from types import SimpleNamespace

    import slth.data

    box = SimpleNamespace(x_train=torch.tensor([-0.5, 1.0]), x_test=torch.zeros(2), y_test=torch.zeros(2))
    monkeypatch.setattr(slth.data, "load_dataset", lambda name, data_dir=None, **options: box)
    with pytest.raises(ValueError, match=r"wide-box: inputs in \[-0.5, 1.0\], expected \[0, 1\]"):
        T.run_vit("wide-box", None, model_args={}, epochs=1, eps_values=[0.1], sweep_eps=[], constructions_=["pensia"],
                  seed=0, max_random_params=1, test_size=0, lr=None, sweep=False)


BAD = [
    (["--constructions", "pensia,bogus"], "unknown --constructions bogus"),
    (["--vit-data", "mnist"], "needs --data-root"),
    (["--vit-data", "cifar10"], "unknown --vit-data cifar10"),
    (["--vit-args", "patchh=7", "--vit-data", "digits"], "patchh"),
    (["--vit-args", "patch", "--vit-data", "digits"], "KEY=VALUE"),
    (["--eps", "0.01,2", "--vit-data", "digits"], "(0, 1)"),
    (["--vit-epochs", "0", "--vit-data", "digits"], "--vit-epochs must be >= 1"),
    (["--gpt-epochs", "0", "--vit-data", "digits"], "--gpt-epochs must be >= 1"),
    (["--vit-args", "patch=4,patch=3", "--vit-data", "digits"], "--vit-args: 'patch' given twice"),
    (["--eps", " , ", "--vit-data", "digits"], "--eps is empty"),
    (["--test-size", "-1", "--vit-data", "digits"], "must be >= 0"),
    (["--max-random-params", "0", "--vit-data", "digits"], "--max-random-params"),
    # an unused bad value (--no-gpt) is still refused up front; without the check the ViT (patch 3 on 8x8) would fail
    (["--gpt-data-args", "context=abc", "--no-gpt", "--vit-args", "patch=3", "--vit-data", "digits"], "context='abc'"),
]


@pytest.mark.parametrize("args, message", BAD)
def test_bad_options_fail_before_the_work(tmp_path, args, message):
    out = tmp_path / "t.json"
    result = CliRunner().invoke(app, ["experiment", "transformers", *args, "--out", str(out)])
    assert result.exit_code == 2 and "error: " in result.output and message in result.output, result.output
    assert not out.exists()


def test_a_bad_option_is_one_line_on_the_command_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "slth", "experiment", "transformers", "--constructions", "bogus",
                        "--out", str(tmp_path / "t.json")], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "unknown --constructions bogus" in lines[0]


def test_command_line_shows_dir_for_data_folders():
    from slth.cli._settings import command_with_dir as _command_with_dir

    cmd = _command_with_dir(["experiment", "transformers", "--data-root", "/secret/data", "--vit-epochs", "2"],
                            ("--data-root",))
    assert cmd == "slth experiment transformers --data-root DIR --vit-epochs 2"
    assert _command_with_dir(["--data-root=/x"], ("--data-root",)) == "slth --data-root=DIR"


MNIST = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "mnist"


@pytest.mark.skipif(not MNIST.is_dir(), reason="MNIST files not available")
def test_mnist_inputs_are_in_the_unit_box():
    """The ViT is trained on unnormalised [0, 1] images, so nonnegative_input=True is the right input box."""
    from slth.data import load_dataset

    ds = load_dataset("mnist", MNIST)
    assert float(ds.x_train.min()) == 0.0 and float(ds.x_train.max()) == 1.0


def test_ratios_share_the_targets_own_weight_count(quick, tmp_path):
    """Product attention counts its merged maps as its target params; the section's ratios all use the model's own
    weight count (the per-projection constructions'), so the constructions compare on one scale."""
    from slth.report.core import Context, Record

    _, rec = quick
    if "product" not in rec["constructions"]:
        pytest.skip("no product attention in this slth.construct")
    tickets = {t["construction"]: t for t in rec["vit"][0]["tickets"]}
    base, product = tickets["pensia"]["target_params"], tickets["product"]
    ctx = Context(results_dir=tmp_path, out_dir=tmp_path, check_freshness=False)
    text = T.render(Record(tmp_path / "transformers.json", "transformers", rec), ctx)
    row = next(line for line in text.splitlines() if line.startswith("| product attention | 0.01 |"))
    assert f"{product['random_params']:,} ({product['random_params'] / base:.1f}x)" in row
