"""Evidence experiments: each --quick path writes a record that slth report renders; planting and the
RedLayer structure match their definitions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from slth.cli import app
from slth.experiments import EXPERIMENTS

MNIST = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "mnist"


def _run(args: list[str], out: Path) -> dict:
    result = CliRunner().invoke(app, [*args, "--quick", "--out", str(out)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return json.loads(out.read_text())


def _renders(tmp_path: Path) -> str:
    from slth.report import generate

    return generate(tmp_path / "res", tmp_path / "results.md", experiments=EXPERIMENTS).read_text()


@pytest.fixture
def res(tmp_path):
    (tmp_path / "res").mkdir()
    return tmp_path / "res"


def test_width_curves_quick(res, tmp_path):
    rec = _run(["experiment", "width-curves", "--threads", "1"], res / "wc.json")
    assert rec["experiment"] == "width-curves" and rec["machine"] and rec["date"] and rec["command"].startswith("slth")
    t = rec["targets"][0]
    assert [p["n"] for p in t["points"]["pensia"]] == [4, 8]
    assert t["points"]["pensia"][1]["weight_error_median"] < t["points"]["pensia"][0]["weight_error_median"]
    assert "## Width" in _renders(tmp_path)


def test_planted_quick(res, tmp_path):
    rec = _run(["experiment", "planted"], res / "planted.json")
    assert rec["experiment"] == "planted"
    for task in rec["tasks"]:
        planted = task["rows"][0]
        assert planted["method"] == "planted ticket" and planted["overlap"] == 1.0
        # the planted mask reproduces the target exactly (MSE ~ 0, or every label right)
        assert planted["metric"] < 1e-8 if task["kind"] == "regression" else planted["metric"] == 1.0
        seekers = task["rows"][1:-1]
        assert sorted({r["density_multiple"] for r in seekers}) == [1.0, 10.0]
        for row in seekers:  # at 1x each layer keeps exactly its planted count, at 10x more
            assert (row["kept"] == planted["kept"]) if row["density_multiple"] == 1 else row["kept"] > planted["kept"]
            assert 0.0 <= row["overlap"] <= 1.0
        assert task["rows"][-1]["method"].startswith("constructed")
    assert "## Planted tickets" in _renders(tmp_path)


def test_construct_vs_learn_quick(res, tmp_path):
    rec = _run(["experiment", "construct-vs-learn", "--threads", "1"], res / "cvl.json")
    from dataclasses import asdict

    from slth.experiments.construct_vs_learn import PRESETS, Settings

    # the record's settings are exactly what ran: asdict of the preset's Settings (tuples as JSON lists)
    assert rec["settings"] == json.loads(json.dumps(asdict(Settings(**PRESETS["quick"])))) and rec["preset"] == "quick"
    rows = {r["row"].split(" (")[0].split(",")[0]: r for r in rec["rows"]}
    assert rows["dense"]["trained_params"] == rows["dense"]["kept_params"] == 64 * 16 + 16 * 10
    assert rows["constructed"]["trained_params"] == 0 and rows["constructed"]["random_params"] > 0
    assert "## Construction vs learning" in _renders(tmp_path)


@pytest.mark.skipif(not MNIST.is_dir(), reason="MNIST files not available")
def test_pensia_exp2_quick(res, tmp_path):
    rec = _run(["experiment", "pensia-exp2", "--data-dir", str(MNIST), "--threads", "1"], res / "exp2.json")
    totals = {r["kind"]: r["total_params"] for r in rec["results"][0]["rows"]}
    assert totals == {"structure-linear": 1_991_420, "structure-relu": 1_991_420, "wide": 1_991_352}  # the paper's
    assert "## Pensia et al. Exp. 2" in _renders(tmp_path)


def test_plant_reproduces_target_and_redlayer_counts():
    from slth.experiments import pensia_exp2 as R
    from slth.experiments import planted as P

    ws, kind = P.toy_target("helix", depth=3)
    net, masks, _ = P.plant(ws, [40, 40], seed=3)
    x, y = P.toy_data("helix", ws, kind, 64, seed=0)
    assert torch.allclose(P.with_masks(net, masks)(x), y, atol=1e-4)
    assert sum(int(m.sum()) for m in masks.values()) == sum(int((w != 0).sum()) for w in ws)
    model, fans = R.build("structure-relu", [400, 120, 84, 10], r=5, seed=0)
    assert R.masked_params(model, fans) == 297_620  # the paper's LeNet5 FC count
    assert R.wide_widths([784, 500, 10], 1_991_420) == [784, 2508, 10]
    # RedLayer hidden index j*r + k holds x_j * expand.weight[k, j]
    layer = R.RedLayer(3, 2, r=2, relu=False)
    with torch.no_grad():
        layer.expand.weight.copy_(torch.tensor([[1.0, 2.0, 3.0], [10.0, 20.0, 30.0]]))
    assert layer.expand(torch.tensor([[1.0, 1.0, 1.0]])).tolist() == [[1.0, 10.0, 2.0, 20.0, 3.0, 30.0]]


def test_variants_quick(res, tmp_path):
    from slth.supermask.methods import METHODS

    rec = _run(["experiment", "variants", "--threads", "1"], res / "variants.json")
    assert rec["experiment"] == "variants" and rec["preset"] == "quick" and rec["settings"]["data"] == "digits"
    pairs = {(m, v) for m in METHODS for v in ("slth", "reference")}
    assert {(r["method"], r["variant"]) for r in rec["runs"]} == pairs
    for r in rec["runs"]:  # each variant trains at its own default learning rate
        assert r["lr"] == METHODS[r["method"]].default_lr(r["variant"])
        assert 0.0 <= r["test_accuracy"] <= 1.0 and r["steps_to_reach"] >= r["steps_per_epoch"]
    text = _renders(tmp_path)
    assert "## Supermask variants" in text and "reference acc. %" in text


def test_a_record_without_its_renderer_is_refused_before_it_is_written(tmp_path):
    from slth.experiments.record import write_record

    with pytest.raises(ValueError, match="a record needs an 'experiment' key naming its renderer"):
        write_record({"settings": {}}, tmp_path / "r" / "record.json")
    assert not (tmp_path / "r").exists()
    assert json.loads(write_record({"experiment": "x"}, tmp_path / "ok.json").read_text()) == {"experiment": "x"}


def test_planting_refuses_unknown_tasks_and_sources_too_small():
    from slth.experiments import planted as P

    with pytest.raises(ValueError, match="unknown toy task 'spiral'; valid: relu, circle, helix"):
        P.toy_target("spiral")
    ws, _ = P.toy_target("helix", depth=3)
    with pytest.raises(ValueError, match=r"the source needs 2 hidden layers for this target, got \[40\]"):
        P.plant(ws, [40], seed=0)
    narrow = ws[0].shape[0] - 1
    with pytest.raises(ValueError, match=rf"source layer 1 \(width {narrow}\) is narrower than the target's"):
        P.plant(ws, [narrow, 40], seed=0)


def test_attach_refuses_an_unknown_method_before_touching_the_model():
    from slth.experiments.masking import attach

    model = torch.nn.Linear(3, 2)
    with pytest.raises(ValueError, match="unknown supermask method 'nope'; valid: edge-popup"):
        attach(model, "nope", {"": 0.5}, seed=0)
    assert all(p.requires_grad for p in model.parameters()) and not hasattr(model, "parametrizations")
