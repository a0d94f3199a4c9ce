"""PostgreSQL as the shared store (``tracking.uri=postgresql://...``), against a real server (the ``postgres_uri``
fixture: a fresh database per test). Sweeps under joblib and Ray leave what the same sweep leaves in SQLite;
an interrupted sweep resumes; the report and the dashboard read from PostgreSQL; 8 writers at once lose
nothing; the password in the URI is written nowhere; two jobs adding one dataset at once both link it."""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
from conftest import harness_env, libpq_uri
from servers import harness_cmd, start_harness

from harness.names import METRICS

pytestmark = pytest.mark.slow
psycopg = pytest.importorskip("psycopg", reason="needs the postgres extra: pip install -e '.[postgres]'")

# Tags that name a process, a host or the parent run of one sweep, not what a run is.
VOLATILE_TAGS = {"harness.pid", "harness.host", "mlflow.parentRunId", "mlflow.user"}
# XOR, 8 runs in 4 folded jobs of 2 seeds; bce on identity outputs gives undefined (NaN) losses.
GRID = ("loss=bce,mse", "activation=sigmoid,identity", "seed=0,1", "train.epochs=15")
JOBLIB = ("hydra/launcher=joblib", "hydra.launcher.n_jobs=2")


def sweep(
    cwd: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 900
) -> subprocess.CompletedProcess:
    """``python -m harness -m ARGS`` in ``cwd``; fails the test with its stderr if it fails."""
    p = subprocess.run(harness_cmd("-m", *args), cwd=cwd, capture_output=True, text=True, env=env or harness_env(),
                       timeout=timeout)  # fmt: skip
    assert p.returncode == 0, p.stderr[-5000:]
    return p


def query(uri: str, sql: str, *params) -> list[tuple]:
    """Rows of ``sql`` on the PostgreSQL database of ``uri`` (psycopg: no MLflow in between)."""
    with psycopg.connect(libpq_uri(uri)) as con:
        return con.execute(sql, params).fetchall()


def without_uri(overrides: str) -> str:
    """A run's ``harness.overrides`` tag without its ``tracking.uri=...`` (the one override that names the store)."""
    return " ".join(o for o in overrides.split() if not o.startswith("tracking.uri="))


def store_contents(uri: str, experiment: str = "harness") -> dict[tuple[str, str], dict]:
    """Every child run by (config hash, job number): name, status, params and tags (without what names the store
    or the process) and metric histories as (step, value) lists."""
    from mlflow import MlflowClient

    c = MlflowClient(uri)
    out: dict[tuple[str, str], dict] = {}
    for run in c.search_runs([c.get_experiment_by_name(experiment).experiment_id], max_results=10000):
        tags = run.data.tags
        if "mlflow.parentRunId" not in tags or tags.get("harness.level") == "configuration":
            continue  # the seed runs only: configuration runs are their means
        kept = {k: v for k, v in tags.items() if k not in VOLATILE_TAGS}
        kept["harness.overrides"] = without_uri(kept["harness.overrides"])
        key = (tags["harness.config_hash"], tags["harness.job"])
        assert key not in out, key  # no run twice
        out[key] = {
            "name": run.info.run_name,
            "status": run.info.status,
            "params": {k: v for k, v in run.data.params.items() if k != "tracking.uri"},
            "tags": kept,
            "histories": {
                m: sorted((h.step, h.value) for h in c.get_metric_history(run.info.run_id, m)) for m in METRICS
            },
        }
    return out


def same_value(x: float, y: float) -> bool:
    return (math.isnan(x) and math.isnan(y)) or x == y


def assert_same_store(got: dict, expected: dict) -> None:
    """The same runs with the same name, status, params, tags and metric histories, value for value (the same
    code, seeds and BLAS threads give the same floats; both stores keep a float64)."""
    assert got.keys() == expected.keys()
    for key, a in got.items():
        b = expected[key]
        assert {k: a[k] for k in ("name", "status", "params", "tags")} == {
            k: b[k] for k in ("name", "status", "params", "tags")
        }, key
        for metric, rows in a["histories"].items():
            other = b["histories"][metric]
            assert [s for s, _ in rows] == [s for s, _ in other], (key, metric)
            assert all(same_value(x, y) for (_, x), (_, y) in zip(rows, other)), (key, metric)


