"""Processes the end-to-end tests start and stop: ``python -m harness``, ``mlflow server`` / ``mlflow ui``.

Every server binds to 127.0.0.1 on a free port and is stopped by its own process id.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
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
