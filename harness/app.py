"""The recipe of one job: validate, build data and model, start a run, train, record, end the run.

This is the one module that knows both the math and the tracker; it hands each only what it needs.
Every run it starts ends FINISHED, FAILED (with ``traceback.txt``) or KILLED (Ctrl-C), never RUNNING.
"""

from __future__ import annotations

import gc
import math
import sys
import traceback
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from harness.config import ConfigError, validate
from harness.core.activations import HIDDEN_ACTIVATIONS, OUTPUT_ACTIVATIONS
from harness.core.deltas import DELTA_RULES, pairing
from harness.core.losses import LOSSES
from harness.names import (
    BEST_TEST_ACCURACY,
    EPOCHS_RUN_TAG,
    EPOCHS_TO_THRESHOLD,
    HASH_TAG,
    OUTCOME_TAG,
    PAIRING_TAG,
    TAGS_TAG,
    TEST_ACCURACY,
    UNDEFINED_EPOCHS_TAG,
)
from harness.nn.data import ACCURACY_THRESHOLDS, Dataset, load
from harness.nn.model import MLP
from harness.nn.replicas import ReplicaMLP, train_replicas
from harness.nn.train import TrainResult, as_dtype


def run_name(cfg: Any, with_lr: bool = False) -> str:
    """Readable run name that tells a sweep's runs apart, e.g. ``bce-sigmoid-ng-s3``, or with the learning rate
    when a sweep varies it (``with_lr``), ``bce-sigmoid-ng-s3-lr0.316``."""
    name = f"{cfg.loss.name}-{cfg.activation.name}-{cfg.delta.name}-s{cfg.seed}"
    return f"{name}-lr{cfg.train.lr:g}" if with_lr else name


def summary_metrics(result: TrainResult, threshold: float | None) -> dict[str, float]:
    """The run's summary, for sorting and filtering in the MLflow UI: the best test accuracy over its evaluated
    epochs and, when a threshold is given and was reached, the first evaluated epoch at or above it."""
    accuracies = [m[TEST_ACCURACY] for m in result.history if math.isfinite(m[TEST_ACCURACY])]
    summary = {BEST_TEST_ACCURACY: max(accuracies)} if accuracies else {}
    if threshold is not None:
        reached = [e for e, m in zip(result.epochs, result.history) if m[TEST_ACCURACY] >= threshold]
        if reached:
            summary[EPOCHS_TO_THRESHOLD] = float(reached[0])
    return summary


def build_model(cfg: Any, data: Dataset) -> MLP:
    """The MLP for ``cfg`` on ``data``, initialised from ``seed`` (same seed, same weights)."""
    m = cfg.model
    return MLP.initialise(
        [data.n_inputs, *m.hidden, data.n_outputs],
        HIDDEN_ACTIVATIONS[m.hidden_activation],
        OUTPUT_ACTIVATIONS[cfg.activation.name],
        np.random.default_rng(cfg.seed),
        scheme=m.init,
        bias=m.bias,
        constant=(m.init_weight, m.init_bias),
        dtype=data.x_train.dtype,
    )


def shuffle_rng(cfg: Any) -> np.random.Generator:
    """The minibatch-shuffling stream, independent of the initialisation stream."""
    return np.random.default_rng([cfg.seed, 1])


def flat_params(cfg: DictConfig) -> dict[str, str]:
    """``loss``, ``activation``, ``delta``, ``dataset`` plus the resolved config flattened with dots."""
    import pandas as pd

    nested = OmegaConf.to_container(cfg, resolve=True)
    flat = pd.json_normalize(nested, sep=".").iloc[0].to_dict()
    short = {k: cfg[k].name for k in ("loss", "activation", "delta", "dataset")}
    return {**short, **{k: str(v) for k, v in flat.items()}}


@cache
def mlflow_dataset(name: str):
    """Dataset ``name`` as an ``mlflow.data`` object (cached per process: hashing MNIST costs ≈ 0.1 s)."""
    import mlflow.data
    from mlflow.data.dataset_source_registry import resolve_dataset_source

    data = load(name)
    source = resolve_dataset_source(data.source) if Path(data.source).exists() else None
    return mlflow.data.from_numpy(data.x_train, targets=data.y_train, name=data.name, source=source)


def run_job(
    cfg: DictConfig,
    *,
    parent_run_id: str | None = None,
    cwd: str | None = None,
    tags: dict[str, str] | None = None,
    name: str | None = None,
) -> dict[str, Any]:
    """Validate ``cfg``, train, and log one MLflow run named ``name`` (default :func:`run_name`), with extra
    ``tags`` (e.g. the sweep's job number); returns the final metrics, outcome and run id.
    :func:`run_replicas` with R = 1."""
    names = [name] if name else None
    return run_replicas([cfg], parent_run_id=parent_run_id, cwd=cwd, tags=[tags or {}], names=names)[0]


