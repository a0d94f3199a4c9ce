"""Minibatch SGD with a chosen output delta rule, and the per-epoch evaluation.

One SGD step on a minibatch B of size m:  W ← W − (η/m) Σ_{x∈B} ∂C_x/∂W  (Nielsen's ``update_mini_batch``),
where the output error that starts backprop is the rule's δᴸ — the true gradient only when the rule is
exact for the (loss, activation) pair, otherwise some other direction, which we measure with
``grad_cosine``.

Divergence is a result, not a crash: when the weights or outputs become non-finite the run stops with
``outcome = "diverged"``; when the outputs leave the loss's domain (e.g. tanh outputs ≤ 0 under BCE's log)
it stops with ``outcome = "undefined"``. Otherwise ``outcome = "completed"``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial

import numpy as np

from harness.core.deltas import DELTA_RULES, DeltaRule
from harness.core.losses import Loss
from harness.names import GRAD_COSINE, TEST_ACCURACY, TEST_LOSS, TRAIN_ACCURACY, TRAIN_LOSS
from harness.nn.data import Dataset
from harness.nn.model import MLP

EpochHook = Callable[[int, dict[str, float]], None]


@dataclass
class TrainResult:
    """How training ended, and every evaluated epoch's metrics (epoch 0 = the initial network)."""

    outcome: str
    epochs_run: int
    history: list[dict[str, float]] = field(default_factory=list)
    epochs: list[int] = field(default_factory=list)  # the epoch of each history entry

    @property
    def final(self) -> dict[str, float]:
        return self.history[-1]


def accuracy(a: np.ndarray, y: np.ndarray) -> float:
    """Fraction of samples whose predicted class is the target class (argmax; one output: a ≥ ½)."""
    # count / n equals np.mean of the booleans exactly (integer counts are exact in float64), without
    # np.mean's Python-level wrapper: this runs twice per evaluated epoch.
    if y.shape[1] == 1:
        hits = (a[:, 0] >= 0.5) == (y[:, 0] >= 0.5)
    else:
        hits = a.argmax(axis=1) == y.argmax(axis=1)
    return np.count_nonzero(hits) / len(hits)


def cosine(u: np.ndarray, v: np.ndarray) -> float:
    """cos ∠(u, v) over all entries; 1 when both are zero (identical directions), 0 when one is."""
    nu, nv = float(np.linalg.norm(u)), float(np.linalg.norm(v))
    if nu == 0.0 or nv == 0.0:
        return 1.0 if nu == nv else 0.0
    return float(np.vdot(u, v) / (nu * nv))


def evaluate(model: MLP, data: Dataset, loss: Loss, rule: DeltaRule) -> dict[str, float]:
    """The five epoch metrics, on the whole training and test sets."""
    return _evaluate(model, data, loss, rule)[0]


def _evaluate(model: MLP, data: Dataset, loss: Loss, rule: DeltaRule) -> tuple[dict[str, float], np.ndarray]:
    """:func:`evaluate`, and the training-set outputs aᴸ it computed (so the caller need not recompute them).

    Each forward pass is done once: the test pass is skipped when the test set *is* the training set (XOR),
    and the chain-rule δ is reused when the rule is the chain rule.
    """
    cache, a = model.forward(data.x_train)
    z = cache.z_out
    true = DELTA_RULES["chain"].delta(loss, model.output, z, a, data.y_train)
    used = true if rule is DELTA_RULES["chain"] else rule.delta(loss, model.output, z, a, data.y_train)
    same = data.x_test is data.x_train and data.y_test is data.y_train
    a_test = a if same else model.predict(data.x_test)
    train_loss, train_accuracy = _loss_or_nan(loss, a, data.y_train), accuracy(a, data.y_train)
    metrics = {
        TRAIN_LOSS: train_loss,
        TRAIN_ACCURACY: train_accuracy,
        TEST_LOSS: train_loss if same else _loss_or_nan(loss, a_test, data.y_test),
        TEST_ACCURACY: train_accuracy if same else accuracy(a_test, data.y_test),
        GRAD_COSINE: cosine(used, true) if np.isfinite(true).all() else float("nan"),
    }
    return metrics, a


def _loss_or_nan(loss: Loss, a: np.ndarray, y: np.ndarray) -> float:
    return loss.mean(a, y) if loss.defined(a, y) else float("nan")


def outcome_of(model: MLP, data: Dataset, loss: Loss) -> str | None:
    """``diverged`` / ``undefined`` when training must stop, else None."""
    return _outcome(model, model.predict(data.x_train), data.y_train, loss, None)


