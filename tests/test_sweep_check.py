"""A bad sweep stops before any job or MLflow run exists: every value composed, every combination checked."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import CONF, harness_env
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.types import RunMode
from mlflow import MlflowClient
from omegaconf import DictConfig, open_dict

from harness.config import ConfigError, CrossKeyInputs, register_configs
from harness.sweep_check import check_combinations, check_sweep

SOFTMAX_XOR1 = (
    "activation=softmax needs ≥ 2 outputs, but dataset=xor1 has 1; a 1-output softmax is the constant 1. "
    "Use sigmoid, tanh or identity."
)


def check(*overrides: str) -> tuple[int, int]:
    """check_sweep on the multirun config of ``overrides``; returns (jobs, compositions it made)."""
    register_configs()
    calls = []

    def composer(ovs: list[str]) -> DictConfig:
        calls.append(ovs)
        return compose(config_name="config", overrides=ovs)

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = GlobalHydra.instance().hydra.compose_config("config", list(overrides), run_mode=RunMode.MULTIRUN)
        with open_dict(cfg):
            cfg.hydra.overrides.task = list(overrides)
        jobs = check_sweep(cfg, composer)
    return jobs, len(calls)


def error(*overrides: str) -> str:
    with pytest.raises(ConfigError) as err:
        check(*overrides)
    return str(err.value)


BAD_LOSS = "Invalid configuration: loss='foo' is not a known option; allowed: bce, cce, matching, mse."


@pytest.mark.parametrize(
    "preset,jobs,compositions",
    [("lr_fairness", 1620, 1 + 2 + 3 + 2 + 8 + 4), ("slowdown", 4, 1 + 1 + 1), ("seed_xor", 20, 1 + 1 + 9)],
)
def test_presets_pass_with_one_composition_per_swept_value(preset, jobs, compositions):
    # lr_fairness sweeps loss (3), activation (4), delta (3), train.lr (9), seed (5): the first values share
    # one composition, every other value gets one; the 1,620 combinations (its stage 1) are checked without composing.
    assert check(f"+experiment={preset}") == (jobs, compositions)


@pytest.mark.parametrize(
    "overrides,message",
    [
        (
            ["dataset=xor,xor1", "activation=sigmoid,softmax"],
            f"Invalid sweep: 1 of 4 jobs cannot run. dataset=xor1 activation=softmax: {SOFTMAX_XOR1}",
        ),
        (  # the bad pair is no swept value's first-value composition: only the combination check finds it
            ["activation=sigmoid,softmax", "dataset=xor,xor1", "seed=0,1,2"],
            f"Invalid sweep: 3 of 12 jobs cannot run. activation=softmax dataset=xor1 seed=0 (and 2 more jobs): "
            f"{SOFTMAX_XOR1}",
        ),
        (
            ["+experiment=slowdown", "loss=mse,bce,cce"],
            "Invalid configuration: train.lr interpolates train.lr_by_loss, which has no rate for loss=cce "
            "(it has: mse, bce); add one, e.g. train.lr_by_loss.cce=0.1.",
        ),
        (  # whole-group values: the dataset's outputs come from the composed dataset, not the override's text
            ["+experiment=slowdown", "loss=mse,bce", "activation=sigmoid,softmax"],
            "Invalid configuration: activation=softmax needs ≥ 2 outputs, but dataset=neuron has 1; "
            "a 1-output softmax is the constant 1. Use sigmoid, tanh or identity.",
        ),
        (["loss=bce,foo"], BAD_LOSS),
        (["loss=foo,bce"], BAD_LOSS),
        (
            ["+experiment=nope,xor_grid"],
            "Invalid configuration: experiment='nope' is not a known option; "
            "allowed: lr_fairness, mnist_grid, mnist_lr, seed_xor, slowdown, xor_grid.",
        ),
        (["train.lr=1,abc"], "Invalid configuration: train.lr=abc: train.lr takes a number."),
        (["seed=1.5,2"], "Invalid configuration: seed=1.5: seed takes an integer."),
        (
            ["model.hidden=[4],abc"],
            "Invalid configuration: model.hidden=abc: model.hidden takes a list of integers, e.g. [30] (or []).",
        ),
        (
            ["model={init_weight:abc},{init_weight:1}"],
            "Invalid configuration: model={init_weight:abc}: model.init_weight takes a number.",
        ),
        (
            ["train.foo=1,2"],
            "Invalid configuration: train.foo is not a configuration key; "
            "allowed: epochs, lr, batch_size, reduction, eval_every, l2, lr_by_loss, dtype.",
        ),
        (
            ["model={foo:1},{init_weight:1}"],
            "Invalid configuration: model.foo is not a configuration key; "
            "allowed: hidden, hidden_activation, init, init_weight, init_bias, bias.",
        ),
        (
            ["dataset=xor,mnist", "train.lr=0.1,-1"],
            "Invalid configuration: train.lr=-1.0 must be a finite number > 0 (the SGD step size η), "
            "e.g. train.lr=0.5.",
        ),
    ],
)
def test_bad_sweeps_and_their_one_paragraph(overrides, message):
    assert error(*overrides) == message


def test_a_name_two_swept_keys_change_is_composed_per_pair_of_their_values():
    # dataset= and +experiment= both set the dataset here: its combinations with activation are not
    # the composition of any single swept value, so each (dataset, experiment) pair is composed once.
    base = CrossKeyInputs("xor", "sigmoid", "bce", 2.0, ())
    swept = [("a", ["0", "1"]), ("b", ["0", "1"]), ("activation", ["sigmoid", "softmax"])]
    inputs = {
        ("a", "0"): base,
        ("a", "1"): CrossKeyInputs("mnist", "sigmoid", "bce", 2.0, ()),
        ("b", "0"): base,
        ("b", "1"): CrossKeyInputs("neuron", "sigmoid", "bce", 2.0, ()),
        ("activation", "sigmoid"): base,
        ("activation", "softmax"): CrossKeyInputs("xor", "softmax", "bce", 2.0, ()),
    }
    composed = []

    def compose_inputs(choice: dict[str, str]) -> CrossKeyInputs:
        composed.append(choice)
        return CrossKeyInputs("xor1" if choice == {"a": "1", "b": "1"} else "xor", "sigmoid", "bce", 2.0, ())

    with pytest.raises(ConfigError) as err:
        check_combinations(swept, inputs, compose_inputs)
    assert str(err.value) == f"Invalid sweep: 1 of 8 jobs cannot run. a=1 b=1 activation=softmax: {SOFTMAX_XOR1}"
    assert sorted(tuple(c.values()) for c in composed) == [("0", "0"), ("0", "1"), ("1", "0"), ("1", "1")]


def test_sweep_functions_expand_as_the_sweeper_expands_them():
    # glob lists the group's 4 options: the base composition, 3 other losses, 1 other seed
    assert check("loss=glob(*)", "seed=range(2)") == (4 * 2, 1 + 3 + 1)
    assert error("activation=choice(sigmoid,softmax)", "dataset=xor1") == (
        "Invalid configuration: activation=softmax needs ≥ 2 outputs, but dataset=xor1 has 1; "
        "a 1-output softmax is the constant 1. Use sigmoid, tanh or identity."
    )


def test_no_swept_key_is_one_job():
    assert check("train.epochs=2") == (1, 1)


# The commands of issue 10, end to end: each stops before the first job with exit status 2 and one
# paragraph, and the store (created beforehand, so "zero runs" is a count) holds no run afterwards.


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory) -> str:
    uri = f"sqlite:///{tmp_path_factory.mktemp('store') / 'mlflow.db'}"
    MlflowClient(uri).create_experiment("harness")
    return uri


def runs_in(uri: str) -> int:
    c = MlflowClient(uri)
    return len(c.search_runs([e.experiment_id for e in c.search_experiments()]))


@pytest.mark.parametrize(
    "args,message",
    [
        (["loss=bce,foo"], BAD_LOSS),
        (
            ["dataset=xor,xor1", "activation=sigmoid,softmax"],
            f"Invalid sweep: 1 of 4 jobs cannot run. dataset=xor1 activation=softmax: {SOFTMAX_XOR1}",
        ),
        (["train.lr=1,abc"], "Invalid configuration: train.lr=abc: train.lr takes a number."),
        (  # Hydra's own sweeper: the callback's check runs before any sweeper
            ["hydra/sweeper=basic", "loss=bce,foo"],
            BAD_LOSS,
        ),
    ],
)
def test_a_bad_sweep_exits_2_with_one_paragraph_and_no_run(tmp_path, empty_store, args, message):
    p = subprocess.run(
        [sys.executable, "-m", "harness", "-m", *args, "train.epochs=2", f"tracking.uri={empty_store}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=harness_env(),
        timeout=300,
    )
    assert p.returncode == 2
    assert p.stderr.strip() == f"harness: error: {message}"
    assert "Launching" not in p.stdout
    assert runs_in(empty_store) == 0
    assert list(tmp_path.iterdir()) == []  # no sweep directory, no ./mlflow.db


@pytest.mark.parametrize(
    "launcher",
    [
        [],
        pytest.param(["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"], marks=pytest.mark.slow),
    ],
)
def test_a_job_failing_validation_in_a_launcher_is_a_failed_job_not_an_exit(tmp_path, launcher):
    # Without the sweep callback nothing checks the sweep up front: the bad job raises an ordinary
    # exception, the launcher records it, the next job still runs, and the sweep fails naming the job.
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    MlflowClient(uri).create_experiment("harness")  # (the callback would have: parallel first use races)
    args = ["~hydra.callbacks.sweep", "train.lr=-1,1", "train.epochs=2", *launcher]
    p = subprocess.run(
        [sys.executable, "-m", "harness", "-m", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**harness_env(), "MLFLOW_TRACKING_URI": uri},
        timeout=300,
    )
    assert p.returncode == 1
    assert (
        "harness.config.ConfigError: job #0 (train.lr=-1 train.epochs=2): Invalid configuration: train.lr=-1.0 "
        "must be a finite number > 0 (the SGD step size η), e.g. train.lr=0.5."
    ) in p.stderr
    c = MlflowClient(uri)
    (run,) = c.search_runs([c.get_experiment_by_name("harness").experiment_id])
    assert run.data.params["train.lr"] == "1.0" and run.info.status == "FINISHED"