def run_replicas(
    cfgs: Sequence[DictConfig],
    *,
    parent_run_id: str | None = None,
    cwd: str | None = None,
    tags: Sequence[dict[str, str]] | None = None,
    names: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Validate each config, train them together as replicas, log one MLflow run each (with its extra
    ``tags[r]``, named ``names[r]``, default :func:`run_name`); returns each replica's final metrics, outcome
    and run id.

    The configs must differ at most in ``seed`` and ``train.lr`` (``harness.fold``). Each run is what
    ``run_job`` of its config alone logs: params, tags, config hash, name, metric histories (the stack's
    numbers are the single run's to rounding, ``tests/test_replicas.py``). On an exception every run ends
    FAILED (with ``traceback.txt``), on Ctrl-C KILLED.
    """
    from harness.fold import strip
    from harness.tracking import config_hash, resolve_uri
    from harness.tracking.run import RunGroup

    cfgs = [strip(c) for c in cfgs]
    tags = list(tags) if tags is not None else [{} for _ in cfgs]
    for c in cfgs:
        validate(c)
    _check_replicas(cfgs)
    cfg = cfgs[0]
    data = as_dtype(load(cfg.dataset.name), cfg.train.dtype)
    model = ReplicaMLP.stack([build_model(c, data) for c in cfgs])
    loss, rule = LOSSES[cfg.loss.name].for_activation(model.output), DELTA_RULES[cfg.delta.name]
    common = {PAIRING_TAG: pairing(cfg.delta.name, cfg.loss.name, cfg.activation.name)}
    if cfg.get("tags"):
        common[TAGS_TAG] = ",".join(cfg.tags)
    uri = resolve_uri(cfg.tracking.uri, cwd)
    names = list(names) if names is not None else [run_name(c) for c in cfgs]
    runs: list[Any] = []
    group = RunGroup(runs)
    status, outcomes = "FAILED", [{OUTCOME_TAG: "failed"} for _ in cfgs]
    try:
        specs = [
            (name, {**extra, **common, HASH_TAG: config_hash(OmegaConf.to_container(c, resolve=True))})
            for c, extra, name in zip(cfgs, tags, names)
        ]
        group.create(uri, cfg.tracking.experiment, specs, parent_run_id, fast_path=cfg.tracking.fast_path)
        freeze_startup_objects()
        group.log_params([flat_params(c) for c in cfgs])
        dataset = mlflow_dataset(data.name)
        for c, run in zip(cfgs, runs):
            run.log_text(OmegaConf.to_yaml(c, resolve=True), "config.yaml")
            run.log_input(dataset)
        results = train_replicas(
            model, data, loss, rule,
            epochs=cfg.train.epochs, lrs=[c.train.lr for c in cfgs], batch_size=cfg.train.batch_size,
            seeds=[c.seed for c in cfgs], reduction=cfg.train.reduction, eval_every=cfg.train.eval_every,
            on_epoch=lambda r, epoch, m: group.log_metrics(r, m, step=epoch),
            progress=None if len(cfgs) == 1 else False,
        )  # fmt: skip
        threshold = ACCURACY_THRESHOLDS.get(data.name)
        for r, result in enumerate(results):
            group.log_metrics(r, summary_metrics(result, threshold), step=result.epochs[-1])
        status, outcomes = "FINISHED", [outcome_tags(result) for result in results]
        return [{**result.final, "outcome": result.outcome, "run_id": run.run_id} for result, run in zip(results, runs)]
    except KeyboardInterrupt:
        status, outcomes = "KILLED", [{OUTCOME_TAG: "killed"} for _ in cfgs]
        raise
    except BaseException:
        text = traceback.format_exc()
        for run in runs:
            _best_effort(run.log_text, text, "traceback.txt")
        raise
    finally:
        group.end(status, outcomes)  # the last metrics and the outcome tags: one transaction for all runs


def _check_replicas(cfgs: Sequence[DictConfig]) -> None:
    """Replicas share everything but ``seed`` and ``train.lr`` (one stack: one architecture, loss, rule)."""

    def rest(c: DictConfig) -> dict[str, Any]:
        d = OmegaConf.to_container(c, resolve=True)
        d.pop("seed", None)
        d["train"].pop("lr", None)
        return d

    first = rest(cfgs[0])
    for c in cfgs[1:]:
        if rest(c) != first:
            raise ValueError("replicas of one job must differ only in seed and train.lr")


@cache
def freeze_startup_objects() -> None:
    """Once per process, after MLflow is imported and connected: ``gc.freeze()`` the objects alive now.

    Importing MLflow, SQLAlchemy, Hydra and pandas leaves ≈ 300,000 long-lived objects, and logging a
    metric value through MLflow's SQLAlchemy store allocates a dozen more, so the cyclic garbage collector
    runs often and each full pass walks all of them. Frozen objects are skipped by the collector (they are
    still freed by reference counting); ``benchmarks/bench_tracking.py`` measures the difference.
    """
    gc.freeze()


def outcome_tags(result: TrainResult) -> dict[str, str]:
    """``outcome`` (completed / diverged / undefined), the number of epochs actually trained and of evaluated
    epochs whose loss was undefined."""
    return {
        OUTCOME_TAG: result.outcome,
        EPOCHS_RUN_TAG: str(result.epochs_run),
        UNDEFINED_EPOCHS_TAG: str(result.undefined_epochs),
    }


def _best_effort(fn, *args) -> None:
    # Recording why a run failed must not hide the original error.
    try:
        fn(*args)
    except Exception:  # noqa: BLE001
        pass


def report_config_error(err: ConfigError) -> None:
    """Print a configuration error as one paragraph on stderr and exit with status 2 (no traceback)."""
    print(f"harness: error: {err}", file=sys.stderr)
    raise SystemExit(2)
