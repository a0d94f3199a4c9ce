"""Minibatch SGD with a chosen output delta rule, and the per-epoch evaluation.

One SGD step on a minibatch B of size m:  W ← W − (η/m) Σ_{x∈B} ∂C_x/∂W  (Nielsen's ``update_mini_batch``),
where the output error that starts backprop is the rule's δᴸ — the true gradient only when the rule is
exact for the (loss, activation) pair, otherwise some other direction, measured on the whole training set
by two cosines (:func:`evaluate`):

- ``grad_cosine`` = cos ∠(g_rule, g_true), where g_true = ∂C/∂θ over every weight and bias and g_rule is
  what backprop (BP2–BP4) makes of the rule's δᴸ, i.e. the full-batch update is −η·g_rule. This is the
  cosine that says whether a step goes downhill: > 0 exactly when −g_rule is a descent direction of C.
- ``delta_cosine`` = cos ∠(δᴸ_rule, δᴸ_true) at the output layer. It can be > 0 while ``grad_cosine`` < 0:
  for one layer with inputs aₙ, ⟨g_rule, g_true⟩ = Σₙₘ (aₙ · aₘ)(δₙ · δ*ₘ), whose cross terms n ≠ m the
  output cosine never sees.

Outcomes. A loss outside its domain is a condition of an epoch, not a stop: ``ng`` and ``nielsen`` never
read the loss, and ``chain`` only evaluates its gradient formula, which stays finite off the domain (e.g.
BCE's −y/a at a tanh output a < 0). So training goes on while the weights, the outputs and the rule's δᴸ on
the training set are finite:

- ``diverged``: one of them is non-finite at an evaluated epoch, or the loss is defined at the outputs but
  its value overflows to ±∞ (e.g. MSE of outputs ≈ 1e200); training stops there;
- an evaluated epoch where the loss is undefined on the training or the test outputs logs that loss as NaN
  (accuracy and both cosines as usual) and is counted in ``TrainResult.undefined_epochs``;
- at the end ``outcome`` is ``undefined`` if the loss is still undefined at the last epoch, else
  ``completed``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial

import numpy as np

from harness.core.deltas import DELTA_RULES, DeltaRule
from harness.core.losses import Loss
from harness.names import DELTA_COSINE, GRAD_COSINE, TEST_ACCURACY, TEST_LOSS, TRAIN_ACCURACY, TRAIN_LOSS
from harness.nn.data import Dataset
from harness.nn.model import MLP, Forward

EpochHook = Callable[[int, dict[str, float]], None]


@dataclass
class TrainResult:
    """How training ended, and every evaluated epoch's metrics (epoch 0 = the initial network)."""

    outcome: str  # completed | diverged | undefined
    epochs_run: int
    undefined_epochs: int = 0  # evaluated epochs whose loss was undefined (and that did not diverge)
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
    """The six epoch metrics, on the whole training and test sets."""
    return _evaluate(model, data, loss.for_activation(model.output), rule).metrics


@dataclass
class Evaluation:
    """One evaluated epoch: its metrics, and what the outcome check needs from the same passes."""

    metrics: dict[str, float]
    outputs: np.ndarray  # aᴸ on the training set
    finite: bool  # the rule's δᴸ on the training set is finite, and so is the loss wherever it is defined
    undefined: bool  # the loss is undefined on the training or the test outputs


def _evaluate(model: MLP, data: Dataset, loss: Loss, rule: DeltaRule) -> Evaluation:
    """:func:`evaluate` with ``loss`` already bound to the output activation, and what the caller reuses.

    Each forward pass is done once: the test pass is skipped when the test set *is* the training set (XOR),
    and the chain-rule δ is reused when the rule is the chain rule.
    """
    cache, a = model.forward(data.x_train)
    z, y = cache.z_out, data.y_train
    is_chain = rule is DELTA_RULES["chain"]
    true = DELTA_RULES["chain"].delta(loss, model.output, z, a, y)
    used = true if is_chain else rule.delta(loss, model.output, z, a, y)
    same = data.x_test is data.x_train and data.y_test is data.y_train
    a_test = a if same else model.predict(data.x_test)
    train_loss, train_accuracy = _loss_or_nan(loss, a, y), accuracy(a, y)
    test_loss = train_loss if same else _loss_or_nan(loss, a_test, data.y_test)
    true_finite = bool(np.isfinite(true).all())
    used_finite = true_finite if is_chain else bool(np.isfinite(used).all())
    finite = true_finite and used_finite
    overflow = np.isinf(train_loss) or np.isinf(test_loss)  # NaN only marks an undefined loss
    metrics = {
        TRAIN_LOSS: train_loss,
        TRAIN_ACCURACY: train_accuracy,
        TEST_LOSS: test_loss,
        TEST_ACCURACY: train_accuracy if same else accuracy(a_test, data.y_test),
        GRAD_COSINE: (1.0 if is_chain else _parameter_cosine(model, cache, used, true)) if finite else float("nan"),
        DELTA_COSINE: cosine(used, true) if finite else float("nan"),
    }
    return Evaluation(metrics, a, used_finite and not overflow, bool(np.isnan(train_loss) or np.isnan(test_loss)))


