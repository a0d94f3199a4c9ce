"""The recipe of one job: its configurations (validated once), data and model, training, then recording.

This is the one module that knows both the math and the tracker; it hands each only what it needs. A job trains
R runs that differ only in ``seed`` and ``train.lr`` (a folded sweep job, :mod:`harness.fold`; a single run is
R = 1) as the replicas of one stack, and logs one MLflow run per replica. Every run it starts ends FINISHED,
FAILED (with ``traceback.txt``) or KILLED (Ctrl-C), never RUNNING.
"""

from __future__ import annotations

import gc
import sys
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
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
    CONFIGURATION_TAG,
    EPOCHS_RUN_TAG,
    EPOCHS_TO_THRESHOLD,
    HASH_TAG,
    LEVEL_TAG,
    OUTCOME_TAG,
    PAIRING_TAG,
    SEED_LEVEL,
    TAGS_TAG,
    UNDEFINED_EPOCHS_TAG,
)
from harness.nn.data import ACCURACY_THRESHOLDS, Dataset, load
from harness.nn.stack import ReplicaMLP
from harness.nn.training import TrainResult, as_dtype, train


def run_name(cfg: Any, with_lr: bool = False) -> str:
    """Readable run name that tells a sweep's runs apart, e.g. ``bce-sigmoid-ng-s3``, or with the learning rate
    when a sweep varies it (``with_lr``), ``bce-sigmoid-ng-s3-lr0.316``."""
    name = f"{cfg.loss.name}-{cfg.activation.name}-{cfg.delta.name}-s{cfg.seed}"
    return f"{name}-lr{cfg.train.lr:g}" if with_lr else name


# ------------------------------------------------------------------------------------------ the recipe


def run_job(cfg: DictConfig, *, parent_run_id: str | None = None, cwd: str | None = None,
            tags: dict[str, str] | None = None, name: str | None = None) -> dict[str, Any]:  # fmt: skip
    """Validate ``cfg``, train it, and log one MLflow run named ``name`` (default :func:`run_name`) with extra
    ``tags``; returns the final metrics, outcome and run id. :func:`run_replicas` with R = 1."""
    return run_replicas([cfg], parent_run_id=parent_run_id, cwd=cwd, tags=[tags or {}],
                        names=[name] if name else None)[0]  # fmt: skip


def run_replicas(cfgs: Sequence[DictConfig], **where: Any) -> list[dict[str, Any]]:
    """Validate every config (the first bad one raises :class:`ConfigError` before any run exists), then
    :func:`train_and_record` them (``where``: its ``parent_run_id``, ``cwd``, ``tags`` and ``names``)."""
    problems = [err for err in map(check, cfgs) if err is not None]
    if problems:
        raise problems[0]
    return train_and_record(cfgs, **where)


def check(cfg: DictConfig) -> ConfigError | None:
    """The configuration's one validation (:func:`harness.config.validate`): its error, or None."""
    try:
        validate(cfg)
    except ConfigError as err:
        return err
    return None


def train_and_record(
    cfgs: Sequence[DictConfig],
    *,
    parent_run_id: str | None = None,
    cwd: str | None = None,
    tags: Sequence[dict[str, str]] | None = None,
    names: Sequence[str] | None = None,
    epoch_bar: bool = True,
) -> list[dict[str, Any]]:
    """Train valid run configs together as replicas and log one MLflow run each (with its extra ``tags[r]``,
    named ``names[r]``, default :func:`run_name`), nested under ``parent_run_id``; returns each replica's
    final metrics, outcome and run id. ``epoch_bar``: a single run shows a bar of its epochs on a terminal
    (a sweep shows one bar over its runs instead).

    The configs must differ at most in ``seed`` and ``train.lr``. Each run is what a job of its config alone
    logs: params, tags, config hash, name, metric histories (replica r is the reference network with its seed
    and rate, to rounding: ``tests/test_replicas.py``). On an exception every run ends FAILED (with
    ``traceback.txt``), on Ctrl-C KILLED.
    """
    _check_replicas(cfgs)
    setup = Setup.of(cfgs)  # data and model
    recorder = Recorder(cfgs, setup, parent_run_id, cwd, tags, names)
    with recorder:  # the runs: created here, ended FINISHED / FAILED / KILLED on the way out
        results = train(  # training
            setup.model, setup.data, setup.loss, setup.rule,
            epochs=setup.cfg.train.epochs, lrs=[c.train.lr for c in cfgs], batch_size=setup.cfg.train.batch_size,
            seeds=[c.seed for c in cfgs], reduction=setup.cfg.train.reduction, eval_every=setup.cfg.train.eval_every,
            threshold=setup.threshold, l2=setup.cfg.train.l2, on_epoch=recorder.log_epoch,
            progress=None if len(cfgs) == 1 and epoch_bar else False,
        )  # fmt: skip
        recorder.finish(results)  # recording
    return [{**result.final, "outcome": result.outcome, "run_id": run.run_id}
            for result, run in zip(results, recorder.runs)]  # fmt: skip


