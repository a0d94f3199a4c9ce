"""The network and the training loop: a hand-worked step, whole-network gradients, outcomes, data."""

from __future__ import annotations

import numpy as np
import pytest
from reference import sgd_epoch_one, train_one

from harness.core.activations import HIDDEN_ACTIVATIONS, OUTPUT_ACTIVATIONS
from harness.core.deltas import DELTA_RULES
from harness.core.losses import LOSSES
from harness.nn.data import load, mnist
from harness.nn.evaluation import accuracy, cosine
from harness.nn.network import MLP


def test_one_hand_worked_sgd_step_on_xor():
    # No hidden layer, identity output, MSE, Ng's rule (exact here): δ = a − y, full batch of the 4 points.
    data = load("xor")  # X = [[0,0],[0,1],[1,0],[1,1]], Y = one-hot of [0,1,1,0] = [[1,0],[0,1],[0,1],[1,0]]
    w = np.array([[0.5, -0.5], [0.25, 0.0]])
    b = np.array([0.0, 0.1])
    model = MLP([w.copy()], [b.copy()], HIDDEN_ACTIVATIONS["sigmoid"], OUTPUT_ACTIVATIONS["identity"])
    # z = XW + b: (0, 0.1), (0.25, 0.1), (0.5, −0.4), (0.75, −0.4); a = z
    # δ = a − y:  (−1, 0.1), (0.25, −0.9), (0.5, −1.4), (−0.25, −0.4)
    # ∂C/∂W = Xᵀδ / 4: row x1 = δ3 + δ4 = (0.25, −1.8), row x2 = δ2 + δ4 = (0, −1.3)
    #        → [[0.0625, −0.45], [0, −0.325]]
    # ∂C/∂b = Σδ / 4 = (−0.5, −2.6) / 4 = (−0.125, −0.65)
    # η = 0.1: W ← W − η ∂C/∂W = [[0.49375, −0.455], [0.25, 0.0325]];  b ← (0.0125, 0.165)
    book = MLP([w.copy()], [b.copy()], HIDDEN_ACTIVATIONS["sigmoid"], OUTPUT_ACTIVATIONS["identity"])
    sgd_epoch_one(model, data, LOSSES["mse"], DELTA_RULES["ng"], lr=0.1, batch_size=4, rng=np.random.default_rng(0))
    book.update(data.x_train, data.y_train, lambda z, a, y: a - y, step=0.1 / 4)  # the reference, by the book
    for net in (model, book):  # the engine (a stack of one) and the reference
        np.testing.assert_allclose(net.weights[0], [[0.49375, -0.455], [0.25, 0.0325]], rtol=0, atol=1e-15)
        np.testing.assert_allclose(net.biases[0], [0.0125, 0.165], rtol=0, atol=1e-15)


@pytest.mark.parametrize("hidden_act", ["sigmoid", "tanh", "relu"])
@pytest.mark.parametrize("loss,output", [("bce", "sigmoid"), ("cce", "softmax"), ("mse", "tanh")])
def test_backprop_with_chain_rule_is_the_gradient_of_the_batch_loss(hidden_act, loss, output):
    rng = np.random.default_rng(7)
    model = MLP.initialise([3, 5, 4, 2], HIDDEN_ACTIVATIONS[hidden_act], OUTPUT_ACTIVATIONS[output], rng)
    x = rng.normal(0, 1, (6, 3))
    y = np.eye(2)[rng.integers(0, 2, 6)]
    lo = LOSSES[loss]
    cache, a = model.forward(x)
    delta = DELTA_RULES["chain"].delta(lo, model.output, cache.z_out, a, y)
    grads = model.backward(cache, delta)
    analytic = [g / len(x) for g in [*grads[0], *grads[1]]]  # backward sums over the batch
    h = 1e-6
    for p, g in zip(model.parameters(), analytic):
        numeric = np.empty_like(p)
        for i in np.ndindex(p.shape):
            old = p[i]
            p[i] = old + h
            up = lo.mean(model.predict(x), y)
            p[i] = old - h
            down = lo.mean(model.predict(x), y)
            p[i] = old
            numeric[i] = (up - down) / (2 * h)
        np.testing.assert_allclose(g, numeric, rtol=1e-5, atol=1e-8)


