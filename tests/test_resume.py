"""Nothing lost: Ctrl-C mid-sweep, a job that raises, and resuming an interrupted sweep."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
from conftest import harness_env
from mlflow import MlflowClient
from servers import MlflowServer, harness_cmd, start_harness

FAULTS = Path(__file__).parent / "faults"
SEEDS = "seed=0,1,2,3,4,5"
# ≈ 2–4 s per job on a loaded 2-core machine; one job per run (tests/test_fold.py resumes folded jobs)
SWEEP = ("-m", "dataset=mnist", SEEDS, "train.epochs=25", "hydra.sweeper.fold=[]")


def client(tmp_path: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")


def all_runs(tmp_path: Path):
    c = client(tmp_path)
    exp = c.get_experiment_by_name("harness")
    return [] if exp is None else c.search_runs([exp.experiment_id])


def children(runs):
    """The seed runs (a sweep's configuration runs, written when it ends, left out)."""
    return [
        r for r in runs if "mlflow.parentRunId" in r.data.tags and r.data.tags.get("harness.level") != "configuration"
    ]


def count_finished(db: Path) -> int:
    """FINISHED seed runs in the store (read-only, as :func:`count_children`)."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        return con.execute(
            "select count(*) from runs where status = 'FINISHED' and run_uuid in "
            "(select run_uuid from tags where key = 'mlflow.parentRunId')"
        ).fetchone()[0]


def count_children(db: Path) -> int:
    """Child runs in the store, read with sqlite3 read-only: an MlflowClient would create the schema, racing
    the sweep's own creation of it."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        return con.execute("select count(*) from tags where key = 'mlflow.parentRunId'").fetchone()[0]


def wait_for_children(
    tmp_path: Path, proc: subprocess.Popen, n: int, timeout: float = 240, db: Path | None = None
) -> None:
    """Wait until the sweep has created ``n`` child runs in ``db`` (default: the sweep's own
    ``mlflow.db``), so it is mid-sweep, a job running."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        try:
            if count_children(db or tmp_path / "mlflow.db") >= n:
                return
        except sqlite3.Error:  # no store or no tables yet
            pass
        time.sleep(0.3)
    raise TimeoutError(f"fewer than {n} child runs after {timeout} s")


def interrupt(tmp_path: Path, launcher: list[str], target: str, started: int) -> tuple[int, str, float]:
    """Start the sweep, wait until ``started`` jobs have runs, send SIGINT to the main process (``main``) or,
    like Ctrl-C in a terminal, to its whole process group (``group``); return (exit code, stderr, seconds)."""
    proc = start_harness(*SWEEP, *launcher, cwd=tmp_path)
    wait_for_children(tmp_path, proc, started)
    sent = time.monotonic()
    if target == "group":
        os.killpg(proc.pid, signal.SIGINT)
    else:
        proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err, time.monotonic() - sent


def assert_all_ended(runs) -> None:
    statuses = Counter(r.info.status for r in runs)
    assert set(statuses) <= {"KILLED", "FINISHED"}, statuses
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    assert parent.info.status == "KILLED"
    killed = [r for r in children(runs) if r.info.status == "KILLED"]
    assert killed and all(r.data.tags["outcome"] == "killed" for r in killed)


@pytest.mark.slow
@pytest.mark.parametrize(
    "launcher,target,resume",
    [
        ([], "main", True),
        (["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"], "main", False),
        (["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"], "group", True),
    ],
    ids=["basic", "joblib-main-process", "joblib-process-group"],
)
def test_sigint_mid_sweep_ends_every_run_and_resume_completes_it(tmp_path, launcher, target, resume):
    code, err, seconds = interrupt(tmp_path, launcher, target, started=2)
    print(f"SIGINT ({target}): exit {code} after {seconds:.1f} s")
    assert code == 130, err
    assert "interrupted" in err
    runs = all_runs(tmp_path)
    assert_all_ended(runs)
    assert len(children(runs)) < 6  # interrupted mid-sweep
    if not resume:
        return
    finished_before = {r.data.tags["harness.config_hash"] for r in children(runs) if r.info.status == "FINISHED"}

    again = harness_cmd(*SWEEP, *launcher, "tracking.resume=true", "tracking.run_lines=true")
    p = subprocess.run(again, cwd=tmp_path, capture_output=True,
                       text=True, env=harness_env(), timeout=600)  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert p.stdout.count("harness: skipped") == len(finished_before)
    finished = [r for r in children(all_runs(tmp_path)) if r.info.status == "FINISHED"]
    hashes = Counter(r.data.tags["harness.config_hash"] for r in finished)
    assert len(hashes) == 6 and set(hashes.values()) == {1}  # every job done once: no duplicates
    assert sorted(int(r.data.params["seed"]) for r in finished) == list(range(6))
    assert "RUNNING" not in {r.info.status for r in all_runs(tmp_path)}


@pytest.mark.slow
def test_sigkill_of_the_launching_process_then_resume_keeps_the_study_whole(tmp_path):
    # SIGKILL (no handler runs) to the launching process and its workers once two runs FINISHED: the parent and the
    # running job's run stay RUNNING. The same command with tracking.resume=true ends those KILLED, adopts the
    # finished runs, trains the rest, and its report, runs.csv and configuration run count every seed once.
    sweep = (*SWEEP, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "report.auto=true")
    proc = start_harness(*sweep, cwd=tmp_path)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        try:
            if count_finished(tmp_path / "mlflow.db") >= 2:
                break
        except sqlite3.Error:
            pass
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    before = all_runs(tmp_path)
    assert "RUNNING" in {r.info.status for r in before}  # the killed launch could end nothing
    done_before = {r.info.run_id for r in children(before) if r.info.status == "FINISHED"}
    assert 2 <= len(done_before) < 6

    p = subprocess.run(harness_cmd(*sweep, "tracking.resume=true"), cwd=tmp_path, capture_output=True, text=True,
                       env=harness_env(), timeout=900)  # fmt: skip
    assert p.returncode == 0, p.stderr
    runs = all_runs(tmp_path)
    assert "RUNNING" not in {r.info.status for r in runs}
    parents = sorted((r for r in runs if "harness.sweep_dir" in r.data.tags), key=lambda r: r.info.start_time)
    assert [r.info.status for r in parents] == ["KILLED", "FINISHED"]
    new = parents[1].info.run_id
    finished = [r for r in children(runs) if r.info.status == "FINISHED"]
    assert sorted(int(r.data.params["seed"]) for r in finished) == list(range(6))  # each seed once
    assert done_before <= {r.info.run_id for r in finished}  # the runs finished before the kill, adopted
    (config,) = [r for r in runs if r.data.tags.get("harness.level") == "configuration"]
    assert config.data.tags["mlflow.parentRunId"] == new and config.data.metrics["seeds"] == 6
    assert all(r.data.tags["mlflow.parentRunId"] == config.info.run_id for r in finished)
    csv = (tmp_path / "reports" / "harness-runs.csv").read_text().strip().splitlines()
    assert len(csv) == 1 + 6  # the header and each seed once
    assert "harness: ended" in p.stdout and "KILLED" in p.stdout


@pytest.mark.slow
def test_a_failing_job_is_reported_and_the_others_finish(tmp_path):
    env = {**harness_env(), "PYTHONPATH": str(FAULTS), "HARNESS_FAIL_SEED": "1"}
    args = (
        "-m",
        "seed=0,1,2,3",
        "train.epochs=30",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "hydra.sweeper.fold=[]",
    )  # folded, seed 1 would fail the job of all four
    p = subprocess.run(harness_cmd(*args), cwd=tmp_path, capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode != 0
    runs = all_runs(tmp_path)
    kids = {int(r.data.params["seed"]): r for r in children(runs)}
    assert sorted(kids) == [0, 1, 2, 3]
    assert {s: r.info.status for s, r in kids.items()} == {0: "FINISHED", 1: "FAILED", 2: "FINISHED", 3: "FINISHED"}
    failed = kids[1]
    assert failed.data.tags["outcome"] == "failed"
    text = Path(client(tmp_path).download_artifacts(failed.info.run_id, "traceback.txt")).read_text()
    assert "RuntimeError: injected failure for the test" in text
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    assert parent.info.status == "FAILED"
    exp = failed.info.experiment_id
    line = (
        f"#{failed.data.tags['harness.job']} bce-sigmoid-ng-s1 FAILED (seed=1 train.epochs=30): "
        f"run {failed.info.run_id}"
    )
    assert f"{line} http://127.0.0.1:5000/#/experiments/{exp}/runs/{failed.info.run_id}" in p.stderr
    assert "harness: 1 of 4 jobs did not finish:" in p.stderr
    assert f"mlflow ui --backend-store-uri sqlite:///{tmp_path / 'mlflow.db'}" in p.stderr


@pytest.mark.slow
def test_tracking_server_down_mid_sweep_loses_no_run(tmp_path):
    """Stop the MLflow server while a sweep writes to it, restart it on the same port a few seconds later:
    MLflow's own HTTP retries (MLFLOW_HTTP_REQUEST_MAX_RETRIES=7, backoff factor 2: ≈ 4 min in all, the
    defaults) carry every job over the gap."""
    server = MlflowServer(tmp_path).start()
    try:
        epochs = 25
        args = ("-m", "dataset=mnist", "seed=0,1,2,3", f"train.epochs={epochs}", f"tracking.uri={server.uri}")
        proc = start_harness(*args, cwd=tmp_path)
        wait_for_children(tmp_path, proc, 1, db=server.db)
        server.stop()
        down = time.monotonic()
        time.sleep(5)
        server.start()
        print(f"server down for {time.monotonic() - down:.1f} s")
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-5000:]
        print("retries logged:", (out + err).count("Retrying"))
        assert "Retrying" in out + err  # urllib3's warning: requests really met the stopped server
        c = MlflowClient(server.uri)
        runs = c.search_runs([c.get_experiment_by_name("harness").experiment_id])
        kids = children(runs)
        assert len(runs) == 6 and {r.info.status for r in runs} == {"FINISHED"}  # 4 seeds, their configuration, parent
        assert sorted(int(r.data.params["seed"]) for r in kids) == [0, 1, 2, 3]
        for r in kids:
            for metric in ("train_loss", "test_accuracy", "grad_cosine"):
                steps = sorted(m.step for m in c.get_metric_history(r.info.run_id, metric))
                assert steps == list(range(epochs + 1))
    finally:
        server.stop()


def test_config_hash_ignores_tracking_and_override_order(compose_cfg):
    from omegaconf import OmegaConf

    from harness.tracking import config_hash

    def h(*overrides):
        return config_hash(OmegaConf.to_container(compose_cfg(*overrides), resolve=True))

    base = h("loss=mse", "seed=3")
    assert base == h("seed=3", "loss=mse")  # the order of overrides does not matter
    assert base == h("loss=mse", "seed=3", "tracking.experiment=other", "tracking.resume=true")
    assert len({base, h("loss=mse", "seed=4"), h("loss=bce", "seed=3"), h("loss=mse", "seed=3", "train.lr=1")}) == 4


def test_config_hash_ignores_report_and_tags_but_not_the_seed(compose_cfg):
    from omegaconf import OmegaConf

    from harness.tracking import config_hash

    def h(*overrides):
        return config_hash(OmegaConf.to_container(compose_cfg(*overrides), resolve=True))

    base = h()
    assert h("report.out=elsewhere") == base
    assert h("report.auto=true") == base
    assert h("tags=[a,b]") == base
    assert h("seed=1") != base


def test_orphaned_children_are_ended_killed_and_reported(store, capsys):
    from harness.sweep import report_children
    from harness.tracking import Run

    parent = Run.start(store, "harness", "sweep")
    done = Run.start(store, "harness", "bce-sigmoid-ng", {"harness.job": "0"}, parent.run_id)
    done.end("FINISHED")
    orphan = Run.start(store, "harness", "mse-sigmoid-ng", {"harness.job": "1", "harness.overrides": "loss=mse"},
                       parent.run_id)  # fmt: skip
    report_children(store, parent.run_id)
    c = MlflowClient(store)
    assert c.get_run(orphan.run_id).info.status == "KILLED"
    assert c.get_run(orphan.run_id).data.tags["outcome"] == "killed"
    assert c.get_run(done.run_id).info.status == "FINISHED"
    err = capsys.readouterr().err
    exp = c.get_run(orphan.run_id).info.experiment_id
    assert "harness: 1 of 2 jobs did not finish:" in err
    assert (
        f"  #1 mse-sigmoid-ng KILLED (loss=mse): run {orphan.run_id} "
        f"http://127.0.0.1:5000/#/experiments/{exp}/runs/{orphan.run_id}"
    ) in err
    assert "bce-sigmoid-ng" not in err
