"""The engine against the reference: replica r of a stack trained by :func:`harness.nn.training.train` is the
reference network with its seed and learning rate trained by the book's equations (tests/reference.py), to
1e-12: every logged metric (both cosines included), the outcome, the epochs run and the undefined epochs, and the
weights."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from reference import reference_run

from harness.app import build_stack
from harness.core.activations import HIDDEN_ACTIVATIONS, OUTPUT_ACTIVATIONS
from harness.core.deltas import DELTA_RULES
from harness.core.losses import LOSSES
from harness.nn.data import Dataset, load, mnist
from harness.nn.network import MLP
from harness.nn.stack import ReplicaMLP
from harness.nn.training import as_dtype, shuffle_rngs, train

TOL = {"rtol": 1e-12, "atol": 1e-12}
TOL32 = {"rtol": 1e-5, "atol": 1e-6}  # float32: a few ulp (the stack adds each bias inside the product)


def _cfg(seed, loss, activation, delta, hidden, hidden_activation="sigmoid", init="nielsen", bias=True):
    """The parts of a run's config that ``build_stack`` reads."""
    model = SimpleNamespace(
        hidden=hidden, hidden_activation=hidden_activation, init=init, bias=bias, init_weight=0.0, init_bias=0.0
    )
    return SimpleNamespace(
        seed=seed, model=model, loss=SimpleNamespace(name=loss), activation=SimpleNamespace(name=activation),
        delta=SimpleNamespace(name=delta),
    )  # fmt: skip


def _mnist_subset(n_train: int, n_test: int) -> Dataset:
    full = mnist()
    return Dataset(
        "mnist", full.x_train[:n_train], full.y_train[:n_train], full.x_test[:n_test], full.y_test[:n_test],
        full.source,
    )  # fmt: skip


def _compare(data, loss, activation, delta, hidden, seeds, lrs, *, epochs, batch_size, eval_every=1, **model_kw):
    """Train the stack and every single run; assert they agree; return the replicas' results."""
    tol = TOL if data.x_train.dtype == np.float64 else TOL32
    lo, rule = LOSSES[loss], DELTA_RULES[delta]
    cfgs = [_cfg(s, loss, activation, delta, hidden, **model_kw) for s in seeds]
    stack = build_stack(cfgs[0], seeds, data)
    singles = [stack.replica(r) for r in range(len(seeds))]  # copies: the references train on below
    results = train(stack, data, lo, rule, epochs=epochs, lrs=lrs, batch_size=batch_size, seeds=seeds,
                    eval_every=eval_every)  # fmt: skip
    for r, (single, lr, rng) in enumerate(zip(singles, lrs, shuffle_rngs(seeds))):
        ref = reference_run(single, data, lo, rule, epochs=epochs, lr=lr, batch_size=batch_size, rng=rng,
                            eval_every=eval_every)  # fmt: skip
        got = results[r]
        assert (got.outcome, got.epochs_run, got.undefined_epochs, got.epochs) == (
            ref.outcome, ref.epochs_run, ref.undefined_epochs, ref.epochs
        ), f"replica {r}"  # fmt: skip
        assert [list(h) for h in got.history] == [list(h) for h in ref.history]  # same metrics, same order
        for name in ref.history[0]:
            np.testing.assert_allclose(
                [h[name] for h in got.history], [h[name] for h in ref.history], **tol, err_msg=f"{r} {name}"
            )
        # A diverging network amplifies rounding (the engine scales δ before the product, the book after it):
        # its weights, ≈ 1e61 when it stops, agree to 1e-9 relative.
        wtol = tol if ref.outcome != "diverged" else {"rtol": 1e-9, "atol": 0}
        for p, q in zip(stack.replica(r).parameters(), single.parameters()):
            np.testing.assert_allclose(p, q, **wtol, err_msg=f"replica {r} weights")
    return results


def test_replica_r_starts_from_the_reference_network_with_its_seed():
    data = load("xor")
    seeds = [0, 7, 3]
    sig = HIDDEN_ACTIVATIONS["sigmoid"], OUTPUT_ACTIVATIONS["sigmoid"]
    stack = build_stack(_cfg(0, "bce", "sigmoid", "ng", [4]), seeds, data)
    for r, seed in enumerate(seeds):
        single = MLP.initialise([2, 4, 2], *sig, np.random.default_rng(seed), dtype=data.x_train.dtype)
        for p, q in zip(stack.replica(r).parameters(), single.parameters()):
            np.testing.assert_array_equal(p, q)
    assert stack.weights[0].shape == (3, 2, 4) and stack.biases[1].shape == (3, 2)


