"""Benchmark 7: one 180-run XOR sweep into four tracking stores: SQLite, PostgreSQL direct, and an MLflow server
over HTTP backed by SQLite and by PostgreSQL.

    python benchmarks/bench_stores.py            # ≈ 10-15 min on 2 cores: the HTTP stores take most of it
    python benchmarks/bench_stores.py --quick    # a smoke run: 36 runs of 100 epochs
    python benchmarks/bench_stores.py --postgres-uri postgresql://USER:PASSWORD@HOST:PORT/DB   # an existing server

Each store gets the same real command, in a fresh temporary directory:

    python -m harness +experiment=xor_grid report.auto=false hydra/launcher=joblib hydra.launcher.n_jobs=2 \\
        'seed=range(5)' tracking.uri=<store>

(36 triples × 5 seeds = 180 runs, 1,000 epochs each, the lean metric stream: 150 logged steps × 6 metrics, and
the 36 configuration runs the sweep writes at its end; the runs of a triple's seeds are one
folded job.) Each store is fresh and empty but already has MLflow's schema (made before the clock starts, as a
running server's is), so every contender pays the same: the sweep. Without ``--postgres-uri`` the script starts
its own PostgreSQL cluster (Debian's ``postgresql`` package, tests/servers.py) and removes it at the end; with it,
the URI's role needs CREATEDB (each contender gets a database of its own, dropped afterwards). The MLflow servers
are ``mlflow server --workers 1`` on 127.0.0.1, started before and stopped after their sweep.

Afterwards every store is checked (180 FINISHED seed runs and 36 configuration runs, none RUNNING, the same
number of metric rows in all).
Columns: wall time of the sweep, CPU time of the sweep's processes, of the MLflow server (HTTP only) and of the
PostgreSQL server (its postmaster and backends; only for the cluster this script started).
"""

from __future__ import annotations

import argparse
import os
import signal
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1] / "tests"))
from _common import children_cpu, footer, header, median, python, set_blas_threads, table, timed, verdict  # noqa: E402
from servers import MlflowServer, PostgresServer  # noqa: E402