@dataclass
class Setup:
    """What a job trains: the data (in the configured dtype), the stack of its replicas, the loss and rule."""

    cfg: DictConfig  # the first replica's config (they share everything but seed and rate)
    data: Dataset
    model: ReplicaMLP
    loss: Any
    rule: Any

    @classmethod
    def of(cls, cfgs: Sequence[DictConfig]) -> Setup:
        cfg = cfgs[0]
        data = as_dtype(load(cfg.dataset.name), cfg.train.dtype)
        model = build_stack(cfg, [c.seed for c in cfgs], data)
        return cls(cfg, data, model, LOSSES[cfg.loss.name].for_activation(model.output), DELTA_RULES[cfg.delta.name])

    @property
    def threshold(self) -> float | None:
        return ACCURACY_THRESHOLDS.get(self.data.name)


def build_stack(cfg: Any, seeds: Sequence[int], data: Dataset) -> ReplicaMLP:
    """The replicas for ``cfg`` on ``data``, replica r initialised from ``seeds[r]`` (same seed, same weights)."""
    m = cfg.model
    return ReplicaMLP.initialise(
        [data.n_inputs, *m.hidden, data.n_outputs],
        HIDDEN_ACTIVATIONS[m.hidden_activation],
        OUTPUT_ACTIVATIONS[cfg.activation.name],
        seeds,
        scheme=m.init,
        bias=m.bias,
        constant=(m.init_weight, m.init_bias),
        dtype=data.x_train.dtype,
    )


class Recorder:
    """The MLflow side of a job: one run per replica, created on entry and ended on exit (FINISHED after
    :meth:`finish`, KILLED on Ctrl-C, FAILED with ``traceback.txt`` on any other exception)."""

    def __init__(self, cfgs: Sequence[DictConfig], setup: Setup, parent_run_id: str | None, cwd: str | None,
                 tags: Sequence[dict[str, str]] | None, names: Sequence[str] | None) -> None:  # fmt: skip
        from harness.tracking import resolve_uri
        from harness.tracking.run import RunGroup

        self.cfgs, self.setup, self.parent_run_id = list(cfgs), setup, parent_run_id
        self.uri = resolve_uri(setup.cfg.tracking.uri, cwd)
        self.extra = list(tags) if tags is not None else [{} for _ in cfgs]
        self.names = list(names) if names is not None else [run_name(c) for c in cfgs]
        self.runs: list[Any] = []
        self.group = RunGroup(self.runs)
        self.status, self.outcomes = "FAILED", [{OUTCOME_TAG: "failed"} for _ in cfgs]

    def __enter__(self) -> Recorder:
        try:
            self._start()
        except BaseException:
            self.__exit__(*sys.exc_info())
            raise
        return self

    def _start(self) -> None:
        cfg = self.setup.cfg
        common = {PAIRING_TAG: pairing(cfg.delta.name, cfg.loss.name, cfg.activation.name), LEVEL_TAG: SEED_LEVEL}
        if cfg.get("tags"):
            common[TAGS_TAG] = ",".join(cfg.tags)
        specs = [
            (name, {**extra, **common, **identity_tags(c)}) for c, extra, name in zip(self.cfgs, self.extra, self.names)
        ]
        self.group.create(self.uri, cfg.tracking.experiment, specs, self.parent_run_id,
                          fast_path=cfg.tracking.fast_path)  # fmt: skip
        freeze_startup_objects()
        recorded = [as_recorded(c) for c in self.cfgs]
        self.group.log_params([flat_params(c) for c in recorded])
        dataset = mlflow_dataset(self.setup.data.name)
        for c, run in zip(recorded, self.runs):
            run.log_text(OmegaConf.to_yaml(c, resolve=True), "config.yaml")
            run.log_input(dataset)

    def log_epoch(self, replica: int, epoch: int, metrics: dict[str, float]) -> None:
        self.group.log_metrics(replica, metrics, step=epoch)

    def finish(self, results: list[TrainResult]) -> None:
        """Log each run's summary at its last epoch; the runs end FINISHED with their outcome tags."""
        for r, result in enumerate(results):
            self.group.log_metrics(r, summary_metrics(result), step=result.epochs[-1])
        self.status, self.outcomes = "FINISHED", [outcome_tags(result) for result in results]

    def __exit__(self, kind: type | None, error: BaseException | None, tb: Any) -> None:
        if kind is not None and issubclass(kind, KeyboardInterrupt):
            self.status, self.outcomes = "KILLED", [{OUTCOME_TAG: "killed"} for _ in self.cfgs]
        elif kind is not None:
            text = "".join(traceback.format_exception(kind, error, tb))
            for run in self.runs:
                _best_effort(run.log_text, text, "traceback.txt")
        self.group.end(self.status, self.outcomes)  # the last metrics and the outcome tags: one transaction


