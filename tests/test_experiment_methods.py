"""``slth experiment methods``: the comparison runs end to end, resumes cell by cell, refuses cells computed with
other settings, and decides the 1-pp rule and the papers' claims by their stated rules (hand-made records)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from slth._names import METHOD_NAMES
from slth.cli import app
from slth.experiments import EXPERIMENTS
from slth.experiments import methods as M


def _invoke(*args) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["experiment", "methods", *map(str, args)], terminal_width=200)
    return result.exit_code, result.output + ("" if result.exception is None or result.exit_code == 0
                                              else repr(result.exception))


def test_methods_quick_runs_resumes_in_parallel_and_renders(tmp_path):
    from slth.report import generate

    res, work = tmp_path / "res", tmp_path / "cells"
    res.mkdir()
    code, out = _invoke("--quick", "--out", res / "methods.json", "--work-dir", work, "--threads", "1")
    assert code == 0, out
    rec = json.loads((res / "methods.json").read_text())
    assert rec["experiment"] == "methods" and rec["preset"] == "quick" and rec["cells_run"] == 3
    arms = {(r["cell"]["arm"], r["cell"]["density"]) for r in rec["cells"]}
    assert arms == {("dense", 1.0), ("edge-popup", 0.5), ("edge-popup", 0.1)}
    for r in rec["cells"]:  # each cell: its measured kept fraction, provenance, the method's own defaults
        assert r["git_commit"] and r["machine"] and r["cpu_seconds"] > 0 and r["test_size"] == 200
        want = r["cell"]["density"]
        assert r["kept_fraction"] == pytest.approx(want, abs=2e-3)
        assert (work / r["file"]).is_file()
    assert rec["git_commit"] == rec["cells"][0]["git_commit"]
    ep = next(r for r in rec["cells"] if r["cell"]["arm"] == "edge-popup")
    assert (ep["train"]["lr"], ep["train"]["init"]) == (1.0, "signed-constant")  # METHODS["edge-popup"]
    stamps = {p.name: p.stat().st_mtime_ns for p in work.iterdir()}

    # a second seed in two processes: only its cells run, the first seed's are reused untouched
    code, out = _invoke("--quick", "--out", res / "methods.json", "--work-dir", work, "--seeds", "0,1",
                        "--workers", "2")
    assert code == 0, out
    rec2 = json.loads((res / "methods.json").read_text())
    assert (rec2["cells_run"], rec2["cells_reused"], len(rec2["cells"])) == (3, 3, 6)
    assert {p.name: p.stat().st_mtime_ns for p in work.iterdir() if p.name in stamps} == stamps
    first = {r["file"]: r for r in rec["cells"]}
    for r in rec2["cells"]:
        if r["file"] in first:
            assert r == first[r["file"]]

    text = generate(res, tmp_path / "results.md", experiments=EXPERIMENTS).read_text()
    assert "## Every supermask method against dense training" in text
    assert "Lowest density within 1 pp of dense" in text and (res / "methods.png").is_file()


def test_cells_computed_with_other_settings_are_refused_before_any_work(tmp_path):
    work = tmp_path / "cells"
    code, out = _invoke("--quick", "--out", tmp_path / "m.json", "--work-dir", work, "--methods", "edge-popup",
                        "--densities", "0.5")
    assert code == 0, out
    (cell,) = list(work.iterdir())
    before = cell.read_bytes()
    code, out = _invoke("--quick", "--out", tmp_path / "m2.json", "--work-dir", work, "--methods", "edge-popup",
                        "--densities", "0.5", "--epochs", "2")
    assert code != 0 and "computed with other settings" in out and "epochs: 1 there, 2 now" in out
    assert cell.read_bytes() == before and not (tmp_path / "m2.json").exists()
    # a method default that changed since (here: the learning rate in the saved cell) is refused too
    saved = json.loads(before)
    saved["train"]["lr"] = 0.5
    cell.write_text(json.dumps(saved))
    settings = M.Settings(**{**M.PRESETS["quick"], "methods": ("edge-popup",), "densities": (0.5,)})
    with pytest.raises(ValueError, match="lr: 0.5 there, 1.0 now"):
        M.finished_cells(settings.cells(), work)


def test_an_unreadable_cell_is_named(tmp_path):
    cell = M.Settings(**M.PRESETS["quick"]).cells()[0]
    (tmp_path / cell.file).write_text("{not json")
    with pytest.raises(ValueError, match=f"{cell.file} is not a readable cell"):
        M.finished_cells([cell], tmp_path)


def test_a_work_dir_in_use_by_a_living_run_is_refused_and_a_dead_runs_lock_taken_over(tmp_path):
    import os
    import socket
    import subprocess
    import sys

    host = socket.gethostname()
    settings = M.Settings(**{**M.PRESETS["quick"], "methods": ("edge-popup",), "densities": (0.5,),
                             "work_dir": tmp_path})
    lock = tmp_path / M.LOCK
    lock.write_text(f"{os.getpid()} {host}")  # this test's process: alive
    with pytest.raises(ValueError, match="is in use by another run"):
        M.execute(settings, log=lambda *a: None)
    assert [p.name for p in tmp_path.iterdir()] == [M.LOCK]  # nothing ran
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock.write_text(f"{dead.stdout.strip()} {host}")  # a process that has ended
    with M.work_lock(tmp_path) as held:
        assert held.read_text() == f"{os.getpid()} {host}"
        with pytest.raises(ValueError, match=f"process {os.getpid()} on {host}"):
            with M.work_lock(tmp_path):
                pass
    assert not lock.exists()  # released


def test_the_record_carries_its_earliest_cells_commit():
    import subprocess

    root = Path(M.__file__).resolve().parent
    head, parent = (subprocess.run(["git", "-C", str(root), "rev-parse", "--short", r], capture_output=True,
                                   text=True).stdout.strip() for r in ("HEAD", "HEAD~1"))
    if not head or not parent:
        pytest.skip("not a git checkout with history")
    assert M.earliest_commit([head, parent, head]) == parent
    assert M.earliest_commit([head]) == head
    assert M.earliest_commit([head, None]) is None  # a cell of unknown code: the record cannot be checked


def test_a_setting_added_to_slth_later_keeps_the_earlier_cells():
    cell = M.Settings(**M.PRESETS["quick"]).cells()[1]
    wanted = cell.identity()
    saved = json.loads(json.dumps(wanted))
    del saved["train"]["rerand_prob"]  # a cell written before the setting existed: it counts as the default
    assert M.identity_diff(saved, wanted) == {}
    saved["train"]["rerand_prob"] = 0.2
    assert M.identity_diff(saved, wanted) == {"rerand_prob": (0.2, 0.1)}


def test_the_default_arms_come_from_the_method_registry():
    arms = M.Settings.__dataclass_fields__["methods"].default
    assert arms[0] == "dense" and arms[1: 1 + len(METHOD_NAMES)] == METHOD_NAMES
    assert set(arms[1 + len(METHOD_NAMES):]) <= {M.ER_ARM}


def test_an_arm_on_a_sparse_source_runs_only_below_its_source_density():
    # at the source's density the mask is the whole source: nothing left to learn, so no cell is run there
    arms = ("dense", "edge-popup", "edge-popup@source=erdos-renyi@source_density=0.3")
    settings = M.Settings(**{**M.PRESETS["quick"], "methods": arms, "densities": (0.5, 0.3, 0.1)})
    by_arm = {}
    for cell in settings.cells():
        by_arm.setdefault(cell.arm, []).append(cell.density)
    assert by_arm == {"dense": [1.0], "edge-popup": [0.5, 0.3, 0.1], arms[2]: [0.1]}
    with pytest.raises(ValueError, match="runs only below its source density, and no --densities value is below 0.3"):
        M.Settings(**{**M.PRESETS["quick"], "methods": arms, "densities": (0.5, 0.3)})


@pytest.mark.parametrize("bad, message", [
    ({"methods": ("edge-popup", "bogus")}, "unknown method 'bogus'"),
    ({"methods": ("edge-popup@lr",)}, "KEY=VALUE"),
    ({"methods": ("edge-popup@model=vit",)}, "not a slth train setting an arm may set"),
    ({"methods": ("edge-popup@rerand_prob=x",)}, "is not a float"),
    ({"methods": ("edge-popup@normalize=yes",)}, "is not a bool"),
    ({"methods": ("edge-popup@hidden=3",)}, "which an arm cannot set"),
    ({"methods": ("iterand@rerand_prob=2",)}, "rerand_prob"),
    ({"methods": ("dense", "dense")}, "lists a value twice"),
    ({"nets": ("resnet20",)}, "unknown --nets resnet20"),
    ({"densities": (0.5, 1.5)}, "--densities must lie in"),
    ({"densities": ()}, "--densities is empty"),
    ({"seeds": ()}, "--seeds is empty"),
    ({"workers": 0}, "--workers must be >= 1"),
    ({"data": "mnist"}, "--mnist-dir is needed"),
    ({"data": "cifar10"}, "unknown --data"),
    ({"device": "tpu"}, "device"),
    ({"methods": ()}, "--methods is empty"),
    ({"methods": ("edge-popup@lr=0.1@lr=0.2",)}, "given twice"),
    ({"data": "mnist", "mnist_dir": Path("/no/such/folder")}, "no such --mnist-dir directory"),
])
def test_bad_settings_are_refused(bad, message):
    with pytest.raises(ValueError, match=message):
        M.Settings(**{**M.PRESETS["quick"], **bad})


def test_a_work_dir_that_is_a_file_and_a_net_that_cannot_take_the_data_are_refused(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ValueError, match="exists and is not a directory"):
        M.Settings(**{**M.PRESETS["quick"], "work_dir": blocker})
    code, out = _invoke("--quick", "--out", tmp_path / "m.json", "--work-dir", tmp_path / "cells", "--nets", "lenet5")
    assert code != 0 and "lenet5 cannot run on digits" in out
    assert not (tmp_path / "cells").exists() and not (tmp_path / "m.json").exists()


def test_arms_carry_slth_train_settings():
    assert M.parse_arm("iterand@rerand_prob=0.5@rerand_period=7") == ("iterand", {"rerand_prob": 0.5,
                                                                                  "rerand_period": 7})
    # the setting's type, also where its default is None (then the method's default applies)
    assert M.parse_arm("edge-popup@lr=0.1@augment=true@init=kaiming-normal") == (
        "edge-popup", {"lr": 0.1, "augment": True, "init": "kaiming-normal"})
    cell = dataclasses.replace(M.Settings(**M.PRESETS["quick"]).cells()[1], arm="iterand@rerand_period=7")
    assert cell.config().rerand_period == 7 and cell.file == "fc_iterand+rerand_period-7_d0.5_s0.json"


# --------------------------------------------------------------------------- the rules, on hand-made records
def _cells(table: dict[tuple[str, str], dict[float, list[float]]], kept: dict | None = None) -> list[dict]:
    """{(arm, net): {density: [accuracy per seed]}} -> cells; ``kept`` overrides a point's measured fraction."""
    out = []
    for (arm, net), by_density in table.items():
        for density, accs in by_density.items():
            for seed, acc in enumerate(accs):
                out.append({"cell": {"arm": arm, "net": net, "density": density, "seed": seed},
                            "test_accuracy": acc, "kept_fraction": (kept or {}).get((arm, net, density), density)})
    return out