@pytest.fixture(scope="module")
def sqlite_reference(tmp_path_factory) -> dict:
    """GRID under joblib (2 workers) into a SQLite file: what the PostgreSQL sweeps must leave too."""
    cwd = tmp_path_factory.mktemp("sqlite")
    sweep(cwd, *GRID, *JOBLIB, f"tracking.uri=sqlite:///{cwd / 'mlflow.db'}")
    contents = store_contents(f"sqlite:///{cwd / 'mlflow.db'}")
    assert len(contents) == 8
    outcomes = Counter(r["tags"]["outcome"] for r in contents.values())
    assert outcomes["completed"] >= 4 and sum(outcomes.values()) == 8
    assert any(math.isnan(v) for r in contents.values() for _, v in r["histories"]["train_loss"])  # NaN stored
    return contents


def test_a_joblib_sweep_into_postgresql_leaves_the_sqlite_sweeps_store(tmp_path, postgres_uri, sqlite_reference):
    p = sweep(tmp_path, *GRID, *JOBLIB, f"tracking.uri={postgres_uri}")
    assert_same_store(store_contents(postgres_uri), sqlite_reference)
    assert not (tmp_path / "mlflow.db").exists()  # nothing went to the default SQLite file
    pids = query(postgres_uri, "select count(distinct value) from tags where key = 'harness.pid'")[0][0]
    assert pids >= 2, p.stdout  # the launching process and at least one worker
    statuses = dict(query(postgres_uri, "select status, count(*) from runs group by status"))
    assert statuses == {"FINISHED": 13}  # 8 seed runs, their 4 configuration runs (2 seeds each) and the parent


def test_a_ray_sweep_into_postgresql_leaves_the_sqlite_sweeps_store(tmp_path, postgres_uri, sqlite_reference):
    pytest.importorskip("hydra_plugins.hydra_ray_launcher", reason="needs the ray extra: pip install -e '.[ray]'")
    # a Ray of its own (2 CPUs, no dashboard), stopped at the end: address=local, since without an address ray.init
    # joins a cluster already running on the machine (/tmp/ray/ray_current_cluster), and refuses num_cpus then
    args = ("hydra/launcher=ray", "hydra.launcher.ray.init.address=local", "+hydra.launcher.ray.init.num_cpus=2",
            "+hydra.launcher.ray.init.include_dashboard=false")  # fmt: skip
    env = {**harness_env(), "RAY_USAGE_STATS_ENABLED": "0"}
    p = sweep(tmp_path, *GRID, *args, f"tracking.uri={postgres_uri}", env=env)
    assert "Ray" in p.stdout + p.stderr
    assert_same_store(store_contents(postgres_uri), sqlite_reference)
    (driver,) = query(postgres_uri, "select value from tags where key = 'harness.pid' and run_uuid not in "
                      "(select run_uuid from tags where key = 'mlflow.parentRunId')")[0]  # fmt: skip
    workers = {v for (v,) in query(postgres_uri, "select value from tags where key = 'harness.pid'")} - {driver}
    assert workers  # the runs were written by Ray's worker processes, not the driver


def count_children(uri: str) -> int:
    """Child runs so far (0 while the sweep has not created MLflow's tables yet)."""
    try:
        return query(uri, "select count(*) from tags where key = 'mlflow.parentRunId'")[0][0]
    except psycopg.errors.UndefinedTable:
        return 0


