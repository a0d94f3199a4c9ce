"""The fast SQL write path of ``harness.tracking.Run`` against MLflow's own ``log_batch``, its fallback, and
a run's record after ``Run.end`` merges the last metrics with the outcome tags."""

from __future__ import annotations

import math
import os
import uuid
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException

import harness.tracking.run
from harness.app import run_job
from harness.names import METRICS
from harness.tracking import Run, ensure_experiment, mlflow_sql

INF, NAN = math.inf, math.nan


def script() -> list[tuple[dict[str, float], int, int] | None]:
    """Calls ``(metrics, step, timestamp)``, ``None`` meaning "flush here": 1,288 values in all."""
    calls: list[tuple[dict[str, float], int, int] | None] = []
    for step in range(400):  # 1,200 values: the test's 500-value buffer flushes after steps 166 and 333
        ts = 1_000_000 + 10 * step
        odd = {5: NAN, 7: INF, 9: -INF, 399: NAN}.get(step, step / 7)
        calls.append(({"loss": 1 / (step + 1), "acc": step / 400, "odd": odd}, step, ts))
    # Identical to values in the same flush: written once.
    calls.append(({"loss": 1 / 351}, 350, 1_003_500))
    calls.append(({"odd": float("nan")}, 399, 1_003_990))  # another NaN object: equal only once sanitised
    calls.append(({"acc": INF, "odd": -INF}, 200, 1_002_000))  # same step and time, another value
    calls.append(None)
    for step in range(40):  # older steps for loss and odd, newer times: latest stays at step 399
        calls.append(({"loss": -1.0 - step, "odd": 2.0}, step, 2_000_000 + step))
    calls.append(({"acc": NAN}, 1000, 3_000_000))  # a newer step: NaN becomes acc's latest value
    calls.append(({"loss": 1 / 400}, 399, 1_003_990))  # already in the store: MLflow skips it
    calls.append(({"ties": 2.0}, 1, 5))  # same step and time: the larger value is the latest
    calls.append(({"ties": 1.0}, 1, 5))
    return calls


def history(c: MlflowClient, run_id: str) -> dict[str, list[tuple]]:
    """Each key's history as sorted ``(step, timestamp, value)``, NaN as the string ``"nan"``."""
    keys = c.get_run(run_id).data.metrics
    return {
        k: sorted(
            (m.step, m.timestamp, "nan" if math.isnan(m.value) else m.value) for m in c.get_metric_history(run_id, k)
        )
        for k in keys
    }


def latest(c: MlflowClient, run_id: str) -> dict[str, object]:
    return {k: "nan" if math.isnan(v) else v for k, v in c.get_run(run_id).data.metrics.items()}


@pytest.mark.parametrize("insert", ["sqlite driver", "sqlalchemy core"])
def test_fast_path_writes_what_log_batch_writes(store, monkeypatch, insert):
    fast = Run.start(store, "equiv", "fast")
    if insert == "sqlalchemy core":  # the insert other databases get
        monkeypatch.setattr(fast._sql().engine.dialect, "name", "not sqlite")
    compare_with_log_batch(store, "equiv", fast, monkeypatch)


@pytest.fixture
def postgres_store() -> str:
    """``$HARNESS_TEST_POSTGRES_URI`` (a PostgreSQL database the tests may write to), else the test skips."""
    from harness.tracking import StoreError, check_store

    uri = os.environ.get("HARNESS_TEST_POSTGRES_URI")
    if not uri:
        pytest.skip("no PostgreSQL: set HARNESS_TEST_POSTGRES_URI=postgresql://USER:PASSWORD@HOST:PORT/DATABASE")
    try:
        check_store(uri)
    except StoreError as err:
        pytest.skip(f"PostgreSQL unusable: {err}")
    return uri


@pytest.mark.slow
def test_fast_path_on_postgres_copies_what_log_batch_writes(postgres_store, monkeypatch):
    """On PostgreSQL the metric values go in by COPY (the fastest, benchmarks/bench_pg_insert.py), and the run
    holds, value by value, what log_batch writes; the flush holding a value already stored falls back."""
    experiment = f"equiv-{uuid.uuid4().hex[:8]}"  # the database outlives the test
    fast = Run.start(postgres_store, experiment, "fast")
    methods: list[str] = []
    real = mlflow_sql._insert_psycopg
    monkeypatch.setattr(mlflow_sql, "_insert_psycopg", lambda c, t, rows, m: (methods.append(m), real(c, t, rows, m)))
    compare_with_log_batch(postgres_store, experiment, fast, monkeypatch)
    assert methods and set(methods) == {"copy"}