def test_lowest_density_within_one_point_of_dense_must_stay_within():
    cells = _cells({("dense", "fc"): {1.0: [0.98, 0.98]},
                    ("a", "fc"): {0.5: [0.975, 0.977], 0.2: [0.971, 0.971], 0.1: [0.95, 0.95], 0.05: [0.975, 0.975]},
                    ("b", "fc"): {0.5: [0.96, 0.96], 0.2: [0.98, 0.98]}})
    ps = M.points(cells)
    assert M.dense_accuracy(ps, "fc") == pytest.approx(0.98)
    # 0.05 is within again, but 0.1 is not: "stays within" stops at 0.2
    assert M.lowest_within(ps, "a", "fc", 0.98).density == 0.2
    assert M.lowest_within(ps, "b", "fc", 0.98) is None  # its densest point is 2 pp below
    assert "| a | 0.2 (-0.90 pp) |" in M.lowest_table(ps, ["fc"])
    assert "| b | none" in M.lowest_table(ps, ["fc"])


def _claim(**kw) -> M.Claim:
    return M.Claim("paper", "statement", ("x*",), "edge-popup", **kw)


def test_the_sparsity_claim_holds_fails_or_is_undetermined():
    claim = _claim(rule="sparser", ratio=1.5)
    base = {0.5: [0.97], 0.2: [0.968], 0.1: [0.95], 0.05: [0.90]}  # edge-popup stays within 1 pp down to 0.2
    holds = _cells({("edge-popup", "fc"): base, ("x-gate", "fc"): {0.5: [0.97], 0.1: [0.965], 0.05: [0.93]}})
    (v,) = M.verdicts(holds, [claim])
    assert (v.arm, v.outcome, v.holds) == ("x-gate", "reproduces", ("fc",))
    fails = _cells({("edge-popup", "fc"): base, ("x-gate", "fc"): {0.5: [0.97], 0.2: [0.965], 0.1: [0.9]}})
    assert M.verdicts(fails, [claim])[0].outcome == "does not reproduce"
    # a measured density decides, not the requested one: the arm landed at 0.15 (0.2 / 0.15 < 1.5)
    landed = _cells({("edge-popup", "fc"): base, ("x-gate", "fc"): {0.1: [0.97]}}, kept={("x-gate", "fc", 0.1): 0.15})
    assert M.verdicts(landed, [claim])[0].outcome == "does not reproduce"
    flat = _cells({("edge-popup", "fc"): {0.5: [0.97], 0.2: [0.97]}, ("x-gate", "fc"): {0.5: [0.97], 0.2: [0.97]}})
    assert M.verdicts(flat, [claim])[0].outcome == "undetermined"  # edge-popup's limit is below the grid


