"""A sweep's dashboard: a saved view of the MLflow UI's runs page, stored on the experiment, opened by one link.

Knows nothing of the math: it writes names (from :mod:`harness.names`) into MLflow's own view format.

How the format was found (MLflow 3.17.2, its bundled UI)
--------------------------------------------------------
In headless Chromium (Playwright) on ``mlflow ui`` over a 4-job sweep: *Group by* → ``pairing`` (Tags) and
``delta`` (Params); *Columns* → a few params, tags and ``test_accuracy``; a search filter
``tags.mlflow.parentRunId = '<parent>'``; the chart view; *Add chart* → *Bar chart*, then *Parallel
coordinates*; then *Views* → *Save as new view* → name ``ui-made`` → *Save*. The UI wrote one experiment tag,
read back with ``MlflowClient().get_experiment(id).tags``::

    mlflow.sharedViewState.1796131334548d6z1dv3k =
        {"name": "ui-made", "createdAt": 1796131334548, "updatedAt": 1796131334548, "state": "deflate;eJztV99v4jgQ…"}

``state`` is ``"deflate;"`` + base64 of the zlib stream (pako's ``deflate``, which has the zlib header:
``zlib.decompress`` reads it) of the JSON view state. The JS bundle (``mlflow/server/js/build/static/js``;
grep ``sharedViewState``, ``deflate;``, ``Invalid saved-view envelope``, ``viewStateShareKey``) confirms it:

- Tag key ``mlflow.sharedViewState.<key>``. Value: the *saved-view envelope* above (``name`` a string,
  ``createdAt`` a number of ms, ``updatedAt`` optional, ``state`` a string: JSON, or ``deflate;``-compressed
  JSON). Only envelopes are listed in the *Views* menu (by ``name``; the UI refuses to save a 41st view or an
  envelope over 20,000 characters, MLflow's limit on an experiment tag's value). When a tag is not an
  envelope, the loader falls back to the older *share* format: the state itself, JSON or ``deflate;``.
- Link: ``#/experiments/<id>/runs?viewStateShareKey=<key>&compareRunsMode=<TABLE|CHART|ARTIFACT>``. The
  view mode is a URL parameter, not part of the state. The state is ignored when the URL also carries any
  search parameter (``searchFilter``, ``orderByKey``, …): the link carries nothing else.
- A key that is not on the experiment: the UI shows the notification
  ``Error loading shared view state: share key "<key>" does not exist`` and leaves for the experiment's page.

The state: the runs page's *search facets* and *UI state*, flat, in one object:

- Search facets: ``searchFilter`` (MLflow search syntax), ``orderByKey`` (``attributes.start_time``,
  ``metrics.`name```…), ``orderByAsc``, ``startTime`` (``ALL``), ``lifecycleFilter`` (``Active``),
  ``modelVersionFilter`` (``All Runs``), ``datasetsFilter`` (``[]``).
- Columns: ``selectedColumns``, each ``<type>.`<key>``` with type ``attributes`` (``Source``, ``Models``,
  ``Dataset``, ``User``, …), ``params``, ``metrics`` or ``tags``; ``columnOrder``; ``columnWidths``.
- Grouping: ``groupBy = {"aggregateFunction": "average"|"min"|"max", "groupByKeys": [{"mode": "tag"|"param"|
  "dataset", "groupByData": <key>}, …]}``; ``groupsExpanded``; ``useGroupedValuesInCharts`` (charts draw one
  aggregate line with a min-max band per group, for every chart: there is no per-chart switch).
- Runs shown: ``runsHiddenMode`` (``FIRST_10_RUNS`` by default, ``FIRST_20_RUNS``, ``SHOW_ALL``, ``HIDE_ALL``,
  ``HIDE_FINISHED_RUNS``, ``CUSTOM``); ``runsExpanded``, ``runsPinned``, ``runsHidden``, ``runsVisibilityMap``
  and ``autoRefreshEnabled`` are dropped from shared views.
- Layout: ``runListHidden`` (hide the runs list beside the charts), ``viewMaximized``, ``hideEmptyCharts``,
  ``isAccordionReordered``, ``globalLineChartConfig = {"xAxisKey": "step"|"time"|"time-relative"|"metric",
  "lineSmoothness": 0, "selectedXAxisMetricKey": ""}``, ``chartsSearchFilter``.
- Charts: ``compareRunSections = [{"uuid", "name", "display", "isReordered", "deleted", "isGenerated"}]`` and
  ``compareRunCharts``, cards in display order, each ``{"uuid", "type", "metricSectionId" (a section's uuid),
  "runsCountToCompare", "deleted", "isGenerated", …}`` and by type:
  ``LINE``: ``metricKey``, ``selectedMetricKeys``, ``displayName``, ``xAxisKey`` (``step``), ``xAxisScaleType``,
  ``scaleType`` (``linear``/``log``), ``lineSmoothness``, ``range``, ``yAxisKey`` (``metric``),
  ``yAxisExpressions``, ``ignoreOutliers``, ``useGlobalXaxisKey``, ``useGlobalLineSmoothing``;
  ``BAR``: ``metricKey``, ``selectedMetricKeys``; ``PARALLEL``: ``selectedParams``, ``selectedMetrics``,
  ``showAllRuns``. A bar or parallel chart shows each metric's *latest* value, i.e. the final one.
  Cards the UI made itself carry ``isGenerated: true``; it adds such cards for metrics no card shows.

MLflow 3.17.2's UI reads both formats; :func:`save_view` writes the envelope (a named view, in the *Views*
menu), or with ``named=False`` the bare compressed state, which UIs that predate saved views also read.
"""