def identity_tags(cfg: DictConfig) -> dict[str, str]:
    """What identifies a run in the store: its config hash (what ``tracking.resume`` matches) and its
    configuration's (the config without the seed: what a study's configuration run groups)."""
    from harness.tracking import config_hash
    from harness.tracking.study import configuration_hash

    resolved = OmegaConf.to_container(cfg, resolve=True)
    return {HASH_TAG: config_hash(resolved), CONFIGURATION_TAG: configuration_hash(resolved)}


def summary_metrics(result: TrainResult) -> dict[str, float]:
    """The run's summary, for sorting and filtering in the MLflow UI, measured at every epoch whatever the
    logging cadence: the best test accuracy and, when the threshold was reached, the first epoch at or above it."""
    summary = {BEST_TEST_ACCURACY: result.best_test_accuracy} if np.isfinite(result.best_test_accuracy) else {}
    if result.epochs_to_threshold is not None:
        summary[EPOCHS_TO_THRESHOLD] = float(result.epochs_to_threshold)
    return summary


def outcome_tags(result: TrainResult) -> dict[str, str]:
    """``outcome`` (completed / diverged / undefined), the number of epochs actually trained and of logged
    epochs whose loss was undefined."""
    return {
        OUTCOME_TAG: result.outcome,
        EPOCHS_RUN_TAG: str(result.epochs_run),
        UNDEFINED_EPOCHS_TAG: str(result.undefined_epochs),
    }


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


# ------------------------------------------------------------------------------------------ what runs log


def as_recorded(cfg: DictConfig) -> DictConfig:
    """The config as a run records it (params, ``config.yaml``): ``tracking.uri`` with its password masked."""
    from harness.tracking import redact_uri

    uri = cfg.tracking.get("uri")
    if not uri or redact_uri(uri) == uri:
        return cfg
    out = cfg.copy()
    out.tracking.uri = redact_uri(uri)
    return out


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


@cache
def freeze_startup_objects() -> None:
    """Once per process, after MLflow is imported and connected: ``gc.freeze()`` the objects alive now.

    Importing MLflow, SQLAlchemy, Hydra and pandas leaves ≈ 300,000 long-lived objects, and logging a
    metric value through MLflow's SQLAlchemy store allocates a dozen more, so the cyclic garbage collector
    runs often and each full pass walks all of them. Frozen objects are skipped by the collector (they are
    still freed by reference counting); ``benchmarks/bench_tracking.py`` measures the difference.
    """
    gc.freeze()


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
