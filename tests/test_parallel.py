"""Parallel sweeps on one machine: the joblib launcher, into SQLite, with nothing leaking between jobs."""

from __future__ import annotations

import subprocess
from collections import Counter

import pytest
from conftest import harness_env
from hydra.types import RunMode
from mlflow import MlflowClient
from omegaconf import OmegaConf
from servers import harness_cmd

from harness.names import METRICS
from harness.sweep import blas_threads


def sweep(tmp_path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(harness_cmd("-m", *args), cwd=tmp_path, capture_output=True, text=True,
                          env=harness_env(), timeout=600)  # fmt: skip


def runs_of(store_dir):
    c = MlflowClient(f"sqlite:///{store_dir / 'mlflow.db'}")
    exp = c.get_experiment_by_name("harness")
    return c, c.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"])


def history(c: MlflowClient, run_id: str, metric: str) -> list[float]:
    return [m.value for m in sorted(c.get_metric_history(run_id, metric), key=lambda m: m.step)]


@pytest.mark.parametrize(
    "launcher,expected",
    [
        ({"_target_": "hydra._internal.core_plugins.basic_launcher.BasicLauncher"}, None),
        ({"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher", "n_jobs": 1}, None),
        ({"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher", "n_jobs": 2}, 1),
        ({"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher", "n_jobs": -1}, 1),
        ({"_target_": "hydra_plugins.hydra_ray_launcher.ray_launcher.RayLauncher"}, 1),
    ],
)
def test_blas_threads_per_launcher(launcher, expected):
    hc = OmegaConf.create({"mode": RunMode.MULTIRUN, "launcher": launcher})
    assert blas_threads(hc) == expected
    assert blas_threads(OmegaConf.create({"mode": RunMode.RUN, "launcher": launcher})) is None


@pytest.mark.slow
def test_reused_joblib_worker_gives_the_numbers_of_separate_processes(tmp_path):
    """4 jobs on 2 loky workers: some worker runs 2 jobs in turn (pigeonhole). Each job's metric history
    must equal that of the same config run alone in a fresh process; and jobs run with 1 BLAS thread."""
    shared = tmp_path / "shared"
    shared.mkdir()
    # one job per run (not folded): a worker must run two jobs in turn
    p = sweep(shared, "loss=bce,mse", "seed=1,2", "train.epochs=40", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
              "hydra.sweeper.fold=[]")  # fmt: skip
    assert p.returncode == 0, p.stderr
    c, runs = runs_of(shared)
    children = [r for r in runs if r.data.tags.get("harness.level") == "seed"]
    assert len(children) == 4 and {r.info.status for r in runs} == {"FINISHED"}
    per_worker = Counter(r.data.tags["harness.pid"] for r in children)
    assert len(per_worker) <= 2 and max(per_worker.values()) >= 2, per_worker
    assert {r.data.tags["harness.blas_threads"] for r in children} == {"1"}
    # The second job each worker ran is the one that could have inherited state from the first.
    seen: set[str] = set()
    reused = []
    for r in children:  # ordered by start time
        pid = r.data.tags["harness.pid"]
        if pid in seen:
            reused.append(r)
        seen.add(pid)
    assert reused
    for r in reused:
        alone = tmp_path / f"alone-{r.info.run_id}"
        alone.mkdir()
        overrides = r.data.tags["harness.overrides"].split()
        q = subprocess.run(harness_cmd(*overrides), cwd=alone, capture_output=True, text=True, env=harness_env(),
                           timeout=300)  # fmt: skip
        assert q.returncode == 0, q.stderr
        c1, (single,) = runs_of(alone)
        assert single.data.tags["harness.config_hash"] == r.data.tags["harness.config_hash"]
        for metric in METRICS:
            assert history(c, r.info.run_id, metric) == history(c1, single.info.run_id, metric)


@pytest.mark.slow
def test_eight_parallel_jobs_into_a_fresh_store_lose_nothing(tmp_path):
    epochs = 60
    p = sweep(tmp_path, "seed=0,1,2,3,4,5,6,7", f"train.epochs={epochs}", "hydra/launcher=joblib",
              "hydra.launcher.n_jobs=8", "hydra.sweeper.fold=[]")  # fmt: skip
    assert p.returncode == 0, p.stderr
    c, runs = runs_of(tmp_path)
    children = [r for r in runs if r.data.tags.get("harness.level") == "seed"]
    assert len(children) == 8 and len(runs) == 10  # and their configuration run, and the parent
    assert Counter(r.info.status for r in runs) == {"FINISHED": 10}
    assert len({r.data.tags["harness.pid"] for r in children}) > 1  # really in parallel processes
    assert sorted(int(r.data.params["seed"]) for r in children) == list(range(8))
    values = {(r.info.run_id, m): len(c.get_metric_history(r.info.run_id, m)) for r in children for m in METRICS}
    assert set(values.values()) == {epochs + 1}
    assert sum(values.values()) == 8 * len(METRICS) * (epochs + 1)