def run(loss="bce", act="sigmoid", rule="ng", seed=0, epochs=200, lr=2.0, dataset="xor", hidden=(4,), bs=4):
    data = load(dataset)
    model = MLP.initialise(
        [data.n_inputs, *hidden, data.n_outputs],
        HIDDEN_ACTIVATIONS["sigmoid"],
        OUTPUT_ACTIVATIONS[act],
        np.random.default_rng(seed),
    )
    return train_one(
        model,
        data,
        LOSSES[loss],
        DELTA_RULES[rule],
        epochs=epochs,
        lr=lr,
        batch_size=bs,
        rng=np.random.default_rng([seed, 1]),
    )


def test_same_seed_same_numbers_and_other_seed_other_numbers():
    a, b, c = run(seed=3), run(seed=3), run(seed=4)
    assert a.history == b.history
    assert a.history[-1]["train_loss"] != c.history[-1]["train_loss"]


def test_history_has_initial_epoch_and_every_epoch():
    r = run(epochs=25)
    assert r.outcome == "completed" and r.epochs_run == 25
    assert len(r.history) == 26
    assert set(r.history[0]) == {
        "train_loss", "train_accuracy", "test_loss", "test_accuracy", "grad_cosine", "delta_cosine"
    }  # fmt: skip


def test_natural_pairing_solves_xor_with_the_defaults_for_most_seeds(compose_cfg):
    cfg = compose_cfg()
    solved = [
        run(
            seed=s, epochs=cfg.train.epochs, lr=cfg.train.lr, hidden=tuple(cfg.model.hidden), bs=cfg.train.batch_size
        ).final["train_accuracy"]
        == 1.0
        for s in range(5)
    ]
    assert sum(solved) >= 4


def test_cosines_are_one_for_exact_rules_and_below_for_mismatched():
    chain = run(rule="chain", epochs=5).history
    assert all(h["grad_cosine"] == 1.0 and h["delta_cosine"] == pytest.approx(1.0, abs=1e-12) for h in chain)
    # Ng's a − y with CCE on sigmoid ignores the y = 0 outputs' gradient (which is 0): far from it at the
    # output, and in parameter space the step even points uphill on some epochs while the output δ still
    # agrees in sign with the true one (cos > 0): the cross terms between samples (tests/test_science.py).
    h = run(loss="cce", act="sigmoid", rule="ng", epochs=5).history
    assert all(0 < e["delta_cosine"] < 0.8 for e in h)
    assert any(e["grad_cosine"] < 0 for e in h)
    # with MSE it is off by the factor σ′(z), which varies between samples at the start
    first = run(loss="mse", act="sigmoid", rule="ng", epochs=1).history[0]
    assert first["delta_cosine"] < 0.99 and first["grad_cosine"] < 0.99


def test_divergence_is_a_result_not_a_crash():
    r = run(loss="mse", act="identity", rule="ng", lr=1e6, epochs=50)
    assert r.outcome == "diverged"
    assert r.epochs_run < 50


@pytest.mark.parametrize("rule", ["ng", "nielsen", "chain"])
def test_an_undefined_loss_is_a_condition_of_an_epoch_not_a_stop(rule):
    # tanh outputs in (−1, 1): BCE's log of a ≤ 0 is undefined whenever a target-1 output is ≤ 0. Training
    # goes on (ng and nielsen never read the loss; chain reads only its gradient formula); those epochs log
    # the loss as NaN, the accuracy and the cosines as usual, and are counted.
    r = run(loss="bce", act="tanh", rule=rule, epochs=50)
    assert r.epochs_run == 50 and len(r.history) == 51 and r.outcome in ("undefined", "completed")
    nan = [np.isnan(h["train_loss"]) for h in r.history]
    assert r.undefined_epochs == sum(nan) >= 1  # epoch 0 already: some target-1 output starts ≤ 0
    assert r.outcome == ("undefined" if nan[-1] else "completed")
    assert all(0 <= h["train_accuracy"] <= 1 and np.isfinite(h["delta_cosine"]) for h in r.history)


