"""The MLflow UI as users see it, in a real headless browser (Debian's chromium, driven by Playwright).

Needs ``/usr/bin/chromium`` (``apt-get install -y chromium``; ``.ci/run`` installs it). Playwright's own
browser download (``playwright install``) is neither needed nor used. Screenshots are saved under
``$HARNESS_TEST_ARTIFACTS`` (default ``test-artifacts/`` in the repository) and the path is printed.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from conftest import ROOT, harness_env
from mlflow import MlflowClient
from servers import MlflowServer, harness_cmd

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]  # fmt: skip
# The run-name cell's expand/collapse button (MLflow 3.17's runs table); the parent row has one.
EXPANDER = 'button[data-component-id*="runnamecellrenderer"]'


def artifacts_dir() -> Path:
    path = Path(os.environ.get("HARNESS_TEST_ARTIFACTS", ROOT / "test-artifacts")) / "ui"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def ui(tmp_path):
    """A two-job sweep (bce: exact pairing, mse: mismatched) in tmp_path, and ``mlflow ui`` over it."""
    p = subprocess.run(harness_cmd("-m", "loss=bce,mse", "train.epochs=20"), cwd=tmp_path, capture_output=True,
                       text=True, env=harness_env(), timeout=300)  # fmt: skip
    assert p.returncode == 0, p.stderr
    (tmp_path / "mlflow.db").rename(tmp_path / "server.db")  # MlflowServer serves root/server.db
    server = MlflowServer(tmp_path, command="ui").start()
    yield server
    server.stop()


@pytest.mark.slow
def test_mlflow_ui_lists_the_sweep_nested_with_names_and_pairing(tmp_path, ui):
    assert CHROMIUM.exists(), "the UI test needs Debian's chromium: apt-get install -y chromium (.ci/run does)"
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=90_000)  # a loaded 2-core machine renders slowly

    c = MlflowClient(ui.uri)
    exp = c.get_experiment_by_name("harness")
    runs = {r.info.run_name: r for r in c.search_runs([exp.experiment_id])}
    out = artifacts_dir()
    with sync_playwright() as pw:
        browser = pw.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),  # a fresh profile every time
            executable_path=str(CHROMIUM), headless=True, args=ARGS, viewport={"width": 1600, "height": 900},
        )  # fmt: skip
        page = browser.new_page()
        page.set_default_timeout(90_000)
        page.goto(f"{ui.uri}/#/experiments/{exp.experiment_id}/runs")
        parent_row = page.get_by_role("row").filter(has_text="sweep")
        expect(parent_row).to_have_count(1)
        # Nested: parent -> its configuration runs -> their seed runs, each level hidden until expanded.
        expect(page.get_by_text("mse-sigmoid-ng", exact=True)).to_have_count(0)
        parent_row.locator(EXPANDER).click()
        config_row = page.get_by_role("row").filter(has=page.get_by_text("mse-sigmoid-ng", exact=True))
        expect(config_row).to_have_count(1)
        expect(page.get_by_role("row").filter(has=page.get_by_text("bce-sigmoid-ng", exact=True))).to_have_count(1)
        expect(page.get_by_text("mse-sigmoid-ng-s0", exact=True)).to_have_count(0)
        config_row.locator(EXPANDER).click()
        expect(page.get_by_role("row").filter(has_text="mse-sigmoid-ng-s0")).to_have_count(1)
        page.screenshot(path=out / "runs-table.png")

        # A child's page: its pairing tag and its parent run.
        child = runs["mse-sigmoid-ng-s0"]
        page.goto(f"{ui.uri}/#/experiments/{exp.experiment_id}/runs/{child.info.run_id}")
        expect(page.get_by_text("mse-sigmoid-ng-s0").first).to_be_visible()
        expect(page.get_by_text("pairing").first).to_be_visible()
        expect(page.get_by_text("mismatched").first).to_be_visible()
        expect(page.get_by_text("Parent run").first).to_be_visible()
        expect(page.get_by_role("link", name="mse-sigmoid-ng", exact=True)).to_have_count(1)  # its configuration
        page.screenshot(path=out / "child-run.png", full_page=True)
        browser.close()
    print(f"UI screenshots: {out / 'runs-table.png'} {out / 'child-run.png'}")


@pytest.mark.slow
def test_the_study_nests_parent_configuration_seed(tmp_path, ui):
    """Configuration runs written over HTTP (the public API path) to the UI's server: the runs page nests the
    sweep's parent -> its configuration runs -> their seed runs."""
    from playwright.sync_api import expect, sync_playwright

    from harness.tracking.study import write_configuration_runs

    expect.set_options(timeout=90_000)
    c = MlflowClient(ui.uri)
    exp = c.get_experiment_by_name("harness")
    (parent,) = [r for r in c.search_runs([exp.experiment_id]) if r.info.run_name == "sweep"]
    assert len(write_configuration_runs(ui.uri, parent.info.run_id)) == 2  # bce and mse, one seed each
    out = artifacts_dir()
    with sync_playwright() as pw:
        browser = pw.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=str(CHROMIUM), headless=True, args=ARGS, viewport={"width": 1600, "height": 900},
        )  # fmt: skip
        page = browser.new_page()
        page.set_default_timeout(90_000)
        page.goto(f"{ui.uri}/#/experiments/{exp.experiment_id}/runs")
        row = lambda name: page.get_by_role("row").filter(has=page.get_by_text(name, exact=True))  # noqa: E731
        expect(row("sweep")).to_have_count(1)
        expect(row("bce-sigmoid-ng")).to_have_count(0)
        row("sweep").locator(EXPANDER).click()
        for name in ("bce-sigmoid-ng", "mse-sigmoid-ng"):
            expect(row(name)).to_have_count(1)
        expect(row("bce-sigmoid-ng-s0")).to_have_count(0)  # the seeds: one level further down
        row("bce-sigmoid-ng").locator(EXPANDER).click()
        expect(row("bce-sigmoid-ng-s0")).to_have_count(1)
        expect(row("mse-sigmoid-ng-s0")).to_have_count(0)
        page.screenshot(path=out / "runs-nested.png")
        browser.close()
