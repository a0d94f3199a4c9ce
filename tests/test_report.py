"""The report: written automatically at the end of a preset's sweep (also when jobs failed), executed, with
figures and a section per question; a missing experiment is one clear error."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from conftest import harness_env
from mlflow import MlflowClient

import harness.app
import harness.sweep
from harness.app import run_job
from harness.tracking import Run


def _errors(nb) -> list[str]:
    return [o.ename for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]


def _artifacts(uri: str, run_id: str) -> list[str]:
    return sorted(a.path for a in MlflowClient(uri).list_artifacts(run_id, "report"))


@pytest.mark.slow
def test_a_preset_sweep_writes_its_report_with_figures_and_every_question(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    shrink = ["loss=bce,mse", "activation=sigmoid", "delta=ng,nielsen,chain", "seed=0,1", "train.epochs=40"]
    p = subprocess.run(
        [sys.executable, "-m", "harness", "-m", "+experiment=xor_grid", *shrink, f"tracking.uri={uri}"],
        cwd=tmp_path, capture_output=True, text=True, env=harness_env(), timeout=900,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    html = (tmp_path / "reports" / "xor_grid.html").read_text()
    nb = nbformat.read(tmp_path / "reports" / "xor_grid.ipynb", as_version=4)
    assert _errors(nb) == []
    assert html.count("<img") >= 4  # convergence ×2, heatmaps ×2, grad_cosine
    for n in range(1, 5):
        assert f"Question {n}" in html
    assert "Derivation: sigmoid + binary cross-entropy" in html and "softmax + categorical cross-entropy" in html
    # answers carry this sweep's numbers: 2 seed pairs, and ng ≡ chain on bce + sigmoid to rounding
    assert "over 2 seed pairs" in html
    assert re.search(r"differ by at most [0-9.]+e-1[0-9] over 82 logged", html)
    assert "in 4 of 4 (activation, rule, seed, rate) groups run under several losses" in html
    c = MlflowClient(uri)
    (parent,) = c.search_runs([c.get_experiment_by_name("xor_grid").experiment_id], "tags.`harness.sweep_dir` != ''")
    assert parent.info.status == "FINISHED"
    assert _artifacts(uri, parent.info.run_id) == ["report/xor_grid.html", "report/xor_grid.ipynb"]


@pytest.mark.parametrize("exists", [True, False])
def test_report_of_a_missing_experiment_or_store_is_one_clear_error(tmp_path, store, exists):
    from harness.tracking import ensure_experiment

    if exists:
        ensure_experiment(store, "other")
    uri = store if exists else f"sqlite:///{tmp_path / 'missing.db'}"
    p = subprocess.run(
        [sys.executable, "-m", "harness.report", "nope", "--uri", uri],
        cwd=tmp_path, capture_output=True, text=True, env=harness_env(), timeout=300,
    )  # fmt: skip
    assert p.returncode == 2 and "Traceback" not in p.stderr
    (line,) = [ln for ln in p.stderr.splitlines() if ln.startswith("harness.report: error:")]
    if exists:
        assert line.startswith("harness.report: error: experiment 'nope' does not exist in the tracking store")
        assert "experiments there: Default, other." in line
    else:
        assert "there is no MLflow tracking store at" in line and not (tmp_path / "missing.db").exists()
    assert not (tmp_path / "reports").exists()


def _start_sweep(store: str, experiment: str, out: Path) -> str:
    parent = Run.start(store, experiment, "sweep", {"harness.sweep_dir": "/tmp/sweep"})
    harness.sweep._parent.update(run=parent, sweep_dir="/tmp/sweep", report=(experiment, store, str(out)))
    return parent.run_id


def test_a_report_that_fails_is_printed_and_the_parent_still_ends(store, tmp_path, capsys):
    parent = _start_sweep(store, "no_runs", tmp_path / "out")  # no child ran: load() refuses, nothing raised
    harness.sweep.end_parent("FINISHED")
    err = capsys.readouterr().err
    assert "could not write the report of 'no_runs'" in err and "has no finished runs" in err
    assert MlflowClient(store).get_run(parent).info.status == "FINISHED"
    assert not (tmp_path / "out" / "no_runs.html").exists()


@pytest.mark.slow
def test_the_report_is_written_when_some_jobs_failed(compose_cfg, store, tmp_path, monkeypatch):
    parent = _start_sweep(store, "partial", tmp_path / "out")
    shrink = [f"tracking.uri={store}", "tracking.experiment=partial", "train.epochs=10"]
    for seed in (0, 1):
        run_job(compose_cfg(*shrink, f"seed={seed}"), parent_run_id=parent)

    def boom(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(harness.app, "train", boom)
    with pytest.raises(RuntimeError):
        run_job(compose_cfg(*shrink, "seed=2"), parent_run_id=parent)
    harness.sweep.end_parent("FAILED")
    assert MlflowClient(store).get_run(parent).info.status == "FAILED"
    nb = nbformat.read(tmp_path / "out" / "partial.ipynb", as_version=4)
    assert _errors(nb) == []
    html = (tmp_path / "out" / "partial.html").read_text()
    assert "<img" in html and "Question 4" in html
    status = next(c for c in nb.cells if c.cell_type == "code" and "groupby(['status', 'outcome'])" in c.source)
    table = status.outputs[-1]["data"]["text/plain"]
    assert re.search(r"FAILED\s+failed\s+1", table) and re.search(r"FINISHED\s+completed\s+2", table)
    assert _artifacts(store, parent) == ["report/partial.html", "report/partial.ipynb"]
