"""One guard for MLflow's internals: every private name the fast path uses, checked by one probe.

The fast path (:mod:`harness.tracking.mlflow_sql`) writes and reads MLflow's tables directly. It needs names that
are not MLflow's public API: ``SqlAlchemyStore`` and its methods, the ORM classes and the columns it reads and
writes, the validators of ``mlflow.utils.validation``, the client's store. :data:`NEEDS` lists every one of them
with the shape the fast path relies on (a class, a callable taking the arguments it passes, a mapped column, ...).

:func:`sql_store` is the only way in: the first time it is asked (per process) it resolves and checks every need;
the client's own store is checked the first time it is seen. If anything is missing or has changed shape, ONE
:class:`InternalsWarning` names what, and :func:`sql_store` answers None for the rest of the process: callers
then use MLflow's public API (``create_run``, ``log_batch``, ``search_runs``, ``get_metric_history``), slower but
the same records. ``tracking.fast_path=false`` never asks, so it never warns.
"""

from __future__ import annotations

import inspect
import math
import threading
import warnings
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType, SimpleNamespace
from typing import Any

STORE_MODULE = "mlflow.store.tracking.sqlalchemy_store"
MODELS_MODULE = "mlflow.store.tracking.dbmodels.models"
VALIDATION_MODULE = "mlflow.utils.validation"
URI_MODULE = "mlflow.utils.uri"
ARTIFACTS_MODULE = "mlflow.store.artifact.artifact_repository_registry"
FLOAT_MAX = 1.7976931348623157e308  # MLflow stores ±Inf as ±float max


class InternalsWarning(RuntimeWarning):
    """MLflow's internals are not what the fast path expects: MLflow's public API is used instead."""


@dataclass(frozen=True)
class Need:
    """One private name the fast path uses.

    ``where`` is a module name (a process need: checked once) or ``"client"`` / ``"store"`` (checked on the
    first client / SQL store seen); ``path`` the attributes from there (the last one is the name itself);
    ``kind`` what it must be: ``class``, ``callable`` (that accepts ``args``: positional placeholders, and
    keywords as ``name=``), ``column`` (a mapped column attribute whose table has that column),
    ``relationship``, ``text`` or ``object``; ``behaves`` an optional check of what it returns.
    """

    name: str
    where: str
    path: tuple[str, ...]
    kind: str
    args: tuple[str, ...] = ()
    behaves: Callable[[Any], bool] | None = None

    @property
    def attr(self) -> str:
        return self.path[-1]

    def owner(self, root: Any) -> Any:
        """The object that holds :attr:`attr`, from ``root`` (the module, client or store)."""
        for name in self.path[:-1]:
            root = getattr(root, name)
        return root


def _sanitizes(fn: Any) -> bool:
    """``SqlAlchemyStore.sanitize_metric_value`` still maps NaN -> (True, 0), ±Inf -> (False, ±float max)."""
    return (
        tuple(fn(None, math.nan)) == (True, 0)
        and tuple(fn(None, math.inf)) == (False, FLOAT_MAX)
        and tuple(fn(None, -math.inf)) == (False, -FLOAT_MAX)
        and tuple(fn(None, 0.5)) == (False, 0.5)
    )


def _returns_key_value(fn: Any) -> bool:
    """``_validate_param`` / ``_validate_tag`` still return an entity with the (checked) key and value."""
    got = fn("k", "v")
    return (got.key, got.value) == ("k", "v")


def _store_method(name: str, *args: str, behaves: Callable[[Any], bool] | None = None) -> Need:
    return Need(f"SqlAlchemyStore.{name}", STORE_MODULE, ("SqlAlchemyStore", name), "callable", ("self", *args),
                behaves)  # fmt: skip


def _columns(cls: str, *names: str) -> list[Need]:
    return [Need(f"{cls}.{n}", MODELS_MODULE, (cls, n), "column") for n in names]