def test_an_interrupted_sweep_resumes_without_duplicates(tmp_path, postgres_uri):
    """Ctrl-C (SIGINT to the process group) once 2 of 6 jobs have runs; then the same command with
    tracking.resume=true runs only what did not finish."""
    args = ("-m", "dataset=mnist", "seed=0,1,2,3,4,5", "train.epochs=25", "hydra.sweeper.fold=[]", *JOBLIB,
            f"tracking.uri={postgres_uri}")  # fmt: skip
    proc = start_harness(*args, cwd=tmp_path)
    deadline = time.monotonic() + 300
    while count_children(postgres_uri) < 2:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "fewer than 2 child runs after 300 s"
        time.sleep(0.3)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-5000:]
    before = dict(query(postgres_uri, "select status, count(*) from runs group by status"))
    assert set(before) <= {"FINISHED", "KILLED"} and before.get("KILLED", 0) >= 1, before  # nothing RUNNING
    assert count_children(postgres_uri) < 6  # interrupted mid-sweep

    p = subprocess.run(harness_cmd(*args, "tracking.resume=true"), cwd=tmp_path, capture_output=True, text=True,
                       env=harness_env(), timeout=900)  # fmt: skip
    assert p.returncode == 0, p.stderr[-5000:]
    finished = query(
        postgres_uri,
        "select h.value, s.value from runs r join tags h on h.run_uuid = r.run_uuid and h.key = 'harness.config_hash' "
        "join params s on s.run_uuid = r.run_uuid and s.key = 'seed' where r.status = 'FINISHED'",
    )
    assert p.stdout.count("harness: skipped") == before.get("FINISHED", 0)  # the parent was KILLED: all children
    hashes = Counter(h for h, _ in finished)
    assert len(hashes) == 6 and set(hashes.values()) == {1}  # every job finished exactly once
    assert sorted(int(s) for _, s in finished) == list(range(6))
    assert "RUNNING" not in {s for (s,) in query(postgres_uri, "select status from runs")}


SLOWDOWN_REPORT = ["report/runs.csv", "report/slowdown.html", "report/slowdown.ipynb"]


def test_the_report_and_the_dashboard_read_from_postgresql(tmp_path, postgres_uri):
    """A preset (slowdown: 4 runs) writes its report at the end of the sweep from PostgreSQL; the report command
    rebuilds it from the same database; the sweep's dashboard views are experiment tags there."""
    from mlflow import MlflowClient

    from harness.tracking.dashboard import create_dashboard, decode_view

    p = sweep(tmp_path, "+experiment=slowdown", f"tracking.uri={postgres_uri}")
    c = MlflowClient(postgres_uri)
    experiment = c.get_experiment_by_name("slowdown").experiment_id
    (parent,) = c.search_runs([experiment], "tags.`harness.sweep_dir` != ''")
    parent_id = parent.info.run_id
    csv = (tmp_path / "reports" / "slowdown-runs.csv").read_text().splitlines()
    seeds = "select run_uuid from tags where key = 'harness.level' and value = 'seed'"
    children = {r for (r,) in query(postgres_uri, seeds)}
    assert len(children) == 4 and {line.split(",")[0] for line in csv[1:]} == children
    assert "Question" in (tmp_path / "reports" / "slowdown.html").read_text()
    assert sorted(a.path for a in c.list_artifacts(parent_id, "report")) == SLOWDOWN_REPORT

    again = tmp_path / "again"
    q = subprocess.run([*harness_cmd()[:2], "harness.report", "slowdown", "--uri", postgres_uri, "--out", str(again)],
                       cwd=tmp_path, capture_output=True, text=True, env=harness_env(), timeout=600)  # fmt: skip
    assert q.returncode == 0, q.stderr[-5000:]
    assert (again / "slowdown-runs.csv").read_text().splitlines()[1:] == csv[1:]

    key = f"sweep-{parent_id}"
    assert f"viewStateShareKey={key}&compareRunsMode=CHART" in p.stdout
    views = dict(query(postgres_uri, "select key, value from experiment_tags where experiment_id = %s "
                       "and key like 'mlflow.sharedViewState.%%'", int(experiment)))  # fmt: skip
    # the configurations' view, and one per rate (slowdown ties each cost to its own rate)
    assert set(views) == {f"mlflow.sharedViewState.{key}{suffix}" for suffix in ("", "-lr0.005", "-lr0.15")}
    assert parent_id in decode_view(views[f"mlflow.sharedViewState.{key}"])["searchFilter"]
    url = create_dashboard(postgres_uri, experiment, parent_id, name="again")
    assert url.endswith(f"/#/experiments/{experiment}/runs?viewStateShareKey={key}&compareRunsMode=CHART")
    (value,) = query(postgres_uri, "select value from experiment_tags where key = %s", f"mlflow.sharedViewState.{key}")
    assert json.loads(value[0])["name"] == f"again {parent_id[:8]}"  # the saved-view envelope, rewritten


