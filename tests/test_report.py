"""The report: written automatically at the end of a preset's sweep (also when jobs failed), executed, with
figures and a section per question; a missing experiment is one clear error."""

from __future__ import annotations

import re
import shutil
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
from harness.report.notebook import build, tex_to_mathml, to_html
from harness.tracking import Run

RAW_TEX = re.compile(r"\$\\?[a-zA-Z]|\\(frac|delta|odot|partial|sigma|nabla|top)\b")
REPORT_FILES = ["report/runs.csv", "report/xor_grid.html", "report/xor_grid.ipynb"]


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
    assert html.count("<img") >= 4  # convergence ×2, final-accuracy heatmaps, grad_cosine (+ epochs heatmaps)
    for n in range(1, 5):
        assert f"Question {n}" in html
    assert "Derivation: sigmoid + binary cross-entropy" in html and "softmax + categorical cross-entropy" in html
    # answers carry this sweep's numbers: 2 seed pairs, and ng ≡ chain on bce + sigmoid to rounding
    assert "over n = 2 seed pairs" in html and "n = 2 pairs: no test at this n can reach p &lt; 0.05" in html
    assert re.search(r"differ by at most [0-9.]+e-1[0-9] over 82 logged", html)
    assert "in 4 of 4 (activation, rule, seed, rate) groups run under several losses" in html
    c = MlflowClient(uri)
    (parent,) = c.search_runs([c.get_experiment_by_name("xor_grid").experiment_id], "tags.`harness.sweep_dir` != ''")
    assert parent.info.status == "FINISHED"
    assert _artifacts(uri, parent.info.run_id) == REPORT_FILES
    runs = (tmp_path / "reports" / "xor_grid-runs.csv").read_text().splitlines()
    assert len(runs) == 1 + 12 and runs[0].startswith("run_id,")
    _check_rendered(tmp_path / "reports" / "xor_grid.html", tmp_path)


def _chromium(*args: str) -> str:
    chromium = shutil.which("chromium")
    assert chromium, "the rendering check needs Debian's chromium: apt-get install -y chromium"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--virtual-time-budget=15000"]  # fmt: skip
    p = subprocess.run([chromium, *flags, *args], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return p.stdout


def _check_rendered(html: Path, tmp_path: Path) -> None:
    """The HTML as a browser shows it, offline: MathML, no raw TeX, no code or prompts, alt text, runs folded."""
    dom = _chromium("--dump-dom", html.as_uri())
    text = re.sub(r"<style.*?</style>|<[^>]+>", " ", dom, flags=re.S)
    assert dom.count("<math") >= 20 and not RAW_TEX.search(text)
    assert "In [" not in text and "In&nbsp;[" not in dom and "loading.load(" not in text
    assert not re.search(r"<script[^>]+src=|<link[^>]+href=\"http", dom)
    assert "No description has been provided" not in dom and dom.count("<img alt=") == dom.count("<img")
    assert "<details><summary>All 12 runs" in dom
    _chromium(f"--screenshot={tmp_path / 'report.png'}", "--window-size=1400,1000", html.as_uri())
    assert (tmp_path / "report.png").stat().st_size > 10_000


def test_the_html_has_mathml_no_code_and_loads_nothing_from_the_network():
    nb = build("tiny", "sqlite:///tiny.db", "0123")
    html = to_html(nb)
    body = re.sub(r"<style.*?</style>|<[^>]+>", " ", html, flags=re.S)
    assert html.count("<math") >= 20 and not RAW_TEX.search(body)
    assert 'display="block"' in html  # $$…$$ are display formulas
    assert "loading.load(" not in body and "In&nbsp;[" not in html  # code cells and prompts hidden
    assert not re.search(r"<script[^>]+src=|<link[^>]+href=\"http", html) and "mathjax" not in html.lower()
    assert any("\\frac" in c.source for c in nb.cells if c.cell_type == "markdown")  # the .ipynb keeps its TeX


def test_tex_to_mathml_converts_inline_and_display_math_only():
    out = tex_to_mathml(r"rule $a - y$ and $$\frac{h - y}{h(1 - h)}$$ but not `x` or a lone $ sign")
    assert out.count("<math") == 2 and '<math xmlns="http://www.w3.org/1998/Math/MathML" display="block">' in out
    assert "<mfrac>" in out and "a lone $ sign" in out and "\\frac" not in out


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


def _start_sweep(store: str, experiment: str, out: Path) -> harness.sweep.Sweep:
    parent = Run.start(store, experiment, "sweep", {"harness.sweep_dir": "/tmp/sweep"})
    experiment_id = MlflowClient(store).get_experiment_by_name(experiment).experiment_id
    return harness.sweep.Sweep(parent, "/tmp/sweep", experiment_id, "sweep", report=(experiment, store, str(out)))


def test_a_report_that_fails_is_printed_and_the_parent_still_ends(store, tmp_path, capsys):
    sweep = _start_sweep(store, "no_runs", tmp_path / "out")  # no child ran: load() refuses, nothing raised
    parent = sweep.run.run_id
    sweep.end("FINISHED")
    err = capsys.readouterr().err
    assert "could not write the report of 'no_runs'" in err and "has no finished runs" in err
    assert MlflowClient(store).get_run(parent).info.status == "FINISHED"
    assert not (tmp_path / "out" / "no_runs.html").exists()


@pytest.mark.slow
def test_the_report_is_written_when_some_jobs_failed(compose_cfg, store, tmp_path, monkeypatch):
    sweep = _start_sweep(store, "partial", tmp_path / "out")
    parent = sweep.run.run_id
    shrink = [f"tracking.uri={store}", "tracking.experiment=partial", "train.epochs=10"]
    for seed in (0, 1):
        run_job(compose_cfg(*shrink, f"seed={seed}"), parent_run_id=parent)

    def boom(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(harness.app, "train", boom)
    with pytest.raises(RuntimeError):
        run_job(compose_cfg(*shrink, "seed=2"), parent_run_id=parent)
    sweep.end("FAILED")
    assert MlflowClient(store).get_run(parent).info.status == "FAILED"
    nb = nbformat.read(tmp_path / "out" / "partial.ipynb", as_version=4)
    assert _errors(nb) == []
    html = (tmp_path / "out" / "partial.html").read_text()
    assert "<img" in html and "Question 4" in html
    overview = next(o["data"]["text/markdown"] for c in nb.cells if c.cell_type == "code" for o in c.outputs
                    if o.get("data", {}).get("text/markdown", "").startswith("**This study.**"))  # fmt: skip
    assert "3 runs of 1 (loss, output activation, δ rule) triples" in overview and "2 completed, 1 failed" in overview
    assert _artifacts(store, parent) == ["report/partial.html", "report/partial.ipynb", "report/runs.csv"]


def test_the_report_opens_its_questions_with_ngs_assignment():
    from harness.report import notebook
    from harness.report.assignment import QUESTION

    heading, code = notebook.assignment_cells()
    assert heading.source == f"## Ng's assignment\n\n> {QUESTION}" and code.source.endswith("section().show()")
    cells = [c.source for c in build("tiny", "sqlite:///tiny.db", "0123").cells]
    first = next(i for i, c in enumerate(cells) if c.startswith("## Ng's assignment"))
    assert first < next(i for i, c in enumerate(cells) if c.startswith("## Question 1"))