@pytest.mark.parametrize(
    ("loss", "activation", "delta", "hidden_activation", "lrs", "stopped"),
    [
        ("bce", "sigmoid", "ng", "sigmoid", [2.0, 0.7, 3.5, 5.0, 1e6], "undefined"),
        ("mse", "identity", "nielsen", "sigmoid", [0.5, 0.1, 1e3, 0.3], "diverged"),
        ("mse", "tanh", "chain", "sigmoid", [1.0, 0.2, 3.0], None),
        ("cce", "softmax", "chain", "tanh", [1.0, 0.3, 1e4], "diverged"),  # the chain δ's −y/a overflows
        ("mse", "sigmoid", "nielsen", "relu", [2.0, 8.0, 0.5], None),
        ("bce", "tanh", "nielsen", "sigmoid", [0.5, 2.0, 0.1], "undefined"),  # tanh outputs < 0 leave BCE's log
        ("matching", "tanh", "ng", "sigmoid", [0.5, 2.0, 0.1], None),  # bound by Loss.for_activation
        ("matching", "softmax", "nielsen", "tanh", [1.0, 3.0], None),
    ],
)
def test_xor_replicas_are_single_runs(loss, activation, delta, hidden_activation, lrs, stopped):
    seeds = list(range(len(lrs)))
    results = _compare(load("xor"), loss, activation, delta, [4], seeds, lrs, epochs=300, batch_size=4,
                       hidden_activation=hidden_activation)  # fmt: skip
    _check_outcomes(results, stopped, epochs=300)


def _check_outcomes(results, expected, *, epochs):
    """``diverged``: a replica stopped early and the others went on; ``undefined``: a replica had undefined
    epochs and trained to the end, as did the others."""
    if expected == "diverged":
        assert any(r.outcome == "diverged" and r.epochs_run < epochs for r in results)
    elif expected == "undefined":
        assert any(r.undefined_epochs > 0 and r.epochs_run == epochs for r in results)
    if expected is not None:
        assert any(r.outcome == "completed" and r.epochs_run == epochs for r in results)


def test_xor_replicas_without_biases_and_with_sparse_evaluation():
    seeds, lrs = [4, 5, 6], [1.0, 2.0, 1e3]
    _compare(load("xor1"), "mse", "identity", "ng", [3], seeds, lrs, epochs=200, batch_size=4, eval_every=7,
             bias=False, init="uniform")  # fmt: skip


@pytest.mark.parametrize(
    ("loss", "activation", "delta", "lrs", "stopped"),
    [
        ("cce", "softmax", "ng", [0.5, 0.1, 1e3], "undefined"),
        ("mse", "identity", "ng", [0.05, 0.01, 50.0], "diverged"),
    ],
)
def test_mnist_minibatch_replicas_are_single_runs(loss, activation, delta, lrs, stopped):
    # 505 training images: 50 minibatches of 10 and a last one of 5 (its own step size η/5).
    data = _mnist_subset(505, 100)
    seeds = [11, 3, 8]
    results = _compare(data, loss, activation, delta, [30], seeds, lrs, epochs=3, batch_size=10)
    _check_outcomes(results, stopped, epochs=3)


def test_float32_replicas_are_single_runs():
    data = as_dtype(_mnist_subset(200, 50), "float32")
    _compare(data, "bce", "sigmoid", "nielsen", [16], [1, 2], [1.0, 3.0], epochs=2, batch_size=10)


@pytest.mark.parametrize("sizes", [[5, 6, 3], [70, 40, 3]])  # the second layer's update runs in BLAS
def test_sgd_step_mask_leaves_inactive_replicas_alone(sizes):
    rng = np.random.default_rng(0)
    lo, rule = LOSSES["cce"], DELTA_RULES["ng"]
    hidden, output = HIDDEN_ACTIVATIONS["tanh"], OUTPUT_ACTIVATIONS["softmax"]
    masked, plain = (ReplicaMLP.initialise(sizes, hidden, output, [1, 2, 3]) for _ in range(2))
    before = [p.copy() for p in masked.parameters()]
    x, y = rng.normal(size=(3, 7, sizes[0])), np.eye(3)[rng.integers(0, 3, (3, 7))]
    steps = np.array([0.1, 0.2, 0.3])
    err = lambda z, a, y: rule.delta(lo, masked.output, z, a, y)  # noqa: E731
    masked.sgd_step(x, y, err, steps, active=np.array([True, False, True]))
    plain.sgd_step(x, y, err, steps)
    for p, q, b in zip(masked.parameters(), plain.parameters(), before):
        np.testing.assert_array_equal(p[[0, 2]], q[[0, 2]])
        np.testing.assert_array_equal(p[1], b[1])
        assert not np.array_equal(q[1], b[1])


def test_mnist_full_batch_replicas_are_single_runs():
    # A full batch is not shuffled, and every replica shares x: the first layer's in-BLAS update reads it.
    data = _mnist_subset(300, 60)
    _compare(data, "bce", "sigmoid", "chain", [20], [5, 6], [3.0, 1.0], epochs=4, batch_size=300)