SWEEP = ["+experiment=xor_grid", "report.auto=false", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
FULL, QUICK = ["seed=range(5)"], ["seed=0", "train.epochs=100"]
EXPERIMENT = "xor_grid"
STORES = ("sqlite", "postgresql", "http+sqlite", "http+postgresql")
# wall time of each store / SQLite's: the targets of issue 20
TARGETS = {"postgresql": 1.3, "http+sqlite": 3.0, "http+postgresql": 3.0}
TICKS = os.sysconf("SC_CLK_TCK")


def postgres_cpu(server: PostgresServer | None) -> float | None:
    """CPU seconds used so far by the cluster ``server`` started: its postmaster, the backends that ended (the
    postmaster's waited-for children) and those still running; None for a server this script did not start."""
    if server is None or server.root is None:
        return None
    postmaster = int((server.data / "postmaster.pid").read_text().split()[0])

    def stat(pid: int | str) -> list[str]:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()

    fields = stat(postmaster)  # after the ")": state is field 3 of proc(5), so utime (14) is index 11 here
    total = sum(int(x) for x in fields[11:15])  # utime, stime, cutime, cstime
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            child = stat(pid)
        except OSError:  # ended meanwhile
            continue
        if int(child[1]) == postmaster:
            total += int(child[11]) + int(child[12])
    return total / TICKS


class Postgres:
    """Fresh databases on one PostgreSQL server: this script's own throwaway cluster, or ``uri``'s server."""

    def __init__(self, uri: str | None) -> None:
        self.server = None if uri else PostgresServer().start()
        self.uri = uri or self.server.uri

    def _admin(self, statement: str) -> None:
        import psycopg
        from sqlalchemy.engine import make_url

        libpq = make_url(self.uri).set(drivername="postgresql").render_as_string(hide_password=False)
        with psycopg.connect(libpq, autocommit=True) as con:
            con.execute(statement)

    @contextmanager
    def database(self) -> Iterator[str]:
        """A new empty database's URI, dropped afterwards."""
        from sqlalchemy.engine import make_url

        name = f"bench_stores_{uuid.uuid4().hex[:10]}"
        self._admin(f'CREATE DATABASE "{name}"')
        try:
            yield make_url(self.uri).set(database=name).render_as_string(hide_password=False)
        finally:
            self._drop(name)

    def _drop(self, name: str) -> None:
        """Drop a contender's database. Right after a sweep's bulk inserts an autovacuum worker (a superuser's
        process, which a non-superuser role may not terminate) can hold it: wait and retry, then leave it to the
        cluster's removal with a warning rather than lose the other stores' results."""
        import psycopg

        for attempt in range(5):
            try:
                self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                return
            except psycopg.errors.InsufficientPrivilege as err:
                error = err
                time.sleep(2.0 * (attempt + 1))
        print(f"WARNING: could not drop database {name}: {error}")

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()


def counts(backend: str) -> tuple[dict[str, int], int]:
    """(child runs per status, metric rows) of ``backend``, a ``sqlite:///`` or ``postgresql://`` URI, read with
    the database's own driver."""
    runs = ("select status, count(*) from runs where run_uuid in "
            "(select run_uuid from tags where key = 'mlflow.parentRunId') group by status")  # fmt: skip
    rows = "select count(*) from metrics"
    if backend.startswith("sqlite:///"):
        with sqlite3.connect(backend[len("sqlite:///") :]) as con:
            return dict(con.execute(runs).fetchall()), con.execute(rows).fetchone()[0]
    import psycopg
    from sqlalchemy.engine import make_url

    with psycopg.connect(make_url(backend).set(drivername="postgresql").render_as_string(hide_password=False)) as con:
        return dict(con.execute(runs).fetchall()), con.execute(rows).fetchone()[0]


def create_schema(uri: str) -> None:
    """Make MLflow's tables in an empty store (outside the timed sweep)."""
    from mlflow import MlflowClient

    MlflowClient(uri).search_experiments()


@dataclass
class Store:
    """A fresh store: the URI the sweep writes to, the database behind it (to count rows in) and, for an HTTP
    store once its server has stopped, the CPU seconds of every process started meanwhile (server and sweep)."""

    uri: str
    backend: str
    cpu_with_server: float | None = None


@contextmanager
def store(kind: str, tmp: Path, pg: Postgres) -> Iterator[Store]:
    """A fresh store of ``kind`` (one of STORES) in ``tmp``; an MLflow server for the HTTP kinds, stopped after."""
    with pg.database() if "postgresql" in kind else nullcontext() as database:
        backend = database or f"sqlite:///{tmp / 'store.db'}"
        if not kind.startswith("http"):
            create_schema(backend)
            yield Store(backend, backend)
            return
        server = MlflowServer(tmp, backend_store_uri=backend)  # makes the schema before it serves
        cpu0 = children_cpu()
        server.start()
        s = Store(server.uri, backend)
        try:
            yield s
        finally:
            server.stop()  # waited for: from now on its CPU time counts among this process's children's
            s.cpu_with_server = children_cpu() - cpu0


def run(kind: str, sweep: list[str], pg: Postgres) -> dict:
    """One sweep into a fresh store of ``kind``: its times and the store's counts."""
    with tempfile.TemporaryDirectory(prefix=f"bench-stores-{kind.replace('+', '-')}-") as tmp:
        with store(kind, Path(tmp), pg) as s:
            pg0 = postgres_cpu(pg.server) if "postgresql" in kind else None
            try:
                wall, cpu = timed([python(), "-m", "harness", *sweep, f"tracking.uri={s.uri}"], tmp)
            except SystemExit as failed:  # the sweep failed: say why, and go on with the other stores
                return {"failed": failure(str(failed))}
            pg1 = postgres_cpu(pg.server) if "postgresql" in kind else None
            runs, rows = counts(s.backend)
    server_cpu = None if s.cpu_with_server is None else s.cpu_with_server - cpu
    db_cpu = None if pg0 is None or pg1 is None else pg1 - pg0
    return {"wall": wall, "cpu": cpu, "server_cpu": server_cpu, "db_cpu": db_cpu, "runs": runs, "rows": rows}


def failure(message: str) -> str:
    """The first line (the command and its time) and the last exception line of a failed sweep's message."""
    lines = message.splitlines()
    errors = [line for line in lines if "Error" in line or "Exception" in line]
    return " / ".join([lines[0][:120], *(errors[-1:] or lines[-1:])])[:600]


def fmt(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds:.1f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: seed=0 train.epochs=100 (36 runs)")
    parser.add_argument("--repeats", type=int, default=1, help="interleaved rounds (each runs every store once)")
    parser.add_argument("--postgres-uri", default=None, help="an existing server (role with CREATEDB); default: own")
    parser.add_argument("--blas-threads", type=int, default=None, help="OPENBLAS/OMP_NUM_THREADS (default unset)")
    parser.add_argument(
        "--stores", default=",".join(STORES), help=f"which stores, in order (default: {','.join(STORES)})"
    )
    args = parser.parse_args()
    stores = args.stores.split(",")
    if "sqlite" not in stores or not set(stores) <= set(STORES):
        parser.error(f"--stores: a comma-separated list of {', '.join(STORES)}, with sqlite (the reference)")
    set_blas_threads(args.blas_threads)
    sweep = SWEEP + (QUICK if args.quick else FULL)
    expected_runs = (36 if args.quick else 180) + 36  # the seed runs and the study's 36 configuration runs
    header("One XOR sweep into four tracking stores", ("numpy", "mlflow", "hydra-core", "sqlalchemy", "psycopg"),
           sweep=" ".join(sweep), repeats=args.repeats, mlflow_server="--workers 1")  # fmt: skip
    pg = Postgres(args.postgres_uri)
    try:
        if pg.server is not None:
            print(f"postgresql: {pg.server.sql('select version()').strip()} (own cluster, 127.0.0.1:{pg.server.port})")
        results: dict[str, list[dict]] = {k: [] for k in stores}
        for round_ in range(args.repeats):
            for kind in stores:
                start = time.perf_counter()
                r = run(kind, sweep, pg)
                if "failed" in r:
                    print(f"round {round_ + 1} {kind}: FAILED: {r['failed']}", flush=True)
                    continue
                results[kind].append(r)
                print(f"round {round_ + 1} {kind}: {r['wall']:.1f} s wall, runs {r['runs']}, {r['rows']:,} metric "
                      f"rows ({time.perf_counter() - start:.0f} s with the store's set-up)", flush=True)  # fmt: skip
                if r["runs"] != {"FINISHED": expected_runs}:
                    print(f"WARNING: expected {expected_runs} FINISHED child runs in {kind}, found {r['runs']}")
    finally:
        pg.close()
    summarize(results)


def summarize(results: dict[str, list[dict]]) -> None:
    """The table of every store that finished, and each target's ratio line."""
    rows = {r["rows"] for rs in results.values() for r in rs}
    if len(rows) != 1:
        print(f"WARNING: the stores hold different numbers of metric rows: {sorted(rows)}")
    done = [k for k in results if results[k]]
    if "sqlite" not in done:
        raise SystemExit("the SQLite sweep failed: no ratios")
    walls = {k: median([r["wall"] for r in results[k]]) for k in done}

    def med(kind: str, key: str) -> float | None:
        values = [r[key] for r in results[kind] if r[key] is not None]
        return median(values) if values else None

    print()
    table([[k, fmt(walls[k]), fmt(med(k, "cpu")), fmt(med(k, "server_cpu")), fmt(med(k, "db_cpu")),
            f"{walls[k] / walls['sqlite']:.2f}×"] for k in done],
          ["store", "wall (median)", "sweep CPU", "mlflow server CPU", "postgres CPU", "wall / SQLite"])  # fmt: skip
    print("## Ratios (wall time / SQLite's; lower is better)")
    for kind, target in TARGETS.items():
        if kind not in results:
            continue
        if kind not in walls:
            print(f"{kind}: every sweep FAILED  target ≤ {target:g}×: MISSED")
            continue
        ratio = walls[kind] / walls["sqlite"]
        print(f"{kind}: {ratio:.2f}×  target ≤ {target:g}×: {verdict(ratio, target, higher_is_better=False)}")


def interrupted(signum: int, frame: object) -> None:
    """SIGTERM (and SIGINT, which a shell's background job ignores) as Ctrl-C: the ``finally`` blocks then stop the
    MLflow server and remove the PostgreSQL cluster."""
    raise KeyboardInterrupt


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGINT, interrupted)
    try:
        main()
    finally:
        footer()
