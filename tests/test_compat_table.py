"""The compatibility table in docs/construction.md is benchmarks/compat_table.py's formatting of its stored rows
(benchmarks/compat_table.json), not a hand-edited table; the splice touches only the text between the markers."""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("compat_table", ROOT / "benchmarks" / "compat_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_docs_table_is_the_scripts_output_of_the_stored_rows():
    ct = _script()
    stored = json.loads(ct.ROWS.read_text(encoding="utf-8"))
    doc = ct.DOC.read_text(encoding="utf-8")
    assert ct.block_in(doc) == ct.format_block(stored["rows"], stored["meta"])
    names = [r["model"] for r in stored["rows"]]
    for want in ("GPT2LMHeadModel", "LlamaForCausalLM", "BertForSequenceClassification", "torchvision", "timm",
                 "ResNet-18"):
        assert any(want in n for n in names), want
    for r in stored["rows"]:
        assert [t["eps"] for t in r["construct"]] == list(ct.EPS)


def test_splice_replaces_only_between_the_markers():
    ct = _script()
    text = f"before\n{ct.START}\nold table\n{ct.END}\nafter\n"
    out = ct.splice(text, "new table")
    assert out == f"before\n{ct.START}\nnew table\n{ct.END}\nafter\n"
    assert ct.block_in(out) == "new table"
    for broken in ("no markers", f"{ct.START}\n{ct.START}\n{ct.END}", f"{ct.END}\n{ct.START}", f"{ct.START} only"):
        with pytest.raises(ValueError, match="compat-table"):
            ct.splice(broken, "x")


def test_failures_are_shown_not_hidden():
    ct = _script()
    rows = [{"model": "M", "pattern": "p",
             "construct": [{"eps": 0.01, "error": "NotImplementedError: no"},
                           {"eps": 0.001, "path": "graph", "top1_agreement": 0.5, "random_ratio": 2.0,
                            "kept_ratio": 1.0,
                            "seconds": 1.0, "eps_met": False, "target_accuracy": 0.9}],
             "supermask": {"steps": 2, "loss_first": 1.0, "loss_last": 0.5, "round_trip_identical": False,
                           "seconds": 0.1}}]
    table = ct.format_table(rows)
    assert "failed: NotImplementedError: no" in table and "**differs**" in table and "(eps not met)" in table
    assert table.count("\n") == 3  # header, rule, one line per eps