WRITERS, REPLICAS, STEPS, FLUSH_EVERY = 8, 3, 300, 50


def _writer(uri: str, barrier, i: int) -> None:
    """Writer ``i``: a group of REPLICAS runs (``RunGroup``, one transaction per flush for all), then one ``Run``
    alone; metric ``a`` = i + r + step, ``b`` = step; flushed every FLUSH_EVERY steps so the 8 writers'
    transactions interleave."""
    from harness.tracking import Run
    from harness.tracking.run import RunGroup

    barrier.wait(timeout=300)
    group = RunGroup([])
    group.create(uri, "writers", [(f"w{i}-r{r}", {"writer": str(i)}) for r in range(REPLICAS)])
    group.log_params([{"writer": i, "replica": r} for r in range(REPLICAS)])
    for step in range(STEPS):
        for r in range(REPLICAS):
            group.log_metrics(r, {"a": i + r + step, "b": step}, step)
        if step % FLUSH_EVERY == 0:
            group.flush()
    group.end("FINISHED", [{"done": "yes"}] * REPLICAS)
    run = Run.start(uri, "writers", f"w{i}-single", {"writer": str(i)})
    run.log_params({"writer": i, "replica": "single"})
    for step in range(STEPS):
        run.log_metrics({"a": i + step, "b": step}, step)
        if step % FLUSH_EVERY == 0:
            run.flush()
    run.end("FINISHED", {"done": "yes"})


def test_eight_parallel_writers_into_a_fresh_database_lose_nothing(postgres_uri):
    """The harness's way: the launching process creates the schema and the experiment, then 8 processes write at
    once. (8 processes that each create MLflow's schema in a fresh PostgreSQL database race: 7 of 8 died on
    ``CREATE TABLE alembic_version`` in 3 of 3 trials, as on SQLite: tests/test_postgres.py's report.)"""
    from harness.tracking import ensure_experiment

    assert query(postgres_uri, "select count(*) from information_schema.tables where table_schema = 'public'") == [(0,)]
    ensure_experiment(postgres_uri, "writers")
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(WRITERS)
    procs = [ctx.Process(target=_writer, args=(postgres_uri, barrier, i)) for i in range(WRITERS)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=600)
    assert [proc.exitcode for proc in procs] == [0] * WRITERS

    runs = WRITERS * (REPLICAS + 1)
    assert query(postgres_uri, "select status, count(*) from runs group by status") == [("FINISHED", runs)]
    assert query(postgres_uri, "select count(*) from params") == [(2 * runs,)]
    assert query(postgres_uri, "select count(*) from tags where key = 'done'") == [(runs,)]
    assert query(postgres_uri, "select count(*) from latest_metrics") == [(2 * runs,)]
    counts = dict(query(postgres_uri, "select key, count(*) from metrics group by key"))
    assert counts == {"a": runs * STEPS, "b": runs * STEPS}
    # every value, by a sum worked out without the harness: Σ_i Σ_r Σ_step (i + r + step) and the single runs'
    # Σ_i Σ_step (i + step); b sums 0..STEPS-1 once per run
    steps_sum = STEPS * (STEPS - 1) // 2
    writers_sum = WRITERS * (WRITERS - 1) // 2
    expected_a = (REPLICAS + 1) * (writers_sum * STEPS + WRITERS * steps_sum) + WRITERS * STEPS * sum(range(REPLICAS))
    sums = dict(query(postgres_uri, "select key, sum(value) from metrics group by key"))
    assert sums == {"a": expected_a, "b": runs * steps_sum}
    latest = query(postgres_uri, "select count(*) from latest_metrics where key = 'b' and step = %s", STEPS - 1)
    assert latest == [(runs,)]


def text_columns(uri: str) -> list[tuple[str, str]]:
    """(table, column) of every text column of the database's tables."""
    return query(
        uri,
        "select table_name, column_name from information_schema.columns where table_schema = 'public' "
        "and data_type in ('text', 'character varying')",
    )


