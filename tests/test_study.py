"""Configuration runs, resume adoption, stale runs and the study table (harness.tracking.study), on stores built
with harness.tracking.Run. Every expected number is computed here from the seed runs' histories read through
MLflow's public API (numpy), or by hand."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
from mlflow import MlflowClient
from scipy import stats

from harness.names import (
    ADOPTED_TAG,
    CHOSEN_RATE_TAG,
    CONFIGURATION_TAG,
    EPOCHS_TO_THRESHOLD,
    LEVEL_TAG,
    METRICS,
    OUTCOME_TAG,
    OVERRIDES_TAG,
    PARENT_TAG,
    SWEEP_TAG,
    TEST_ACCURACY,
    TEST_LOSS,
    TRAIN_LOSS,
)
from harness.tracking import Run
from harness.tracking import study as s

EXP = "study"
STEPS = 10
T_975_2 = 4.302652729911275  # Student t, 0.975 quantile, 2 degrees of freedom (printed tables: 4.303)


def seed_values(config: int, seed: int, step: int) -> dict[str, float]:
    """Made-up metric values, different per configuration, seed and step."""
    base = 0.1 * (config + 1) + 0.01 * seed
    return {m: base + 0.003 * i * step + 0.0007 * seed * step for i, m in enumerate(METRICS)}


def add_seed(uri, parent, config, seed, *, steps=STEPS, nan_at=(), status="FINISHED", outcome="completed",
             tagged=True, lr="0.5", final=None, ett=None, best=None) -> str:  # fmt: skip
    tags = {CONFIGURATION_TAG: f"cfg{config}"} if tagged else {}
    tags |= {"pairing": "exact", "harness.config_hash": f"h{config}-{seed}"}
    run = Run.start(uri, EXP, f"bce-sigmoid-c{config}-s{seed}-lr{lr}", tags, parent_run_id=parent)
    run.log_params({"loss": "bce", "activation": "sigmoid", "delta": f"c{config}", "seed": seed, "train.lr": lr})
    for step in range(steps):
        values = seed_values(config, seed, step)
        if step in nan_at:
            values[TRAIN_LOSS] = math.nan
            values[TEST_LOSS] = math.inf
        if final is not None and step == steps - 1:
            values[TEST_ACCURACY] = final
        run.log_metrics(values, step)
    summary = {k: v for k, v in (("best_test_accuracy", best), (EPOCHS_TO_THRESHOLD, ett)) if v is not None}
    if summary:
        run.log_metrics(summary, steps - 1)
    run.end(status, {OUTCOME_TAG: outcome})
    return run.run_id


def start_parent(uri, overrides="loss=bce"):
    return Run.start(uri, EXP, "sweep", {SWEEP_TAG: "/tmp/sweep", OVERRIDES_TAG: overrides}).run_id


@pytest.fixture
def study(store):
    """Two configurations under one parent. cfg0: 4 FINISHED seeds, seed 1 with an undefined loss (NaN train
    loss, +Inf test loss) at steps 2 and 3, seed 3 diverged at step 5 (stopped early), plus one FAILED seed;
    cfg1: 3 FINISHED seeds."""
    parent = start_parent(store)
    ids = {
        (0, 0): add_seed(store, parent, 0, 0),
        (0, 1): add_seed(store, parent, 0, 1, nan_at=(2, 3), outcome="undefined"),
        (0, 2): add_seed(store, parent, 0, 2),
        (0, 3): add_seed(store, parent, 0, 3, steps=6, outcome="diverged"),
        (0, 4): add_seed(store, parent, 0, 4, steps=3, status="FAILED", outcome="failed"),
    }
    ids |= {(1, k): add_seed(store, parent, 1, k) for k in range(3)}
    return parent, ids


def finite_history(c: MlflowClient, run_id: str, metric: str) -> dict[int, float]:
    """A run's values by step, through the public API, finite only (a SQL store keeps +Inf as the largest double)."""
    return {m.step: m.value for m in c.get_metric_history(run_id, metric)
            if math.isfinite(m.value) and abs(m.value) < sys.float_info.max}  # fmt: skip


def config_runs(c, parent):
    exp = c.get_experiment_by_name(EXP).experiment_id
    runs = c.search_runs([exp], f"tags.`{LEVEL_TAG}` = 'configuration' and tags.`{PARENT_TAG}` = '{parent}'")
    return {r.data.tags[CONFIGURATION_TAG]: r for r in runs}