def test_beats_matches_and_reaches_and_absent_arms_are_skipped():
    ep = {0.5: [0.95, 0.96], 0.1: [0.90, 0.91], 0.05: [0.80, 0.81]}
    cells = _cells({("edge-popup", "fc"): ep, ("edge-popup", "vit"): ep,
                    ("x1", "fc"): {0.5: [0.97], 0.1: [0.92], 0.05: [0.79]},  # better at 2 of 3
                    ("x1", "vit"): {0.5: [0.95], 0.1: [0.89], 0.05: [0.82]},  # better at 1 of 3, within 1 pp at 2
                    ("dense", "fc"): {1.0: [0.98]}})
    v = M.verdicts(cells, [_claim(rule="beats")])[0]
    assert (v.outcome, v.holds, v.fails) == ("partly", ("fc",), ("vit",))
    assert M.verdicts(cells, [_claim(rule="matches")])[0].outcome == "reproduces"  # within 1 pp at 2 of 3
    assert M.verdicts(cells, [_claim(rule="beats", max_density=0.05)])[0].holds == ("vit",)
    reach = M.Claim("p", "s", ("x1",), "dense", "reaches", nets=("fc",), max_density=0.1)
    assert M.verdicts(cells, [reach])[0].outcome == "does not reproduce"  # 92 % at 0.1 vs dense 98 %
    assert M.verdicts(cells, [dataclasses.replace(reach, tol=0.07)])[0].outcome == "reproduces"
    assert M.verdicts(cells, [dataclasses.replace(reach, max_density=0.01)])[0].outcome == "undetermined"
    assert M.verdicts(cells, [M.Claim("p", "s", ("l0-*",), "edge-popup", "sparser")]) == []  # no such arm
    assert M.verdicts(cells, [M.Claim("p", "s", ("x1",), "bernoulli", "beats")]) == []  # no baseline


