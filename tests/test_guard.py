"""The guard of MLflow's internals (harness.tracking.guard): each private name the fast path uses, missing or
changed, turns the fast path off for the process with ONE warning naming it, and a real job then writes, through
MLflow's public API, the same record as the fast path.

How a name is broken: only while the probe looks. MLflow's own code needs the same names (``log_batch`` calls
``SqlAlchemyStore._get_run`` too), so a name deleted for the whole job would break MLflow itself, which a future
MLflow that renamed it would not be. The probe's verdict is kept for the process, and the fast path uses only what
the probe resolved, so a name broken while the probe looks is exactly a name the fast path cannot see.
"""

from __future__ import annotations

import math
import re
import warnings

import pytest
import sqlalchemy as sa
from mlflow import MlflowClient

from harness.app import run_job
from harness.tracking import guard, mlflow_sql
from harness.tracking.run import client as make_client

EPOCHS = 4
ROOTS = {"client": lambda c: c, "store": lambda c: c._tracking_client.store}


@pytest.fixture(autouse=True)
def fresh_guard():
    """Each test probes afresh, and leaves no verdict behind for other tests."""
    guard.reset()
    yield
    guard.reset()


@pytest.fixture(scope="module")
def reference(compose_cfg, tmp_path_factory):
    """One job through the fast path (the internals intact): the record every broken case must reproduce."""
    guard.reset()
    uri = f"sqlite:///{tmp_path_factory.mktemp('guard') / 'mlflow.db'}"
    result = run_job(compose_cfg(f"tracking.uri={uri}", f"train.epochs={EPOCHS}", "seed=3"))
    assert guard.sql_store(make_client(uri)) is not None  # the fast path was on
    return uri, record(MlflowClient(uri), result["run_id"])


def record(c: MlflowClient, run_id: str) -> dict:
    """Status, params, tags and every metric's history as (step, value), NaN as "nan": what a run holds apart
    from its ids and times."""
    run = c.get_run(run_id)
    histories = {
        key: sorted((m.step, "nan" if math.isnan(m.value) else m.value) for m in c.get_metric_history(run_id, key))
        for key in run.data.metrics
    }
    tags = {k: v for k, v in run.data.tags.items() if k != "mlflow.parentRunId"}
    return {"status": run.info.status, "params": run.data.params, "tags": tags, "metrics": histories}


def root(need: guard.Need, c: MlflowClient):
    return ROOTS[need.where](c) if need.where in ROOTS else __import__(need.where, fromlist=["_"])


def holders(owner, attr: str) -> list:
    """The objects whose ``__dict__`` holds ``attr``: ``owner`` itself and the classes of its MRO that define it
    (the first one is what ``getattr`` finds; an abstract base class may define a method too)."""
    mro = owner.__mro__ if isinstance(owner, type) else type(owner).__mro__
    return [o for o in dict.fromkeys((owner, *mro)) if attr in vars(o)]


def renamed(table: sa.Table, column: str) -> sa.Table:
    """A copy of ``table`` whose ``column`` has another name (a schema migration renamed it)."""
    cols = [sa.Column(f"{c.name}_v2" if c.name == column else c.name, c.type) for c in table.columns]
    return sa.Table(table.name, sa.MetaData(), *cols)


def breaks(need: guard.Need) -> list[str]:
    """Ways ``need`` can change in a future MLflow; the first one is also run as a whole job."""
    return {
        "column": ["renamed column", "not a column attribute"],
        "relationship": ["not a column attribute"],
        "callable": ["missing", "not callable", "other signature"] + (["other behaviour"] if need.behaves else []),
        "class": ["missing", "not a class"],
        "text": ["missing", "not text"],
        "object": ["missing"],
    }[need.kind]


def break_(mp: pytest.MonkeyPatch, need: guard.Need, how: str, c: MlflowClient) -> None:
    owner = need.owner(root(need, c))
    if how == "renamed column":
        mp.setattr(owner, "__table__", renamed(owner.__table__, need.attr))
    elif how == "missing":
        for o in holders(owner, need.attr):
            mp.delattr(o, need.attr)
    else:
        replacement = {
            "not a column attribute": 42, "not callable": "a string", "other signature": lambda: None,
            "other behaviour": lambda *args: (False, 0.0), "not a class": object(), "not text": 0,
        }[how]  # fmt: skip
        mp.setattr(holders(owner, need.attr)[0], need.attr, replacement)


def probe_broken(need: guard.Need, how: str, uri: str) -> MlflowClient:
    """Break ``need`` while the probe runs; check it answers None with ONE warning naming the name, then again
    None (without a warning) once MLflow is whole again: the verdict holds for the process."""
    c, other = make_client(uri), make_client(uri)  # made first: a broken MLflow may not make clients at all
    with pytest.MonkeyPatch.context() as mp, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        break_(mp, need, how, c)
        assert guard.sql_store(c) is None
        assert guard.sql_store(other) is None
    found = [w for w in caught if issubclass(w.category, guard.InternalsWarning)]
    assert len(found) == 1, [str(w.message) for w in found]
    assert re.search(rf"\b{re.escape(need.name)} \(", str(found[0].message)), str(found[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error", guard.InternalsWarning)
        assert guard.sql_store(make_client(uri)) is None and not guard.available()
    return c


def test_the_probe_passes_on_this_mlflow_without_a_warning(reference):
    with warnings.catch_warnings():
        warnings.simplefilter("error", guard.InternalsWarning)
        assert guard.sql_store(make_client(reference[0])) is not None and guard.available()
    assert len(set(guard.names())) == len(guard.NEEDS) > 40


@pytest.mark.parametrize(
    ("name", "how"), [(n.name, how) for n in guard.NEEDS for how in breaks(n)[1:]], ids=lambda v: v.replace(" ", "-")
)
def test_each_other_change_of_a_name_turns_the_fast_path_off_naming_it(name, how, reference):
    need = next(n for n in guard.NEEDS if n.name == name)
    probe_broken(need, how, reference[0])


@pytest.mark.parametrize("name", guard.names())
def test_a_job_without_one_internal_writes_the_fast_paths_record_through_the_public_api(
    name, reference, compose_cfg, monkeypatch
):
    uri, want = reference
    need = next(n for n in guard.NEEDS if n.name == name)
    probe_broken(need, breaks(need)[0], uri)

    def forbidden(*args, **kwargs):
        raise AssertionError("the fast path ran although the guard turned it off")

    for fn in ("write", "write_many", "create_runs", "history", "runs"):
        monkeypatch.setattr(mlflow_sql, fn, forbidden)
    with warnings.catch_warnings():
        warnings.simplefilter("error", guard.InternalsWarning)  # warned once already: never again
        result = run_job(compose_cfg(f"tracking.uri={uri}", f"train.epochs={EPOCHS}", "seed=3"))
    got = record(MlflowClient(uri), result["run_id"])
    assert got["status"] == "FINISHED"
    assert got == want


def test_fast_path_false_never_probes_and_never_warns(compose_cfg, store, monkeypatch):
    monkeypatch.setattr(guard, "_probe_process", lambda: pytest.fail("probed with tracking.fast_path=false"))
    with warnings.catch_warnings():
        warnings.simplefilter("error", guard.InternalsWarning)
        result = run_job(compose_cfg(f"tracking.uri={store}", "train.epochs=2", "tracking.fast_path=false"))
    assert MlflowClient(store).get_run(result["run_id"]).info.status == "FINISHED"
