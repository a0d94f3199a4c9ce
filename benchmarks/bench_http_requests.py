"""Benchmark: REST requests and wall time of a folded job written to an MLflow tracking server over HTTP.

    python benchmarks/bench_http_requests.py                 # starts `mlflow server` over a temporary SQLite file
    python benchmarks/bench_http_requests.py http://HOST:PORT  # or uses a running one

One folded job of ``--runs`` seeds (default 30) × ``--epochs`` (150) on XOR, 6 metrics per epoch, through
``harness.app.run_replicas`` as a sweep's job runs it, with every request MLflow's REST client sends counted by
endpoint (``mlflow.utils.rest_utils.http_request`` wrapped). Prints the requests per endpoint, the total, the
requests per run and the job's wall time.
"""

from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, footer, header, table  # noqa: E402


def start_server(root: Path) -> tuple[subprocess.Popen, str]:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mlflow = Path(sys.executable).parent / "mlflow"
    args = [str(mlflow), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
            "--backend-store-uri", f"sqlite:///{root / 'server.db'}",
            "--artifacts-destination", str(root / "art")]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    proc = subprocess.Popen(args, cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # fmt: skip
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(f"{uri}/health", timeout=2).read()
            return proc, uri
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit("mlflow server did not start") from None
            time.sleep(0.5)


def count_requests() -> collections.Counter:
    """Wrap MLflow's REST client and its artifact repository: every request is counted by ``METHOD endpoint``."""
    import mlflow.store.artifact.http_artifact_repo as artifacts
    import mlflow.utils.rest_utils as rest

    counts: collections.Counter = collections.Counter()

    def counted(real):
        def counting(host_creds, endpoint, method, *args, **kwargs):
            name = "(artifact upload)" if method == "PUT" else endpoint.removeprefix("/api/2.0/mlflow/")
            counts[f"{method} {name}"] += 1
            return real(host_creds, endpoint, method, *args, **kwargs)

        return counting

    rest.http_request = counted(rest.http_request)
    artifacts.http_request = counted(artifacts.http_request)
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("uri", nargs="?")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--epochs", type=int, default=150)
    args = parser.parse_args()
    header("REST requests of a folded job over HTTP", ("mlflow",), runs=args.runs, epochs=args.epochs)
    from hydra import compose, initialize_config_dir

    from harness.app import run_replicas
    from harness.config import register_configs

    register_configs()
    with tempfile.TemporaryDirectory(prefix="bench-http-") as tmp:
        proc, uri = (None, args.uri) if args.uri else start_server(Path(tmp))
        try:
            with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
                cfgs = [compose(config_name="config", overrides=[f"tracking.uri={uri}", f"train.epochs={args.epochs}",
                                                                 f"seed={s}", "tracking.experiment=bench-http"])
                        for s in range(args.runs)]  # fmt: skip
            counts = count_requests()
            start = time.perf_counter()
            results = run_replicas(cfgs)
            wall = time.perf_counter() - start
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait()
    assert all(r["outcome"] for r in results)
    total = sum(counts.values())
    table([[k, str(v)] for k, v in counts.most_common()] + [["total", str(total)]], ["request", "count"])
    values = args.runs * (args.epochs + 1) * 6
    print(f"requests: {total} ({total / args.runs:.1f} per run) for {values:,} metric values; job wall {wall:.2f} s")
    footer()


if __name__ == "__main__":
    main()
