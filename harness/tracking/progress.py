"""A study's progress bar in the launching process: one tqdm bar over the sweep's runs, read from the store.

Every launcher (basic, joblib, Ray) writes its runs to the same store, so the launching process learns how far
a study is by counting them there, whatever runs the jobs: no message passing between workers and the bar.

Knows nothing of the math: it counts runs by their tags and status.

How to wire it (harness/sweep.py): in the launching process, around the launcher's jobs, e.g. from
``on_multirun_start`` (``progress = StudyProgress(uri, experiment, parent, total=n_runs, already_done=n_skipped);
progress.__enter__()``) to ``end_parent`` (``progress.__exit__(None, None, None)`` before the configuration runs
are written). ``total``: the runs of the sweep (jobs x folded replicas); ``already_done``: those a resume skips
(they are adopted, and adopted runs are not counted again).
"""

from __future__ import annotations

import sys
import threading
from typing import IO, Any

from harness.names import ADOPTED_TAG, CONFIGURATION_LEVEL, LEVEL_TAG, PARENT_TAG
from harness.tracking import mlflow_sql
from harness.tracking.run import RUN_STATUSES, client

HTTP_MIN_INTERVAL = 5.0  # a search over HTTP pages through every finished run: poll a server less often


def _sql_count(store: Any, parent_run_id: str) -> int:
    """One COUNT query: the parent's children in a terminal status, neither adopted nor configuration runs.

    MLflow's tables (``runs``, ``tags``) through its own SQLAlchemy models, read-only; the same models as
    :mod:`harness.tracking.mlflow_sql`, whose bound on MLflow's version holds here too."""
    import sqlalchemy as sa
    from mlflow.entities import LifecycleStage
    from mlflow.store.tracking.dbmodels.models import SqlRun, SqlTag

    parent = sa.orm.aliased(SqlTag)
    other = sa.orm.aliased(SqlTag)
    excluded = sa.exists().where(
        (other.run_uuid == SqlRun.run_uuid)
        & ((other.key == ADOPTED_TAG) | ((other.key == LEVEL_TAG) & (other.value == CONFIGURATION_LEVEL)))
    )
    query = (
        sa.select(sa.func.count())
        .select_from(SqlRun)
        .join(parent, (parent.run_uuid == SqlRun.run_uuid) & (parent.key == PARENT_TAG))
        .where(parent.value == parent_run_id)
        .where(SqlRun.status.in_(RUN_STATUSES))
        .where(SqlRun.lifecycle_stage == LifecycleStage.ACTIVE)
        .where(~excluded)
    )
    with store.ManagedSessionMaker() as session:
        return int(session.connection().execute(query).scalar_one())


def _api_count(mlflow_client: Any, experiment_id: str, parent_run_id: str) -> int:
    """The same count through ``search_runs`` (an HTTP store): every page of the parent's ended children."""
    found, token = 0, None
    while True:
        page = mlflow_client.search_runs(
            [experiment_id],
            filter_string=f"tags.`{PARENT_TAG}` = '{parent_run_id}'",
            max_results=1000,
            page_token=token,
        )
        found += sum(
            r.info.status in RUN_STATUSES
            and ADOPTED_TAG not in r.data.tags
            and r.data.tags.get(LEVEL_TAG) != CONFIGURATION_LEVEL
            for r in page
        )
        token = page.token
        if not token:
            return found


class StudyProgress:
    """Context manager: a tqdm bar over a study's runs (done/total, rate, ETA), updated from the store.

    A daemon thread counts, every ``interval`` seconds, the sweep's runs in a terminal state (FINISHED, FAILED,
    KILLED) that are the parent's children and were not adopted from an earlier sweep: one COUNT query on a SQL
    store, ``search_runs`` on an HTTP one (at most every 5 s). The bar starts at ``already_done`` (the runs a
    resume skipped) and shows ``already_done + count``, never above ``total``. On exit it counts once more and
    closes. A failed count (a locked or unreachable store) leaves the bar as it was until the next poll.
    ``file`` (default stderr) and ``disable`` (default: only on a terminal) are tqdm's own."""

    def __init__(
        self,
        uri: str,
        experiment: str,
        parent_run_id: str,
        total: int,
        *,
        already_done: int = 0,
        interval: float = 1.0,
        file: IO[str] | None = None,
        disable: bool | None = None,
    ) -> None:
        self.uri, self.experiment, self.parent_run_id = uri, experiment, parent_run_id
        self.total, self.already_done = int(total), int(already_done)
        self._client = client(uri)
        self._store = mlflow_sql.sql_store(self._client)
        self.interval = interval if self._store is not None else max(interval, HTTP_MIN_INTERVAL)
        self._file, self._disable = file, disable
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.bar: Any = None

    def count(self) -> int:
        """The sweep's runs ended so far (not counting adopted ones)."""
        if self._store is not None:
            return _sql_count(self._store, self.parent_run_id)
        experiment_id = self._client.get_run(self.parent_run_id).info.experiment_id
        return _api_count(self._client, experiment_id, self.parent_run_id)

    def update(self) -> int:
        """Count now and move the bar there; returns the bar's position."""
        done = min(self.total, self.already_done + self.count())
        if self.bar is not None and done > self.bar.n:
            self.bar.update(done - self.bar.n)
        return done

    def _poll(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.update()
            except Exception:  # noqa: BLE001  (a busy store must not kill the bar; the next poll tries again)
                pass

    def __enter__(self) -> StudyProgress:
        from tqdm.auto import tqdm

        start = min(self.already_done, self.total)
        out = self._file or sys.stderr
        self.bar = tqdm(
            total=self.total, initial=start, desc=self.experiment, unit="run", file=out, disable=self._disable
        )
        self._thread = threading.Thread(target=self._poll, name="study-progress", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=max(self.interval, 1.0) * 5)
        try:
            self.update()
        except Exception:  # noqa: BLE001  (closing the bar matters more than its last count)
            pass
        self.bar.close()
