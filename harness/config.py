"""Typed configuration (Hydra structured configs) and the validation every run passes before it starts.

The dataclasses hold the types, ``conf/`` holds the values: an unknown key or a value of the wrong type
fails while Hydra composes the config. :func:`validate` then checks what types cannot express (ranges,
names, combinations) and raises :class:`ConfigError`, one paragraph that names the key and what is
allowed, before any data is loaded and before any MLflow run exists.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from harness.core.activations import HIDDEN_ACTIVATIONS, OUTPUT_ACTIVATIONS
from harness.core.deltas import DELTA_RULES
from harness.core.losses import LOSSES
from harness.nn.data import DATASET_OUTPUTS, DATASET_SHAPES, DATASETS
from harness.nn.stack import estimate_bytes
from harness.nn.training import DTYPES, REDUCTIONS
from harness.nn.weights import INIT_SCHEMES


@dataclass
class NameConfig:
    """A config group whose options are named objects (loss, activation, delta rule, dataset)."""

    name: str = MISSING


@dataclass
class ModelConfig:
    hidden: list[int] = field(default_factory=lambda: [4])  # hidden layer sizes; [] = no hidden layer
    hidden_activation: str = "sigmoid"
    init: str = "nielsen"  # nielsen: W ~ N(0, 1/n_in), b ~ N(0, 1); uniform: U[-1, 1); constant: see below
    init_weight: float = 0.0  # init=constant: every weight
    init_bias: float = 0.0  # init=constant: every bias
    bias: bool = True  # false: no biases (a constant input column, as in dataset=xor1, plays the bias)


@dataclass
class TrainConfig:
    epochs: int = 1000
    lr: float = 2.0
    batch_size: int = 4
    reduction: str = "mean"  # mean: step (η/m)·Σ∇ (Nielsen); sum: step η·Σ∇ (numpy XOR programs)
    # Which epochs are evaluated and logged (always epoch 0 and the last). null: the lean cadence, every epoch
    # up to 20 then log-spaced, at most 150 (harness.nn.training.log_epochs); k: every k-th epoch (1: all).
    # Summaries (epochs_to_threshold, best_test_accuracy) are measured at every epoch either way.
    eval_every: int | None = None
    l2: float = 0.0  # λ of L2 regularisation: the cost gains λ/(2n)·Σw² (weights, not biases), the step (λ/n)·w
    # Named step sizes per loss, for studies that compare (cost, η) pairs: a preset sets
    # ``lr: ${train.lr_by_loss.${loss.name}}`` so η follows the swept loss (see experiments/slowdown.yaml).
    lr_by_loss: dict[str, float] = field(default_factory=dict)
    dtype: str = "float64"  # float32: weights and data in single precision (faster steps, ≈ 1e-7 rounding)


@dataclass
class TrackingConfig:
    experiment: str = "harness"
    uri: str | None = None  # None: $MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlflow.db
    resume: bool = False  # skip a job whose identical config already has a FINISHED run in the experiment
    # false: write and read through MLflow's public API only, never its SQL internals (harness.tracking.mlflow_sql)
    fast_path: bool = True
    # A sweep prints one progress bar over its runs and a table at the end; true: also one line per run and
    # Hydra's launch line per job (a single run, without -m, always prints its line).
    run_lines: bool = False


@dataclass
class ReportConfig:
    auto: bool = False  # true: write the report notebook at the end of a sweep (preset studies set it)
    out: str = "reports"  # directory for EXPERIMENT.ipynb / .html, relative to where the command runs


@dataclass
class HarnessConfig:
    dataset: NameConfig = field(default_factory=NameConfig)
    loss: NameConfig = field(default_factory=NameConfig)
    activation: NameConfig = field(default_factory=NameConfig)
    delta: NameConfig = field(default_factory=NameConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    seed: int = 0
    tags: list[str] = field(default_factory=list)  # free labels, logged as the MLflow tag ``harness.tags``
    # Set by the sweeper when it folds jobs (harness.fold): the unfolded jobs this job trains as replicas. Each
    # run's config is the job's without this key, so it is in no run's params, config.yaml or config hash.
    replicas: list[str] = field(default_factory=list)


def register_configs() -> None:
    """Register the schema as ``harness_schema`` (the first entry of ``conf/config.yaml``'s defaults)."""
    ConfigStore.instance().store(name="harness_schema", node=HarnessConfig)


class ConfigError(ValueError):
    """A bad configuration value; the message is one paragraph naming the key and what is allowed."""


def _choice(key: str, value: Any, allowed: list[str] | tuple[str, ...]) -> str | None:
    if value in allowed:
        return None
    return f"{key}={value!r} is not a known option; allowed: {', '.join(allowed)}."


def _unknown_keys(cfg: Any, schema: type = HarnessConfig, prefix: str = "") -> list[str]:
    """Keys the schema does not have (Hydra lets ``+key=value`` add them even to a typed config)."""
    fields = {f.name: f for f in dataclasses.fields(schema)}
    problems = []
    for key in cfg:
        if key not in fields:
            problems.append(f"{prefix}{key} is not a configuration key; allowed: {', '.join(fields)}.")
            continue
        sub = fields[key].default_factory  # nested sections are declared as field(default_factory=Section)
        if isinstance(sub, type) and dataclasses.is_dataclass(sub):
            problems += _unknown_keys(cfg[key], sub, f"{prefix}{key}.")
    return problems


_TYPE_WORDS = {
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "str": "a string",
    "str | None": "a string or null",
    "int | None": "an integer or null",
    "list[int]": "a list of integers, e.g. [30] (or [])",
    "list[str]": "a list of strings, e.g. [a,b]",
    "dict[str, float]": "a mapping of names to numbers, e.g. {mse:0.15,bce:0.005}",
}


def _section(key: str) -> tuple[type, str] | None:
    """The schema section holding the dotted ``key`` and the key's last part (None if a parent is unknown)."""
    *parents, last = key.split(".")
    schema: type = HarnessConfig
    for part in parents:
        fields = {f.name: f for f in dataclasses.fields(schema)}
        sub = fields[part].default_factory if part in fields else None
        if not (isinstance(sub, type) and dataclasses.is_dataclass(sub)):
            return None
        schema = sub
    return schema, last


def allowed_keys(key: str) -> list[str]:
    """The keys the schema allows next to the dotted ``key`` (its section's fields; [] if unknown)."""
    found = _section(key)
    return [f.name for f in dataclasses.fields(found[0])] if found else []


def allowed_type(key: str) -> str | None:
    """What the schema accepts for the dotted ``key``, in words (e.g. "a number"), or None if unknown."""
    found = _section(key)
    if found is None:
        return None
    fields = {f.name: f for f in dataclasses.fields(found[0])}
    if found[1] not in fields:
        return None
    kind = str(fields[found[1]].type)
    return _TYPE_WORDS.get(kind, kind)


def _problems(cfg: Any) -> list[str]:
    problems = _unknown_keys(cfg)
    problems += [
        _choice("dataset.name", cfg.dataset.name, DATASETS),
        _choice("loss.name", cfg.loss.name, LOSSES.names()),
        _choice("activation.name", cfg.activation.name, OUTPUT_ACTIVATIONS.names()),
        _choice("delta.name", cfg.delta.name, DELTA_RULES.names()),
        _choice("model.hidden_activation", cfg.model.hidden_activation, HIDDEN_ACTIVATIONS.names()),
        _choice("model.init", cfg.model.init, INIT_SCHEMES),
        _choice("train.reduction", cfg.train.reduction, REDUCTIONS),
        _choice("train.dtype", cfg.train.dtype, DTYPES),
    ]
    t = cfg.train
    inputs = cross_key_inputs(cfg)
    if lr_by_loss_problem(inputs.lr, inputs.loss, inputs.lr_by_loss) is None:
        problems.append(_lr_problem(cfg))
    if t.epochs < 1:
        problems.append(f"train.epochs={t.epochs} must be an integer ≥ 1.")
    if t.batch_size < 1:
        problems.append(f"train.batch_size={t.batch_size} must be an integer ≥ 1 (the minibatch size).")
    if t.eval_every is not None and t.eval_every < 1:
        problems.append(
            f"train.eval_every={t.eval_every} must be an integer ≥ 1 (evaluate every k epochs), or null for the "
            "lean cadence (every epoch up to 20, then log-spaced)."
        )
    if not (math.isfinite(t.l2) and t.l2 >= 0):
        problems.append(f"train.l2={t.l2} must be a finite number ≥ 0 (λ of L2 regularisation; 0: none).")
    if any(h < 1 for h in cfg.model.hidden):
        problems.append(
            f"model.hidden={list(cfg.model.hidden)} must list hidden layer sizes ≥ 1 "
            "(use model.hidden=[] for no hidden layer)."
        )
    memory = memory_problem(cfg)
    if memory:
        problems.append(memory)
    if cfg.seed < 0:
        problems.append(f"seed={cfg.seed} must be an integer ≥ 0.")
    if not cfg.tracking.experiment:
        problems.append("tracking.experiment must be a non-empty experiment name.")
    problems += cross_key_problems(inputs)
    return [p for p in problems if p]


def available_memory() -> int | None:
    """Bytes of memory this machine can give a new process now (Linux's MemAvailable), or None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def memory_problem(cfg: Any) -> str | None:
    """A network too large for this machine: estimated (``harness.nn.stack.estimate_bytes``) before anything
    is allocated, against the memory available now."""
    if cfg.dataset.name not in DATASET_SHAPES or any(h < 1 for h in cfg.model.hidden):
        return None  # reported by their own checks
    n_in, n_train, n_test = DATASET_SHAPES[cfg.dataset.name]
    sizes = [n_in, *cfg.model.hidden, DATASET_OUTPUTS[cfg.dataset.name]]
    itemsize = 4 if cfg.train.dtype == "float32" else 8
    need, have = estimate_bytes(sizes, max(n_train, n_test), 1, itemsize), available_memory()
    if have is None or need <= have:
        return None
    return (
        f"model.hidden={list(cfg.model.hidden)} needs about {_gib(need)} of memory to train on {cfg.dataset.name} "
        f"(layers {sizes}), and this machine has {_gib(have)} available; use smaller hidden layers."
    )


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB"


def _lr_problem(cfg: Any) -> str | None:
    """The step size must resolve to a finite number > 0."""
    from omegaconf.errors import InterpolationResolutionError

    try:
        lr = cfg.train.lr
    except InterpolationResolutionError as err:
        return f"train.lr={_raw(cfg.train, 'lr')} cannot be resolved: {str(err).splitlines()[0]}"
    if isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0:
        return None
    return f"train.lr={lr} must be a finite number > 0 (the SGD step size η), e.g. train.lr=0.5."


def _raw(node: Any, key: str) -> Any:
    """``node[key]`` as written, without resolving an interpolation."""
    return node._get_node(key)._value()


# The cross-key rules: small functions over plain values (names), called by validate() on one composed config
# and by the sweep check (harness.sweep_check) on every combination of swept values, without composing.


@dataclass(frozen=True)
class CrossKeyInputs:
    """The values the cross-key rules read: names, and ``train.lr`` as written."""

    dataset: str
    activation: str
    loss: str
    lr: Any  # train.lr unresolved: a number, or an interpolation such as ${train.lr_by_loss.${loss.name}}
    lr_by_loss: tuple[str, ...]  # the losses train.lr_by_loss has a rate for


def cross_key_inputs(cfg: Any) -> CrossKeyInputs:
    """The :class:`CrossKeyInputs` of a composed config."""
    return CrossKeyInputs(
        dataset=cfg.dataset.name,
        activation=cfg.activation.name,
        loss=cfg.loss.name,
        lr=_raw(cfg.train, "lr"),
        lr_by_loss=tuple(cfg.train.lr_by_loss),
    )


def softmax_outputs_problem(activation: str, dataset: str) -> str | None:
    """A softmax output layer needs ≥ 2 outputs."""
    outputs = DATASET_OUTPUTS.get(dataset)
    if activation != "softmax" or outputs is None or outputs >= 2:
        return None
    return (
        f"activation=softmax needs ≥ 2 outputs, but dataset={dataset} has {outputs}; "
        "a 1-output softmax is the constant 1. Use sigmoid, tanh or identity."
    )


def lr_by_loss_problem(lr: Any, loss: str, lr_by_loss: tuple[str, ...]) -> str | None:
    """A ``train.lr`` that interpolates ``train.lr_by_loss`` by loss name needs a rate for the loss."""
    if not (isinstance(lr, str) and "lr_by_loss" in lr and "loss.name" in lr) or loss in lr_by_loss:
        return None
    return (
        f"train.lr interpolates train.lr_by_loss, which has no rate for loss={loss} "
        f"(it has: {', '.join(lr_by_loss) or 'none'}); add one, e.g. train.lr_by_loss.{loss}=0.1."
    )


def cross_key_problems(inputs: CrossKeyInputs) -> list[str]:
    """Every cross-key rule broken by ``inputs`` (one sentence each)."""
    found = [
        softmax_outputs_problem(inputs.activation, inputs.dataset),
        lr_by_loss_problem(inputs.lr, inputs.loss, inputs.lr_by_loss),
    ]
    return [p for p in found if p]


def validate(cfg: Any) -> None:
    """Raise :class:`ConfigError` (one paragraph listing every problem) if ``cfg`` cannot be run."""
    problems = _problems(cfg)
    if problems:
        raise ConfigError("Invalid configuration: " + " ".join(problems))
