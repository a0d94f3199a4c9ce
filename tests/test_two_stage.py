"""Two-stage learning-rate studies: stage 2's jobs from stage 1's runs (harness.report.tuning), the sweeper's
``only`` filter, and (slow) a real two-stage sweep whose report reads the same rates the sweeper chose."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pandas as pd
import pytest
from conftest import harness_env
from hydra.core.override_parser.overrides_parser import OverridesParser

from harness import names
from harness.fold import fold_jobs
from harness.report import loading, stats, tuning
from hydra_plugins.harness_sweeper.harness_sweeper import HarnessSweeper


def _stage_one(rules=("ng", "chain"), rates=("0.1", "1", "10"), seeds=(0, 1)) -> list[list[str]]:
    return [["loss=mse", f"delta={d}", f"train.lr={lr}", f"seed={s}"] for d in rules for lr in rates for s in seeds]


def _summary(jobs: list[list[str]], accuracy) -> pd.DataFrame:
    """One finished run per job, with the overrides tag a sweep job writes and ``accuracy(rule, lr, seed)``."""
    rows = []
    for job in jobs:
        o = dict(x.split("=", 1) for x in job)
        rows.append({"loss": o["loss"], "activation": "sigmoid", "delta": o["delta"], "seed": int(o["seed"]),
                     "lr": float(o["train.lr"]), "pairing": "exact", "outcome": "completed",
                     "final_accuracy": accuracy(o["delta"], float(o["train.lr"]), int(o["seed"])),
                     "epochs_to_threshold": 50.0, "overrides": " ".join(job)})  # fmt: skip
    return pd.DataFrame(rows)


def test_stage_two_runs_each_triple_at_the_rate_best_lr_chose_on_new_seeds():
    jobs = _stage_one()
    best = {"ng": 1.0, "chain": 10.0}  # by hand: each rule's accuracy peaks at its own rate
    summary = _summary(jobs, lambda rule, lr, seed: 0.9 if lr == best[rule] else 0.5 + 0.01 * seed)
    plan = tuning.evaluation_jobs(jobs, summary, n_seeds=3)
    assert plan.tuning == [0, 1] and plan.seeds == [2, 3, 4]  # after the tuning seeds: never the same seed
    assert plan.jobs == [
        *(["loss=mse", "delta=ng", "train.lr=1.0", f"seed={s}"] for s in (2, 3, 4)),
        *(["loss=mse", "delta=chain", "train.lr=10.0", f"seed={s}"] for s in (2, 3, 4)),
    ]
    # the report's function, on the same runs, makes the same choice
    assert dict(zip(plan.best["delta"], plan.best["best_lr"])) == best
    assert "chain η = 10 (highest)" in plan.describe() and "× 3 evaluation seeds 2–4 = 6 runs" in plan.describe()


def test_a_triple_without_tuning_runs_is_left_out_and_said_so():
    jobs = _stage_one()
    summary = _summary([j for j in jobs if "delta=chain" not in j], lambda rule, lr, seed: 0.9)
    plan = tuning.evaluation_jobs(jobs, summary, n_seeds=2)
    assert {j[1] for j in plan.jobs} == {"delta=ng"} and plan.skipped == ["loss=mse delta=chain"]
    assert "left out: loss=mse delta=chain" in plan.describe()
    with pytest.raises(ValueError, match="evaluation_seeds=0: a second stage needs at least 1 seed"):
        tuning.evaluation_jobs(jobs, summary, n_seeds=0)


def test_stage_two_job_numbers_follow_stage_ones():
    jobs = [["delta=ng", "train.lr=1.0", f"seed={s}"] for s in (2, 3)]
    folded = tuning.shift_jobs(fold_jobs(jobs, ["seed", "train.lr"], 30), offset=12)
    entries = [json.loads(e) for e in re.findall(r"'(\{.*?\})'", folded[0][-1])]
    assert [e["job"] for e in entries] == [12, 13] and [e["overrides"] for e in entries][1] == [
        "train.lr=1.0",
        "seed=3",
    ]
    assert folded[0][0] == "delta=ng" and tuning.shift_jobs([["delta=ng", "seed=2"]], 5) == [["delta=ng", "seed=2"]]


def _split(only: list[str], params: list[str]) -> tuple[HarnessSweeper, list[list[str]]]:
    """The jobs the sweeper makes of ``params`` with ``hydra.sweeper.only=only`` (unfolded). Built with
    ``__new__`` as in tests/test_sweeper.py: after Hydra's plugin scan re-imports basic_sweeper, its
    ``__init__``'s ``super()`` no longer matches the class imported here."""
    sweeper = HarnessSweeper.__new__(HarnessSweeper)
    sweeper.fold, sweeper.max_replicas, sweeper.only = [], 30, [entry.split() for entry in only]
    parsed = OverridesParser.create().parse_overrides(params)
    return sweeper, [job for batch in sweeper.split_arguments(parsed, None) for job in batch]