from __future__ import annotations

import base64
import json
import time
import zlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from harness.names import (
    ACTIVATION_PARAM,
    BEST_TEST_ACCURACY,
    CHOSEN_RATE_TAG,
    CONFIGURATION_LEVEL,
    DELTA_PARAM,
    EPOCHS_TO_THRESHOLD,
    FINAL_TEST_ACCURACY,
    GRAD_COSINE,
    LEVEL_TAG,
    LOSS_PARAM,
    MEDIAN_EPOCHS_TO_THRESHOLD,
    OUTCOME_TAG,
    OUTCOMES_TAG,
    PAIRING_TAG,
    PARENT_TAG,
    SEEDS,
    TEST_ACCURACY,
    TRAIN_LOSS,
)

VIEW_TAG_PREFIX = "mlflow.sharedViewState."
SHARE_KEY_PARAM = "viewStateShareKey"
VIEW_MODE_PARAM = "compareRunsMode"
COMPRESSED_PREFIX = "deflate;"
DEFAULT_UI = "http://127.0.0.1:5000"
MAX_TAG_VALUE = 20000  # MLflow's limit on an experiment tag's value (the UI checks the same for a view)

DEFAULT_GROUP_BY: tuple[tuple[str, str], ...] = (("tag", PAIRING_TAG), ("param", DELTA_PARAM))
DEFAULT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("params", LOSS_PARAM),
    ("params", ACTIVATION_PARAM),
    ("params", DELTA_PARAM),
    ("tags", PAIRING_TAG),
    ("tags", OUTCOME_TAG),
    ("metrics", TEST_ACCURACY),
    ("metrics", EPOCHS_TO_THRESHOLD),
)
LINE_METRICS = (TRAIN_LOSS, TEST_ACCURACY, GRAD_COSINE)
FINAL_METRICS = (TEST_ACCURACY,)
TRIPLE_PARAMS = (LOSS_PARAM, ACTIVATION_PARAM, DELTA_PARAM)
TRIPLE_GROUP_BY = tuple(("param", p) for p in TRIPLE_PARAMS)
TRIPLE_FINAL_METRICS = (TEST_ACCURACY, BEST_TEST_ACCURACY, EPOCHS_TO_THRESHOLD)
SECTION_ID = "harness-sweep"

# The views of a study open on its configuration runs (harness.tracking.study): one run per configuration, whose
# metrics are its seeds' means, so 36 configurations fit the UI's 100 runs a page and a chart. Grouped by the
# delta rule alone: its values are short, so the runs list reads "Group: ng 12" where grouping by (pairing,
# delta) cut the label off ("Group: pairing: ..."). The charts draw each configuration (its own line and bar,
# named like bce-sigmoid-ng), not the groups' aggregate: the configurations are what a reader compares.
CONFIGURATION_GROUP_BY: tuple[tuple[str, str], ...] = (("param", DELTA_PARAM),)
CONFIGURATION_COLUMNS: tuple[tuple[str, str], ...] = (
    ("params", LOSS_PARAM),
    ("params", ACTIVATION_PARAM),
    ("params", DELTA_PARAM),
    ("tags", PAIRING_TAG),
    ("tags", OUTCOMES_TAG),
    ("metrics", FINAL_TEST_ACCURACY),
    ("metrics", MEDIAN_EPOCHS_TO_THRESHOLD),
    ("metrics", SEEDS),
)
CONFIGURATION_FINAL_METRICS = (FINAL_TEST_ACCURACY,)
LR_PARAM = "train.lr"
UI_RUNS_LIMIT = 100  # the MLflow UI's runs per page and per chart