def test_the_source_claim_compares_an_arm_with_its_own_method():
    cells = _cells({("edge-popup", "fc"): {0.5: [0.95], 0.1: [0.90]},
                    ("edge-popup@source=erdos-renyi", "fc"): {0.5: [0.945], 0.1: [0.85]}})
    (v,) = M.verdicts(cells, [c for c in M.CLAIMS if "Gadhikar" in c.paper])
    assert (v.baseline, v.outcome) == ("edge-popup", "does not reproduce")  # 1 of 2 within 1 pp: not a majority


def test_every_claim_names_a_known_rule_and_the_section_states_verdicts(tmp_path):
    from slth.experiments.sections import Context, Record

    assert {c.rule for c in M.CLAIMS} <= set(M.RULES)
    cells = _cells({("dense", "fc"): {1.0: [0.98]}, ("edge-popup", "fc"): {0.5: [0.97], 0.1: [0.95]},
                    ("bernoulli", "fc"): {0.5: [0.96], 0.1: [0.96]}, ("iterand", "fc"): {0.5: [0.97]}})
    for r in cells:
        r.update(steps=10, cpu_seconds=1.0, train_size=100, test_size=50, git_commit="abc1234", machine="m",
                 train={"rerand_period": 300})
    record = {"experiment": "methods", "settings": {"epochs": 1, "seeds": [0], "vit_args": {}}, "cells": cells,
              "nets": {"fc": "mnist"}, "batch_size": 128, "optimizer": "sgd"}
    ctx = Context(results_dir=tmp_path, out_dir=tmp_path)
    text = M.render(Record(tmp_path / "methods.json", "methods", record), ctx)
    # edge-popup beats bernoulli at 0.5 only: 1 of 2 is not more than half
    assert "edge-popup beats Zhou" in text and "**does not reproduce**" in text
    assert ctx.summary and ctx.summary[0][2] == "does not reproduce at this scale"
    assert "its cells ran at most 10 steps, so it never re-drew" in text
