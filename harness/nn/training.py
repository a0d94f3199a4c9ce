"""The training engine: minibatch SGD of a stack of networks with a chosen output delta rule, epoch by epoch.

One SGD step on a minibatch B of size m (Nielsen's ``update_mini_batch``, with his L2 weight decay):
W ← (1 − η·λ/n)·W − (η/m) Σ_{x∈B} ∂C_x/∂W, where the output error that starts backprop is the rule's δᴸ: the
true gradient only when the rule is exact for the (loss, activation) pair, otherwise some other direction,
measured by the cosines of :mod:`harness.nn.evaluation`. Every job trains through :func:`train`: a folded job's
seeds and rates as the replicas of one stack (:class:`harness.nn.stack.ReplicaMLP`), a single run as a stack
of one. Replica r is the reference network with seed ``seeds[r]`` trained at rate ``lrs[r]``, with its own
minibatch order (:func:`shuffle_rngs`).

What is measured when (the *cadence*, :func:`log_epochs`): the six metrics are evaluated on the logged epochs
only: by default every epoch up to 20, then log-spaced to the last, at most 150 in all (``eval_every=k``: every
k-th epoch; 1: every epoch). Every other epoch gets the cheapest pass that still sees what a run's summary
needs at full resolution: one forward pass over the test set (:func:`harness.nn.evaluation.accuracy_pass`),
which gives the exact first epoch at which test accuracy reaches the threshold, the best test accuracy, and the
signs of a divergence (non-finite weights or test outputs, an overflowing test loss: then the epoch is evaluated
fully, and a diverged replica stops there; a divergence that shows only on the training set stops the run at
the next logged epoch).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial

import numpy as np

from harness.core.deltas import DeltaRule
from harness.core.losses import Loss
from harness.names import TEST_ACCURACY, TRAIN_LOSS
from harness.nn.data import Dataset
from harness.nn.evaluation import accuracy_pass, evaluate, outcomes
from harness.nn.stack import ReplicaMLP

REDUCTIONS = ("mean", "sum")
DTYPES = ("float64", "float32")
DENSE_EPOCHS = 20  # the lean cadence logs every epoch up to here ...
MAX_LOGGED = 150  # ... then log-spaced epochs to the last, at most this many logged epochs in all

EpochHook = Callable[[int, int, dict[str, float]], None]  # (replica, epoch, metrics)


@dataclass
class TrainResult:
    """How one replica's training ended, and every logged epoch's metrics (epoch 0 = the initial network)."""

    outcome: str  # completed | diverged | undefined
    epochs_run: int
    undefined_epochs: int = 0  # logged epochs whose loss was undefined (and that did not diverge)
    history: list[dict[str, float]] = field(default_factory=list)
    epochs: list[int] = field(default_factory=list)  # the epoch of each history entry
    best_test_accuracy: float = float("nan")  # over every epoch trained, logged or not
    epochs_to_threshold: int | None = None  # the first epoch whose test accuracy reached the threshold

    @property
    def final(self) -> dict[str, float]:
        return self.history[-1]


def log_epochs(epochs: int, eval_every: int | None = None) -> np.ndarray:
    """The epochs whose metrics are evaluated and logged, always with 0 (the untrained network) and the last.

    ``eval_every=None``: every epoch of a run shorter than :data:`MAX_LOGGED` epochs; else every epoch up to
    :data:`DENSE_EPOCHS`, then epochs log-spaced to the last (round(20·(E/20)^(i/k)), duplicates dropped, k as
    large as keeps :data:`MAX_LOGGED` in all). ``eval_every=k``: every k-th epoch.
    """
    if eval_every is not None:
        return np.union1d(np.arange(0, epochs + 1, eval_every), [epochs])
    if epochs < MAX_LOGGED:
        return np.arange(epochs + 1)
    dense, best = np.arange(DENSE_EPOCHS + 1), None
    for points in range(MAX_LOGGED - DENSE_EPOCHS, 4 * MAX_LOGGED):  # rounding merges early points: add more
        logged = np.union1d(dense, np.rint(np.geomspace(DENSE_EPOCHS, epochs, points)).astype(int))
        if len(logged) > MAX_LOGGED:
            break
        best = logged
    return best


def shuffle_rngs(seeds: Sequence[int]) -> list[np.random.Generator]:
    """Each replica's minibatch-shuffling stream, ``default_rng([seed, 1])``: independent of its
    initialisation stream ``default_rng(seed)``."""
    return [np.random.default_rng([seed, 1]) for seed in seeds]


def sgd_epoch(
    model: ReplicaMLP,
    data: Dataset,
    loss: Loss,
    rule: DeltaRule,
    lrs: np.ndarray,
    batch_size: int,
    rngs: Sequence[np.random.Generator],
    reduction: str = "mean",
    l2: float = 0.0,
) -> None:
    """One pass of every replica over a fresh shuffle of the training set in minibatches of ``batch_size``.

    Replica r steps by ``lrs[r]`` and shuffles with ``rngs[r]`` (one ``permutation(n)`` per epoch). A full batch
    (``batch_size ≥ n``) is not shuffled: its one step sums over the same samples in any order, and every replica
    shares x and y. ``reduction="mean"`` steps by (η/m)·Σ∇ (Nielsen); ``"sum"`` by η·Σ∇ (numpy XOR programs'
    ``W += l1.T @ d``). L2 (λ = ``l2``) decays the weights by η·λ/n per step with the mean, η·λ·m/n with the sum
    (the gradient of λ/(2n)·Σw² at the step's scale).
    """
    x_all, y_all = model.augment(data.x_train), data.y_train  # minibatches gathered with their ones column
    n = len(x_all)
    output_error = partial(rule.delta, loss.for_activation(model.output), model.output)
    lrs = np.asarray(lrs, dtype=np.float64)  # steps as Python floats would be; cast to the data's dtype

    def step(x: np.ndarray, y: np.ndarray, m: int) -> None:
        steps = lrs / m if reduction == "mean" else lrs
        model.sgd_step(x, y, output_error, steps, decays=steps * (m * l2 / n) if l2 else None)

    if batch_size >= n:
        step(x_all, y_all, n)
        return
    perms = np.stack([rng.permutation(n) for rng in rngs])  # (R, n)
    r = len(perms)
    # Each replica's minibatch gathered into buffers made once per epoch (np.take with mode="clip" writes into
    # ``out`` directly; the indices are valid, so the mode changes nothing but the speed). A gather per
    # minibatch, not one of the whole epoch: each minibatch is then hot in the cache for its products.
    x_batch = np.empty((r, batch_size, x_all.shape[1]), x_all.dtype)
    y_batch = np.empty((r, batch_size, y_all.shape[1]), y_all.dtype)
    for start in range(0, n, batch_size):
        idx = perms[:, start : start + batch_size]  # (R, m): replica r's minibatch
        m = idx.shape[1]
        if m == batch_size:
            step(np.take(x_all, idx, axis=0, out=x_batch, mode="clip"),
                 np.take(y_all, idx, axis=0, out=y_batch, mode="clip"), m)  # fmt: skip
        else:  # the last, smaller minibatch
            step(x_all[idx], y_all[idx], m)


class _Watch:
    """Per replica, over every epoch: the best test accuracy and the first epoch at or above the threshold."""

    def __init__(self, replicas: int, threshold: float | None) -> None:
        self.best = np.full(replicas, -np.inf)
        self.reached = np.full(replicas, -1)
        self.threshold = threshold

    def see(self, ids: np.ndarray, epoch: int, accuracy: np.ndarray) -> None:
        self.best[ids] = np.maximum(self.best[ids], accuracy)
        if self.threshold is not None:
            new = ids[(accuracy >= self.threshold) & (self.reached[ids] < 0)]
            self.reached[new] = epoch

    def record(self, results: list[TrainResult]) -> None:
        for r, result in enumerate(results):
            result.best_test_accuracy = float(self.best[r]) if np.isfinite(self.best[r]) else float("nan")
            result.epochs_to_threshold = int(self.reached[r]) if self.reached[r] >= 0 else None


def train(
    model: ReplicaMLP,
    data: Dataset,
    loss: Loss,
    rule: DeltaRule,
    *,
    epochs: int,
    lrs: Sequence[float] | np.ndarray | float,
    batch_size: int,
    seeds: Sequence[int] | None = None,
    rngs: Sequence[np.random.Generator] | None = None,
    reduction: str = "mean",
    eval_every: int | None = 1,
    threshold: float | None = None,
    l2: float = 0.0,
    on_epoch: EpochHook | None = None,
    progress: bool | None = False,
) -> list[TrainResult]:
    """Train every replica for ``epochs`` epochs (fewer for one that diverges); one :class:`TrainResult` each.

    Replica r steps at ``lrs[r]`` and shuffles with ``rngs[r]`` (by default ``shuffle_rngs(seeds)``). The
    epochs of :func:`log_epochs` (``eval_every``) are evaluated for every replica still training, passed to
    ``on_epoch(replica, epoch, metrics)`` and checked: a replica that diverges is dropped from the stack (its
    outcome ``diverged``, its weights kept as they were), so the survivors' steps cost no more than a stack of
    the survivors; an undefined loss counts in its ``undefined_epochs`` and the replica trains on. Every other
    epoch gets :func:`~harness.nn.evaluation.accuracy_pass` (best test accuracy, first epoch at ``threshold``).
    ``progress``: a bar of epochs (None: only on a terminal).
    """
    loss = loss.for_activation(model.output)
    r_all = model.n_replicas
    lrs = np.broadcast_to(np.asarray(lrs, dtype=np.float64), (r_all,)).copy()
    rngs = _streams(r_all, seeds, rngs)
    logged = set(log_epochs(epochs, eval_every).tolist())
    results = [TrainResult("completed", 0) for _ in range(r_all)]
    watch = _Watch(r_all, threshold)
    ids = np.arange(r_all)  # original index of each row of the active stack
    active, active_rngs = model.select(ids), list(rngs)
    bar = progress_bar(epochs, progress)
    with np.errstate(all="ignore"):  # non-finite values are detected and reported below, not warned
        for epoch in range(epochs + 1):
            if epoch > 0:
                sgd_epoch(active, data, loss, rule, lrs[ids], batch_size, active_rngs, reduction, l2)
                for r in ids.tolist():
                    results[r].epochs_run = epoch
                bar.update(1)
            scheduled = epoch in logged
            if not scheduled:
                accuracy, sound = accuracy_pass(active, data, loss)
                watch.see(ids, epoch, accuracy)
                if sound.all():
                    continue
            ev = evaluate(active, data, loss, rule, l2)
            status = outcomes(active, ev)
            if scheduled:
                watch.see(ids, epoch, ev.metrics[TEST_ACCURACY])
            _record(results, ids, epoch, ev, status, on_epoch, every=scheduled)
            if not bar.disable:  # the last replica's numbers (R = 1: the run's)
                bar.set_postfix(loss=f"{ev.metrics[TRAIN_LOSS][-1]:.4g}", acc=f"{ev.metrics[TEST_ACCURACY][-1]:.3f}")
            if "diverged" in status:
                keep = [row for row, s in enumerate(status) if s != "diverged"]
                model.assign(ids, active)  # the stopped replicas' weights as they are now
                ids, active_rngs = ids[keep], [active_rngs[row] for row in keep]
                if not len(ids):
                    break
                active = active.select(keep)
    bar.close()
    if len(ids):
        model.assign(ids, active)
    watch.record(results)
    return results


def _streams(replicas: int, seeds: Sequence[int] | None, rngs: Sequence[np.random.Generator] | None) -> list:
    if rngs is None:
        if seeds is None:
            raise TypeError("train needs seeds (or one shuffling rng per replica)")
        rngs = shuffle_rngs(seeds)
    if len(rngs) != replicas:
        raise ValueError(f"{len(rngs)} shuffling streams for {replicas} replicas")
    return list(rngs)


def _record(
    results: list[TrainResult],
    ids: np.ndarray,
    epoch: int,
    ev,
    status: list[str],
    on_epoch: EpochHook | None,
    every: bool,
) -> None:
    """Append an evaluated epoch to each replica's history (``every=False``, an epoch off the cadence that was
    evaluated because outputs went non-finite: only the replicas that diverged there) and set its outcome."""
    names = list(ev.metrics)
    for r, outcome, values in zip(ids.tolist(), status, zip(*(v.tolist() for v in ev.metrics.values()))):
        if not every and outcome != "diverged":
            continue
        entry = dict(zip(names, values))
        result = results[r]
        result.history.append(entry)
        result.epochs.append(epoch)
        if on_epoch is not None:
            on_epoch(r, epoch, entry)
        result.outcome = outcome
        result.undefined_epochs += outcome == "undefined"


def as_dtype(data: Dataset, dtype: np.dtype | type | str) -> Dataset:
    """``data`` with every array in ``dtype`` (``float32`` halves the memory traffic of each step).

    The test arrays stay the very same objects as the training ones when they were (XOR), so the evaluation
    still knows it need not run the test pass.
    """
    dtype = np.dtype(dtype)
    x, y = data.x_train.astype(dtype, copy=False), data.y_train.astype(dtype, copy=False)
    same = data.x_test is data.x_train and data.y_test is data.y_train
    x_test = x if same else data.x_test.astype(dtype, copy=False)
    y_test = y if same else data.y_test.astype(dtype, copy=False)
    return replace(data, x_train=x, y_train=y, x_test=x_test, y_test=y_test)


def progress_bar(epochs: int, enabled: bool | None):
    """A tqdm bar of epochs; ``enabled=None`` shows it only on a terminal (tqdm's own ``disable=None``)."""
    from tqdm.auto import tqdm

    disable = None if enabled is None else not enabled
    return tqdm(total=epochs, desc="epochs", unit="ep", disable=disable, leave=False)
