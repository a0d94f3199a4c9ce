"""The command line, configuration and tracking, end to end, into temporary SQLite stores."""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CONF, harness_env
from mlflow import MlflowClient
from omegaconf import OmegaConf

from harness.app import run_job, run_replicas
from harness.config import ConfigError, validate
from harness.names import METRICS


def harness(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "harness", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=harness_env(),
        timeout=300,
    )


ONE_OUTPUT = {"xor1", "neuron"}  # datasets with a single output unit (written down here, not imported)
ACTIVATIONS = ["sigmoid", "softmax", "identity", "tanh"]
TRIPLES = list(itertools.product(["xor", "mnist", "xor1", "neuron"], ["bce", "mse", "cce"], ACTIVATIONS))


@pytest.mark.parametrize(
    "dataset,loss,activation,delta",
    [(*t, ("ng", "nielsen", "chain")[i % 3]) for i, t in enumerate(TRIPLES)],
)
def test_every_group_option_composes_to_its_files_values(compose_cfg, dataset, loss, activation, delta):
    cfg = compose_cfg(f"dataset={dataset}", f"loss={loss}", f"activation={activation}", f"delta={delta}")
    assert (cfg.dataset.name, cfg.loss.name, cfg.activation.name, cfg.delta.name) == (dataset, loss, activation, delta)
    source = OmegaConf.load(CONF / "dataset" / f"{dataset}.yaml")  # the per-dataset settings, read directly
    assert list(cfg.model.hidden) == list(source.model.hidden)
    assert (cfg.train.lr, cfg.train.batch_size, cfg.train.epochs) == (
        source.train.lr,
        source.train.batch_size,
        source.train.epochs,
    )
    if activation == "softmax" and dataset in ONE_OUTPUT:  # the one cross-key rule these groups can break
        with pytest.raises(ConfigError) as err:
            validate(cfg)
        assert str(err.value) == (
            f"Invalid configuration: activation=softmax needs ≥ 2 outputs, but dataset={dataset} has 1; "
            "a 1-output softmax is the constant 1. Use sigmoid, tanh or identity."
        )
    else:
        validate(cfg)


def test_defaults_and_per_dataset_settings(compose_cfg):
    cfg = compose_cfg()
    assert (cfg.dataset.name, cfg.loss.name, cfg.activation.name, cfg.delta.name) == ("xor", "bce", "sigmoid", "ng")
    m = compose_cfg("dataset=mnist")
    assert list(m.model.hidden) == [30] and m.train.batch_size == 10
    assert compose_cfg("dataset=mnist", "train.lr=0.1").train.lr == 0.1  # the command line wins


@pytest.mark.parametrize(
    "override,message",
    [
        ("train.lr=-1", "train.lr=-1.0 must be a finite number > 0 (the SGD step size η), e.g. train.lr=0.5."),
        ("train.epochs=0", "train.epochs=0 must be an integer ≥ 1."),
        ("train.batch_size=0", "train.batch_size=0 must be an integer ≥ 1 (the minibatch size)."),
        (
            "model.hidden=[4,0]",
            "model.hidden=[4, 0] must list hidden layer sizes ≥ 1 (use model.hidden=[] for no hidden layer).",
        ),
        ("loss.name=hinge", "loss.name='hinge' is not a known option; allowed: bce, mse, cce, matching."),
        (
            "model.hidden_activation=softplus",
            "model.hidden_activation='softplus' is not a known option; allowed: sigmoid, tanh, relu.",
        ),
        ("seed=-3", "seed=-3 must be an integer ≥ 0."),
    ],
)
def test_validation_error_text(compose_cfg, override, message):
    with pytest.raises(ConfigError) as err:
        validate(compose_cfg(override))
    assert str(err.value) == "Invalid configuration: " + message