@pytest.mark.parametrize("fast_path", [True, False])
def test_configuration_runs_hold_the_mean_band_and_count_at_every_step(study, store, fast_path):
    parent, ids = study
    created = s.write_configuration_runs(store, parent, fast_path=fast_path)
    c = MlflowClient(store)
    runs = config_runs(c, parent)
    assert set(runs) == {"cfg0", "cfg1"} and sorted(r.info.run_id for r in runs.values()) == sorted(created)
    for cfg, run in runs.items():
        cid = int(cfg[-1])
        finished = [rid for (k, _), rid in ids.items() if k == cid and c.get_run(rid).info.status == "FINISHED"]
        for metric in METRICS:
            seeds = [finite_history(c, rid, metric) for rid in finished]
            mean = {m.step: m.value for m in c.get_metric_history(run.info.run_id, metric)}
            lo = {m.step: m.value for m in c.get_metric_history(run.info.run_id, metric + "_lo")}
            hi = {m.step: m.value for m in c.get_metric_history(run.info.run_id, metric + "_hi")}
            count = {m.step: m.value for m in c.get_metric_history(run.info.run_id, metric + "_n")}
            assert sorted(count) == list(range(STEPS))
            for step in range(STEPS):
                x = np.array([h[step] for h in seeds if step in h])
                assert count[step] == len(x)
                assert mean[step] == pytest.approx(x.mean(), abs=1e-12, rel=0)
                half = stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x))
                assert lo[step] == pytest.approx(x.mean() - half, abs=1e-12, rel=0)
                assert hi[step] == pytest.approx(x.mean() + half, abs=1e-12, rel=0)
    # The undefined and diverged seeds, by hand: cfg0's train loss at step 2 averages seeds 0 and 2 (seed 1 is NaN,
    # seed 3 still runs: 3 values); at step 7 seed 3 has stopped.
    c0 = runs["cfg0"].info.run_id
    at = lambda key, step: next(m.value for m in c.get_metric_history(c0, key) if m.step == step)  # noqa: E731
    assert at(TRAIN_LOSS + "_n", 2) == 3 and at(TRAIN_LOSS + "_n", 7) == 3 and at(TEST_ACCURACY + "_n", 7) == 3
    assert at(TRAIN_LOSS + "_n", 4) == 4 and at(TEST_ACCURACY + "_n", 2) == 4
    expected = np.mean([seed_values(0, k, 2)[TRAIN_LOSS] for k in (0, 2, 3)])
    assert at(TRAIN_LOSS, 2) == pytest.approx(expected, abs=1e-12)


def test_summary_and_tags_against_a_hand_computation(store):
    parent = start_parent(store)
    # Final test accuracies 1.0, 0.5, 0.75; epochs to threshold 3, 7, never; one more seed FAILED.
    add_seed(store, parent, 0, 0, final=1.0, ett=3, best=1.0)
    add_seed(store, parent, 0, 1, final=0.5, ett=7, best=0.75, outcome="diverged")
    add_seed(store, parent, 0, 2, final=0.75, best=0.75)
    add_seed(store, parent, 0, 3, steps=2, status="FAILED", outcome="failed")
    s.write_configuration_runs(store, parent)
    run = config_runs(MlflowClient(store), parent)["cfg0"]
    m = run.data.metrics
    half = T_975_2 * 0.25 / math.sqrt(3)  # s = sqrt(((0.25)^2 + (0.25)^2 + 0) / 2) = 0.25
    assert m["final_test_accuracy"] == pytest.approx(0.75, abs=1e-12)
    assert m["final_test_accuracy_lo"] == pytest.approx(0.75 - half, abs=1e-9)
    assert m["final_test_accuracy_hi"] == pytest.approx(0.75 + half, abs=1e-9)
    assert m["final_test_accuracy_n"] == 3
    assert m["best_test_accuracy"] == pytest.approx((1.0 + 0.75 + 0.75) / 3, abs=1e-12)
    assert m["median_epochs_to_threshold"] == 7  # median of (3, 7, never = last)
    assert m["seeds_reached"] == 2
    assert (m["seeds"], m["seeds_completed"], m["seeds_diverged"], m["seeds_failed"], m["seeds_killed"]) == (
        4,
        2,
        1,
        1,
        0,
    )
    assert run.data.tags["outcomes"] == "2 completed, 1 diverged, 1 failed"
    assert run.data.tags["pairing"] == "exact" and run.data.tags[LEVEL_TAG] == "configuration"
    assert run.info.run_name == "bce-sigmoid-c0-lr0.5" and run.info.status == "FINISHED"
    assert "seed" not in run.data.params and run.data.params["train.lr"] == "0.5"
    # Fewer than half reached: no median (a never-reached seed ranks last).
    assert s.median_to_threshold([3, None, None]) == math.inf and s.median_to_threshold([3, 5, None, None]) == math.inf
    assert s.median_to_threshold([4, 2, None]) == 4


def test_nesting_is_parent_configuration_seed_and_a_second_call_replaces(study, store):
    parent, ids = study
    first = s.write_configuration_runs(store, parent)
    c = MlflowClient(store)
    runs = config_runs(c, parent)
    s.mark_chosen(store, [runs["cfg1"].info.run_id])
    for (cfg, _), rid in ids.items():
        assert c.get_run(rid).data.tags[PARENT_TAG] == runs[f"cfg{cfg}"].info.run_id
    assert {r.data.tags[PARENT_TAG] for r in runs.values()} == {parent}
    second = s.write_configuration_runs(store, parent)  # a resumed sweep's end
    again = config_runs(c, parent)
    assert len(again) == 2 and not set(first) & set(second)  # replaced, not duplicated
    assert {c.get_run(rid).info.lifecycle_stage for rid in first} == {"deleted"}
    assert again["cfg1"].data.tags.get(CHOSEN_RATE_TAG) == "true" and CHOSEN_RATE_TAG not in again["cfg0"].data.tags
    assert again["cfg0"].data.metrics["seeds"] == 5 and again["cfg1"].data.metrics["seeds"] == 3  # each seed once
    for (cfg, _), rid in ids.items():
        assert c.get_run(rid).data.tags[PARENT_TAG] == again[f"cfg{cfg}"].info.run_id


