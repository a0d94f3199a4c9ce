"""Benchmark: the fastest bulk insert of metric values into MLflow's ``metrics`` table on PostgreSQL (psycopg 3).

    python benchmarks/bench_pg_insert.py postgresql://harness:PASSWORD@127.0.0.1:5544/bench
    (or HARNESS_TEST_POSTGRES_URI=... python benchmarks/bench_pg_insert.py)

One flush of a folded job, 30 runs × 150 steps × 6 metrics = 27,000 rows, in ONE transaction (what
``mlflow_sql.write_many`` does), by each method of ``mlflow_sql._insert_metrics``:

- ``core``: SQLAlchemy Core ``executemany`` (SQLAlchemy 2's multi-row VALUES batches), the method before;
- ``executemany``: psycopg 3's ``cursor.executemany`` (pipelined);
- ``copy``: ``COPY metrics (...) FROM STDIN`` with ``write_row``.

Interleaved rounds (each round runs every method once, into a table that grows alike for all); prints the median
wall time and µs per row of each, and the ratios to ``copy``. The store (an MLflow schema in that database) must
be empty or an MLflow store; the runs it adds stay (drop the database afterwards).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import footer, header, interleaved, median, spread, table  # noqa: E402

METHODS = ("core", "executemany", "copy")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("uri", nargs="?", default=os.environ.get("HARNESS_TEST_POSTGRES_URI"))
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--metrics", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    if not args.uri:
        raise SystemExit("give a postgresql:// URI (or set HARNESS_TEST_POSTGRES_URI)")

    from harness.tracking import client, ensure_experiment, mlflow_sql, redact_uri

    sizes = {"runs": args.runs, "steps": args.steps, "metrics": args.metrics, "repeats": args.repeats}
    header("bulk insert of metric values on PostgreSQL", ("mlflow", "psycopg", "sqlalchemy"),
           store=redact_uri(args.uri), **sizes)  # fmt: skip
    store = mlflow_sql.sql_store(client(args.uri))
    if store is None or store.engine.dialect.name != "postgresql":
        raise SystemExit("not a PostgreSQL store the fast path can use")
    created = mlflow_sql.create_runs(store, ensure_experiment(args.uri, "bench-pg-insert"),
                                     [(f"r{i}", {}) for i in range(args.runs)])  # fmt: skip
    run_ids = [rid for rid, _ in created]
    table_ = mlflow_sql.guard.internals().SqlMetric.__table__
    n = args.runs * args.steps * args.metrics
    batch = iter(range(10**9))

    def contender(method: str):
        def make():
            t = 1_700_000_000_000 + 1000 * next(batch)  # new timestamps each time: never a duplicate key
            rows = [(f"metric_{m}", s / 7 + m, t + s, s, False, rid)
                    for rid in run_ids for s in range(args.steps) for m in range(args.metrics)]  # fmt: skip

            def go():
                with store.ManagedSessionMaker(read_only=False) as session:
                    mlflow_sql._insert_metrics(session, table_, rows, method)

            return go

        return make

    times = interleaved({m: contender(m) for m in METHODS}, args.repeats, factory=True)
    best = median(times["copy"])
    rows = [[m, spread(times[m]), f"{1e6 * median(times[m]) / n:.2f}", f"{median(times[m]) / best:.2f}"]
            for m in METHODS]  # fmt: skip
    table(rows, ["method", "wall per flush (one transaction)", "µs per row", "× copy"])
    core, many = median(times["core"]), median(times["executemany"])
    print(f"ratios: core / copy = {core / best:.2f}, executemany / copy = {many / best:.2f}, "
          f"core / executemany = {core / many:.2f}  ({n:,} rows per flush)")  # fmt: skip
    footer()


if __name__ == "__main__":
    main()
