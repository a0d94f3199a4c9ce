"""A study as the MLflow UI can show it: one configuration run per configuration, the seeds nested under it.

A sweep is one parent run with one seed run per (configuration, seed); ``xor_grid`` is 36 configurations x 30
seeds = 1,080 runs, and the MLflow UI lists 100 runs a page and draws at most 100 per chart. After a sweep,
:func:`write_configuration_runs` adds one run per configuration under the parent, holding its seeds' mean at
every logged step under the seed runs' own metric names (plus a 95 % CI band and a count), and a summary; the
seed runs move under their configuration run, so the UI's nested view reads parent -> configuration -> seed.

Also here: what a resumed sweep needs to keep the study whole (:func:`adopt_runs`, :func:`end_stale_runs`),
the configuration runs marked at chosen learning rates (:func:`mark_chosen`), and the end-of-study table
(:func:`study_table`).

Knows nothing of the math: metric and tag names come from :mod:`harness.names`, values are numbers.

How to wire it (harness/sweep.py, in the launching process):

- each seed run's start tags get ``LEVEL_TAG: SEED_LEVEL`` and ``CONFIGURATION_TAG: configuration_hash(cfg)``
  (``cfg`` the resolved config as a plain mapping, as for ``config_hash``);
- a resumed job calls ``adopt_runs(uri, parent, [ids of the runs it skipped])``; the launching process calls
  ``end_stale_runs(uri, experiment, overrides, current_parent_run_id=parent)`` once it made the new parent;
- ``end_parent``: after ``report_children`` and the report (which read the seeds as the parent's children),
  ``write_configuration_runs(uri, parent)``, then ``create_dashboard`` and ``print(study_table(uri, parent))``.
  A report built later must read a sweep's seeds with :func:`study_seed_runs` (children and grandchildren).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import socket
import sys
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from harness.names import (
    ACTIVATION_PARAM,
    ADOPTED_TAG,
    BEST_TEST_ACCURACY,
    CHOSEN_RATE_TAG,
    CONFIGURATION_LEVEL,
    CONFIGURATION_TAG,
    COUNT_SUFFIX,
    EPOCHS_TO_THRESHOLD,
    FINAL_TEST_ACCURACY,
    HASH_TAG,
    HI_SUFFIX,
    HOST_TAG,
    LEVEL_TAG,
    LO_SUFFIX,
    LOSS_PARAM,
    MEDIAN_EPOCHS_TO_THRESHOLD,
    METRICS,
    OUTCOME_TAG,
    OUTCOMES,
    OUTCOMES_TAG,
    OVERRIDES_TAG,
    PAIRING_TAG,
    PARENT_TAG,
    PID_TAG,
    SEED_LEVEL,
    SEEDS,
    SEEDS_PREFIX,
    SEEDS_REACHED,
    SWEEP_TAG,
    TAGS_TAG,
    TEST_ACCURACY,
)
from harness.tracking import mlflow_sql
from harness.tracking.queries import all_runs, config_hash, end_orphans, histories, study_seed_runs
from harness.tracking.queries import is_configuration as _is_configuration
from harness.tracking.run import client, start_tags

SEED_PARAM = "seed"
# Params that differ between the runs of one configuration, besides the seed (none today): left out of the
# configuration's identity when runs carry no CONFIGURATION_TAG (stores older than the tag).
RUN_SPECIFIC_PARAMS = (SEED_PARAM,)
# Tags copied to a configuration run when all its seeds agree on them.
COMMON_TAGS = (PAIRING_TAG, TAGS_TAG)
# A SQL store keeps +-Inf as +-(largest double) (MLflow's sanitation): such values count as not finite.
FLOAT_MAX = sys.float_info.max
CONFIDENCE = 0.95
RESUME_KEY = "tracking.resume"
_SEED_IN_NAME = re.compile(r"-s\d+(?=-|$)")


def configuration_hash(config: Mapping[str, Any]) -> str:
    """Identity of a configuration: :func:`harness.tracking.config_hash` of the resolved config without ``seed``
    (and, as there, without the sections in ``NOT_IDENTITY``). The seeds of one configuration share it; any other
    difference (loss, rule, learning rate, epochs...) changes it. Tag it on seed runs as ``CONFIGURATION_TAG``."""
    return config_hash({k: v for k, v in config.items() if k != SEED_PARAM})


# --------------------------------------------------------------------------------------------- reading a study


def configuration_runs(
    uri: str, parent_run_id: str, fast_path: bool = True, experiment_id: str | None = None
) -> list[Any]:
    """The configuration runs under ``parent_run_id`` (active ones), as ``all_runs`` returns runs; pass
    ``experiment_id`` when known (else it is the parent's)."""
    c = client(uri)
    if experiment_id is None:
        experiment_id = c.get_run(parent_run_id).info.experiment_id
    return [
        r
        for r in all_runs(c, experiment_id, fast_path)
        if r.data.tags.get(PARENT_TAG) == parent_run_id and _is_configuration(r)
    ]


def _once_per_seed(seeds: list[Any]) -> list[Any]:
    """One run per config hash (a job run twice, e.g. KILLED then resumed): the FINISHED one, else the newest."""
    best: dict[str, Any] = {}
    for run in sorted(seeds, key=lambda r: (r.info.status == "FINISHED", r.info.start_time)):
        best[run.data.tags.get(HASH_TAG) or run.info.run_id] = run
    return list(best.values())


def _param_key(run: Any) -> str:
    """A configuration's identity from its params (stores older than ``CONFIGURATION_TAG``)."""
    kept = {k: v for k, v in run.data.params.items() if k not in RUN_SPECIFIC_PARAMS}
    return "p" + hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()[:15]


def group_configurations(seeds: Sequence[Any], key_tag: str = CONFIGURATION_TAG) -> dict[str, list[Any]]:
    """Seed runs grouped by configuration: by the tag ``key_tag`` when every run carries it, else (a store
    that predates it, or a mix) by their params without ``seed``, so that one configuration never splits."""
    tagged = all(key_tag in r.data.tags for r in seeds)
    groups: dict[str, list[Any]] = {}
    for run in seeds:
        key = run.data.tags[key_tag] if tagged else _param_key(run)
        groups.setdefault(key, []).append(run)
    return groups


# ------------------------------------------------------------------------------------------------- the numbers


def _finite(values: pd.DataFrame) -> pd.DataFrame:
    """``values`` with NaN, +-Inf and a SQL store's sanitised +-Inf (+-largest double) as NaN."""
    return values.where(np.isfinite(values) & (values.abs() < FLOAT_MAX))


def mean_band(values: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Per group of ``keys`` and per metric column of ``values``: the mean over the finite values, the
    Student t 95 % CI of that mean (``_lo``, ``_hi``: mean -+ t(0.975, n-1) s / sqrt(n), s with n-1 degrees of
    freedom; none for n < 2) and n (``_n``, the count of finite values). NaN where undefined."""
    from scipy import stats

    metrics = [c for c in values.columns if c not in keys]
    grouped = _finite(values[metrics]).groupby([values[k] for k in keys])
    mean, sd, n = grouped.mean(), grouped.std(ddof=1), grouped.count()
    half = stats.t.ppf(0.5 + CONFIDENCE / 2, (n - 1).where(n >= 2)) * sd / np.sqrt(n)
    out = {}
    for m in metrics:
        out[m], out[m + LO_SUFFIX], out[m + HI_SUFFIX] = mean[m], mean[m] - half[m], mean[m] + half[m]
        out[m + COUNT_SUFFIX] = n[m].astype("float64")
    return pd.DataFrame(out)


def mean_ci(values: Sequence[float]) -> tuple[float, float, float, int]:
    """Mean of the finite ``values``, its Student t 95 % CI (``scipy.stats.t``; NaN for n < 2) and n."""
    from scipy import stats

    x = np.asarray([v for v in values if v is not None and math.isfinite(v) and abs(v) < FLOAT_MAX], dtype=float)
    if len(x) == 0:
        return math.nan, math.nan, math.nan, 0
    mean = float(x.mean())
    if len(x) < 2:
        return mean, math.nan, math.nan, 1
    half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))
    return mean, mean - half, mean + half, len(x)


def median_to_threshold(epochs: Sequence[float | None]) -> float:
    """Median over all seeds of the epochs to threshold, a seed that never reached it ranking last (+inf): so
    the median exists (is finite) only when more than half the seeds reached the threshold; else +inf."""
    x = np.asarray([math.inf if e is None or not math.isfinite(e) else e for e in epochs], dtype=float)
    return float(np.median(x)) if len(x) else math.nan


def _outcome(run: Any) -> str:
    """A seed run's outcome: its tag, else its status (a run ended from outside carries no tag)."""
    status = {"FAILED": "failed", "KILLED": "killed", "RUNNING": "running"}.get(run.info.status, "completed")
    return run.data.tags.get(OUTCOME_TAG) or status


def outcome_counts(seeds: Sequence[Any]) -> Counter:
    """How many seeds ended in each outcome (completed, diverged, undefined, failed, killed, ...)."""
    return Counter(_outcome(r) for r in seeds)


def outcomes_text(counts: Mapping[str, int]) -> str:
    """``"28 completed, 2 diverged"``: the non-zero counts, in the order of ``OUTCOMES``, then any other."""
    order = [o for o in OUTCOMES if counts.get(o)] + sorted(o for o in counts if o not in OUTCOMES and counts[o])
    return ", ".join(f"{counts[o]} {o}" for o in order)


def summary(seeds: Sequence[Any], last: Mapping[str, float]) -> dict[str, float]:
    """A configuration's summary metrics from its seed runs (each counted once) and ``last``, each seed's last
    finite test accuracy (by run id; FINISHED seeds only):

    - ``seeds`` = n; ``seeds_<outcome>`` for every outcome in ``OUTCOMES``;
    - ``final_test_accuracy`` (``_lo``, ``_hi``, ``_n``): the mean over the FINISHED seeds of their last finite
      test accuracy, with its Student t 95 % CI (a diverged seed counts with its last value before it stopped);
    - ``best_test_accuracy``: the mean of the FINISHED seeds' ``best_test_accuracy``;
    - ``median_epochs_to_threshold`` (:func:`median_to_threshold`; only when finite) and ``seeds_reached``.
    """
    counts = outcome_counts(seeds)
    finished = [r for r in seeds if r.info.status == "FINISHED"]
    out = {SEEDS: float(len(seeds)), **{SEEDS_PREFIX + o: float(counts.get(o, 0)) for o in OUTCOMES}}
    mean, lo, hi, n = mean_ci([last[r.info.run_id] for r in finished if r.info.run_id in last])
    out[FINAL_TEST_ACCURACY + COUNT_SUFFIX] = float(n)
    for key, value in ((FINAL_TEST_ACCURACY, mean), (FINAL_TEST_ACCURACY + LO_SUFFIX, lo),
                       (FINAL_TEST_ACCURACY + HI_SUFFIX, hi)):  # fmt: skip
        if math.isfinite(value):
            out[key] = value
    best = mean_ci([r.data.metrics.get(BEST_TEST_ACCURACY, math.nan) for r in finished])[0]
    if math.isfinite(best):
        out[BEST_TEST_ACCURACY] = best
    reached = [r.data.metrics.get(EPOCHS_TO_THRESHOLD) for r in finished]
    out[SEEDS_REACHED] = float(sum(e is not None and math.isfinite(e) for e in reached))
    median = median_to_threshold(reached)
    if math.isfinite(median):
        out[MEDIAN_EPOCHS_TO_THRESHOLD] = median
    return out


def last_finite(history: pd.DataFrame, metric: str = TEST_ACCURACY) -> dict[str, float]:
    """Each run's last finite value of ``metric`` in a :func:`histories` frame (sorted by run and epoch)."""
    kept = history.loc[_finite(history[[metric]])[metric].notna(), ["run_id", metric]]
    return kept.groupby("run_id")[metric].last().to_dict()


# ----------------------------------------------------------------------------------- the configuration runs


def configuration_name(seeds: Sequence[Any]) -> str:
    """The seeds' run name without its ``-s<seed>`` part: ``bce-sigmoid-ng``, ``bce-sigmoid-ng-lr0.316``."""
    names = Counter(_SEED_IN_NAME.sub("", r.info.run_name or "", count=1) for r in seeds)
    return names.most_common(1)[0][0] or "configuration"


def _unique_names(groups: Mapping[str, list[Any]]) -> dict[str, str]:
    """A readable name per configuration, made unique by the params that tell same-named ones apart."""
    names = {key: configuration_name(seeds) for key, seeds in groups.items()}
    for name in {n for n in names.values() if list(names.values()).count(n) > 1}:
        keys = [k for k, n in names.items() if n == name]
        params = [common_params(groups[k]) for k in keys]
        differ = sorted({p for ps in params for p in ps if len({q.get(p) for q in params}) > 1})
        for key, ps in zip(keys, params):
            names[key] = name + "".join(f"-{p.rsplit('.', 1)[-1]}{ps.get(p, '')}" for p in differ)
    return names


def common_params(seeds: Sequence[Any]) -> dict[str, str]:
    """The params every seed run logged with the same value, without the seed."""
    first, rest = seeds[0].data.params, seeds[1:]
    return {
        k: v for k, v in first.items() if k not in RUN_SPECIFIC_PARAMS and all(r.data.params.get(k) == v for r in rest)
    }


def _common_tags(seeds: Sequence[Any]) -> dict[str, str]:
    values = {t: {r.data.tags.get(t) for r in seeds} for t in COMMON_TAGS}
    return {t: v.pop() for t, v in values.items() if len(v) == 1 and None not in v}


def _metric_rows(
    band: pd.DataFrame, summary_values: Mapping[str, float], now: int
) -> list[tuple[str, float, int, int]]:
    """The ``(key, value, timestamp, step)`` rows of one configuration: every defined value of ``band`` (indexed
    by step), then the summary at the last step."""
    rows = []
    steps = band.index.to_numpy()
    for key in band.columns:
        values = band[key].to_numpy()
        keep = np.isfinite(values)
        rows.extend(zip([key] * int(keep.sum()), values[keep].tolist(), [now] * int(keep.sum()), steps[keep].tolist()))
    last = int(steps.max()) if len(steps) else 0
    rows.extend((k, float(v), now, last) for k, v in summary_values.items())
    return rows


def write_configuration_runs(
    uri: str,
    parent_run_id: str,
    *,
    key_tag: str = CONFIGURATION_TAG,
    metrics: Sequence[str] = METRICS,
    fast_path: bool = True,
) -> list[str]:
    """Write one configuration run per configuration of the sweep ``parent_run_id``; returns their run ids.

    Call it in the launching process after every job (also after a resume): it reads the sweep's seed runs
    (children of the parent, and children of its configuration runs if a previous call nested them), each
    config hash once, groups them by ``key_tag`` (:func:`group_configurations`), and for each configuration
    creates one FINISHED run under the parent, named like ``bce-sigmoid-ng`` (``-lr0.316`` when the rate varies),
    tagged ``harness.level=configuration``, ``key_tag``, ``outcomes``, and ``pairing`` and ``harness.tags`` when
    its seeds agree, with the seeds' common params (no ``seed``) and these metrics:

    - at every step any FINISHED seed logged, for each of ``metrics``, under the same name: the mean over the
      seeds whose value at that step is finite. A NaN (an undefined loss) or +-Inf value is left out, and a
      seed that stopped early (diverged) is simply absent at later steps: the mean goes on over the seeds still
      there. ``<metric>_n`` is that count at each step, so a chart of it shows where seeds dropped out.
    - the band ``<metric>_lo`` / ``<metric>_hi``: the Student t 95 % CI of that mean (mean -+ t(0.975, n-1)
      s/sqrt(n)), logged where n >= 2. Chosen over the seeds' min-max: the line is a mean, and what a reader
      compares between configurations is how well the mean is known; the seeds' own spread is in the seed
      runs (and the UI's grouped band). With n = 30 and bounded accuracies the t interval is a sound
      approximation; it may pass 1 when all but a few seeds sit at 1.0.
    - the summary (:func:`summary`): ``seeds``, ``seeds_<outcome>``, ``final_test_accuracy`` with its CI,
      ``best_test_accuracy``, ``median_epochs_to_threshold``, ``seeds_reached``.

    FAILED and KILLED seeds count in ``seeds`` and the outcome counts, never in the means (their histories were
    cut by the infrastructure, not by training). Then every seed run is re-parented under its configuration run
    (``mlflow.parentRunId``), so MLflow's nested view reads parent -> configuration -> seed.

    Idempotent: configuration runs a previous call left under the parent are deleted (MLflow's soft delete) and
    written anew from all the seeds, their ``harness.chosen_rate`` tag carried over. On a SQL store the writes
    are two transactions (:func:`mlflow_sql.create_runs`, :func:`mlflow_sql.write_many`) and the histories one
    pivoted query per 100 runs (:func:`harness.tracking.histories`); elsewhere (HTTP) MLflow's public API.
    """
    c = client(uri)
    experiment_id = c.get_run(parent_run_id).info.experiment_id
    runs = all_runs(c, experiment_id, fast_path)
    old = [r for r in runs if r.data.tags.get(PARENT_TAG) == parent_run_id and _is_configuration(r)]
    seeds = _once_per_seed(study_seed_runs(runs, parent_run_id))
    groups = group_configurations(seeds, key_tag)
    if not groups:
        return []
    finished = [r.info.run_id for r in seeds if r.info.status == "FINISHED"]
    history = histories(uri, finished, list(metrics), fast_path=fast_path)
    by_config = {r.info.run_id: key for key, members in groups.items() for r in members}
    history["configuration"] = history["run_id"].map(by_config)
    bands = mean_band(history[["configuration", "epoch", *metrics]], ["configuration", "epoch"])
    last = last_finite(history) if TEST_ACCURACY in metrics else {}
    chosen = {r.data.tags.get(CONFIGURATION_TAG) for r in old if r.data.tags.get(CHOSEN_RATE_TAG) == "true"}
    names = _unique_names(groups)
    now = int(time.time() * 1000)
    specs, writes = [], []
    for key, members in groups.items():
        counts = outcome_counts(members)
        tags = {LEVEL_TAG: CONFIGURATION_LEVEL, CONFIGURATION_TAG: key, OUTCOMES_TAG: outcomes_text(counts),
                **_common_tags(members)}  # fmt: skip
        if key in chosen:
            tags[CHOSEN_RATE_TAG] = "true"
        band = bands.xs(key, level="configuration") if key in bands.index.get_level_values(0) else bands.iloc[:0]
        rows = _metric_rows(band, summary(members, last), now)
        specs.append((names[key], start_tags(tags, parent_run_id)))
        writes.append((rows, common_params(members), members))
    created = _write(uri, c, experiment_id, specs, writes, fast_path)
    for run in old:  # only now: until the new runs hold the seeds, the old ones must keep them findable
        c.delete_run(run.info.run_id)
    return created


def _write(uri: str, c: Any, experiment_id: str, specs: list, writes: list, fast_path: bool) -> list[str]:
    """Create the configuration runs and write them, and nest the seeds: SQL in two transactions, else the API."""
    store = mlflow_sql.sql_store(c) if fast_path else None
    if store is not None:
        created = [rid for rid, _ in mlflow_sql.create_runs(store, experiment_id, specs)]
        try:
            batch = [mlflow_sql.RunWrite(rid, rows, {}, "FINISHED", params)
                     for rid, (rows, params, _) in zip(created, writes)]  # fmt: skip
            batch += [mlflow_sql.RunWrite(s.info.run_id, [], {PARENT_TAG: rid})
                      for rid, (_, _, members) in zip(created, writes) for s in members]  # fmt: skip
            mlflow_sql.write_many(store, batch)
        except BaseException:
            for rid in created:  # nothing left RUNNING
                c.set_terminated(rid, "FAILED")
            raise
        return created
    return [_write_one_api(c, experiment_id, spec, write) for spec, write in zip(specs, writes)]


def _write_one_api(c: Any, experiment_id: str, spec: tuple, write: tuple) -> str:
    """One configuration run through MLflow's public API (``log_batch`` splits into MLflow's per-call limits)."""
    from mlflow.entities import Metric, Param

    (name, tags), (rows, params, members) = spec, write
    run_id = c.create_run(experiment_id, run_name=name, tags=tags).info.run_id
    status = "FAILED"
    try:
        c.log_batch(run_id, params=[Param(k, v) for k, v in params.items()])
        for start in range(0, len(rows), 1000):
            c.log_batch(run_id, metrics=[Metric(k, v, t, s) for k, v, t, s in rows[start : start + 1000]])
        for seed in members:
            c.set_tag(seed.info.run_id, PARENT_TAG, run_id)
        status = "FINISHED"
    finally:
        c.set_terminated(run_id, status)
    return run_id


def mark_chosen(uri: str, run_ids: Iterable[str]) -> None:
    """Tag configuration runs ``harness.chosen_rate=true``: those at each triple's chosen learning rate, the
    ones the dashboard's first view shows (``create_dashboard(..., chosen=True)``). Whoever chooses the rates
    (the lr_fairness report) calls it; :func:`write_configuration_runs` keeps the mark when it rewrites."""
    c = client(uri)
    for run_id in run_ids:
        c.set_tag(run_id, CHOSEN_RATE_TAG, "true")


# ------------------------------------------------------------------------------------------------------ resume


def adopt_runs(uri: str, parent_run_id: str, run_ids: Iterable[str]) -> list[str]:
    """Re-parent FINISHED runs of an earlier, interrupted sweep of the same study under ``parent_run_id``,
    tagged ``harness.adopted_from=<their previous parent>`` (and ``harness.level=seed``); returns the ids
    adopted. Runs that are not FINISHED, are configuration runs, or already are the parent's are skipped.

    The lead calls it in a resumed job for the runs it skips, so the new sweep's configuration runs count
    every seed once (several calls, one per resumed job, are fine). The runs are read in one query of the
    parent's experiment; the tags written in one transaction on a SQL store, else one ``set_tag`` per tag."""
    c = client(uri)
    wanted = list(dict.fromkeys(run_ids))
    if not wanted:
        return []
    experiment_id = c.get_run(parent_run_id).info.experiment_id
    known = {r.info.run_id: r for r in all_runs(c, experiment_id)}  # one read, not one get_run per run
    adopted: dict[str, dict[str, str]] = {}
    for run_id in wanted:
        run = known.get(run_id) or c.get_run(run_id)
        tags = run.data.tags
        if run.info.status != "FINISHED" or tags.get(LEVEL_TAG) == CONFIGURATION_LEVEL:
            continue
        if tags.get(PARENT_TAG) == parent_run_id:
            continue
        adopted[run_id] = {PARENT_TAG: parent_run_id, ADOPTED_TAG: tags.get(PARENT_TAG, ""), LEVEL_TAG: SEED_LEVEL}
    store = mlflow_sql.sql_store(c)
    if store is not None and adopted:
        mlflow_sql.write_many(store, [mlflow_sql.RunWrite(rid, [], t) for rid, t in adopted.items()])
    else:
        for rid, t in adopted.items():
            for k, v in t.items():
                c.set_tag(rid, k, v)
    return list(adopted)


def same_study_overrides(overrides: str) -> tuple[str, ...]:
    """A sweep's ``harness.overrides`` as its study's identity: the overrides sorted, without
    ``tracking.resume`` (the resumed command is the first one plus that key)."""
    kept = [o for o in overrides.split() if o.split("=", 1)[0].lstrip("+~") != RESUME_KEY]
    return tuple(sorted(kept))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


def _launcher_gone(run: Any) -> bool:
    """Whether the process that started ``run`` is gone: on this host, its pid is not alive. A run started on
    another host cannot be checked from here and counts as alive."""
    host, pid = run.data.tags.get(HOST_TAG), run.data.tags.get(PID_TAG)
    if host != socket.gethostname() or not (pid or "").isdigit():
        return False
    return int(pid) != os.getpid() and not _pid_alive(int(pid))


def end_stale_runs(
    uri: str,
    experiment: str,
    overrides: str,
    *,
    current_parent_run_id: str | None = None,
    fast_path: bool = True,
) -> list[str]:
    """End KILLED what a killed (SIGKILL) launching process of the same study left RUNNING; returns the run
    ids ended (parents and their runs).

    Same study: a sweep parent (tag ``harness.sweep_dir``) in ``experiment`` whose ``harness.overrides`` equal
    ``overrides`` as :func:`same_study_overrides` reads them (sorted, ``tracking.resume`` ignored), other than
    ``current_parent_run_id``. Stale: that parent is RUNNING and the process that started it (tags
    ``harness.host``, ``harness.pid``) is not alive on this host; a parent started on another host is left
    alone (its launcher may still run). Its RUNNING runs (children and grandchildren) end KILLED with
    ``outcome=killed`` first, then the parent."""
    c = client(uri)
    exp = c.get_experiment_by_name(experiment)
    if exp is None:
        return []
    runs = all_runs(c, exp.experiment_id, fast_path)
    want = same_study_overrides(overrides)
    stale = [
        r
        for r in runs
        if SWEEP_TAG in r.data.tags
        and r.info.status == "RUNNING"
        and r.info.run_id != current_parent_run_id
        and same_study_overrides(r.data.tags.get(OVERRIDES_TAG, "")) == want
        and _launcher_gone(r)
    ]
    ended = []
    for parent in stale:
        pid = parent.info.run_id
        under = [r for r in runs if r.data.tags.get(PARENT_TAG) == pid]
        under += [r for r in runs if r.data.tags.get(PARENT_TAG) in {u.info.run_id for u in under}]
        ended += [r.info.run_id for r in end_orphans(uri, under, "KILLED")]
        c.set_terminated(pid, "KILLED")
        ended.append(pid)
    return ended


# --------------------------------------------------------------------------------------------------- the table


def _fmt_acc(run: Any) -> str:
    m = run.data.metrics
    mean = m.get(FINAL_TEST_ACCURACY)
    if mean is None:
        return "-"
    lo, hi = m.get(FINAL_TEST_ACCURACY + LO_SUFFIX), m.get(FINAL_TEST_ACCURACY + HI_SUFFIX)
    return f"{mean:.3f} [{lo:.3f}, {hi:.3f}]" if lo is not None and hi is not None else f"{mean:.3f}"


def _fmt_epochs(run: Any) -> str:
    m = run.data.metrics
    median, reached, n = m.get(MEDIAN_EPOCHS_TO_THRESHOLD), m.get(SEEDS_REACHED, 0), m.get(SEEDS, 0)
    return f"{median:g} ({reached:.0f}/{n:.0f})" if median is not None else f"- ({reached:.0f}/{n:.0f})"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    line = lambda cells: "  ".join(str(x).ljust(w) for x, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


SHORT_OUTCOMES = {"completed": "done", "diverged": "div", "undefined": "undef", "failed": "fail", "killed": "kill"}


def _outcome_columns(runs: Sequence[Any]) -> list[str]:
    """The outcomes some configuration run counts (a column of zeros says nothing)."""
    return [o for o in OUTCOMES if any(r.data.metrics.get(SEEDS_PREFIX + o, 0) for r in runs)]


def study_table(uri: str, parent_run_id: str, *, max_rows: int = 60, fast_path: bool = True) -> str:
    """The end-of-study table, read from the configuration runs (:func:`write_configuration_runs`), best
    first: per configuration its seeds (n) and their outcome counts (done = completed, div = diverged, undef =
    undefined, fail, kill; only the columns that are not all zero), the mean final test accuracy [Student t 95 %
    CI] and the median epochs to threshold (seeds that reached it / n). Over ``max_rows`` configurations
    (lr_fairness: 252), one row per (loss, activation) instead: its configurations, the outcome counts summed,
    and its best configuration by mean final accuracy with that one's numbers. Lines stay under 120 columns."""
    configs = configuration_runs(uri, parent_run_id, fast_path)
    if not configs:
        return "no configuration runs (write_configuration_runs was not called for this sweep)"
    acc = lambda r: r.data.metrics.get(FINAL_TEST_ACCURACY, -1.0)  # noqa: E731
    configs.sort(key=lambda r: (-acc(r), r.info.run_name))
    seeds = int(sum(r.data.metrics.get(SEEDS, 0) for r in configs))
    outcomes = _outcome_columns(configs)
    title = f"{len(configs)} configurations, {seeds} seed runs"
    count = lambda runs, o: str(int(sum(r.data.metrics.get(SEEDS_PREFIX + o, 0) for r in runs)))  # noqa: E731
    tail = ["final test acc [95% CI]", "median epochs (reached/n)"]
    if len(configs) <= max_rows:
        header = ["configuration", "n", *(SHORT_OUTCOMES[o] for o in outcomes), *tail]
        rows = [[r.info.run_name, f"{r.data.metrics.get(SEEDS, 0):.0f}", *(count([r], o) for o in outcomes),
                 _fmt_acc(r), _fmt_epochs(r)] for r in configs]  # fmt: skip
        return title + "\n" + _table(header, rows)
    groups: dict[tuple[str, str], list[Any]] = {}
    for r in configs:
        groups.setdefault((r.data.params.get(LOSS_PARAM, "?"), r.data.params.get(ACTIVATION_PARAM, "?")), []).append(r)
    header = ["loss-activation", "configs", *(SHORT_OUTCOMES[o] for o in outcomes), "best configuration",
              *(f"its {t}" for t in tail)]  # fmt: skip
    rows = [
        [f"{loss}-{act}", str(len(members)), *(count(members, o) for o in outcomes), members[0].info.run_name,
         _fmt_acc(members[0]), _fmt_epochs(members[0])]
        for (loss, act), members in sorted(groups.items(), key=lambda kv: -acc(kv[1][0]))
    ]  # fmt: skip
    return title + "; one row per loss-activation\n" + _table(header, rows)


__all__ = [
    "adopt_runs",
    "configuration_hash",
    "configuration_runs",
    "end_stale_runs",
    "group_configurations",
    "mark_chosen",
    "mean_band",
    "mean_ci",
    "median_to_threshold",
    "study_seed_runs",
    "study_table",
    "summary",
    "write_configuration_runs",
]
