"""Safety checks of slth.report: every record that cannot be read or rendered is refused by name."""

from __future__ import annotations

import json

import pytest

from slth.experiments import EXPERIMENTS
from slth.report.core import Context, Record, ReportError, _markdown, detect_kind, load_records, render
from slth.report.freshness import read_preserving

TRAIN_RUN = {"method": "dense", "model": "fc", "config": {}, "test_accuracy": 0.5, "finished": True}


def _ctx(tmp_path):
    return Context(results_dir=tmp_path, out_dir=tmp_path, check_freshness=False)


def test_a_json_file_that_is_no_record(tmp_path):
    with pytest.raises(ReportError, match=r"x\.json: not a record \(no 'experiment' key"):
        detect_kind(tmp_path / "x.json", {"hello": 1})


def test_missing_results_directory(tmp_path):
    with pytest.raises(ReportError, match="results directory does not exist: .*nowhere"):
        load_records(tmp_path / "nowhere")


def test_invalid_json_record(tmp_path):
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(ReportError, match=r"broken\.json: invalid JSON"):
        load_records(tmp_path)


def test_invalid_json_in_a_run_folder(tmp_path):
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "a.json").write_text("[1,")
    with pytest.raises(ReportError, match=r"a\.json: invalid JSON"):
        load_records(tmp_path)


def test_run_folder_with_something_else_than_train_runs(tmp_path):
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "a.json").write_text(json.dumps(TRAIN_RUN))
    (tmp_path / "runs" / "b.json").write_text(json.dumps({"experiment": "planted"}))
    with pytest.raises(ReportError, match=r"b\.json: a results sub-folder holds only slth train metrics files"):
        load_records(tmp_path)


def test_empty_run_folder(tmp_path):
    (tmp_path / "runs").mkdir()
    with pytest.raises(ReportError, match=r"runs: an empty results sub-folder"):
        load_records(tmp_path)


def test_markdown_fragment_must_be_text(tmp_path):
    record = Record(tmp_path / "note.md", "markdown", {"not": "text"})
    with pytest.raises(ReportError, match=r"note\.md: a markdown fragment must be text"):
        _markdown(record, _ctx(tmp_path))


def test_unknown_record_kind(tmp_path):
    record = Record(tmp_path / "x.json", "no-such-experiment", {})
    with pytest.raises(ReportError, match=r"no renderer for kind\(s\) \['no-such-experiment'\]"):
        render([record], _ctx(tmp_path), EXPERIMENTS)


def test_renderer_failure_names_the_record(tmp_path):
    record = Record(tmp_path / "p.json", "planted", {"experiment": "planted"})
    with pytest.raises(ReportError, match=r"p\.json: cannot render as 'planted': KeyError"):
        render([record], _ctx(tmp_path), EXPERIMENTS)


def test_report_linking_a_missing_plot(tmp_path):
    record = Record(tmp_path / "note.md", "markdown", "see ![plot](gone.png)\n")
    with pytest.raises(ReportError, match=r"links plots that do not exist: \['gone\.png'\]"):
        render([record], _ctx(tmp_path), EXPERIMENTS)


@pytest.mark.parametrize("line", ["abc12 too short", "zzzzzzz not hex", "abcdef1"])
def test_malformed_behaviour_preserving_line(tmp_path, line):
    (tmp_path / "behaviour-preserving-commits.txt").write_text("# header\n\n" + line + "\n")
    with pytest.raises(ValueError, match=r"behaviour-preserving-commits\.txt:3: expected '<commit hash"):
        read_preserving(tmp_path)


def test_a_renderers_own_refusal_passes_unwrapped(tmp_path):
    """A ReportError from a renderer (here the fragments' own) reaches the caller as it is, not re-wrapped."""
    record = Record(tmp_path / "note.md", "markdown", {"not": "text"})
    with pytest.raises(ReportError, match=r"note\.md: a markdown fragment must be text") as err:
        render([record], _ctx(tmp_path), EXPERIMENTS)
    assert "cannot render" not in str(err.value)