def column(kind: str, key: str) -> str:
    """A column of the runs table as the UI names it: ``params.`loss```; kind: attributes|params|metrics|tags."""
    return f"{kind}.`{key}`"


def children_filter(parent_run_id: str) -> str:
    """The search filter for a sweep's jobs: its parent's children."""
    return f"tags.{PARENT_TAG} = '{parent_run_id}'"


def _card(uuid: str, kind: str, **fields: Any) -> dict[str, Any]:
    return {"uuid": uuid, "type": kind, "runsCountToCompare": 10, "metricSectionId": SECTION_ID,
            "deleted": False, "isGenerated": False, **fields}  # fmt: skip


def section(uuid: str, name: str) -> dict[str, Any]:
    """A section of chart cards, shown expanded."""
    return {"uuid": uuid, "name": name, "display": True, "isReordered": True, "deleted": False, "isGenerated": False}


def line_card(metric: str, scale: str = "linear") -> dict[str, Any]:
    """A line chart of ``metric`` against step (= epoch): one line per run, or per group with a band;
    ``scale``: the y axis, ``linear`` or ``log``."""
    return _card(
        f"line-{metric}", "LINE", displayName=metric, metricKey=metric, selectedMetricKeys=[metric],
        lineSmoothness=0, xAxisScaleType="linear", scaleType=scale, range={}, xAxisKey="step",
        selectedXAxisMetricKey="", yAxisKey="metric", yAxisExpressions=[], ignoreOutliers=False,
        useGlobalXaxisKey=False, useGlobalLineSmoothing=False,
    )  # fmt: skip


def bar_card(metric: str) -> dict[str, Any]:
    """A bar chart of ``metric``'s latest (final) value, one bar per group (per run when ungrouped)."""
    return _card(f"bar-{metric}", "BAR", metricKey=metric, selectedMetricKeys=[metric])


def parallel_card(params: Sequence[str], metrics: Sequence[str]) -> dict[str, Any]:
    """Parallel coordinates: one polyline per run through ``params`` and the final values of ``metrics``."""
    return _card("parallel", "PARALLEL", selectedParams=list(params), selectedMetrics=list(metrics),
                 showAllRuns=True)  # fmt: skip


def view_state(
    parent_run_id: str | None = None,
    *,
    search_filter: str | None = None,
    group_by: Iterable[tuple[str, str]] | None = DEFAULT_GROUP_BY,
    columns: Iterable[tuple[str, str]] = DEFAULT_COLUMNS,
    line_metrics: Iterable[str] = LINE_METRICS,
    final_metrics: Iterable[str] = FINAL_METRICS,
    triple_params: Sequence[str] = TRIPLE_PARAMS,
    aggregate: str = "average",
    order_by: str | None = column("metrics", TEST_ACCURACY),
    grouped_charts: bool = True,
    log_metrics: Iterable[str] = (),
) -> dict[str, Any]:
    """The runs page of a sweep as the MLflow UI's view state (the schema is in the module's docstring).

    Runs: ``search_filter``, default the children of ``parent_run_id`` (all runs when both are None), best
    final ``order_by`` first. Table: ``columns`` (pairs of kind and key), grouped by ``group_by`` (pairs of
    ``tag``/``param`` and key; None or empty: no grouping). Charts: each of ``line_metrics`` against step,
    per group (mean line and min-max band); a bar chart of each of ``final_metrics``' final value, per group
    (per run when ungrouped); when ungrouped, parallel coordinates too, through ``triple_params`` to the final
    metrics, one line per run (the UI draws none for groups: it cannot aggregate string params).
    ``grouped_charts=False``: the table stays grouped, the charts draw every run. ``log_metrics``: line charts
    with a log y axis (a loss that blows up on a few runs flattens every other line on a linear one)."""
    if search_filter is None:
        search_filter = children_filter(parent_run_id) if parent_run_id else ""
    keys = [{"mode": mode, "groupByData": key} for mode, key in group_by or ()]
    final = list(final_metrics)
    logs = set(log_metrics)
    charts = [line_card(m, "log" if m in logs else "linear") for m in line_metrics] + [bar_card(m) for m in final]
    if triple_params and final and not keys:
        charts.append(parallel_card(triple_params, final))
    return {
        "searchFilter": search_filter,
        "orderByKey": order_by or "attributes.start_time",
        "orderByAsc": False,
        "startTime": "ALL",
        "lifecycleFilter": "Active",
        "datasetsFilter": [],
        "modelVersionFilter": "All Runs",
        "selectedColumns": [column(kind, key) for kind, key in columns],
        "columnOrder": [],
        "columnWidths": {},
        "runsHiddenMode": "SHOW_ALL",
        "compareRunCharts": charts,
        "compareRunSections": [section(SECTION_ID, "Sweep")],
        "viewMaximized": False,
        "runListHidden": False,
        "isAccordionReordered": True,
        "useGroupedValuesInCharts": grouped_charts,
        "hideEmptyCharts": True,
        "groupBy": {"aggregateFunction": aggregate, "groupByKeys": keys} if keys else None,
        "groupsExpanded": {},
        "globalLineChartConfig": {"xAxisKey": "step", "lineSmoothness": 0, "selectedXAxisMetricKey": ""},
    }


