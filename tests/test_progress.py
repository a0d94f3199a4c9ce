"""The study progress bar (harness.tracking.progress): counted from a store that a background thread fills."""

from __future__ import annotations

import io
import threading
import time

import pytest

from harness.names import ADOPTED_TAG, LEVEL_TAG, SWEEP_TAG
from harness.tracking import Run
from harness.tracking.progress import StudyProgress

EXP = "progress"


def finish(uri, parent, n, status="FINISHED", tags=None):
    for _ in range(n):
        Run.start(uri, EXP, "r", tags, parent_run_id=parent).end(status)


@pytest.mark.parametrize("fast_path", [True, False])
def test_the_bar_counts_the_sweep_s_ended_runs_as_a_thread_writes_them(store, monkeypatch, fast_path):
    parent = Run.start(store, EXP, "sweep", {SWEEP_TAG: "/x"}).run_id
    other = Run.start(store, EXP, "sweep", {SWEEP_TAG: "/y"}).run_id
    finish(store, other, 2)  # another sweep's runs
    finish(store, parent, 1, tags={ADOPTED_TAG: "old"})  # adopted: already counted in already_done
    finish(store, parent, 1, tags={LEVEL_TAG: "configuration"})  # not a seed run
    Run.start(store, EXP, "running", parent_run_id=parent)  # still RUNNING
    if not fast_path:  # the HTTP store's way: search_runs
        monkeypatch.setattr("harness.tracking.mlflow_sql.sql_store", lambda c: None)
        monkeypatch.setattr("harness.tracking.progress.HTTP_MIN_INTERVAL", 0.05)
    seen: list[int] = []

    def fill():
        for status in ("FINISHED", "FAILED", "FINISHED", "KILLED", "FINISHED"):
            finish(store, parent, 1, status)
            time.sleep(0.3)

    out = io.StringIO()
    with StudyProgress(store, EXP, parent, total=7, already_done=2, interval=0.05, file=out, disable=False) as p:
        assert p.bar.n == 2
        writer = threading.Thread(target=fill)
        writer.start()
        while writer.is_alive():
            seen.append(p.bar.n)
            time.sleep(0.05)
        writer.join()
    assert p.count() == 5 and p.bar.n == 7
    assert seen == sorted(seen) and len(set(seen)) >= 3  # moved while the runs were written, never back
    assert "7/7" in out.getvalue()


def test_the_bar_never_passes_the_total(store):
    parent = Run.start(store, EXP, "sweep", {SWEEP_TAG: "/x"}).run_id
    finish(store, parent, 3)
    with StudyProgress(store, EXP, parent, total=2, interval=10, file=io.StringIO(), disable=False) as p:
        pass
    assert p.count() == 3 and p.bar.n == 2


def _on_a_terminal(args: list[str], cwd) -> tuple[int, str]:
    """``python -m harness ARGS`` with its stderr on a pseudo-terminal (tqdm draws bars on terminals only);
    returns the exit status and everything written to the terminal."""
    import fcntl
    import os
    import pty
    import struct
    import subprocess
    import sys
    import termios

    from conftest import harness_env

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))  # a new pty is 0 × 0: no bar fits
    proc = subprocess.Popen([sys.executable, "-m", "harness", *args], cwd=cwd, env=harness_env(),
                            stdout=subprocess.DEVNULL, stderr=slave)  # fmt: skip
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    return proc.wait(timeout=600), b"".join(chunks).decode(errors="replace")


@pytest.mark.slow
@pytest.mark.parametrize(
    "launcher", [[], ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]], ids=["basic", "joblib"]
)
def test_a_sweep_shows_one_progress_bar_over_its_runs(tmp_path, launcher):
    code, screen = _on_a_terminal(["-m", "loss=bce,mse", "seed=0,1,2", "train.epochs=40", *launcher], tmp_path)
    assert code == 0, screen
    assert "harness: 100%" in screen and "6/6" in screen  # desc is the experiment; total: the sweep's 6 runs
    assert "run/s" in screen or "s/run" in screen  # tqdm's rate
