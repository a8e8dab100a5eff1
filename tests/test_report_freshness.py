"""slth report marks records whose code changed after their commit (renames followed, refactors listed)."""

import json
import subprocess
from pathlib import Path

import pytest

from slth.experiments import EXPERIMENTS
from slth.report.freshness import check, read_preserving


def _git(repo, *args):
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture
def repo(tmp_path):
    r = tmp_path / "repo"
    (r / "src/pkg/sub").mkdir(parents=True)
    _git(r.parent, "init", "-q", str(r))
    _git(r, "config", "user.email", "t@example.com")
    _git(r, "config", "user.name", "t")
    (r / "src/pkg/a.py").write_text("A = 1\n" * 20)
    (r / "src/pkg/sub/s.py").write_text("S = 1\n" * 20)
    (r / "src/pkg/other.py").write_text("O = 1\n")
    _git(r, "add", "-A")
    _git(r, "commit", "-q", "-m", "first")
    return r


def _commit(repo, message):
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", message)
    return _git(repo, "rev-parse", "HEAD")


def test_unchanged_other_file_and_unknown(repo):
    first = _git(repo, "rev-parse", "--short", "HEAD")
    checkout = (repo, "src/pkg/")
    assert check(first, ("a.py", "sub/"), checkout=checkout).status == "current"
    (repo / "src/pkg/other.py").write_text("O = 2\n")
    _commit(repo, "other only")
    assert check(first, ("a.py", "sub/"), checkout=checkout).status == "current"
    assert check(None, ("a.py",), checkout=checkout).status == "unknown"
    assert check("0123456789abcdef", ("a.py",), checkout=checkout).status == "unknown"
    assert check(first, ("a.py",), checkout=None).status == "unknown"


def test_a_change_makes_the_record_stale_and_names_the_commit(repo):
    first = _git(repo, "rev-parse", "--short", "HEAD")
    (repo / "src/pkg/sub/s.py").write_text("S = 2\n" * 20)
    _commit(repo, "change the sub package")
    result = check(first, ("a.py", "sub/"), checkout=(repo, "src/pkg/"))
    assert result.status == "stale"
    assert any("change the sub package" in c for c in result.changes)


def test_renames_are_followed_and_pure_moves_do_not_count(repo):
    first = _git(repo, "rev-parse", "--short", "HEAD")
    (repo / "src/pkg/a.py").write_text("A = 2\n" + "A = 1\n" * 19)
    _commit(repo, "edit a before its move")
    _git(repo, "mv", "src/pkg/a.py", "src/pkg/b.py")
    _commit(repo, "move a to b")
    result = check(first, ("b.py",), checkout=(repo, "src/pkg/"))
    assert result.status == "stale" and [c.split(" ", 1)[1] for c in result.changes] == ["edit a before its move"]


def test_behaviour_preserving_commits_are_not_counted(repo, tmp_path):
    first = _git(repo, "rev-parse", "--short", "HEAD")
    (repo / "src/pkg/a.py").write_text("A = 1  # same behaviour\n" + "A = 1\n" * 19)
    sha = _commit(repo, "refactor a")
    results = tmp_path / "results"
    results.mkdir()
    (results / "behaviour-preserving-commits.txt").write_text(f"# refactors\n{sha[:10]} comments only\n")
    preserving = read_preserving(results)
    assert check(first, ("a.py",), checkout=(repo, "src/pkg/"), preserving=preserving).status == "current"
    assert check(first, ("a.py",), checkout=(repo, "src/pkg/")).status == "stale"
    (results / "behaviour-preserving-commits.txt").write_text("xyz no hash\n")
    with pytest.raises(ValueError, match="expected"):
        read_preserving(results)


def test_report_marks_stale_and_unchecked_records(tmp_path, monkeypatch):
    """End to end through generate(, experiments=EXPERIMENTS): the marks appear under the records' sections."""
    from slth.report import core, freshness

    results = tmp_path / "results"
    results.mkdir()
    base = {"experiment": "train-run"}
    record = {"method": "dense", "model": "fc", "data": "digits", "width": 1.0, "density": 1.0, "kept_params": 10,
              "params": 10, "epochs_done": 1, "test_accuracy": 0.5, "best_test_accuracy": 0.5, "seconds": 1.0,
              "finished": True, "config": {}, **base}
    (results / "a.json").write_text(json.dumps({**record, "git_commit": "abc1234"}))
    (results / "b.json").write_text(json.dumps(record))
    calls = []

    def fake_check(commit, depends_on, *, checkout, preserving=None):
        calls.append(commit)
        if commit:
            return freshness.Freshness("stale", f"changed after {commit}", ("def5678 a change",))
        return freshness.Freshness("unknown", "no commit")

    monkeypatch.setattr(freshness, "check", fake_check)
    text = core.generate(results, tmp_path / "r.md", experiments=EXPERIMENTS).read_text()
    assert "**Stale** (`a.json`)" in text and "def5678 a change" in text
    assert "**Not checked** (`b.json`)" in text
    assert "0 record(s) match the current code, 1 are stale" in text
    plain = core.generate(results, tmp_path / "r2.md", check_freshness=False, experiments=EXPERIMENTS).read_text()
    assert "Stale" not in plain and "Freshness" not in plain
    assert Path(tmp_path / "r2.md").exists()


def test_a_folder_of_training_runs_is_one_table_with_freshness(tmp_path):
    from slth.report import core

    results = tmp_path / "results"
    runs = results / "runs"
    runs.mkdir(parents=True)
    run = {"method": "edge-popup", "model": "fc", "data": "digits", "width": 1.0, "density": 0.5,
           "target_density": 0.5, "kept_params": 5, "params": 10, "epochs_done": 1, "test_accuracy": 0.9,
           "best_test_accuracy": 0.9, "seconds": 1.0, "finished": True, "config": {},
           "epochs": [{"train_accuracy": 0.8}]}
    (runs / "a.json").write_text(json.dumps(run))
    (runs / "b.json").write_text(json.dumps({**run, "method": "dense", "target_density": 1.0}))
    text = core.generate(results, tmp_path / "r.md", experiments=EXPERIMENTS).read_text()
    assert text.count("## Training runs") == 1 and "| `a` | edge-popup" in text and "| `b` | dense" in text
    assert "**Not current** (`b`, `a`)" in text or "**Not current** (`a`, `b`)" in text
    (runs / "c.json").write_text(json.dumps({"experiment": "planted"}))
    with pytest.raises(core.ReportError, match="only slth train metrics"):
        core.generate(results, tmp_path / "r.md", experiments=EXPERIMENTS)