def test_runs_without_the_configuration_tag_group_by_params(store):
    parent = start_parent(store)
    for cfg in (0, 1):
        for seed in range(2):
            add_seed(store, parent, cfg, seed, tagged=False)
    s.write_configuration_runs(store, parent)
    c = MlflowClient(store)
    exp = c.get_experiment_by_name(EXP).experiment_id
    runs = c.search_runs([exp], f"tags.`{LEVEL_TAG}` = 'configuration'")
    assert sorted(r.info.run_name for r in runs) == ["bce-sigmoid-c0-lr0.5", "bce-sigmoid-c1-lr0.5"]
    assert [r.data.metrics["seeds"] for r in runs] == [2, 2]


def test_configuration_hash_ignores_the_seed_and_where_runs_are_recorded():
    cfg = {"loss": {"name": "bce"}, "seed": 1, "train": {"lr": 0.5}, "tracking": {"uri": "a"}, "tags": ["x"]}
    same = {**cfg, "seed": 7, "tracking": {"uri": "b"}, "tags": []}
    assert s.configuration_hash(cfg) == s.configuration_hash(same)
    assert s.configuration_hash(cfg) != s.configuration_hash({**cfg, "train": {"lr": 1.0}})
    assert s.configuration_hash(cfg) != s.configuration_hash({**cfg, "loss": {"name": "mse"}})


def test_adopt_runs_moves_finished_runs_of_the_interrupted_sweep(store):
    old = start_parent(store)
    done = [add_seed(store, old, 0, k) for k in range(2)]
    killed = add_seed(store, old, 0, 2, steps=3, status="KILLED", outcome="killed")
    new = start_parent(store)
    mine = add_seed(store, new, 0, 2)
    adopted = s.adopt_runs(store, new, [*done, killed, mine, done[0]])
    assert adopted == done
    c = MlflowClient(store)
    for rid in done:
        tags = c.get_run(rid).data.tags
        assert tags[PARENT_TAG] == new and tags[ADOPTED_TAG] == old and tags[LEVEL_TAG] == "seed"
    assert c.get_run(killed).data.tags[PARENT_TAG] == old
    s.write_configuration_runs(store, new)
    assert config_runs(c, new)["cfg0"].data.metrics["seeds"] == 3  # two adopted + the resumed one, each once


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_end_stale_runs_ends_a_killed_launcher_s_runs_of_the_same_study(store):
    def sweep(overrides, pid):
        parent = Run.start(store, EXP, "sweep", {SWEEP_TAG: "/tmp/x", OVERRIDES_TAG: overrides, "harness.pid": pid})
        child = Run.start(store, EXP, "c", {"harness.config_hash": "h"}, parent_run_id=parent.run_id)
        return parent.run_id, child.run_id

    stale = sweep("seed=0,1 loss=bce", str(dead_pid()))  # SIGKILLed earlier: its launcher is gone
    other = sweep("seed=0,1 loss=mse", str(dead_pid()))  # another study
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        alive = sweep("seed=0,1 loss=bce", str(sleeper.pid))  # same study, its launcher still running
        ended = s.end_stale_runs(store, EXP, "loss=bce seed=0,1 tracking.resume=true")
    finally:
        sleeper.kill()
    c = MlflowClient(store)
    assert sorted(ended) == sorted(stale)
    assert [c.get_run(r).info.status for r in stale] == ["KILLED", "KILLED"]
    assert c.get_run(stale[1]).data.tags[OUTCOME_TAG] == "killed"
    assert {c.get_run(r).info.status for r in (*other, *alive)} == {"RUNNING"}
    assert s.same_study_overrides("b=1 a=2 +tracking.resume=true") == ("a=2", "b=1")


def test_study_table_is_one_readable_row_per_configuration(study, store):
    parent, _ = study
    s.write_configuration_runs(store, parent)
    text = s.study_table(store, parent)
    lines = text.splitlines()
    assert max(map(len, lines)) <= 120
    assert lines[0].startswith("2 configurations, 8 seed runs")
    row0 = next(ln for ln in lines if ln.startswith("bce-sigmoid-c0-lr0.5"))
    assert row0.split()[1:6] == ["5", "2", "1", "1", "1"]  # n, done, div, undef, fail
    assert lines[1].split()[:6] == ["configuration", "n", "done", "div", "undef", "fail"]
    many = s.study_table(store, parent, max_rows=1)
    assert "one row per loss-activation" in many
    assert many.splitlines()[-1].split()[:6] == ["bce-sigmoid", "2", "5", "1", "1", "1"]  # 2 configs, summed