def test_mnist_is_the_real_stratified_subset():
    d = mnist()
    assert d.x_train.shape == (4500, 784) and d.x_test.shape == (500, 784)
    assert d.x_train.min() == 0.0 and d.x_train.max() == 1.0
    np.testing.assert_array_equal(d.y_test.sum(axis=0), np.full(10, 50))
    np.testing.assert_array_equal(d.y_train.sum(axis=0), np.full(10, 450))
    # fixed split: no image in both sets, same split on every call
    assert not (set(map(bytes, d.x_test[:50])) & set(map(bytes, d.x_train)))
    mnist.cache_clear()
    np.testing.assert_array_equal(mnist().x_test, d.x_test)


def test_the_cached_mnist_arrays_are_read_only():
    d = load("mnist")
    assert load("mnist") is d  # cached: every job in a process shares these arrays
    for arr in (d.x_train, d.y_train, d.x_test, d.y_test):
        assert not arr.flags.writeable
        with pytest.raises(ValueError, match="read-only"):
            arr[0, 0] = 1.0


def test_mnist_default_reaches_088(compose_cfg):
    cfg = compose_cfg("dataset=mnist", "loss=cce", "activation=softmax", "delta=ng")
    r = run(
        "cce",
        "softmax",
        "ng",
        epochs=cfg.train.epochs,
        lr=cfg.train.lr,
        dataset="mnist",
        hidden=tuple(cfg.model.hidden),
        bs=cfg.train.batch_size,
    )
    assert r.final["test_accuracy"] >= 0.88


def test_accuracy_and_cosine_helpers():
    assert accuracy(np.array([[0.9, 0.1], [0.2, 0.8]]), np.array([[1.0, 0.0], [1.0, 0.0]])) == 0.5
    assert accuracy(np.array([[0.7], [0.2]]), np.array([[1.0], [1.0]])) == 0.5
    assert cosine(np.array([[1.0, 0.0]]), np.array([[0.0, 2.0]]))[0] == 0.0
    assert cosine(np.array([[1.0, 1.0]]), np.array([[2.0, 2.0]]))[0] == pytest.approx(1.0)
    assert list(cosine(np.zeros((2, 3)), np.array([[0.0, 0, 0], [1, 0, 0]]))) == [1.0, 0.0]  # both zero / one zero


def test_init_schemes_bias_free_and_summed_steps():
    sig = HIDDEN_ACTIVATIONS["sigmoid"]
    rng = np.random.default_rng(0)
    const = MLP.initialise([1, 1], sig, OUTPUT_ACTIVATIONS["sigmoid"], rng, scheme="constant", constant=(0.6, 0.9))
    assert const.weights[0][0, 0] == 0.6 and const.biases[0][0] == 0.9
    uni = MLP.initialise([3, 4, 1], sig, OUTPUT_ACTIVATIONS["sigmoid"], rng, scheme="uniform", bias=False)
    assert uni.biases == [] and len(uni.parameters()) == 2
    assert all(np.all((w >= -1) & (w < 1)) for w in uni.weights)
    # one summed step on xor1, by hand: no hidden layer, identity output, MSE, all weights 0, no bias →
    # a = 0, δ = a − y = −y = (0, −1, −1, 0); ∂C/∂W (summed) = Xᵀδ = (−1, −1, −2) for columns x1, x2, 1;
    # η = 0.5, reduction=sum: W ← 0 − 0.5 · (−1, −1, −2) = (0.5, 0.5, 1.0)
    data = load("xor1")
    net = MLP.initialise([3, 1], sig, OUTPUT_ACTIVATIONS["identity"], rng, scheme="constant", bias=False)
    sgd_epoch_one(net, data, LOSSES["mse"], DELTA_RULES["ng"], 0.5, 4, np.random.default_rng(0), reduction="sum")
    np.testing.assert_allclose(net.weights[0][:, 0], [0.5, 0.5, 1.0], rtol=0, atol=1e-15)


def test_eval_every_logs_first_every_kth_and_last_epoch():
    data = load("xor")
    model = MLP.initialise(
        [2, 4, 2], HIDDEN_ACTIVATIONS["sigmoid"], OUTPUT_ACTIVATIONS["sigmoid"], np.random.default_rng(0)
    )
    seen = []
    r = train_one(
        model,
        data,
        LOSSES["bce"],
        DELTA_RULES["ng"],
        epochs=23,
        lr=1.0,
        batch_size=4,
        rng=np.random.default_rng(1),
        eval_every=10,
        on_epoch=lambda r, e, m: seen.append(e),
    )
    assert seen == r.epochs == [0, 10, 20, 23]