def compare_with_log_batch(store: str, experiment: str, fast: Run, monkeypatch) -> None:
    """Log :func:`script` through ``fast`` and through ``log_batch`` into a second run; both runs must hold the
    same histories and latest values (NaN, ±Inf, duplicates, older steps)."""
    calls = script()
    monkeypatch.setattr(harness.tracking.run, "MAX_SQL_BUFFER", 500)  # flushes in mid-stream too
    fast.flush_seconds = float("inf")  # flush where the script says, never on time: a slow machine took > 10 s
    fallbacks: list[int] = []
    plain_write = Run._log_batch

    def counting(self, metrics, *args):
        fallbacks.append(len(metrics))
        plain_write(self, metrics, *args)

    monkeypatch.setattr(Run, "_log_batch", counting)
    c = MlflowClient(store)
    plain = c.create_run(ensure_experiment(store, experiment), run_name="plain").info.run_id
    pending: list[Metric] = []
    for call in calls:
        if call is None:
            fast.flush()
            c.log_batch(plain, metrics=pending)
            pending = []
            continue
        metrics, step, ts = call
        fast.log_metrics(metrics, step=step, timestamp=ts)
        pending += [Metric(k, v, ts, step) for k, v in metrics.items()]
    c.log_batch(plain, metrics=pending)
    fast.end("FINISHED", tags={"outcome": "completed"})

    # Only the flush holding a value already in the store went through log_batch, and all of it.
    assert fallbacks == [len(pending)]
    got, want = history(c, fast.run_id), history(c, plain)
    assert got == want
    logged = sum(len(call[0]) for call in calls if call is not None)
    assert sum(map(len, got.values())) == logged - 3 == 1285  # less two identical values, one re-logged
    big = 1.7976931348623157e308  # ±Inf is stored as ±float max
    assert {(5, 1_000_050, "nan"), (7, 1_000_070, big), (9, 1_000_090, -big)} <= set(got["odd"])
    assert latest(c, fast.run_id) == latest(c, plain)
    assert latest(c, fast.run_id) == {"loss": 1 / 400, "acc": "nan", "odd": "nan", "ties": 2.0}
    run = c.get_run(fast.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["outcome"] == "completed"


def test_params_as_log_batch_writes_them(store):
    params = {f"p{i}": i for i in range(150)} | {"long": "x" * 7000, "empty": ""}
    fast = Run.start(store, "equiv", "params")
    fast.log_params(params)
    fast.log_params({"p1": 1})  # the same value again is allowed
    with pytest.raises(MlflowException, match="Changing param values is not allowed") as err:
        fast.log_params({"new": 3, "p1": 2})
    assert err.value.error_code == "INVALID_PARAMETER_VALUE"
    c = MlflowClient(store)
    plain = c.create_run(ensure_experiment(store, "equiv")).info.run_id
    c.log_batch(plain, params=[Param(k, str(v)[:6000]) for k, v in params.items()])
    got = c.get_run(fast.run_id).data.params
    assert got == c.get_run(plain).data.params and len(got) == 152 and "new" not in got  # all or nothing


def test_fast_path_needs_an_active_run(store):
    run = Run.start(store, "equiv", "deleted")
    MlflowClient(store).delete_run(run.run_id)
    run.log_metrics({"loss": 1.0}, step=0)
    with pytest.raises(MlflowException, match="must be in the 'active' state"):
        run.flush()


def test_other_stores_use_log_batch(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    uri = (tmp_path / "mlruns").as_uri()

    def no_sql(*args, **kwargs):
        raise AssertionError("mlflow_sql.write called for a file store")

    monkeypatch.setattr(mlflow_sql, "write", no_sql)
    run = Run.start(uri, "files", "file-run")
    for step in range(1200):
        run.log_metrics({"loss": 1 / (step + 1), "nan": NAN}, step=step)
    run.log_text("hello", "notes/a.txt")
    run.end("FINISHED", tags={"outcome": "completed"})
    assert run._store is None
    c = MlflowClient(uri)
    got = c.get_run(run.run_id)
    assert got.info.status == "FINISHED" and got.data.tags["outcome"] == "completed"
    assert len(c.get_metric_history(run.run_id, "loss")) == 1200
    assert all(math.isnan(m.value) for m in c.get_metric_history(run.run_id, "nan"))
    assert Path(c.download_artifacts(run.run_id, "notes/a.txt", str(tmp_path))).read_text() == "hello"


def test_a_failed_final_write_still_ends_the_run_with_its_outcome(store, monkeypatch):
    real = mlflow_sql.write

    def fail_with_metrics(store_, run_id, metrics, *args):
        if metrics:
            raise MlflowException("disk full")
        real(store_, run_id, metrics, *args)

    monkeypatch.setattr(mlflow_sql, "write", fail_with_metrics)
    run = Run.start(store, "equiv", "broken")
    run.log_metrics({"loss": 1.0}, step=0)
    with pytest.raises(MlflowException, match="disk full"):
        run.end("FINISHED", tags={"outcome": "completed"})
    got = MlflowClient(store).get_run(run.run_id)
    assert got.info.status == "FINISHED" and got.data.tags["outcome"] == "completed"


def test_a_run_job_records_everything(compose_cfg, store):
    epochs = 12
    result = run_job(compose_cfg(f"tracking.uri={store}", f"train.epochs={epochs}", "seed=3"))
    c = MlflowClient(store)
    run = c.get_run(result["run_id"])
    assert run.info.status == "FINISHED" and run.info.start_time <= run.info.end_time
    assert run.data.tags["outcome"] == result["outcome"] and run.data.tags["epochs_run"] == str(epochs)
    assert run.data.params["train.epochs"] == str(epochs) and run.data.params["loss"] == "bce"
    assert "harness.config_hash" in run.data.tags and run.data.tags["pairing"] == "exact"
    assert [a.path for a in c.list_artifacts(run.info.run_id)] == ["config.yaml"]
    assert "epochs: 12" in Path(c.download_artifacts(run.info.run_id, "config.yaml")).read_text()
    assert run.inputs.dataset_inputs[0].dataset.name == "xor"
    for key in METRICS:
        assert sorted(m.step for m in c.get_metric_history(run.info.run_id, key)) == list(range(epochs + 1))
        assert run.data.metrics[key] == pytest.approx(result[key], nan_ok=True)


@pytest.mark.slow
def test_a_run_job_into_an_http_server_uses_log_batch(compose_cfg, tmp_path, monkeypatch):
    from servers import MlflowServer

    def no_sql(*args, **kwargs):
        raise AssertionError("mlflow_sql.write called for an HTTP store")

    monkeypatch.setattr(mlflow_sql, "write", no_sql)
    server = MlflowServer(tmp_path).start()
    try:
        every = ("train.epochs=300", "train.eval_every=1")  # 301 steps × 6 metrics: more than one batch
        result = run_job(compose_cfg(f"tracking.uri={server.uri}", *every))
        c = MlflowClient(server.uri)
        run = c.get_run(result["run_id"])
        assert run.info.status == "FINISHED" and run.data.tags["outcome"] == result["outcome"]
        assert run.info.artifact_uri.startswith("mlflow-artifacts:")  # proxied: written through the server
        assert "epochs: 300" in Path(c.download_artifacts(run.info.run_id, "config.yaml", str(tmp_path))).read_text()
        assert sorted(m.step for m in c.get_metric_history(run.info.run_id, "train_loss")) == list(range(301))
    finally:
        server.stop()


def test_a_run_group_writes_what_each_run_writes_in_one_transaction_per_flush(store, monkeypatch):
    """RunGroup (a folded job's R runs): params, every flush and the end are one write_many each, and the
    runs hold what runs written one by one through log_batch hold (NaN, ±Inf, the latest values)."""
    from harness.tracking.run import RunGroup

    ensure_experiment(store, "harness")
    calls = []
    real = mlflow_sql.write_many
    monkeypatch.setattr(mlflow_sql, "write_many", lambda s, w: (calls.append(len(w)), real(s, w))[1])
    values = [1.5, math.nan, math.inf, -math.inf, 0.25]

    def fill(runs, log):
        for step, v in enumerate(values):
            for r in range(len(runs)):
                log(r, {"train_loss": v + r, "test_accuracy": 0.5}, step)

    grouped = [Run.start(store, "harness", f"g{r}") for r in range(3)]
    group = RunGroup(grouped)
    group.log_params([{"seed": r} for r in range(3)])
    fill(grouped, group.log_metrics)
    group.flush()
    group.log_metrics(0, {"train_loss": 9.0}, 5)
    group.end("FINISHED", [{"outcome": f"o{r}"} for r in range(3)])
    assert calls == [3, 3, 3]  # params, flush, end: one transaction each for all three runs
    plain = [Run.start(store, "harness", f"p{r}", fast_path=False) for r in range(3)]
    for r, run in enumerate(plain):
        run.log_params({"seed": r})
    fill(plain, lambda r, m, step: plain[r].log_metrics(m, step))
    plain[0].log_metrics({"train_loss": 9.0}, 5)
    for r, run in enumerate(plain):
        run.end("FINISHED", tags={"outcome": f"o{r}"})
    c = MlflowClient(store)
    for g, p in zip(grouped, plain):
        a, b = c.get_run(g.run_id), c.get_run(p.run_id)
        assert a.info.status == b.info.status == "FINISHED"
        assert a.data.params == b.data.params and a.data.tags["outcome"] == b.data.tags["outcome"]
        assert str(a.data.metrics) == str(b.data.metrics)  # latest values, NaN included
        for m in ("train_loss", "test_accuracy"):
            ha = [(h.step, h.value) for h in c.get_metric_history(g.run_id, m)]
            hb = [(h.step, h.value) for h in c.get_metric_history(p.run_id, m)]
            assert str(sorted(ha)) == str(sorted(hb))


def test_a_run_group_creates_its_runs_as_mlflow_does_in_one_transaction(store, monkeypatch):
    """RunGroup.create on a SQL store: every field of each run is what MlflowClient.create_run (Run.start
    with the fast path off) gives, except the id and the time; MLflow's create_run is never called."""
    from harness.tracking.run import RunGroup

    ensure_experiment(store, "harness")
    parent = Run.start(store, "harness", "parent")
    plain = [Run.start(store, "harness", f"r{k}", {"k": str(k), "mlflow.user": "ann"} if k else {"k": "0"},
                       parent.run_id, fast_path=False) for k in range(2)]  # fmt: skip
    monkeypatch.setattr(MlflowClient, "create_run", lambda *a, **k: pytest.fail("MLflow's create_run called"))
    calls = []
    real = mlflow_sql.create_runs
    monkeypatch.setattr(mlflow_sql, "create_runs", lambda *a: (calls.append(len(a[2])), real(*a))[1])
    group = RunGroup([])
    group.create(store, "harness", [("r0", {"k": "0"}), ("r1", {"k": "1", "mlflow.user": "ann"})], parent.run_id)
    assert calls == [2] and len(group.runs) == 2
    c = MlflowClient(store)
    experiment = c.get_experiment_by_name("harness")
    for g, p in zip(group.runs, plain):
        a, b = c.get_run(g.run_id), c.get_run(p.run_id)
        assert a.data.tags == b.data.tags and a.data.tags["mlflow.parentRunId"] == parent.run_id
        assert a.info.artifact_uri == g.artifact_uri == f"{experiment.artifact_location}/{g.run_id}/artifacts"
        for field in ("experiment_id", "user_id", "status", "lifecycle_stage", "run_name", "end_time"):
            assert getattr(a.info, field) == getattr(b.info, field), field
        assert abs(a.info.start_time - b.info.start_time) < 60_000 and a.inputs == b.inputs
    assert [r.info.user_id for r in (c.get_run(g.run_id) for g in group.runs)] == ["unknown", "ann"]
    assert [r.data.tags["mlflow.runName"] for r in (c.get_run(g.run_id) for g in group.runs)] == ["r0", "r1"]
    group.end("FINISHED", [{}, {}])
    assert {c.get_run(g.run_id).info.status for g in group.runs} == {"FINISHED"}


def test_tracking_fast_path_false_never_touches_mlflow_internals_and_logs_the_same(compose_cfg, store, monkeypatch):
    """``tracking.fast_path=false``: a whole job through MLflow's public API only (writing and reading back),
    and the store holds what the fast path writes: the same params, tags and metric histories."""
    fast = run_job(compose_cfg(f"tracking.uri={store}", "tracking.experiment=fast", "train.epochs=15"))

    def forbidden(*args, **kwargs):
        raise AssertionError("MLflow's SQL internals used with tracking.fast_path=false")

    monkeypatch.setattr(mlflow_sql, "write", forbidden)
    monkeypatch.setattr(mlflow_sql, "write_many", forbidden)
    monkeypatch.setattr(mlflow_sql, "history", forbidden)
    monkeypatch.setattr(mlflow_sql, "create_runs", forbidden)
    public = run_job(compose_cfg(f"tracking.uri={store}", "tracking.experiment=public", "train.epochs=15",
                                 "tracking.fast_path=false"))  # fmt: skip
    c = MlflowClient(store)
    a, b = c.get_run(fast["run_id"]), c.get_run(public["run_id"])
    differ = {"tracking.experiment", "tracking.fast_path"}
    assert {k: v for k, v in a.data.params.items() if k not in differ} == {
        k: v for k, v in b.data.params.items() if k not in differ
    }
    assert a.data.tags["outcome"] == b.data.tags["outcome"] == "completed"
    got, want = history(c, b.info.run_id), history(c, a.info.run_id)
    assert set(got) == set(want) >= {*METRICS, "best_test_accuracy"}
    for key in want:  # same steps and values (the timestamps are each run's own)
        assert [(s, v) for s, _, v in got[key]] == [(s, v) for s, _, v in want[key]]