def test_type_errors_fail_while_composing(compose_cfg):
    from hydra.errors import ConfigCompositionException as HydraCompositionError

    with pytest.raises(HydraCompositionError, match="train.lr=abc"):
        compose_cfg("train.lr=abc")
    with pytest.raises(HydraCompositionError, match="Could not override 'train.foo'"):
        compose_cfg("train.foo=1")
    with pytest.raises(ConfigError, match="train.foo is not a configuration key; allowed: epochs, lr, batch_size."):
        validate(compose_cfg("+train.foo=1"))  # Hydra lets + add keys to a typed config; validate does not


def test_bad_input_is_one_paragraph_exit_2_and_creates_no_run(tmp_path):
    p = harness("train.lr=0", cwd=tmp_path)
    assert p.returncode == 2
    assert p.stderr.strip() == (
        "harness: error: Invalid configuration: train.lr=0.0 must be a finite number > 0 "
        "(the SGD step size η), e.g. train.lr=0.5."
    )
    assert "Traceback" not in p.stderr
    assert not (tmp_path / "mlflow.db").exists()


def test_bad_value_in_a_sweep_fails_before_any_run(tmp_path):
    p = harness("-m", "train.epochs=2", "train.lr=1,-1", cwd=tmp_path)
    assert p.returncode == 2
    assert "train.lr=-1.0 must be a finite number > 0" in p.stderr
    assert "Traceback" not in p.stderr
    assert not (tmp_path / "mlflow.db").exists()


