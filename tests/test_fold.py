"""Folding (issue 12): jobs of a sweep that differ only in seed and train.lr run as one job of replicas, and
the store is the unfolded sweep's: the same runs, params, tags, config hashes, names and metric histories."""

from __future__ import annotations

import math
import subprocess
from pathlib import Path

import pytest
from conftest import harness_env
from mlflow import MlflowClient
from omegaconf import OmegaConf
from servers import harness_cmd

from harness.fold import LaunchLineFilter, fold_jobs, strip, unfold
from harness.names import METRICS
from harness.tracking import config_hash

# Tags that name a process or the parent run of one sweep, not what a run is.
VOLATILE_TAGS = {"harness.pid", "mlflow.parentRunId"}


def test_jobs_that_differ_only_in_folded_keys_become_one_job():
    jobs = [[f"loss={loss}", f"seed={s}", f"train.lr={lr}", "train.epochs=5"]
            for loss in ("bce", "mse") for s in (0, 1) for lr in (0.5, 2)]  # fmt: skip
    folded = fold_jobs(jobs, ["seed", "train.lr"], max_replicas=30)
    assert [j[:2] for j in folded] == [["loss=bce", "train.epochs=5"], ["loss=mse", "train.epochs=5"]]
    assert all(j[2].startswith("replicas=[") for j in folded)
    assert fold_jobs(jobs, [], 30) == jobs  # fold=[]: one job per run, as before
    by_seed = fold_jobs(jobs, ["seed"], 30)
    assert len(by_seed) == 4 and all("train.lr=" in " ".join(j) for j in by_seed)
    assert [len(unfold_entries(j)) for j in fold_jobs(jobs, ["seed", "train.lr"], 3)] == [3, 1, 3, 1]


def test_a_folded_jobs_launch_line_names_its_runs_and_folded_values_instead_of_json():
    import logging

    jobs = [["loss=bce", f"train.lr={lr}", f"seed={s}"] for lr in (0.1, 1) for s in (0, 1, 2, 3, 7)]
    (folded,) = fold_jobs(jobs, ["seed", "train.lr"], max_replicas=30)

    def shown(message: str) -> str:
        record = logging.LogRecord("hydra", logging.INFO, __file__, 0, message, (), None)
        assert LaunchLineFilter().filter(record)  # never drops a line
        return record.getMessage()

    assert shown(f"\t#4 : {' '.join(folded)}") == "\t#4 : loss=bce [10 runs: train.lr=0.1,1 seed=0..3,7]"
    one = fold_jobs([["loss=mse", "seed=5"]], ["seed"], 30)[0]
    assert shown(f"\t#0 : {' '.join(one)}") == "\t#0 : loss=mse [1 run: seed=5]"
    for other in ("Launching 2 jobs locally", "\t#1 : loss=bce seed=3", "\t#2 : replicas=[not, ours]"):
        assert shown(other) == other


def unfold_entries(job: list[str]) -> list:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create().parse_override(job[-1]).value()


def test_only_seed_and_lr_can_be_folded():
    with pytest.raises(ValueError, match="only seed, train.lr can be folded"):
        fold_jobs([["loss=bce"]], ["loss"], 30)


def test_unfold_gives_each_unfolded_jobs_config_overrides_and_number(compose_cfg):
    jobs = [[f"seed={s}", "loss=mse", f"train.lr={lr}"] for s in (0, 3) for lr in (1, 0.25)]
    jobs.append(["seed=7", "loss=bce", "train.lr=1"])
    folded = fold_jobs(jobs, ["seed", "train.lr"], 30)
    got = []
    for job in folded:
        cfg = compose_cfg(*job)
        got += [(r.job, r.overrides, r.cfg) for r in unfold(cfg, job, 99)]
    assert [(num, overrides) for num, overrides, _ in got] == list(enumerate(jobs))
    for (_, _, cfg), job in zip(got, jobs):
        expected = strip(compose_cfg(*job))
        assert OmegaConf.to_container(cfg) == OmegaConf.to_container(expected)
        assert isinstance(cfg.train.lr, float) and cfg.train.lr == float(job[2].split("=")[1])
    # the hash of a composed config (with its empty replicas key) is its run's
    assert config_hash(OmegaConf.to_container(compose_cfg(*jobs[0]))) == config_hash(OmegaConf.to_container(got[0][2]))


def test_a_job_without_replicas_is_itself(compose_cfg):
    cfg = compose_cfg("seed=4")
    (rep,) = unfold(cfg, ["seed=4"], None)
    assert rep.overrides == ["seed=4"] and rep.job is None and "replicas" not in rep.cfg


