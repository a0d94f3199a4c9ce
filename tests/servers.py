"""Processes the end-to-end tests start and stop: ``python -m harness``, ``mlflow server`` / ``mlflow ui``, a Ray
head, a throwaway PostgreSQL cluster.

Every server binds to 127.0.0.1 on a free port and is stopped by its own process id (PostgreSQL by ``pg_ctl``,
which stops the postmaster of its own data directory).
"""

from __future__ import annotations

import contextlib
import glob
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def harness_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "harness", *args]


def start_harness(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """``python -m harness ARGS`` in its own session (so a test can signal its whole process group)."""
    from conftest import harness_env  # here, not at the top: benchmarks/bench_stores.py imports this module too

    return subprocess.Popen(
        harness_cmd(*args),
        cwd=cwd,
        env=env or harness_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def wait_http(url: str, timeout: float = 120.0) -> None:
    """Wait until ``url`` answers 200."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not answer within {timeout} s")
        time.sleep(0.5)


class MlflowServer:
    """``mlflow server`` (or ``mlflow ui``) on 127.0.0.1 over a SQLite store in ``root`` (or over
    ``backend_store_uri``, e.g. a ``postgresql://`` database); restartable."""

    def __init__(
        self, root: Path, command: str = "server", port: int | None = None, backend_store_uri: str | None = None
    ) -> None:
        self.root, self.command = root, command
        self.port = port or free_port()
        self.db = root / "server.db"
        self.backend_store_uri = backend_store_uri or f"sqlite:///{self.db}"
        self.proc: subprocess.Popen | None = None
        self.log = root / f"mlflow-{command}.log"

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> MlflowServer:
        args = [str(BIN / "mlflow"), self.command, "--host", "127.0.0.1", "--port", str(self.port)]
        args += ["--backend-store-uri", self.backend_store_uri, "--workers", "1"]
        if self.command == "server":
            args += ["--artifacts-destination", str(self.root / "artifacts")]
        env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
        with open(self.log, "a") as log:
            self.proc = subprocess.Popen(args, cwd=self.root, env=env, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)  # fmt: skip
        wait_http(f"{self.uri}/health")
        return self

    def stop(self) -> None:
        """SIGTERM the server's process group (it forks workers), SIGKILL if it lingers; then SIGKILL what is left
        of the group (``mlflow server`` 3.17's huey job consumers outlived the server by 25 s or more)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError):  # the whole group already ended
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


class RayHead:
    """``ray start --head --block`` on 127.0.0.1: a one-node Ray cluster, stopped by its own process id
    (``--block`` makes that process stop the cluster's other processes when it gets SIGTERM).

    Ray 2.60 starts a head with token authentication (the token in ``~/.ray/auth_token``), but its clients
    send the token only with ``RAY_AUTH_MODE=token``: :attr:`env` is the environment for every client.
    """

    env = {"RAY_AUTH_MODE": "token"}

    def __init__(self, num_cpus: int = 2) -> None:
        self.port = free_port()
        # Ray's socket paths must stay under 107 characters: pytest's tmp_path can be too long.
        self.temp = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))
        self.num_cpus = num_cpus
        self.proc: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 180) -> RayHead:
        args = [str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address", "127.0.0.1",
                "--port", str(self.port), "--num-cpus", str(self.num_cpus), "--include-dashboard", "false",
                "--disable-usage-stats", "--temp-dir", str(self.temp)]  # fmt: skip
        env = {**os.environ, **self.env}
        # A head with token auth needs a token (~/.ray/auth_token): on a fresh machine there is none, and
        # `ray start` refuses to make one. `--generate` makes it only if missing.
        subprocess.run([str(BIN / "ray"), "get-auth-token", "--generate"], capture_output=True, env=env, check=True)
        self.log = open(self.temp / "ray-start.log", "w")  # noqa: SIM115  (closed in stop)
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)  # fmt: skip
        deadline = time.monotonic() + timeout
        status = [str(BIN / "ray"), "status", "--address", self.address]
        while subprocess.run(status, capture_output=True, env=env).returncode != 0:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"ray head did not start: {(self.temp / 'ray-start.log').read_text()[-3000:]}")
            time.sleep(1)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()
        shutil.rmtree(self.temp, ignore_errors=True)


def postgres_bin() -> Path | None:
    """The directory of PostgreSQL's server programs (``initdb``, ``pg_ctl``): Debian's newest
    ``/usr/lib/postgresql/<version>/bin``, else wherever ``pg_ctl`` is on PATH; None if neither exists."""
    debian = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[-3]))
    found = debian[-1] if debian else shutil.which("pg_ctl")
    return Path(found).resolve().parent if found else None


class PostgresServer:
    """A throwaway PostgreSQL cluster: ``initdb`` in a fresh temporary directory, ``pg_ctl start`` on
    127.0.0.1 and a free port, a role ``user`` with a random password (and CREATEDB, so the tests can make a
    database each) owning the database ``database``. :meth:`stop` stops it and removes the directory.

    TCP logins need the password (scram-sha-256), as on a real server; the superuser ``postgres`` logs in
    without one, but only over the Unix socket inside the cluster's own directory (mode 0700). PostgreSQL
    refuses to run as root: as root, every server command runs as the ``postgres`` user (``runuser``).
    """

    def __init__(self, user: str = "harness", database: str = "harness", bindir: Path | None = None) -> None:
        self.user, self.database = user, database
        self.password = secrets.token_hex(16)
        self.bindir = bindir or postgres_bin()
        if self.bindir is None:
            raise RuntimeError("no PostgreSQL server programs (initdb, pg_ctl): apt-get install -y postgresql")
        self.port = free_port()
        self.root: Path | None = None
        self.as_root = os.geteuid() == 0

    @property
    def data(self) -> Path:
        assert self.root is not None
        return self.root / "data"

    @property
    def uri(self) -> str:
        return f"postgresql://{self.user}:{self.password}@127.0.0.1:{self.port}/{self.database}"

    def _run(self, program: str, *args: str) -> subprocess.CompletedProcess:
        """Run one of the cluster's programs as the user that owns the cluster; raise with its output."""
        cmd = [str(self.bindir / program), *args]
        if self.as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if p.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stdout[-2000:]}{p.stderr[-2000:]}")
        return p

    def start(self) -> PostgresServer:
        self.root = Path(tempfile.mkdtemp(prefix="pg-", dir="/tmp"))  # the socket path must stay short
        if self.as_root:
            shutil.chown(self.root, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-E", "UTF8", "--auth-local=trust",
                  "--auth-host=scram-sha-256")  # fmt: skip
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root}"
        try:
            self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.root / "log"), "-w", "start")
            self.sql(f"CREATE ROLE {self.user} LOGIN CREATEDB PASSWORD '{self.password}'")
            self.sql(f"CREATE DATABASE {self.database} OWNER {self.user}")
        except BaseException:
            self.stop()
            raise
        return self

    def sql(self, statement: str, database: str = "postgres") -> str:
        """Run ``statement`` as the superuser (``psql`` over the cluster's own Unix socket); its output."""
        return self._run("psql", "-h", str(self.root), "-p", str(self.port), "-U", "postgres", "-d", database,
                         "-v", "ON_ERROR_STOP=1", "-Atc", statement).stdout  # fmt: skip

    def stop(self) -> None:
        """Stop the cluster (fast: open sessions are ended) and remove its directory."""
        if self.root is None:
            return
        if (self.data / "postmaster.pid").exists():
            try:
                self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
            except RuntimeError:
                pass  # not running (it failed to start): nothing to stop
        shutil.rmtree(self.root, ignore_errors=True)
        self.root = None