def compress(text: str) -> str:
    """``deflate;`` + base64 of the zlib stream: what the UI's ``pako.deflate`` writes and reads."""
    return COMPRESSED_PREFIX + base64.b64encode(zlib.compress(text.encode("utf-8"), 9)).decode("ascii")


def decompress(text: str) -> str:
    if not text.startswith(COMPRESSED_PREFIX):
        raise ValueError("Invalid compressed text, payload header invalid")
    return zlib.decompress(base64.b64decode(text[len(COMPRESSED_PREFIX) :])).decode("utf-8")


def encode_view(state: Mapping[str, Any], name: str | None = None, created_ms: int | None = None) -> str:
    """The tag value for ``state``: a saved-view envelope named ``name``, or the bare compressed state."""
    packed = compress(json.dumps(state, separators=(",", ":")))
    if name is None:
        return packed
    now = int(time.time() * 1000) if created_ms is None else int(created_ms)
    return json.dumps({"name": name, "createdAt": now, "updatedAt": now, "state": packed})


def decode_view(value: str) -> dict[str, Any]:
    """The view state in a tag value, read the way MLflow 3.17's UI does: an envelope (its ``state`` JSON or
    ``deflate;``), else the state itself (``deflate;`` or JSON). Raises ValueError where the UI reports
    ``share key is invalid``."""
    try:
        envelope = json.loads(value)
    except ValueError:
        envelope = None
    if (
        isinstance(envelope, dict)
        and isinstance(envelope.get("name"), str)
        and isinstance(envelope.get("createdAt"), int | float)
        and isinstance(envelope.get("state"), str)
    ):
        value = envelope["state"]
    state = json.loads(decompress(value) if value.startswith(COMPRESSED_PREFIX) else value)
    if not isinstance(state, dict):
        raise ValueError("a view state is a JSON object")
    return state


def save_view(
    uri: str, experiment_id: str, key: str, state: Mapping[str, Any], name: str | None = None, named: bool = True
) -> str:
    """Store ``state`` on the experiment as view ``key`` (overwriting a view of that key); returns the tag.

    ``named``: as a saved view named ``name`` (default ``key``), listed in the UI's *Views* menu (MLflow
    3.17); else as the bare compressed state of a shared link, which older UIs read too."""
    from harness.tracking.run import client

    value = encode_view(state, name or key) if named else encode_view(state)
    if len(value) > MAX_TAG_VALUE:
        raise ValueError(f"view {key!r} is {len(value)} characters; an experiment tag holds {MAX_TAG_VALUE}")
    tag = VIEW_TAG_PREFIX + key
    client(uri).set_experiment_tag(experiment_id, tag, value)
    return tag


def ui_base(uri: str) -> str:
    """The UI serving ``uri``: the server itself for an HTTP store, else the default ``mlflow ui`` address."""
    return uri.rstrip("/") if uri.startswith(("http://", "https://")) else DEFAULT_UI


def dashboard_url(uri: str, experiment_id: str, key: str, mode: str = "CHART") -> str:
    """The link that opens view ``key`` on the experiment's runs page (not the GenAI overview), in the chart
    view (``mode="CHART"``) or the table (``"TABLE"``)."""
    return f"{ui_base(uri)}/#/experiments/{experiment_id}/runs?{SHARE_KEY_PARAM}={key}&{VIEW_MODE_PARAM}={mode}"


def sweep_view_key(parent_run_id: str, suffix: str = "") -> str:
    """The key of a sweep's view: stable, so a resumed sweep updates its view instead of adding one."""
    return f"sweep-{parent_run_id}{suffix}"