def test_only_keeps_the_chosen_loss_activation_pairs(capsys):
    params = ["loss=mse,bce,cce", "activation=sigmoid,softmax", "delta=ng,chain"]
    sweeper, jobs = _split(["loss=mse activation=sigmoid", "loss=cce activation=softmax"], params)
    assert {(j[0], j[1]) for j in jobs} == {("loss=mse", "activation=sigmoid"), ("loss=cce", "activation=softmax")}
    assert len(jobs) == 4 and sweeper.stage_one == jobs
    assert len(_split([], params)[1]) == 12  # no `only`: the full product
    with pytest.raises(SystemExit) as exit_:
        _split(["loss=mse activation=tanh"], params)
    assert exit_.value.code == 2
    assert "harness: error: hydra.sweeper.only=['loss=mse activation=tanh'] matches none of the sweep's 12 jobs" in (
        capsys.readouterr().err
    )
    with pytest.raises(SystemExit) as exit_:
        HarnessSweeper(None, evaluation_seeds=-1)
    assert exit_.value.code == 2 and "must be 0 (one stage, the default) or a positive count" in capsys.readouterr().err


@pytest.mark.slow
def test_a_two_stage_sweep_evaluates_new_seeds_at_the_rates_the_report_chooses(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = ["+experiment=lr_fairness", "loss=mse", "activation=sigmoid", "delta=ng,nielsen", "train.lr=0.316,3.16,31.6",
            "seed=0,1", "hydra.sweeper.evaluation_seeds=6", "train.epochs=60", "report.auto=false",
            f"tracking.uri={uri}"]  # fmt: skip
    p = subprocess.run([sys.executable, "-m", "harness", *args], cwd=tmp_path, capture_output=True, text=True,
                       env=harness_env(), timeout=600)  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert "stage 2: 2 triples, each at its rate chosen on tuning seeds 0, 1, × 6 evaluation seeds 2–7" in p.stdout
    study = loading.load("lr_fairness", uri=uri)
    summary = loading.run_summary(study)
    assert len(summary) == 2 * 3 * 2 + 2 * 6 and (summary["status"] == "FINISHED").all()
    tune, evaluate = stats.design_seeds(summary)
    assert tune == [0, 1] and evaluate == [2, 3, 4, 5, 6, 7]
    chosen = stats.best_lr(summary, tuning=tune).set_index("delta")["best_lr"]
    for rule, g in summary[summary["seed"].isin(evaluate)].groupby("delta"):
        assert set(g["lr"]) == {chosen[rule]} and sorted(g["seed"]) == evaluate
    from mlflow import MlflowClient

    runs = MlflowClient(uri).search_runs([MlflowClient(uri).get_experiment_by_name("lr_fairness").experiment_id])
    jobs = sorted(int(r.data.tags[names.JOB_TAG]) for r in runs if names.JOB_TAG in r.data.tags)
    assert jobs == list(range(len(summary)))  # stage 2's runs numbered after stage 1's, none twice
