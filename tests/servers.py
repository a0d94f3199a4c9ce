"""Processes the end-to-end tests start and stop: ``python -m harness``, ``mlflow server`` / ``mlflow ui``.

Every server binds to 127.0.0.1 on a free port and is stopped by its own process id.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from conftest import harness_env

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def harness_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "harness", *args]


def start_harness(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """``python -m harness ARGS`` in its own session (so a test can signal its whole process group)."""
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
    """``mlflow server`` (or ``mlflow ui``) on 127.0.0.1 over a SQLite store in ``root``; restartable."""

    def __init__(self, root: Path, command: str = "server", port: int | None = None) -> None:
        self.root, self.command = root, command
        self.port = port or free_port()
        self.db = root / "server.db"
        self.proc: subprocess.Popen | None = None
        self.log = root / f"mlflow-{command}.log"

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> MlflowServer:
        args = [str(BIN / "mlflow"), self.command, "--host", "127.0.0.1", "--port", str(self.port)]
        args += ["--backend-store-uri", f"sqlite:///{self.db}", "--workers", "1"]
        if self.command == "server":
            args += ["--artifacts-destination", str(self.root / "artifacts")]
        env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
        with open(self.log, "a") as log:
            self.proc = subprocess.Popen(args, cwd=self.root, env=env, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)  # fmt: skip
        wait_http(f"{self.uri}/health")
        return self

    def stop(self) -> None:
        """SIGTERM the server's process group (it forks workers), SIGKILL if it lingers."""
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
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