def _outcome(model: MLP, a: np.ndarray, y: np.ndarray, loss: Loss, train_loss: float | None) -> str | None:
    """:func:`outcome_of` given the training outputs ``a`` (and their loss or NaN, if already computed).

    A finite ``train_loss`` from :func:`_loss_or_nan` implies the loss was defined, so the domain check
    only runs when something is already wrong.
    """
    if not model.is_finite():
        return "diverged"
    if not np.isfinite(a).all():
        return "diverged"
    if train_loss is not None and np.isfinite(train_loss):
        return None
    if not loss.defined(a, y):
        return "undefined"
    if not np.isfinite(loss.mean(a, y) if train_loss is None else train_loss):
        return "diverged"
    return None


REDUCTIONS = ("mean", "sum")
DTYPES = ("float64", "float32")


def sgd_epoch(
    model: MLP,
    data: Dataset,
    loss: Loss,
    rule: DeltaRule,
    lr: float,
    batch_size: int,
    rng: np.random.Generator,
    reduction: str = "mean",
) -> None:
    """One pass over a fresh shuffle of the training set in minibatches of ``batch_size``.

    ``reduction="mean"`` steps by (η/m)·Σ∇ (Nielsen); ``"sum"`` by η·Σ∇ (numpy XOR programs' ``W += l1.T @ d``).
    A full batch (``batch_size ≥ n``) is not shuffled: its one step sums over the same samples in any order.
    """
    x_all, y_all = data.x_train, data.y_train
    n = len(x_all)
    output_error = partial(rule.delta, loss, model.output)
    if batch_size >= n:
        model.sgd_step(x_all, y_all, output_error, lr / n if reduction == "mean" else lr)
        return
    perm = rng.permutation(n)
    # A gather per minibatch, not one of the whole epoch: each minibatch is then hot in the cache for
    # its products (one 28 MB gather of MNIST per epoch measured 3× slower in total).
    for start in range(0, n, batch_size):
        idx = perm[start : start + batch_size]
        model.sgd_step(x_all[idx], y_all[idx], output_error, lr / len(idx) if reduction == "mean" else lr)


def train(
    model: MLP,
    data: Dataset,
    loss: Loss,
    rule: DeltaRule,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    rng: np.random.Generator,
    reduction: str = "mean",
    eval_every: int = 1,
    on_epoch: EpochHook | None = None,
    progress: bool | None = None,
) -> TrainResult:
    """Train for ``epochs`` epochs (fewer if it diverges).

    Epoch 0 (the untrained network), every ``eval_every``-th epoch and the last one are evaluated, checked
    for divergence and passed to ``on_epoch(epoch, metrics)``.
    """
    result = TrainResult("completed", 0)
    bar = _progress(epochs, progress)
    with np.errstate(all="ignore"):  # non-finite values are detected and reported below, not warned
        for epoch in range(epochs + 1):
            if epoch > 0:
                sgd_epoch(model, data, loss, rule, lr, batch_size, rng, reduction)
                result.epochs_run = epoch
                bar.update(1)
                if epoch % eval_every and epoch != epochs:
                    continue
            metrics, a = _evaluate(model, data, loss, rule)
            result.history.append(metrics)
            result.epochs.append(epoch)
            if on_epoch is not None:
                on_epoch(epoch, metrics)
            stop = _outcome(model, a, data.y_train, loss, metrics[TRAIN_LOSS])
            if stop is not None:
                result.outcome = stop
                break
            if not bar.disable:  # formatting the postfix costs ≈ 10 µs an epoch, a tenth of XOR's evaluation
                bar.set_postfix(loss=f"{metrics[TRAIN_LOSS]:.4g}", acc=f"{metrics[TEST_ACCURACY]:.3f}")
    bar.close()
    return result


def as_dtype(data: Dataset, dtype: np.dtype | type | str) -> Dataset:
    """``data`` with every array in ``dtype`` (``float32`` halves the memory traffic of each step).

    The test arrays stay the very same objects as the training ones when they were (XOR), so
    :func:`evaluate` still knows it need not run the test pass.
    """
    dtype = np.dtype(dtype)
    x, y = data.x_train.astype(dtype, copy=False), data.y_train.astype(dtype, copy=False)
    same = data.x_test is data.x_train and data.y_test is data.y_train
    x_test = x if same else data.x_test.astype(dtype, copy=False)
    y_test = y if same else data.y_test.astype(dtype, copy=False)
    return replace(data, x_train=x, y_train=y, x_test=x_test, y_test=y_test)


def _progress(epochs: int, enabled: bool | None):
    """A tqdm bar; ``enabled=None`` shows it only on a terminal (tqdm's own ``disable=None``)."""
    from tqdm.auto import tqdm

    disable = None if enabled is None else not enabled
    return tqdm(total=epochs, desc="epochs", unit="ep", disable=disable, leave=False)