def configuration_filter(parent_run_id: str, *, chosen: bool = False, rate: str | None = None) -> str:
    """The search filter for a study's configuration runs (``harness.level=configuration`` under the parent);
    ``chosen``: only those tagged ``harness.chosen_rate=true``; ``rate``: only those at ``train.lr = rate``."""
    parts = [f"tags.`{LEVEL_TAG}` = '{CONFIGURATION_LEVEL}'", children_filter(parent_run_id)]
    if chosen:
        parts.append(f"tags.`{CHOSEN_RATE_TAG}` = 'true'")
    if rate is not None:
        parts.append(f"params.`{LR_PARAM}` = '{rate}'")
    return " and ".join(parts)


def configuration_view(parent_run_id: str, **filter_options: Any) -> dict[str, Any]:
    """A view of configuration runs (:func:`configuration_filter`): grouped by delta rule, a line per
    configuration for train_loss (log y axis), test_accuracy and grad_cosine, a bar per configuration for its
    mean final test accuracy; the table's columns are the configuration's triple, pairing, outcome counts and
    summary (``CONFIGURATION_COLUMNS``)."""
    return view_state(
        search_filter=configuration_filter(parent_run_id, **filter_options),
        group_by=CONFIGURATION_GROUP_BY,
        columns=CONFIGURATION_COLUMNS,
        final_metrics=CONFIGURATION_FINAL_METRICS,
        order_by=column("metrics", FINAL_TEST_ACCURACY),
        grouped_charts=False,
        log_metrics=(TRAIN_LOSS,),
    )


def _rate_order(rate: str) -> float:
    try:
        return float(rate)
    except ValueError:
        return float("inf")


def create_dashboard(
    uri: str, experiment_id: str, parent_run_id: str, name: str = "sweep", *, chosen: bool = False, **options: Any
) -> str:
    """Save the views of the study under ``parent_run_id`` and return the link to the first (the one to open).

    With configuration runs (:func:`harness.tracking.study.write_configuration_runs`, called first), every view
    shows configuration runs (:func:`configuration_view`), at most ``UI_RUNS_LIMIT`` = 100 of them, so none
    needs "Load more" and every chart draws them all:

    - the first view, named ``<name> <first 8 characters of the parent's id>``: every configuration when they
      are at most 100 (xor_grid, mnist_grid: 36); with ``chosen=True`` only the configuration runs tagged
      ``harness.chosen_rate=true`` (:func:`harness.tracking.study.mark_chosen`: each triple at its chosen rate);
    - when the configurations differ in ``train.lr`` (lr_fairness: 36 triples x 7 rates), one more view per rate,
      ``… lr=<rate>`` (key suffix ``-lr<rate>``), 36 each. Over 100 configurations and not ``chosen``, the first
      rate's view is the one linked.

    A sweep without configuration runs (the call was not wired, or an older store) keeps the former view of its
    seed runs, grouped by pairing and delta rule (``options`` as for :func:`view_state` change it), and its
    ``… per triple`` view (key suffix ``-triples``), grouped by (loss, activation, delta).

    How to wire it (harness/sweep.py, ``end_parent``): ``write_configuration_runs(uri, parent)`` first, then this
    (``chosen=True`` once the rates are marked), then print the link."""
    from harness.tracking.study import configuration_runs

    label = f"{name} {parent_run_id[:8]}"
    key = sweep_view_key(parent_run_id)
    configs = configuration_runs(uri, parent_run_id, experiment_id=experiment_id)
    if not configs:
        save_view(uri, experiment_id, key, view_state(parent_run_id, **options), name=label)
        triples = view_state(parent_run_id, group_by=TRIPLE_GROUP_BY, final_metrics=TRIPLE_FINAL_METRICS)
        save_view(uri, experiment_id, sweep_view_key(parent_run_id, "-triples"), triples, name=f"{label} per triple")
        return dashboard_url(uri, experiment_id, key)
    rates = sorted({r.data.params.get(LR_PARAM, "") for r in configs} - {""}, key=_rate_order)
    links = []
    if chosen or len(configs) <= UI_RUNS_LIMIT:
        title = f"{label} chosen rates" if chosen else label
        save_view(uri, experiment_id, key, configuration_view(parent_run_id, chosen=chosen), name=title)
        links.append(key)
    if len(rates) > 1:
        for rate in rates:
            rate_key = sweep_view_key(parent_run_id, f"-lr{rate}")
            save_view(
                uri, experiment_id, rate_key, configuration_view(parent_run_id, rate=rate), name=f"{label} lr={rate}"
            )
            links.append(rate_key)
    return dashboard_url(uri, experiment_id, links[0])
