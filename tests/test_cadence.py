"""The lean metric stream: which epochs are logged, and the summaries that stay exact at every epoch; L2."""

from __future__ import annotations

import numpy as np
import pytest
from reference import evaluate_one, sgd_epoch_one, train_one

from harness.core.activations import HIDDEN_ACTIVATIONS, OUTPUT_ACTIVATIONS
from harness.core.deltas import DELTA_RULES
from harness.core.losses import LOSSES
from harness.nn.data import load
from harness.nn.network import MLP
from harness.nn.training import log_epochs


@pytest.mark.parametrize("epochs", [1, 5, 20, 21, 149, 150, 151, 500, 1000, 30000])
def test_the_lean_cadence_is_dense_then_log_spaced_and_at_most_150(epochs):
    logged = log_epochs(epochs)
    assert logged[0] == 0 and logged[-1] == epochs
    assert np.all(np.diff(logged) > 0)  # sorted, no duplicates
    assert len(logged) <= 150
    assert set(range(min(epochs, 20) + 1)) <= set(logged.tolist())  # every epoch up to 20
    if epochs < 150:
        assert len(logged) == epochs + 1  # short runs lose nothing
    else:  # all 150 used; beyond 20 the gaps grow (log spacing), never shrinking by more than rounding
        gaps = np.diff(logged[logged >= 20])
        assert len(logged) == 150 and np.all(np.diff(gaps) >= -1) and gaps[-1] >= gaps[0]
    if epochs >= 1000:
        assert gaps[-1] > 10 * gaps[0]


def test_eval_every_k_is_every_kth_with_the_first_and_last():
    assert log_epochs(23, 10).tolist() == [0, 10, 20, 23]
    assert log_epochs(5, 1).tolist() == [0, 1, 2, 3, 4, 5]


def _net(seed: int, output: str = "sigmoid") -> MLP:
    sig = HIDDEN_ACTIVATIONS["sigmoid"]
    return MLP.initialise([2, 4, 2], sig, OUTPUT_ACTIVATIONS[output], np.random.default_rng(seed))


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_summaries_are_exact_whatever_the_cadence(seed):
    # The same seed trained twice: every epoch logged, and the lean cadence (1,000 epochs: 150 logged). The
    # threshold epoch and the best accuracy of the lean run equal what the every-epoch history shows.
    data, loss, rule = load("xor"), LOSSES["bce"], DELTA_RULES["ng"]
    kw = {"epochs": 1000, "lr": 2.0, "batch_size": 4, "threshold": 1.0}
    full = train_one(_net(seed), data, loss, rule, rng=np.random.default_rng([seed, 1]), eval_every=1, **kw)
    lean = train_one(_net(seed), data, loss, rule, rng=np.random.default_rng([seed, 1]), eval_every=None, **kw)
    accuracy = [h["test_accuracy"] for h in full.history]
    reached = [e for e, a in zip(full.epochs, accuracy) if a >= 1.0]
    assert len(full.epochs) == 1001 and len(lean.epochs) == 150
    assert lean.epochs_to_threshold == (reached[0] if reached else None) == full.epochs_to_threshold
    assert lean.best_test_accuracy == max(accuracy) == full.best_test_accuracy
    assert lean.final == full.final  # the last epoch is always logged, with the same numbers
    assert [lean.outcome, lean.epochs_run] == [full.outcome, full.epochs_run]
    by_epoch = dict(zip(full.epochs, full.history))
    assert all(h == by_epoch[e] for e, h in zip(lean.epochs, lean.history))  # same training, fewer rows


def test_some_seed_reaches_the_threshold_late_enough_to_test_the_gaps():
    # The test above is only meaningful if a threshold epoch falls between two logged epochs of the lean cadence.
    data, loss, rule = load("xor"), LOSSES["bce"], DELTA_RULES["ng"]
    logged = set(log_epochs(1000).tolist())
    epochs = [
        train_one(
            _net(seed),
            data,
            loss,
            rule,
            rng=np.random.default_rng([seed, 1]),
            epochs=1000,
            lr=2.0,
            batch_size=4,
            threshold=1.0,
            eval_every=None,
        ).epochs_to_threshold  # fmt: skip
        for seed in range(4)
    ]
    assert any(e is not None and e not in logged for e in epochs), epochs


def test_a_divergence_between_logged_epochs_stops_the_run_where_it_happens():
    data = load("xor")
    kw = {"epochs": 400, "lr": 1e8, "batch_size": 4}
    every = train_one(_net(0, "identity"), data, LOSSES["mse"], DELTA_RULES["ng"], rng=np.random.default_rng(1),
                      eval_every=1, **kw)  # fmt: skip
    lean = train_one(_net(0, "identity"), data, LOSSES["mse"], DELTA_RULES["ng"], rng=np.random.default_rng(1),
                     eval_every=50, **kw)  # fmt: skip
    assert every.outcome == lean.outcome == "diverged"
    assert lean.epochs_run == every.epochs_run == lean.epochs[-1]  # not deferred to the next logged epoch


# --- L2 regularisation -----------------------------------------------------------------------------------


def _cost(model: MLP, data, loss, lam: float) -> float:
    """C(θ) = (1/n) Σ L + λ/(2n) Σ w² (weights only), written out for the finite differences below."""
    n = len(data.x_train)
    return loss.mean(model.predict(data.x_train), data.y_train) + lam / (2 * n) * sum(
        np.sum(w**2) for w in model.weights
    )


@pytest.mark.parametrize("lam", [0.0, 0.5, 3.0])
def test_an_l2_step_of_the_chain_rule_is_minus_eta_times_the_gradient_of_the_regularised_cost(lam):
    # One full-batch step θ ← θ − η ∇C with C including λ/(2n)Σw²: the step the engine takes equals η times the
    # central-difference gradient of C, weights and biases (biases are not decayed).
    data, eta = load("xor"), 0.3
    loss = LOSSES["bce"]
    model = _net(5)
    before = [p.copy() for p in model.parameters()]
    grads = []
    for p in model.parameters():
        g = np.empty_like(p)
        for i in np.ndindex(p.shape):
            old = p[i]
            p[i] = old + 1e-6
            up = _cost(model, data, loss, lam)
            p[i] = old - 1e-6
            down = _cost(model, data, loss, lam)
            p[i] = old
            g[i] = (up - down) / 2e-6
        grads.append(g)
    sgd_epoch_one(model, data, loss, DELTA_RULES["chain"], eta, 4, np.random.default_rng(0), l2=lam)
    for p, q, g in zip(model.parameters(), before, grads):
        np.testing.assert_allclose((q - p) / eta, g, rtol=1e-6, atol=1e-8)


def test_the_logged_cost_includes_the_l2_term():
    data, loss = load("xor"), LOSSES["bce"]
    model = _net(2)
    plain = evaluate_one(model, data, loss, DELTA_RULES["ng"])
    with_l2 = evaluate_one(model, data, loss, DELTA_RULES["ng"], l2=2.0)
    penalty = 2.0 / (2 * 4) * sum(np.sum(w**2) for w in model.weights)
    assert with_l2["train_loss"] == pytest.approx(plain["train_loss"] + penalty, rel=1e-14)
    assert with_l2["test_loss"] == pytest.approx(plain["test_loss"] + penalty, rel=1e-14)
    assert with_l2["grad_cosine"] != plain["grad_cosine"]  # the decay enters both directions: the angle moves