def test_the_password_in_the_uri_is_written_nowhere(tmp_path, postgres_uri):
    """A sweep (a preset, so it writes its report) with the password in ``tracking.uri``: the password is in no
    line the sweep prints, no text in the store (params, tags, experiment tags, every text column) and no file it
    wrote (the report, the runs' artifacts, Hydra's sweep directory)."""
    from sqlalchemy.engine import make_url

    password = make_url(postgres_uri).password
    assert password and len(password) >= 8  # a real secret: a short one could match by accident
    p = subprocess.run(harness_cmd("+experiment=slowdown", f"tracking.uri={postgres_uri}"), cwd=tmp_path,
                       capture_output=True, text=True, env=harness_env(), timeout=900)  # fmt: skip
    assert p.returncode == 0, p.stderr[-3000:].replace(password, "<password>")
    assert (tmp_path / "reports" / "slowdown.html").exists()
    leaks = [name for name, text in (("stdout", p.stdout), ("stderr", p.stderr)) if password in text]
    for table, column in text_columns(postgres_uri):
        found = query(postgres_uri, f'select count(*) from "{table}" where "{column}" like %s', f"%{password}%")
        if found[0][0]:
            leaks.append(f"{table}.{column} ({found[0][0]} rows)")
    for path in sorted(tmp_path.rglob("*")):
        if path.is_file() and password.encode() in path.read_bytes():
            leaks.append(str(path.relative_to(tmp_path)))
    assert leaks == [], f"the password is written in: {leaks}"


def _blocked_backends(uri: str) -> int:
    """Sessions of the database waiting for a lock (here: an insert waiting for another transaction's row)."""
    sql = "select count(*) from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock'"
    return query(uri, sql)[0][0]


def test_two_jobs_adding_the_same_dataset_at_once_both_link_it(postgres_uri):
    """Two jobs' first ``log_input`` of one dataset at the same moment, made deterministic: another transaction has
    inserted the dataset's row and not committed yet, so MLflow's check finds no row and its insert waits on the
    unique index; when the other commits, that insert fails with PostgreSQL's unique violation ("duplicate key value
    violates unique constraint"). ``Run.log_input`` must then link the row that now exists, as it does on SQLite
    ("UNIQUE constraint failed"), instead of failing the job. (Seen for real in benchmarks/bench_stores.py: a
    180-run sweep through an MLflow server over PostgreSQL lost a job to it.)"""
    import threading
    import uuid

    import mlflow.data
    import numpy as np

    from harness.tracking import Run, ensure_experiment

    experiment = int(ensure_experiment(postgres_uri, "race"))
    run = Run.start(postgres_uri, "race", "first-use")
    dataset = mlflow.data.from_numpy(np.zeros((4, 2)), targets=np.ones((4, 2)), name="xor")
    d = dataset._to_mlflow_entity()
    errors: list[BaseException] = []

    def log_input() -> None:
        try:
            run.log_input(dataset)
        except BaseException as err:  # noqa: BLE001  (reported by the assertion below)
            errors.append(err)

    with psycopg.connect(libpq_uri(postgres_uri)) as other:  # a transaction until commit()
        other.execute(
            "insert into datasets (dataset_uuid, experiment_id, name, digest, dataset_source_type, dataset_source, "
            "dataset_schema, dataset_profile) values (%s, %s, %s, %s, %s, %s, %s, %s)",
            (uuid.uuid4().hex, experiment, d.name, d.digest, d.source_type, d.source, d.schema, d.profile),
        )
        thread = threading.Thread(target=log_input)
        thread.start()
        deadline = time.monotonic() + 120
        while _blocked_backends(postgres_uri) == 0:  # MLflow's insert now waits for this transaction
            assert thread.is_alive() and time.monotonic() < deadline, errors
            time.sleep(0.1)
        other.commit()
        thread.join(timeout=120)
    run.end("FINISHED")
    assert errors == [], f"log_input failed on the dataset row another job added meanwhile: {errors[0]}"
    assert query(postgres_uri, "select count(*) from datasets") == [(1,)]
    linked = "select count(*) from inputs where destination_type = 'RUN' and destination_id = %s"
    assert query(postgres_uri, linked, run.run_id) == [(1,)]
