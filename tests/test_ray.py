"""A sweep on a Ray cluster (a one-node head on 127.0.0.1), tracked by an MLflow server over HTTP."""

from __future__ import annotations

import subprocess
import time

import pytest
from conftest import harness_env
from mlflow import MlflowClient
from servers import MlflowServer, RayHead, harness_cmd

from harness.names import METRICS

pytest.importorskip("hydra_plugins.hydra_ray_launcher", reason="needs the ray extra: pip install -e '.[ray]'")


@pytest.fixture
def server(tmp_path):
    s = MlflowServer(tmp_path).start()
    yield s
    s.stop()


@pytest.fixture
def ray_head():
    head = RayHead().start()
    yield head
    head.stop()


@pytest.mark.slow
def test_ray_sweep_into_an_mlflow_server(tmp_path, server, ray_head):
    epochs = 30
    args = ["-m", "loss=bce,mse", "seed=0,1", f"train.epochs={epochs}", "hydra/launcher=ray",
            f"tracking.uri={server.uri}", f"hydra.launcher.ray.init.address={ray_head.address}",
            "+hydra.launcher.ray.init.object_store_memory=null"]  # fmt: skip
    start = time.monotonic()
    env = {**harness_env(), **ray_head.env}
    p = subprocess.run(harness_cmd(*args), cwd=tmp_path, capture_output=True, text=True, env=env, timeout=900)
    print(f"Ray sweep of 4 jobs: {time.monotonic() - start:.1f} s wall (exit {p.returncode})")
    assert p.returncode == 0, p.stderr[-5000:]
    assert "Connected to Ray cluster" in p.stderr  # really through the head we started
    c = MlflowClient(server.uri)
    runs = c.search_runs([c.get_experiment_by_name("harness").experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    kids = [r for r in runs if r.data.tags.get("harness.level") == "seed"]
    configurations = {r.info.run_id for r in runs if r.data.tags.get("harness.level") == "configuration"}
    assert len(parents) == 1 and len(kids) == 4 and len(configurations) == 2  # bce and mse, 2 seeds each
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert {r.data.tags["mlflow.parentRunId"] for r in kids} == configurations  # nested under their configuration
    assert sorted((r.data.params["loss"], r.data.params["seed"]) for r in kids) == [
        ("bce", "0"), ("bce", "1"), ("mse", "0"), ("mse", "1")
    ]  # fmt: skip
    driver = parents[0].data.tags["harness.pid"]
    assert all(r.data.tags["harness.pid"] != driver for r in kids)  # ran in Ray worker processes
    assert {r.data.tags["harness.blas_threads"] for r in kids} == {"1"}
    for r in kids:
        for metric in METRICS:
            steps = sorted(m.step for m in c.get_metric_history(r.info.run_id, metric))
            assert steps == list(range(epochs + 1)), (r.info.run_name, metric)
        assert [a.path for a in c.list_artifacts(r.info.run_id)] == ["config.yaml"]