def _parameter_cosine(model: MLP, cache: Forward, used: np.ndarray, true: np.ndarray) -> float:
    r"""cos ∠(g_rule, g_true) over all weights and biases, each g backpropagated from its δᴸ (BP2–BP4).

    .. math:: g = \big(\, (a^{l-1})^\top \delta^l,\ \textstyle\sum_n \delta^l_n \,\big)_{l = 1 \dots L}, \qquad
              \cos = \frac{\langle g_{rule}, g_{true} \rangle}{\lVert g_{rule} \rVert \, \lVert g_{true} \rVert}

    with δᴸ the rule's (g_rule) or the chain rule's (g_true = n · ∂C/∂θ, C the mean loss over the n training
    samples; the factor n, like the step size, does not change the angle). The update is −η·g_rule, so a
    cosine > 0 means a descent direction of C. For the chain rule both are the same vector (cosine 1): the
    caller skips this.

    Backprop is linear in δ, so both errors go through together, stacked as (2, n, k), and the three inner
    products come from one 2 × 2 Gram matrix. Same sums as :meth:`MLP.backward` (tests/test_science.py
    checks the cosine against finite differences).
    """
    delta = np.stack([used, true])
    parts = []
    for i in range(len(model.weights) - 1, -1, -1):
        below = cache.inputs[i]
        parts.append(np.matmul(below.T, delta).reshape(2, -1))  # (aˡ⁻¹ᵀ δˡ) for each, flattened
        if model.use_bias:
            parts.append(np.add.reduce(delta, axis=1))  # Σₙ δˡ
        if i > 0:
            delta = np.matmul(delta, model.weights[i].T)
            delta *= model.hidden.derivative_from_value(below, np.empty_like(below))  # BP2: f′ of layer i − 1
    g = np.concatenate(parts, axis=1)  # (g_rule, g_true) as the two rows
    (rule_sq, dot), (_, true_sq) = g @ g.T
    if rule_sq == 0.0 or true_sq == 0.0:
        return 1.0 if rule_sq == true_sq else 0.0
    return float(dot / np.sqrt(rule_sq * true_sq))


def _loss_or_nan(loss: Loss, a: np.ndarray, y: np.ndarray) -> float:
    """The mean loss, NaN where it is undefined; ±∞ (an overflow: the outputs are diverging) stays ±∞."""
    if not loss.defined(a, y):
        return float("nan")
    value = loss.mean(a, y)
    return float("inf") if np.isnan(value) else value  # NaN from a defined loss: ∞ − ∞ in an overflow


def outcome_of(model: MLP, data: Dataset, loss: Loss, rule: DeltaRule | None = None) -> str:
    """The outcome if training ended now: ``diverged``, ``undefined`` or ``completed`` (see the module
    docstring). Without ``rule`` the rule's δᴸ is not checked."""
    loss = loss.for_activation(model.output)
    cache, a = model.forward(data.x_train)
    finite = rule is None or bool(np.isfinite(rule.delta(loss, model.output, cache.z_out, a, data.y_train)).all())
    losses = [_loss_or_nan(loss, a, data.y_train), _loss_or_nan(loss, model.predict(data.x_test), data.y_test)]
    finite = finite and not np.isinf(losses).any()
    return _outcome(model, a, finite, bool(np.isnan(losses).any()))


def _outcome(model: MLP, a: np.ndarray, finite: bool, undefined: bool) -> str:
    """:func:`outcome_of` given the training outputs ``a`` and the evaluation's checks."""
    if not (finite and np.isfinite(a).all() and model.is_finite()):
        return "diverged"
    return "undefined" if undefined else "completed"


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
    output_error = partial(rule.delta, loss.for_activation(model.output), model.output)
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

    Epoch 0 (the untrained network), every ``eval_every``-th epoch and the last one are evaluated, passed to
    ``on_epoch(epoch, metrics)`` and checked: divergence stops training, an undefined loss is counted.
    """
    loss = loss.for_activation(model.output)
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
            ev = _evaluate(model, data, loss, rule)
            metrics = ev.metrics
            result.history.append(metrics)
            result.epochs.append(epoch)
            if on_epoch is not None:
                on_epoch(epoch, metrics)
            result.outcome = _outcome(model, ev.outputs, ev.finite, ev.undefined)
            if result.outcome == "diverged":
                break
            result.undefined_epochs += result.outcome == "undefined"
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
