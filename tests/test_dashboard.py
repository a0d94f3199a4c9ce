"""The sweep dashboard: MLflow's saved-view format (against a view the UI itself saved) and, in headless
Chromium, the link opening the view with its groups and charts drawn.

The browser test needs ``/usr/bin/chromium`` (see tests/test_ui.py) and saves
``$HARNESS_TEST_ARTIFACTS/ui/dashboard.png`` (default ``test-artifacts/ui/``).
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import zlib

import pytest
from conftest import harness_env
from servers import MlflowServer, harness_cmd
from test_ui import ARGS, CHROMIUM, artifacts_dir

from harness.names import GRAD_COSINE, PAIRING_TAG, TEST_ACCURACY, TRAIN_LOSS
from harness.tracking import dashboard as d

# A view made in MLflow 3.17.2's UI (a 4-job sweep; Group by pairing, delta; a few columns; a search filter;
# the chart view; Add chart -> Bar chart, Parallel coordinates; Views -> Save as new view "ui-made"), the
# experiment tag exactly as the UI wrote it:
UI_MADE_TAG = (
    '{"name":"ui-made","createdAt":1796131334548,"updatedAt":1796131334548,"state":"'
    "deflate;eJztV99v4jgQ/leqvOwLQgmhpSDtA+XaPXS0u4Le7kqrihpnCO46dmo7pVnE/35jO4S0pdqXu1MfKh6Q5of9zXwzzswm"
    "0EAUXV0wbkAFg8CQVLczvuRy3c6JAmGmhRgnRx+PPkDSCSManXaPu71uJzxZxHC8CEPSBzhZdJbkQ9AKpEpAnZV/QYlnEWMUWxQG"
    "dFsboszcsAz2RkNNg8GScA2twOmvrXoQDCcTNOJsCbSkHGpoQ2rYg/VPiCEajN5pfty0gkwmwL+C0kyKvQfnRwhfo48GDtRAMpK8"
    "yFAy+NGEdzuThaJwi4ZN6aU9VD+X/uGvt+IMUExRhgozJ5QWitDSajB3JEMFl1q3BcmgKXRg2yuWJCDQC8MiBnE3TdDAkNrRsXKb"
    "E6aYSPcCWRgqrQUmgLrAPtvU+ox4wTeWmBWGu9m2AoWp+NNdagPD/FyMp7PreRTOp39fzQLrklnOMWWjFfJhs7QJioIlaBv1+idR"
    "bH+9uN9T3V75K2cWSZnboybjq/PAXzGShTDXcuQPCwZRuEvUDCnAOMcvzjtN7lYnP++7llwkCnmqK4PpTyBAESczqkBRwnTOSXlF"
    "XLmkiiRzKjUTUDPi6++phuPfLJPSrARoDA1RPQ4fmZ5RwuHaR2FtiLLlckioiEjBp9J5+lu0gbxRYN+t5rKBAnXl3trj28nOH3OF"
    "YDAn2pPGUiEVfC4MZ1jLdRIKDZ+4XBD+nexO8qmoFZM6OqwQr922DpHXDfV97+djvC7eAnlP+uYZfc917wRWBJ52COjOUrwZAu0j"
    "d4i8Sv5OXEVcQpY5ftSiN0GcIky82nrPle8UVhRmnTjKF0DfDoWHmq+peKcuijvHYa9Hj0X/XvD7PXVnw+l/z1wle30w2WWwTp6b"
    "Tps2NwdCikOcxBen67ss5sk+pC/DKc7P55P/La4d+i9ucPVsPo1oJ1zJNQ7kbh73ztub5shZAXp96GwAE74B3Hx+VA3hQd0euyJh"
    "egpu12jA/W2THW78uM8Udv1dqPa3z0psgezfvh5z8sBgfYkFn7FfDVOkc8K08QN844AhpXgLZu7lbbZLlCxySL4SXoAe13O9R4gb"
    "CJxnuSmfilPrc4ZxbAKSpgpShHdRCEePXeseEHBqK7cyrEp245Ywv0PulXZbQlm1uwQ2vZWZW3VeGLrFJ9hiyXuFfSuISGxU9gFK"
    "6653mEdSLFlqkb58mQ48fK8/VtvtPwsoIIE="
    '"}'
)
# ... and what it holds, in part (decoded by hand: zlib.decompress(base64.b64decode(state[8:]))).
UI_MADE_STATE = {
    "searchFilter": "tags.mlflow.parentRunId = 'ed201c1845474206b3e5b00a9ee6b2fa'",
    "orderByKey": "attributes.start_time",
    "orderByAsc": False,
    "startTime": "ALL",
    "lifecycleFilter": "Active",
    "datasetsFilter": [],
    "modelVersionFilter": "All Runs",
    "selectedColumns": ["attributes.`Source`", "attributes.`Models`", "attributes.`Dataset`", "metrics.`test_accuracy`",
                        "params.`loss.name`", "params.`model.hidden_activation`", "params.`delta.name`",
                        "tags.`pairing`", "tags.`outcome`"],  # fmt: skip
    "runsHiddenMode": "FIRST_10_RUNS",
    "groupBy": {"aggregateFunction": "average",
                "groupByKeys": [{"mode": "tag", "groupByData": "pairing"}, {"mode": "param", "groupByData": "delta"}]},
    "useGroupedValuesInCharts": True,
    "runListHidden": False,
    "globalLineChartConfig": {"xAxisKey": "step", "lineSmoothness": 0, "selectedXAxisMetricKey": ""},
}  # fmt: skip
UI_MADE_LINE = {
    "uuid": "1796131313740m231pbec", "type": "LINE", "runsCountToCompare": 10,
    "metricSectionId": "17961313137398djh6kq4", "deleted": False, "isGenerated": True, "displayName": "train_loss",
    "metricKey": "train_loss", "lineSmoothness": 0,
    "xAxisScaleType": "linear", "scaleType": "linear", "range": {}, "xAxisKey": "step", "selectedXAxisMetricKey": "",
    "yAxisKey": "metric", "yAxisExpressions": [], "ignoreOutliers": False, "useGlobalXaxisKey": True,
    "useGlobalLineSmoothing": True,
}  # fmt: skip
UI_MADE_BAR = {"uuid": "1796131325077c5n9qnlq", "type": "BAR", "runsCountToCompare": 10,
               "metricSectionId": "17961313137398djh6kq4", "deleted": False, "isGenerated": False,
               "metricKey": "grad_cosine", "selectedMetricKeys": ["grad_cosine"]}  # fmt: skip
UI_MADE_PARALLEL = {"uuid": "1796131330184b8wjm3ld", "type": "PARALLEL", "runsCountToCompare": 10,
                    "metricSectionId": "17961313137398djh6kq4", "deleted": False, "isGenerated": False,
                    "selectedParams": [], "selectedMetrics": [], "showAllRuns": False}  # fmt: skip
UI_MADE_SECTION = {"uuid": "17961313137398djh6kq4", "name": "Model metrics", "display": True, "isReordered": False,
                   "deleted": False, "isGenerated": True}  # fmt: skip
# What MLflow 3.17.2's UI keeps of a shared state (its bundle: the search facets, and the UI state's keys but
# runsExpanded, runsPinned, runsHidden, runsVisibilityMap, autoRefreshEnabled).
UI_STATE_KEYS = {
    "searchFilter", "orderByKey", "orderByAsc", "startTime", "lifecycleFilter", "modelVersionFilter", "datasetsFilter",
    "selectedColumns", "columnOrder", "columnWidths", "runsHiddenMode", "compareRunCharts", "compareRunSections",
    "viewMaximized", "runListHidden", "isAccordionReordered", "groupBy", "groupsExpanded", "useGroupedValuesInCharts",
    "hideEmptyCharts", "globalLineChartConfig", "chartsSearchFilter",
}  # fmt: skip
PARENT = "0123456789abcdef0123456789abcdef"


def ui_reads(value: str) -> dict:
    """The UI's reading of a tag, written independently of the module: the envelope's checks (name a string,
    createdAt a number, state a string), then pako.inflate of base64 after ``deflate;``, then JSON."""
    envelope = json.loads(value)
    assert isinstance(envelope["name"], str) and isinstance(envelope["createdAt"], int)
    assert isinstance(envelope["state"], str) and envelope["state"].startswith("deflate;")
    return json.loads(zlib.decompress(base64.b64decode(envelope["state"][len("deflate;") :])))


def test_decode_reads_the_view_the_ui_saved():
    state = d.decode_view(UI_MADE_TAG)
    assert state == ui_reads(UI_MADE_TAG)
    assert {k: state[k] for k in UI_MADE_STATE} == UI_MADE_STATE
    charts = {c["uuid"]: c for c in state["compareRunCharts"]}
    for card in (UI_MADE_LINE, UI_MADE_BAR, UI_MADE_PARALLEL):
        assert charts[card["uuid"]] == card
    assert UI_MADE_SECTION in state["compareRunSections"]
    assert set(state) <= UI_STATE_KEYS


def test_the_written_view_has_the_ui_s_shape_and_reads_back():
    state = d.view_state(PARENT)
    value = d.encode_view(state, "sweep 01234567", created_ms=1796131334548)
    assert ui_reads(value) == state == d.decode_view(value)
    assert json.loads(value)["name"] == "sweep 01234567"
    ui = d.decode_view(UI_MADE_TAG)
    assert set(state) <= UI_STATE_KEYS
    assert set(ui) <= set(state)  # every key the UI wrote
    for card in state["compareRunCharts"]:
        made = {"LINE": UI_MADE_LINE, "BAR": UI_MADE_BAR, "PARALLEL": UI_MADE_PARALLEL}[card["type"]]
        assert set(made) <= set(card), card["type"]
        assert {type(card[k]) for k in made} == {type(made[k]) for k in made}
        assert card["metricSectionId"] in {s["uuid"] for s in state["compareRunSections"]}
    assert set(UI_MADE_SECTION) == set(state["compareRunSections"][0])
    # The bare (share) format: the compressed state alone.
    bare = d.encode_view(state)
    assert bare.startswith("deflate;") and d.decode_view(bare) == state
    assert d.decode_view(json.dumps(state)) == state


def test_view_state_is_the_sweep_grouped_with_its_columns_and_charts():
    state = d.view_state(PARENT)
    assert state["searchFilter"] == f"tags.mlflow.parentRunId = '{PARENT}'"
    assert state["groupBy"]["groupByKeys"] == [{"mode": "tag", "groupByData": PAIRING_TAG},
                                               {"mode": "param", "groupByData": "delta"}]  # fmt: skip
    assert state["selectedColumns"] == [
        "params.`loss`", "params.`activation`", "params.`delta`", "tags.`pairing`", "tags.`outcome`",
        "metrics.`test_accuracy`", "metrics.`epochs_to_threshold`",
    ]  # fmt: skip
    lines = [c for c in state["compareRunCharts"] if c["type"] == "LINE"]
    assert [c["metricKey"] for c in lines] == [TRAIN_LOSS, TEST_ACCURACY, GRAD_COSINE]
    assert {c["xAxisKey"] for c in lines} == {"step"}
    assert [c["metricKey"] for c in state["compareRunCharts"] if c["type"] == "BAR"] == [TEST_ACCURACY]
    assert state["useGroupedValuesInCharts"] and state["runsHiddenMode"] == "SHOW_ALL"
    assert len({c["uuid"] for c in state["compareRunCharts"]}) == len(state["compareRunCharts"])
    # Parallel coordinates only ungrouped (the UI cannot aggregate string params).
    assert "PARALLEL" not in {c["type"] for c in state["compareRunCharts"]}
    flat = d.view_state(PARENT, group_by=None)
    assert flat["groupBy"] is None
    (parallel,) = [c for c in flat["compareRunCharts"] if c["type"] == "PARALLEL"]
    assert parallel["selectedParams"] == ["loss", "activation", "delta"]
    assert parallel["selectedMetrics"] == [TEST_ACCURACY]
    assert d.view_state(search_filter="tags.x = 'y'")["searchFilter"] == "tags.x = 'y'"
    assert d.view_state()["searchFilter"] == ""


def test_dashboard_url_opens_the_runs_page_with_the_key_only():
    assert d.dashboard_url("sqlite:////tmp/mlflow.db", "3", "k1") == (
        "http://127.0.0.1:5000/#/experiments/3/runs?viewStateShareKey=k1&compareRunsMode=CHART"
    )
    assert d.dashboard_url("http://host:8080/", "3", "k1", mode="TABLE").startswith(
        "http://host:8080/#/experiments/3/runs?viewStateShareKey=k1&compareRunsMode=TABLE"
    )


def test_save_view_writes_the_experiment_tags(store):
    from harness.tracking import client, ensure_experiment

    exp = ensure_experiment(store, "harness")
    url = d.create_dashboard(store, exp, PARENT, name="study")
    key = d.sweep_view_key(PARENT)
    assert url == d.dashboard_url(store, exp, key)
    tags = client(store).get_experiment(exp).tags
    main = tags[f"mlflow.sharedViewState.{key}"]
    assert json.loads(main)["name"] == "study 01234567"
    assert ui_reads(main) == d.view_state(PARENT)
    triples = ui_reads(tags[f"mlflow.sharedViewState.{key}-triples"])
    assert [k["groupByData"] for k in triples["groupBy"]["groupByKeys"]] == ["loss", "activation", "delta"]
    # Saved again (a resumed sweep): the same tags, overwritten.
    d.create_dashboard(store, exp, PARENT, name="study")
    assert len([k for k in client(store).get_experiment(exp).tags if k.startswith("mlflow.sharedViewState.")]) == 2
    d.save_view(store, exp, "bare", d.view_state(PARENT), named=False)
    assert d.decode_view(client(store).get_experiment(exp).tags["mlflow.sharedViewState.bare"]) == d.view_state(PARENT)
    with pytest.raises(ValueError, match="experiment tag holds"):
        d.save_view(store, exp, "huge", {"searchFilter": "x" * 100} | {str(i): str(i) * 40 for i in range(3000)})


def _configuration_store(store, rates=("0.1", "1")):
    """A parent, its 3 triples x ``rates`` configuration runs and one seed run, as write_configuration_runs
    leaves them (tags harness.level, harness.configuration; param train.lr)."""
    from harness.tracking import Run, ensure_experiment

    exp = ensure_experiment(store, "harness")
    parent = Run.start(store, "harness", "sweep", {"harness.sweep_dir": "/x"}).run_id
    configs = {}
    for rate in rates:
        for delta in ("ng", "nielsen", "chain"):
            tags = {"harness.level": "configuration", "harness.configuration": f"{delta}{rate}"}
            run = Run.start(store, "harness", f"bce-sigmoid-{delta}-lr{rate}", tags, parent_run_id=parent)
            run.log_params({"delta": delta, "train.lr": rate})
            run.end("FINISHED")
            configs[(delta, rate)] = run.run_id
    Run.start(store, "harness", "seed", {"harness.level": "seed"}, parent_run_id=parent).end("FINISHED")
    return exp, parent, configs


def _selected(store, exp, state):
    """The run ids the UI lists for a view: MLflow's search with the view's filter (the UI sends it as is)."""
    from harness.tracking import client

    return {r.info.run_id for r in client(store).search_runs([exp], state["searchFilter"], max_results=1000)}


def test_the_study_views_open_on_configuration_runs_one_per_rate(store):
    from harness.tracking import client
    from harness.tracking.study import mark_chosen

    exp, parent, configs = _configuration_store(store)
    url = d.create_dashboard(store, exp, parent, name="lr")
    tags = client(store).get_experiment(exp).tags
    views = {k.removeprefix("mlflow.sharedViewState."): v for k, v in tags.items() if "sharedViewState" in k}
    key = d.sweep_view_key(parent)
    assert set(views) == {key, f"{key}-lr0.1", f"{key}-lr1"}
    assert url == d.dashboard_url(store, exp, key)
    main = ui_reads(views[key])
    assert _selected(store, exp, main) == set(configs.values())  # every configuration, no seed run, no parent
    for rate in ("0.1", "1"):
        state = ui_reads(views[f"{key}-lr{rate}"])
        assert _selected(store, exp, state) == {rid for (_, r), rid in configs.items() if r == rate}
        assert json.loads(views[f"{key}-lr{rate}"])["name"] == f"lr {parent[:8]} lr={rate}"
    assert main["groupBy"]["groupByKeys"] == [{"mode": "param", "groupByData": "delta"}]
    assert main["useGroupedValuesInCharts"] is False and main["runsHiddenMode"] == "SHOW_ALL"
    lines = [c for c in main["compareRunCharts"] if c["type"] == "LINE"]
    assert [(c["metricKey"], c["scaleType"]) for c in lines] == [
        (TRAIN_LOSS, "log"), (TEST_ACCURACY, "linear"), (GRAD_COSINE, "linear")
    ]  # fmt: skip
    assert [c["metricKey"] for c in main["compareRunCharts"] if c["type"] == "BAR"] == ["final_test_accuracy"]
    assert "tags.`outcomes`" in main["selectedColumns"] and "metrics.`seeds`" in main["selectedColumns"]

    chosen = [configs[("ng", "1")], configs[("nielsen", "0.1")], configs[("chain", "1")]]
    mark_chosen(store, chosen)
    d.create_dashboard(store, exp, parent, name="lr", chosen=True)
    value = client(store).get_experiment(exp).tags[f"mlflow.sharedViewState.{key}"]
    assert json.loads(value)["name"] == f"lr {parent[:8]} chosen rates"
    assert _selected(store, exp, ui_reads(value)) == set(chosen)


def test_over_100_configurations_the_first_rate_s_view_is_linked(store, monkeypatch):
    from harness.tracking import client

    exp, parent, configs = _configuration_store(store)
    monkeypatch.setattr(d, "UI_RUNS_LIMIT", 4)  # 6 configurations: "too many" for one view
    url = d.create_dashboard(store, exp, parent)
    key = d.sweep_view_key(parent)
    assert url == d.dashboard_url(store, exp, f"{key}-lr0.1")
    assert f"mlflow.sharedViewState.{key}" not in client(store).get_experiment(exp).tags


@pytest.mark.slow
def test_the_link_opens_the_study_s_configurations_with_their_charts(tmp_path):
    """An 8-job sweep (2 losses x 2 rules x 2 seeds), its configuration runs written and its views saved, ``mlflow
    ui`` over the store: the link shows the 4 configurations (no seed run) in two groups whose labels read in
    full (``Group: ng``), and the chart cards drawn; the table view, the columns; an unknown key, the UI's error."""
    assert CHROMIUM.exists(), "the UI test needs Debian's chromium: apt-get install -y chromium (.ci/run does)"
    from mlflow import MlflowClient
    from playwright.sync_api import expect, sync_playwright

    from harness.tracking.study import write_configuration_runs

    sweep = harness_cmd("-m", "loss=bce,mse", "delta=ng,nielsen", "seed=0,1", "train.epochs=300")
    p = subprocess.run(sweep, cwd=tmp_path, capture_output=True, text=True, env=harness_env(), timeout=300)
    assert p.returncode == 0, p.stderr
    (printed,) = [ln.split()[1] for ln in p.stdout.splitlines() if ln.startswith("dashboard: ")]  # the sweep's link
    (tmp_path / "mlflow.db").rename(tmp_path / "server.db")  # MlflowServer serves root/server.db
    store = f"sqlite:///{tmp_path / 'server.db'}"
    c = MlflowClient(store)
    exp = c.get_experiment_by_name("harness").experiment_id
    (parent,) = [r for r in c.search_runs([exp]) if r.info.run_name == "sweep"]
    seeds = [r for r in c.search_runs([exp]) if r.data.tags.get("harness.level") == "seed"]
    assert len(seeds) == 8 and all(d.BEST_TEST_ACCURACY in run.data.metrics for run in seeds)
    assert len(write_configuration_runs(store, parent.info.run_id)) == 4  # what the sweep's end called: idempotent
    url = d.create_dashboard(store, exp, parent.info.run_id, name="sweep")
    key = d.sweep_view_key(parent.info.run_id)
    assert printed == url == d.dashboard_url(store, exp, key)  # the printed link opens the configurations' view
    names = [f"{loss}-sigmoid-{delta}" for loss in ("bce", "mse") for delta in ("ng", "nielsen")]

    server = MlflowServer(tmp_path, command="ui").start()
    out = artifacts_dir()
    try:
        expect.set_options(timeout=90_000)  # a loaded 2-core machine renders slowly
        link = url.replace(d.DEFAULT_UI, server.uri)
        with sync_playwright() as pw:
            browser = pw.chromium.launch_persistent_context(
                str(tmp_path / "chromium-profile"), executable_path=str(CHROMIUM), headless=True, args=ARGS,
                viewport={"width": 1600, "height": 1000},
            )  # fmt: skip
            page = browser.new_page()
            page.set_default_timeout(90_000)
            page.goto(link)
            expect(page.get_by_text("You're viewing a shared view")).to_be_visible()
            # The runs list: two groups by delta rule, labelled in full, each holding its two configurations.
            for rule in ("ng", "nielsen"):
                expect(page.get_by_text(f"Group: {rule}", exact=True)).to_be_visible()
            for name in names:
                expect(page.get_by_role("link", name=name, exact=True)).to_have_count(1)
            for run in seeds:  # the seeds are nested under their configuration, not listed
                expect(page.get_by_role("link", name=run.info.run_name, exact=True)).to_have_count(0)
            expect(page.get_by_text("4 matching runs")).to_be_visible()
            # The charts: the view's section (4 cards), one line per configuration, the final accuracy's bars.
            expect(page.get_by_text(re.compile(r"^Sweep\s*\(4\)$"))).to_have_count(1)
            cards = page.get_by_test_id("experiment-view-compare-runs-card")
            for title in (TRAIN_LOSS, TEST_ACCURACY, GRAD_COSINE):
                line = cards.filter(has_text=title).filter(has_text="Step").first
                traces = line.locator("svg.main-svg .scatterlayer .trace")
                expect(traces.first).to_be_attached()
                n = traces.count()  # plotly draws each run as a few traces (its line and its hover markers)
                assert n >= 4 and n % 4 == 0, n
            bars = cards.filter(has_text="final_test_accuracy").locator("svg.main-svg .barlayer .trace")
            expect(bars.first).to_be_attached()
            close = page.locator("button[data-component-id='mlflow.assistant.chat_panel.close']")
            if close.count():  # the assistant panel takes a third of the width: not part of the view
                close.click()
            page.wait_for_timeout(1500)
            page.screenshot(path=out / "dashboard.png")

            # The same view as a table: its columns.
            page.locator("label").filter(has=page.locator("input[value=TABLE]")).click()
            for header in ("loss", "activation", "delta", "pairing", "outcomes", "final_test_accuracy", "seeds"):
                expect(page.get_by_role("columnheader", name=header, exact=True).first).to_be_visible()
            page.screenshot(path=out / "dashboard-table.png")

            # A key that is not on the experiment: the UI says so and shows no view.
            page.goto(d.dashboard_url(server.uri, exp, "no-such-view"))
            expect(page.get_by_text('share key "no-such-view" does not exist')).to_be_visible()
            expect(page.get_by_text("You're viewing a shared view")).to_have_count(0)
            browser.close()
    finally:
        server.stop()
    print(f"dashboard screenshots: {out / 'dashboard.png'} {out / 'dashboard-table.png'}")
