"""Test helpers: one network trained by the engine (a stack of one), and the independent reference run.

- :func:`train_one`, :func:`sgd_epoch_one`, :func:`evaluate_one`: the engine (:mod:`harness.nn.training`,
  :mod:`harness.nn.evaluation`) on one reference network, its weights written back into it.
- :func:`reference_run`: what the engine must compute, derived a second way: minibatch SGD written out with the
  reference network's book equations (:meth:`harness.nn.network.MLP.update`), and every metric from its own
  definition (the mean loss, argmax accuracy, the parameter-space cosine of both δᴸ backpropagated by
  :meth:`MLP.backward`, the output cosine). The engine's stack must match it to rounding (tests/test_replicas.py).
"""

from __future__ import annotations

import numpy as np

from harness.core.deltas import DELTA_RULES
from harness.nn.data import Dataset
from harness.nn.evaluation import evaluate
from harness.nn.network import MLP
from harness.nn.stack import ReplicaMLP
from harness.nn.training import TrainResult, log_epochs, sgd_epoch, train


def stack_of(model: MLP) -> ReplicaMLP:
    return ReplicaMLP.stack([model])


def _write_back(model: MLP, stack: ReplicaMLP) -> None:
    model.weights = [w[0].copy() for w in stack.weights]
    if model.use_bias:
        model.biases = [b[0].copy() for b in stack.biases]


def train_one(model: MLP, data: Dataset, loss, rule, *, lr: float, rng: np.random.Generator, **kwargs) -> TrainResult:
    """The engine's :func:`harness.nn.training.train` of ``model`` alone (its weights updated in place)."""
    stack = stack_of(model)
    (result,) = train(stack, data, loss, rule, lrs=[lr], rngs=[rng], **kwargs)
    _write_back(model, stack)
    return result


def sgd_epoch_one(model: MLP, data: Dataset, loss, rule, lr, batch_size, rng, reduction="mean", l2=0.0) -> None:
    """The engine's :func:`harness.nn.training.sgd_epoch` of ``model`` alone."""
    stack = stack_of(model)
    sgd_epoch(stack, data, loss, rule, np.array([lr]), batch_size, [rng], reduction, l2)
    _write_back(model, stack)


def evaluate_one(model: MLP, data: Dataset, loss, rule, l2: float = 0.0) -> dict[str, float]:
    """The engine's six metrics of ``model`` alone."""
    ev = evaluate(stack_of(model), data, loss.for_activation(model.output), rule, l2)
    return {k: float(v[0]) for k, v in ev.metrics.items()}


# ------------------------------------------------------------------------------------------ the reference


def _loss(loss, a: np.ndarray, y: np.ndarray) -> float:
    if not loss.defined(a, y):
        return float("nan")
    value = loss.mean(a, y)
    return float("inf") if np.isnan(value) else float(value)


def _cos(u: np.ndarray, v: np.ndarray) -> float:
    nu, nv = np.linalg.norm(u), np.linalg.norm(v)
    if nu == 0.0 or nv == 0.0:
        return 1.0 if nu == nv else 0.0
    return float(np.vdot(u, v) / (nu * nv))


def _accuracy(a: np.ndarray, y: np.ndarray) -> float:
    if y.shape[1] == 1:
        return float(np.mean((a[:, 0] >= 0.5) == (y[:, 0] >= 0.5)))
    return float(np.mean(a.argmax(axis=1) == y.argmax(axis=1)))


def _gradient(model: MLP, cache, delta: np.ndarray) -> np.ndarray:
    """Every weight's and bias's gradient from output error δ, flattened; δ scaled to max |δ| = 1 first (the
    cosine does not change, and a diverging network's gradient would overflow)."""
    top = np.max(np.abs(delta))
    return np.concatenate([g.ravel() for part in model.backward(cache, delta / (top or 1.0)) for g in part])


def reference_metrics(model: MLP, data: Dataset, loss, rule) -> tuple[dict[str, float], str]:
    """The six metrics and the outcome of ``model`` now, from their definitions (``loss`` bound already)."""
    cache, a = model.forward(data.x_train)
    y, z = data.y_train, cache.z_out
    true = DELTA_RULES["chain"].delta(loss, model.output, z, a, y)
    used = rule.delta(loss, model.output, z, a, y)
    a_test = model.predict(data.x_test)
    losses = (_loss(loss, a, y), _loss(loss, a_test, data.y_test))
    finite = bool(np.isfinite(true).all() and np.isfinite(used).all())
    g_rule = _gradient(model, cache, used) if finite else None
    g_true = _gradient(model, cache, true) if finite else None
    metrics = {
        "train_loss": losses[0],
        "train_accuracy": _accuracy(a, y),
        "test_loss": losses[1],
        "test_accuracy": _accuracy(a_test, data.y_test),
        "grad_cosine": _cos(g_rule, g_true) if finite else float("nan"),
        "delta_cosine": _cos(used, true) if finite else float("nan"),
    }
    # the rule's own δ decides (a non-finite true δ only leaves the cosines undefined)
    ok = np.isfinite(used).all() and not np.isinf(losses).any() and np.isfinite(a).all() and model.is_finite()
    outcome = "diverged" if not ok else "undefined" if np.isnan(losses).any() else "completed"
    return metrics, outcome


def _sound(model: MLP, data: Dataset, loss) -> bool:
    """What the engine watches between logged epochs: finite weights, finite test outputs, a test loss that does
    not overflow (an undefined one, NaN, is fine)."""
    a = model.predict(data.x_test)
    return bool(model.is_finite() and np.isfinite(a).all() and not np.isinf(_loss(loss, a, data.y_test)))


def reference_run(model: MLP, data: Dataset, loss, rule, *, epochs: int, lr: float, batch_size: int,
                  rng: np.random.Generator, eval_every: int | None = 1) -> TrainResult:  # fmt: skip
    """Minibatch SGD of ``model`` written out with :meth:`MLP.update` (one ``rng.permutation(n)`` per epoch,
    none for a full batch; step η/m), evaluated at ``log_epochs(epochs, eval_every)`` and at any other epoch
    where it is not :func:`_sound`; stops when it diverges."""
    loss = loss.for_activation(model.output)
    n = len(data.x_train)
    logged = set(log_epochs(epochs, eval_every).tolist())
    result = TrainResult("completed", 0)
    with np.errstate(all="ignore"):
        for epoch in range(epochs + 1):
            if epoch > 0:
                order = np.arange(n) if batch_size >= n else rng.permutation(n)
                for start in range(0, n, batch_size):
                    idx = order[start : start + batch_size]
                    model.update(data.x_train[idx], data.y_train[idx],
                                 lambda z, a, y: rule.delta(loss, model.output, z, a, y), lr / len(idx))  # fmt: skip
                result.epochs_run = epoch
            if epoch not in logged and _sound(model, data, loss):
                continue
            metrics, outcome = reference_metrics(model, data, loss, rule)
            if epoch not in logged and outcome != "diverged":  # off the cadence only a divergence is recorded
                continue
            result.outcome = outcome
            result.history.append(metrics)
            result.epochs.append(epoch)
            if result.outcome == "diverged":
                break
            result.undefined_epochs += result.outcome == "undefined"
    return result