# Every private name of MLflow that mlflow_sql uses (writing: create_runs, write_many; reading: history, runs).
NEEDS: tuple[Need, ...] = (
    Need("MlflowClient._tracking_client", "client", ("_tracking_client",), "object"),
    Need("TrackingServiceClient.store", "client", ("_tracking_client", "store"), "object"),
    Need("SqlAlchemyStore", STORE_MODULE, ("SqlAlchemyStore",), "class"),
    Need("SqlAlchemyStore.ManagedSessionMaker", "store", ("ManagedSessionMaker",), "callable", ("read_only=",)),
    _store_method("_get_run", "session=", "run_uuid="),
    _store_method("_check_run_is_active", "run"),
    _store_method("sanitize_metric_value", "value", behaves=_sanitizes),
    _store_method("_update_latest_metrics_if_necessary", "logged_metrics", "session"),
    _store_method("get_experiment", "experiment_id"),
    _store_method("_check_experiment_is_active", "experiment"),
    Need("SqlAlchemyStore.ARTIFACTS_FOLDER_NAME", STORE_MODULE, ("SqlAlchemyStore", "ARTIFACTS_FOLDER_NAME"), "text"),
    *(Need(c, MODELS_MODULE, (c,), "class") for c in ("SqlRun", "SqlTag", "SqlParam", "SqlMetric", "SqlLatestMetric")),
    *_columns("SqlRun", "run_uuid", "name", "artifact_uri", "experiment_id", "source_type", "source_name",
              "entry_point_name", "user_id", "status", "start_time", "end_time", "deleted_time", "source_version",
              "lifecycle_stage"),  # fmt: skip
    Need("SqlRun.tags", MODELS_MODULE, ("SqlRun", "tags"), "relationship"),
    *_columns("SqlTag", "run_uuid", "key", "value"),
    *_columns("SqlParam", "run_uuid", "key", "value"),
    *_columns("SqlMetric", "run_uuid", "key", "value", "timestamp", "step", "is_nan"),
    *_columns("SqlLatestMetric", "run_uuid", "key", "value", "timestamp", "step", "is_nan"),
    Need("mlflow.utils.validation._validate_metric", VALIDATION_MODULE, ("_validate_metric",), "callable",
         ("key", "value", "timestamp", "step")),  # fmt: skip
    Need("mlflow.utils.validation._validate_param", VALIDATION_MODULE, ("_validate_param",), "callable",
         ("key", "value"), _returns_key_value),  # fmt: skip
    Need("mlflow.utils.validation._validate_tag", VALIDATION_MODULE, ("_validate_tag",), "callable",
         ("key", "value"), _returns_key_value),  # fmt: skip
    Need("mlflow.utils.uri.append_to_uri_path", URI_MODULE, ("append_to_uri_path",), "callable", ("uri", "path")),
    # Run.log_text writes straight to the run's artifact repository (it knows the artifact URI from create_run)
    Need("mlflow.utils.uri.add_databricks_profile_info_to_artifact_uri", URI_MODULE,
         ("add_databricks_profile_info_to_artifact_uri",), "callable", ("artifact_uri", "databricks_profile_uri")),
    Need(f"{ARTIFACTS_MODULE}.get_artifact_repository", ARTIFACTS_MODULE, ("get_artifact_repository",), "callable",
         ("artifact_uri", "tracking_uri=")),
)  # fmt: skip


def names() -> list[str]:
    """The name of every need, as a warning would name it."""
    return [n.name for n in NEEDS]


def problem(need: Need, root: Any) -> str | None:
    """What is wrong with ``need`` under ``root`` (``"missing"``, ``"not callable"``, ...), or None if it is
    as the fast path expects."""
    try:
        owner = need.owner(root)
    except Exception:  # noqa: BLE001  (a property may raise anything; the owner's own need reports it)
        return "missing"
    if not hasattr(owner, need.attr):
        return "missing"
    try:
        value = getattr(owner, need.attr)
        return _shape_problem(need, owner, value)
    except Exception as err:  # noqa: BLE001  (a changed internal may fail in any way: that is the finding)
        return f"changed ({type(err).__name__}: {err})"


def _shape_problem(need: Need, owner: Any, value: Any) -> str | None:
    from sqlalchemy import inspect as sa_inspect
    from sqlalchemy.orm import QueryableAttribute

    if need.kind == "class" and not isinstance(value, type):
        return "not a class"
    if need.kind == "text" and not (isinstance(value, str) and value):
        return "not a non-empty string"
    if need.kind == "callable":
        if not callable(value):
            return "not callable"
        positional = [None for a in need.args if not a.endswith("=")]
        keywords = {a[:-1]: None for a in need.args if a.endswith("=")}
        try:
            inspect.signature(value).bind(*positional, **keywords)
        except TypeError:
            return f"changed signature {inspect.signature(value)}, the fast path passes ({', '.join(need.args)})"
    if need.kind in ("column", "relationship") and not isinstance(value, QueryableAttribute):
        return "not a mapped attribute"
    if need.kind == "column" and need.attr not in owner.__table__.c:
        return f"not a column of table {owner.__table__.name!r}"
    if need.kind == "relationship" and need.attr not in sa_inspect(owner).relationships:
        return "not a relationship"
    if need.behaves is not None and not need.behaves(value):
        return "behaves differently"
    return None