def sweep(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    p = subprocess.run(harness_cmd("-m", *args), cwd=tmp_path, capture_output=True, text=True, env=harness_env(),
                       timeout=600)  # fmt: skip
    assert p.returncode == 0, p.stderr
    return p


def store_contents(db: Path) -> dict[tuple[str, str], dict]:
    """Every seed run by (config hash, job number): name, status, params, tags, metric histories (the study's
    configuration runs left out, and the parent each seed run moved under, since it differs by run id)."""
    c = MlflowClient(f"sqlite:///{db}")
    exp = c.get_experiment_by_name("harness")
    out = {}
    for run in c.search_runs([exp.experiment_id], max_results=10000):
        tags = run.data.tags
        if "mlflow.parentRunId" not in tags or tags.get("harness.level") == "configuration":
            continue
        histories = {
            m: [(h.step, h.value) for h in sorted(c.get_metric_history(run.info.run_id, m), key=lambda h: h.step)]
            for m in METRICS
        }
        key = (tags["harness.config_hash"], tags["harness.job"])
        assert key not in out
        out[key] = {
            "name": run.info.run_name,
            "status": run.info.status,
            "params": run.data.params,
            "tags": {k: v for k, v in tags.items() if k not in VOLATILE_TAGS},
            "histories": histories,
        }
    return out


def assert_same_store(folded: dict, unfolded: dict) -> None:
    assert folded.keys() == unfolded.keys()
    for key, a in folded.items():
        b = unfolded[key]
        assert {k: a[k] for k in ("name", "status", "params", "tags")} == {
            k: b[k] for k in ("name", "status", "params", "tags")
        }, key
        for metric, rows in a["histories"].items():
            other = b["histories"][metric]
            assert [s for s, _ in rows] == [s for s, _ in other], (key, metric)
            for (_, x), (_, y) in zip(rows, other):
                assert (math.isnan(x) and math.isnan(y)) or math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-12), (
                    key, metric, x, y,
                )  # fmt: skip


# A diverging learning rate among them (1e300: dropped from the stack at epoch 1 or 2, the others train on) and
# undefined epochs (bce on identity outputs).
GRID = ("loss=bce,mse", "activation=sigmoid,identity", "seed=0,1", "train.lr=0.5,1e300", "train.epochs=8")


def test_folded_and_unfolded_sweeps_leave_identical_stores(tmp_path):
    (tmp_path / "folded").mkdir()
    (tmp_path / "unfolded").mkdir()
    p = sweep(tmp_path / "folded", *GRID)
    assert "Launching 4 jobs" in p.stdout + p.stderr  # 16 runs in 4 jobs
    sweep(tmp_path / "unfolded", *GRID, "hydra.sweeper.fold=[]")
    folded = store_contents(tmp_path / "folded" / "mlflow.db")
    unfolded = store_contents(tmp_path / "unfolded" / "mlflow.db")
    assert len(unfolded) == 16
    assert_same_store(folded, unfolded)
    outcomes = {run["tags"]["outcome"] for run in folded.values()}
    assert outcomes == {"completed", "diverged"}
    assert any(int(run["tags"]["undefined_epochs"]) > 0 for run in folded.values())


def test_resume_skips_the_finished_replicas_of_a_folded_job(tmp_path):
    sweep(tmp_path, "loss=bce,mse", "seed=0,1", "train.epochs=5")
    p = sweep(
        tmp_path, "loss=bce,mse", "seed=0,1,2", "train.epochs=5", "tracking.resume=true", "tracking.run_lines=true"
    )
    assert p.stdout.count("harness: skipped") == 4
    assert p.stdout.count("harness: bce-sigmoid-ng-s2 on xor:") == 1
    runs = store_contents(tmp_path / "mlflow.db")
    hashes = [h for h, _ in runs]
    assert len(hashes) == 6 and len(set(hashes)) == 6  # every run once, no duplicates
    assert all(r["status"] == "FINISHED" for r in runs.values())


@pytest.mark.slow
def test_folding_under_joblib_leaves_the_unfolded_store(tmp_path):
    (tmp_path / "folded").mkdir()
    (tmp_path / "unfolded").mkdir()
    sweep(tmp_path / "folded", *GRID, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
    sweep(tmp_path / "unfolded", *GRID, "hydra.sweeper.fold=[]")
    folded = store_contents(tmp_path / "folded" / "mlflow.db")
    unfolded = store_contents(tmp_path / "unfolded" / "mlflow.db")
    for run in [*folded.values(), *unfolded.values()]:
        run["tags"].pop("harness.blas_threads")  # 1 per job under joblib, the machine's otherwise
    assert_same_store(folded, unfolded)