def test_unknown_group_option_lists_the_allowed_ones(tmp_path):
    p = harness("loss=hinge", cwd=tmp_path)
    assert p.returncode != 0
    assert "Could not find 'loss/hinge'" in p.stderr and "bce\n\tcce\n\tmatching\n\tmse" in p.stderr
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.slow
def test_sweep_end_to_end(tmp_path):
    epochs = 30
    p = harness("-m", "loss=bce,mse", "train.lr=2,8", f"train.epochs={epochs}", "tracking.run_lines=true", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    launched = [line.split("] ", 1)[1].strip() for line in p.stdout.splitlines() if "[HYDRA] \t#" in line]
    assert launched == [f"#{k} : loss={lo} train.epochs={epochs} tracking.run_lines=True [2 runs: train.lr=2,8]"
                        for k, lo in enumerate(("bce", "mse"))]  # fmt: skip
    c = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = c.get_experiment_by_name("harness")
    runs = c.search_runs([exp.experiment_id])
    assert len(runs) == 1 + 4 + 4  # the parent, a configuration run per (loss, rate), a seed run each
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    configurations = {r.info.run_id: r for r in runs if r.data.tags.get("harness.level") == "configuration"}
    children = [r for r in runs if r.data.tags.get("harness.level") == "seed"]
    assert len(parents) == 1 and len(configurations) == 4 and len(children) == 4
    assert all(r.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for r in configurations.values())
    assert all(r.data.tags["mlflow.parentRunId"] in configurations for r in children)  # nested under their config
    assert {r.info.status for r in runs} == {"FINISHED"}
    by_name = {r.info.run_name: r for r in children}  # seed and swept rate in the name: runs told apart
    assert set(by_name) == {f"{lo}-sigmoid-ng-s0-lr{lr}" for lo in ("bce", "mse") for lr in (2, 8)}
    assert by_name["bce-sigmoid-ng-s0-lr2"].data.tags["pairing"] == "exact"
    assert by_name["mse-sigmoid-ng-s0-lr2"].data.tags["pairing"] == "mismatched"
    for name, run in by_name.items():
        params = run.data.params
        assert params["loss"] == name.split("-")[0] and params["activation"] == "sigmoid"
        assert params["delta"] == "ng" and params["dataset"] == "xor" and params["train.epochs"] == str(epochs)
        assert params["train.lr"] == name.rsplit("lr", 1)[1] + ".0"
        assert run.data.tags["outcome"] == "completed"
        for metric in METRICS:
            history = c.get_metric_history(run.info.run_id, metric)
            assert sorted(m.step for m in history) == list(range(epochs + 1))
        # the summary metrics, from the logged history: the best accuracy, the first epoch at 100 % (XOR)
        accuracy = {m.step: m.value for m in c.get_metric_history(run.info.run_id, "test_accuracy")}
        assert run.data.metrics["best_test_accuracy"] == max(accuracy.values())
        reached = [s for s in sorted(accuracy) if accuracy[s] >= 1.0]
        assert run.data.metrics.get("epochs_to_threshold") == (reached[0] if reached else None)
        assert [a.path for a in c.list_artifacts(run.info.run_id)] == ["config.yaml"]
        assert run.inputs.dataset_inputs[0].dataset.name == "xor"
    # the study's table, then the last line: the sweep's dashboard, a view saved on the experiment under the
    # parent's key
    assert "4 configurations, 4 seed runs" in p.stdout
    last = p.stdout.strip().splitlines()[-1]
    assert last.startswith(f"dashboard: http://127.0.0.1:5000/#/experiments/{exp.experiment_id}/runs?")
    key = f"sweep-{parents[0].info.run_id}"
    assert f"viewStateShareKey={key}&" in last
    assert f"mlflow.sharedViewState.{key}" in c.get_experiment(exp.experiment_id).tags


@pytest.mark.slow
def test_single_run_from_another_directory_and_determinism(tmp_path):
    sub = tmp_path / "elsewhere"
    sub.mkdir()
    for _ in range(2):
        p = harness("train.epochs=20", "seed=5", cwd=sub)
        assert p.returncode == 0, p.stderr
        assert "harness: bce-sigmoid-ng-s5 on xor: completed, train_loss " in p.stdout
    c = MlflowClient(f"sqlite:///{sub / 'mlflow.db'}")
    runs = c.search_runs([c.get_experiment_by_name("harness").experiment_id])
    assert len(runs) == 2 and all("mlflow.parentRunId" not in r.data.tags for r in runs)
    histories = [
        [m.value for m in sorted(c.get_metric_history(r.info.run_id, "train_loss"), key=lambda m: m.step)] for r in runs
    ]
    assert histories[0] == histories[1] and len(histories[0]) == 21


@pytest.mark.parametrize("seeds", [[0], [0, 1, 2]], ids=["one-run", "three-replicas"])
def test_a_job_that_raises_is_failed_with_its_traceback(compose_cfg, store, monkeypatch, seeds):
    import harness.app

    def boom(*args, **kwargs):
        raise RuntimeError("boom in training")

    monkeypatch.setattr(harness.app, "train", boom)
    cfgs = [compose_cfg(f"tracking.uri={store}", "train.epochs=1", f"seed={s}") for s in seeds]
    with pytest.raises(RuntimeError):
        run_job(cfgs[0]) if len(cfgs) == 1 else run_replicas(cfgs)
    c = MlflowClient(store)
    runs = c.search_runs([c.get_experiment_by_name("harness").experiment_id])
    assert sorted(int(r.data.params["seed"]) for r in runs) == seeds
    for run in runs:
        assert run.info.status == "FAILED" and run.data.tags["outcome"] == "failed"
        text = c.download_artifacts(run.info.run_id, "traceback.txt")
        assert "boom in training" in Path(text).read_text()


@pytest.mark.parametrize("seeds", [[0], [0, 1, 2]], ids=["one-run", "three-replicas"])
def test_ctrl_c_ends_the_run_killed(compose_cfg, store, monkeypatch, seeds):
    import harness.app

    def interrupted(*args, on_epoch, **kwargs):
        for r in range(len(seeds)):
            on_epoch(r, 0, {"train_loss": 1.0 + r})
        raise KeyboardInterrupt

    monkeypatch.setattr(harness.app, "train", interrupted)
    cfgs = [compose_cfg(f"tracking.uri={store}", f"seed={s}") for s in seeds]
    with pytest.raises(KeyboardInterrupt):
        run_job(cfgs[0]) if len(cfgs) == 1 else run_replicas(cfgs)
    c = MlflowClient(store)
    runs = c.search_runs([c.get_experiment_by_name("harness").experiment_id])
    assert len(runs) == len(seeds)
    for run in runs:
        assert run.info.status == "KILLED" and run.data.tags["outcome"] == "killed"
        r = int(run.data.params["seed"])
        assert [m.value for m in c.get_metric_history(run.info.run_id, "train_loss")] == [1.0 + r]  # flushed


def test_replicas_must_differ_only_in_seed_and_lr(compose_cfg, store):
    cfgs = [compose_cfg(f"tracking.uri={store}", f"loss={loss}") for loss in ("bce", "mse")]
    with pytest.raises(ValueError, match="differ only in seed and train.lr"):
        run_replicas(cfgs)


def test_diverged_run_is_finished_with_outcome(compose_cfg, store):
    result = run_job(
        compose_cfg(f"tracking.uri={store}", "loss=mse", "activation=identity", "train.lr=1e6", "train.epochs=50")
    )
    c = MlflowClient(store)
    run = c.get_run(result["run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["outcome"] == "diverged"


def test_gradcheck_cli_prints_the_48_triples():
    p = subprocess.run([sys.executable, "-m", "harness.gradcheck"], capture_output=True, text=True, check=True)
    lines = p.stdout.strip().splitlines()
    rows = [ln.split() for ln in lines[1:-1]]
    assert len(rows) == 48
    verdicts = {(r[0], r[1], r[2]): r[4] for r in rows}
    assert verdicts[("bce", "sigmoid", "ng")] == "exact" and verdicts[("mse", "sigmoid", "ng")] == "mismatched"
    assert verdicts[("cce", "softmax", "nielsen")] == "mismatched" and verdicts[("mse", "tanh", "nielsen")] == "exact"
    assert all(verdicts[("matching", a, "ng")] == "exact" for a in ("sigmoid", "softmax", "identity", "tanh"))
    assert all(float(r[3]) < 1e-6 for r in rows if r[2] == "chain")
    assert lines[-1].startswith("27 of 48 triples exact")


@pytest.mark.parametrize(
    "args,message",
    [
        (["model.hidden=[100000,100000]"], "model.hidden=[100000, 100000] needs about 223.6 GiB of memory"),
        (["-m", "hydra.sweeper.fold=[model.hidden]", "seed=0,1"],
         "Invalid sweep: hydra.sweeper.fold=['model.hidden']: only seed, train.lr can be folded"),
        (["-m", "hydra.sweeper.max_replicas=0", "seed=0,1"], "Invalid sweep: hydra.sweeper.max_replicas=0 must be"),
    ],
)  # fmt: skip
def test_a_model_too_large_or_a_bad_fold_stops_before_any_run(tmp_path, args, message):
    p = harness(*args, cwd=tmp_path)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    (line,) = [ln for ln in p.stderr.splitlines() if ln.startswith("harness: error:")]
    assert message in line
    assert "dashboard" not in p.stdout and not (tmp_path / "mlflow.db").exists()  # no store, no parent run


def test_overrides_are_shown_and_stored_with_the_password_masked():
    from harness.sweep import shown_overrides

    # as the command line gives them, and as Hydra hands them to a job (its ':' escaped)
    plain = ["loss=bce", "tracking.uri=postgresql://harness:s3cret-pw@db:5432/study"]
    escaped = ["loss=bce", "tracking.uri=postgresql\\://harness\\:s3cret-pw@db\\:5432/study"]
    for overrides in (plain, escaped):
        shown = shown_overrides(overrides)
        assert "s3cret-pw" not in shown and shown.startswith("loss=bce tracking.uri=postgresql://harness:***@db")
    assert shown_overrides(["seed=3", "tracking.uri=sqlite:///x.db"]) == "seed=3 tracking.uri=sqlite:///x.db"