class _Guard:
    """The probe's verdicts, per process."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.ok: bool | None = None  # process needs: None = not probed yet
        self.found = SimpleNamespace()  # the module-level needs as the probe resolved them
        self.clients: weakref.WeakSet = weakref.WeakSet()  # clients and stores already checked
        self.warned = False

    def fail(self, problems: list[str]) -> None:
        """Turn the fast path off for this process; warn once, naming every problem."""
        self.ok = False
        if not self.warned:
            self.warned = True
            import mlflow

            warnings.warn(
                f"harness: MLflow {mlflow.__version__}'s internals are not what the fast SQL path "
                f"(harness.tracking.mlflow_sql) expects: {'; '.join(problems)}. Runs are written and read through "
                "MLflow's public API (create_run, log_batch, search_runs, get_metric_history) for the rest of this "
                "process: slower, the same records. Set tracking.fast_path=false to choose that without this warning.",
                InternalsWarning,
                stacklevel=4,
            )

    def check(self, where: str, root: Any) -> bool:
        problems = [f"{n.name} ({p})" for n in NEEDS if n.where == where and (p := problem(n, root)) is not None]
        if problems:
            self.fail(problems)
        return not problems


_GUARD = _Guard()


def _load(module: str) -> ModuleType | None:
    """One of the modules :data:`NEEDS` names (None if this MLflow has no such module). Spelled out, not
    imported by name: nothing in harness imports a module named by a string."""
    try:
        if module == STORE_MODULE:
            import mlflow.store.tracking.sqlalchemy_store as found
        elif module == MODELS_MODULE:
            import mlflow.store.tracking.dbmodels.models as found
        elif module == VALIDATION_MODULE:
            import mlflow.utils.validation as found
        elif module == URI_MODULE:
            import mlflow.utils.uri as found
        elif module == ARTIFACTS_MODULE:
            import mlflow.store.artifact.artifact_repository_registry as found
        else:
            return None
    except Exception:  # noqa: BLE001  (a module that moved or fails to import: the needs in it are missing)
        return None
    return found


def available() -> bool:
    """Whether every module-level need is as the fast path expects (probed once per process; warns once if not)."""
    return _probe_process()


def _probe_process() -> bool:
    """Resolve and check every module-level need once per process (the first caller pays ≈ 1 ms)."""
    with _GUARD.lock:
        if _GUARD.ok is None:
            from sqlalchemy.orm import configure_mappers

            problems, found = [], {}
            roots: dict[str, ModuleType | None] = {}
            for need in NEEDS:
                if need.where in ("client", "store"):
                    continue
                if need.where not in roots:
                    roots[need.where] = _load(need.where)
                    if need.where == MODELS_MODULE and roots[need.where] is not None:
                        configure_mappers()  # backrefs such as SqlRun.tags exist only once mappers are configured
                root = roots[need.where]
                p = "module missing" if root is None else problem(need, root)
                if p is not None:
                    problems.append(f"{need.name} ({p})")
                elif len(need.path) == 1:
                    found[need.attr] = getattr(root, need.attr)
            if problems:
                _GUARD.fail(problems)
            else:
                _GUARD.ok, _GUARD.found = True, SimpleNamespace(**found)
        return bool(_GUARD.ok)


def sql_store(mlflow_client: Any) -> Any | None:
    """MLflow's ``SqlAlchemyStore`` behind ``mlflow_client`` when the fast path can use it: the store is a SQL
    store and every need of :data:`NEEDS` is as expected. None for any other store (HTTP, file) and, once a
    need was found missing or changed (one :class:`InternalsWarning`), for the rest of the process."""
    if not _probe_process():
        return None
    with _GUARD.lock:
        if mlflow_client not in _GUARD.clients:
            if not _GUARD.check("client", mlflow_client):
                return None
            _GUARD.clients.add(mlflow_client)
        store = mlflow_client._tracking_client.store
        if not isinstance(store, internals().SqlAlchemyStore):
            return None
        if store not in _GUARD.clients:
            if not _GUARD.check("store", store):
                return None
            _GUARD.clients.add(store)
        return store if _GUARD.ok else None


def internals() -> SimpleNamespace:
    """The checked module-level needs by name (``SqlMetric``, ``_validate_metric``, ``append_to_uri_path``,
    ...), for the fast path's own use once :func:`sql_store` returned a store."""
    if not _probe_process():
        raise RuntimeError("MLflow's internals are unavailable in this process (see the InternalsWarning)")
    return _GUARD.found


def reset() -> None:
    """Forget every verdict (tests: probe again, and warn again, after changing what MLflow looks like)."""
    with _GUARD.lock:
        _GUARD.ok, _GUARD.found, _GUARD.clients, _GUARD.warned = None, SimpleNamespace(), weakref.WeakSet(), False
