"""Issue 11: the matching loss, ``grad_cosine`` in parameter space, and an undefined loss as a condition of an
epoch. Each against an independent reference: central differences in float64 (of the loss in z written from
the potential F, of the batch loss in θ) and a network small enough to work by hand."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from mlflow import MlflowClient
from reference import evaluate_one, reference_metrics, train_one
from scipy.special import logsumexp

from harness import names
from harness.app import run_job
from harness.core.activations import HIDDEN_ACTIVATIONS, OUTPUT_ACTIVATIONS
from harness.core.deltas import DELTA_RULES, is_exact, pairing
from harness.core.gradcheck import table
from harness.core.losses import LOSSES
from harness.nn.data import Dataset, load
from harness.nn.network import MLP

H = 1e-6
ACTIVATIONS = OUTPUT_ACTIVATIONS.names()

# The potential F of each output activation f = ∇F and its convex conjugate F*, written in z and y directly
# (not through the loss module's inverse link): the matching loss is F(z) − y·z + F*(y).
POTENTIAL = {
    "sigmoid": lambda z: np.logaddexp(0.0, z),  # softplus
    "softmax": lambda z: logsumexp(z, axis=-1, keepdims=True) / z.shape[-1],  # summed over k below: lse once
    "identity": lambda z: 0.5 * z * z,
    "tanh": lambda z: np.logaddexp(z, -z) - np.log(2.0),  # log cosh z
}


def conjugate(activation: str, y: np.ndarray) -> np.ndarray:
    """F*(y) per output (summed over k by the caller), with 0 · log 0 = 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        xlx = lambda x: np.where(x == 0, 0.0, x * np.log(np.where(x == 0, 1.0, x)))  # noqa: E731
        return {
            "sigmoid": xlx(y) + xlx(1 - y),
            "softmax": xlx(y),
            "identity": 0.5 * y * y,
            "tanh": 0.5 * (xlx(1 + y) + xlx(1 - y)),
        }[activation]


def matching_in_z(activation: str, z: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.sum(POTENTIAL[activation](z) - y * z + conjugate(activation, y), axis=-1)


def targets(activation: str, rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    """Soft targets inside f's range plus the boundary ones (0/1, ±1 for tanh, one-hot for softmax)."""
    if activation == "softmax":
        y = rng.dirichlet(np.ones(k), n)
        y[: n // 2] = np.eye(k)[rng.integers(0, k, n // 2)]
        return y
    low = -1.0 if activation == "tanh" else 0.0
    y = rng.uniform(low, 1.0, (n, k))
    y[: n // 2] = rng.choice([low, 0.0, 1.0], (n // 2, k))
    return y


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_matching_loss_value_is_the_potential_form_and_grad_matches_central_differences(activation):
    act = OUTPUT_ACTIVATIONS[activation]
    lo = LOSSES["matching"].for_activation(act)
    rng = np.random.default_rng(11)
    z = rng.normal(0.0, 1.5, (40, 3))
    y = targets(activation, rng, 40, 3)
    a = act.value(z)
    assert lo.defined(a, y)
    # value(a, y) through the inverse link equals F(z) − y·z + F*(y) computed from z
    np.testing.assert_allclose(lo.value(a, y), matching_in_z(activation, z, y), rtol=1e-10, atol=1e-12)
    # grad = ∂L/∂a against central differences in a (softmax: L is a function of a on all of R^k)
    numeric = np.empty_like(a)
    for j in range(a.shape[1]):
        e = np.zeros_like(a)
        e[:, j] = H
        numeric[:, j] = (lo.value(a + e, y) - lo.value(a - e, y)) / (2 * H)
    np.testing.assert_allclose(lo.grad(a, y), numeric, rtol=1e-6, atol=1e-8)
    # ∂L/∂z = a − y: the chain rule through f, and central differences of the z-form
    dz = np.empty_like(z)
    for j in range(z.shape[1]):
        e = np.zeros_like(z)
        e[:, j] = H
        dz[:, j] = (matching_in_z(activation, z + e, y) - matching_in_z(activation, z - e, y)) / (2 * H)
    np.testing.assert_allclose(dz, a - y, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(act.vjp(z, lo.grad(a, y)), a - y, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_matching_loss_is_nonnegative_and_zero_at_a_reachable_target(activation):
    act = OUTPUT_ACTIVATIONS[activation]
    lo = LOSSES["matching"].for_activation(act)
    rng = np.random.default_rng(12)
    z = rng.normal(0.0, 2.0, (200, 4))
    y = targets(activation, rng, 200, 4)
    assert np.all(lo.value(act.value(z), y) >= -1e-12)
    z_target = rng.normal(0.0, 1.0, (10, 4))
    reachable = act.value(z_target)  # y = f(z′): the minimum 0 is attained at a = y, where ∂L/∂z = a − y = 0
    np.testing.assert_allclose(lo.value(reachable, reachable), 0.0, atol=1e-12)
    # (∂L/∂a itself is 0 there too, except for softmax: −y/a = −1, normal to the simplex, which J_fᵀ removes)
    np.testing.assert_allclose(act.vjp(z_target, lo.grad(reachable, reachable)), 0.0, atol=1e-12)


def test_matching_loss_by_hand_and_its_named_special_cases():
    m = LOSSES["matching"]
    # tanh, y = 0: L = −½ log(1 − a²); at a = 0.6: −½ log 0.64 = 0.2231435513; ∂L/∂a = a/(1 − a²) = 0.9375
    tanh = m.for_activation(OUTPUT_ACTIVATIONS["tanh"])
    assert tanh.value(np.array([[0.6]]), np.array([[0.0]]))[0] == pytest.approx(-0.5 * np.log(0.64), rel=1e-12)
    assert tanh.grad(np.array([[0.6]]), np.array([[0.0]]))[0, 0] == pytest.approx(0.9375, rel=1e-12)
    # tanh, y = 1: L = log 2 − log(1 + a) (F*(1) = log 2), and at a target on the boundary the other log is 0·log
    assert tanh.value(np.array([[0.6]]), np.array([[1.0]]))[0] == pytest.approx(np.log(2 / 1.6), rel=1e-12)
    # with one-hot targets the entropy terms vanish: sigmoid, softmax, identity give bce, cce, mse exactly
    rng = np.random.default_rng(13)
    y = np.eye(3)[rng.integers(0, 3, 8)]
    for act, fixed in [("sigmoid", "bce"), ("softmax", "cce"), ("identity", "mse")]:
        a = OUTPUT_ACTIVATIONS[act].value(rng.normal(0, 1, (8, 3)))
        bound = m.for_activation(OUTPUT_ACTIVATIONS[act])
        np.testing.assert_allclose(bound.value(a, y), LOSSES[fixed].value(a, y), rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(bound.grad(a, y), LOSSES[fixed].grad(a, y), rtol=1e-12)
    assert repr(m.for_activation(OUTPUT_ACTIVATIONS["tanh"])) == "MatchingLoss(name='matching', activation='tanh')"
    assert LOSSES["bce"].for_activation(OUTPUT_ACTIVATIONS["tanh"]) is LOSSES["bce"]


def test_unbound_matching_loss_says_how_to_bind_it():
    with pytest.raises(TypeError, match="depends on the output activation"):
        LOSSES["matching"].value(np.zeros((1, 2)), np.zeros((1, 2)))
    with pytest.raises(KeyError, match="no form for activation 'relu'"):
        LOSSES["matching"].for_activation(HIDDEN_ACTIVATIONS["relu"])


def test_ng_is_exact_on_the_matching_loss_of_every_activation():
    assert all(is_exact("ng", "matching", a) and pairing("ng", "matching", a) == "exact" for a in ACTIVATIONS)
    assert pairing("nielsen", "matching", "tanh") == "mismatched"  # f′ once too often
    rows = {(r.loss, r.activation, r.delta): r for r in table()}
    assert len(rows) == 48
    assert all(rows[("matching", a, "ng")].verdict == "exact" for a in ACTIVATIONS)
    assert all(r.verdict == r.pairing for r in rows.values())  # finite differences agree with rule-vs-chain


# --- grad_cosine: the rule's parameter update against the true ∂C/∂θ ---------------------------------------


def fd_grad(model: MLP, objective) -> np.ndarray:
    """∂objective/∂θ by central differences over every weight and bias, flattened in parameters() order."""
    out = []
    for p in model.parameters():
        g = np.empty_like(p)
        for i in np.ndindex(p.shape):
            old = p[i]
            p[i] = old + H
            up = objective()
            p[i] = old - H
            down = objective()
            p[i] = old
            g[i] = (up - down) / (2 * H)
        out.append(g.ravel())
    return np.concatenate(out)


def oracle_cosines(model: MLP, data: Dataset, loss: str, rule: str, l2: float = 0.0) -> tuple[float, float]:
    """(grad_cosine, delta_cosine) without MLP.backward: the true gradient is the finite-difference gradient
    of C(θ) = mean loss + λ/(2n)·Σw²; the rule's update is the finite-difference gradient of the surrogate
    S(θ) = (1/n) Σₙ δₙ · zᴸₙ(θ) + λ/(2n)·Σw² with the rule's δ held fixed at the current θ (backprop of δ is
    exactly ∂/∂θ of the first term)."""
    x, y = data.x_train, data.y_train
    lo = LOSSES[loss].for_activation(model.output)
    cache, a = model.forward(x)
    delta = DELTA_RULES[rule].delta(lo, model.output, cache.z_out, a, y)
    true_delta = DELTA_RULES["chain"].delta(lo, model.output, cache.z_out, a, y)

    def penalty() -> float:
        return l2 / (2 * len(x)) * sum(np.sum(w**2) for w in model.weights)

    g_true = fd_grad(model, lambda: lo.mean(model.predict(x), y) + penalty())
    g_rule = fd_grad(model, lambda: np.sum(delta * model.forward(x)[0].z_out) / len(x) + penalty())

    def cos(u, v):
        return float(u.ravel() @ v.ravel() / (np.linalg.norm(u) * np.linalg.norm(v)))

    return cos(g_rule, g_true), cos(delta, true_delta)


def small_problem(output: str, hidden: str, seed: int) -> tuple[MLP, Dataset]:
    rng = np.random.default_rng(seed)
    model = MLP.initialise([3, 4, 3, 2], HIDDEN_ACTIVATIONS[hidden], OUTPUT_ACTIVATIONS[output], rng)
    x = rng.normal(0, 1, (7, 3))
    y = np.eye(2)[rng.integers(0, 2, 7)]
    return model, Dataset("tiny", x, y, x, y, "")


CASES = [
    ("cce", "sigmoid", "ng", "sigmoid"),
    ("mse", "sigmoid", "ng", "tanh"),
    ("bce", "softmax", "nielsen", "relu"),
    ("mse", "softmax", "ng", "sigmoid"),
    ("matching", "tanh", "nielsen", "tanh"),
    ("bce", "sigmoid", "nielsen", "sigmoid"),
    ("matching", "tanh", "ng", "relu"),  # exact: cosine 1
]


@pytest.mark.parametrize("loss,output,rule,hidden", CASES)
@pytest.mark.parametrize("seed,l2", [(0, 0.0), (1, 0.0), (2, 0.8)])
def test_grad_cosine_against_finite_differences_of_the_loss(loss, output, rule, hidden, seed, l2):
    model, data = small_problem(output, hidden, seed)
    got = evaluate_one(model, data, LOSSES[loss], DELTA_RULES[rule], l2=l2)
    grad_cos, delta_cos = oracle_cosines(model, data, loss, rule, l2)
    assert got[names.GRAD_COSINE] == pytest.approx(grad_cos, abs=1e-6)
    assert got[names.DELTA_COSINE] == pytest.approx(delta_cos, abs=1e-9)


def test_output_delta_agrees_in_sign_while_the_parameter_update_points_uphill():
    # By hand: one tanh unit, no hidden layer, no bias, weight w = 1; inputs x₁ = 1, x₂ = −2, so z = (1, −2),
    # a = (tanh 1, tanh(−2)) = (0.761594, −0.964028), tanh′ = 1 − a² = (0.419974, 0.070651). MSE with targets
    # y = a − ½, so Ng's δ = a − y = (½, ½) and the true δ* = (a − y) ⊙ tanh′ = (0.209987, 0.035325).
    #   ⟨δ, δ*⟩ = ½ (0.209987 + 0.035325) > 0:  delta_cosine = (t₁ + t₂) / (√2 √(t₁² + t₂²)) = 0.814614
    #   g_ng  = Σ xₙ δₙ  = ½ − 2·½              = −0.5
    #   g*    = Σ xₙ δ*ₙ = 0.209987 − 2·0.035325 = 0.139336 > 0
    # so ⟨g_ng, g*⟩ = Σₙₘ xₙxₘ δₙδ*ₘ < 0: the cross term x₁x₂ < 0 wins. Ng's step −η g_ng *raises* the
    # loss although its output error agrees with the true one: grad_cosine = −1 (one parameter).
    model = MLP([np.array([[1.0]])], None, HIDDEN_ACTIVATIONS["sigmoid"], OUTPUT_ACTIVATIONS["tanh"])
    x = np.array([[1.0], [-2.0]])
    a = np.tanh(x)
    data = Dataset("hand", x, a - 0.5, x, a - 0.5, "")
    t = 1 - np.tanh(np.array([1.0, -2.0])) ** 2
    got = evaluate_one(model, data, LOSSES["mse"], DELTA_RULES["ng"])
    assert got[names.DELTA_COSINE] == pytest.approx((t[0] + t[1]) / (np.sqrt(2) * np.hypot(*t)), rel=1e-12)
    assert got[names.DELTA_COSINE] == pytest.approx(0.814614, abs=1e-6)
    assert got[names.GRAD_COSINE] == -1.0
    # and the loss indeed goes up after Ng's step (η = 0.1; the true gradient step would lower it)
    before = got[names.TRAIN_LOSS]
    train_one(model, data, LOSSES["mse"], DELTA_RULES["ng"], epochs=1, lr=0.1, batch_size=2,
              rng=np.random.default_rng(0))  # fmt: skip
    assert evaluate_one(model, data, LOSSES["mse"], DELTA_RULES["ng"])[names.TRAIN_LOSS] > before


# --- an undefined loss is a condition of an epoch, not a stop ------------------------------------------------


def test_undefined_epochs_are_logged_counted_and_tagged(compose_cfg, store):
    epochs = 60
    cfg = compose_cfg(f"tracking.uri={store}", "loss=bce", "activation=tanh", "delta=ng", f"train.epochs={epochs}")
    result = run_job(cfg)
    c = MlflowClient(store)
    run = c.get_run(result["run_id"])
    assert run.info.status == "FINISHED"
    tags = run.data.tags
    assert tags[names.EPOCHS_RUN_TAG] == str(epochs)  # trained to the end
    losses = [m.value for m in sorted(c.get_metric_history(run.info.run_id, names.TRAIN_LOSS), key=lambda m: m.step)]
    assert len(losses) == epochs + 1
    undefined = int(np.isnan(losses).sum())
    assert undefined >= 1 and tags[names.UNDEFINED_EPOCHS_TAG] == str(undefined)
    assert tags[names.OUTCOME_TAG] == ("undefined" if np.isnan(losses[-1]) else "completed")
    accuracy = [m.value for m in c.get_metric_history(run.info.run_id, names.TEST_ACCURACY)]
    cosines = [m.value for m in c.get_metric_history(run.info.run_id, names.DELTA_COSINE)]
    assert len(accuracy) == len(cosines) == epochs + 1 and np.isfinite(accuracy + cosines).all()


def test_undefined_epochs_count_only_evaluated_epochs():
    data = load("xor")
    model = MLP.initialise([2, 4, 2], HIDDEN_ACTIVATIONS["sigmoid"], OUTPUT_ACTIVATIONS["identity"],
                            np.random.default_rng(0))  # fmt: skip
    r = train_one(model, data, LOSSES["bce"], DELTA_RULES["ng"], epochs=40, lr=2.0, batch_size=4,
                  rng=np.random.default_rng(1), eval_every=10)  # fmt: skip
    assert r.epochs == [0, 10, 20, 30, 40] and r.epochs_run == 40
    assert r.undefined_epochs == sum(np.isnan(h["train_loss"]) for h in r.history) <= 5


@pytest.mark.parametrize("loss,output", [("bce", "identity"), ("cce", "identity"), ("mse", "identity")])
def test_a_huge_step_diverges_and_stops(loss, output):
    data = load("xor")
    model = MLP.initialise([2, 4, 2], HIDDEN_ACTIVATIONS["sigmoid"], OUTPUT_ACTIVATIONS[output],
                            np.random.default_rng(0))  # fmt: skip
    r = train_one(model, data, LOSSES[loss], DELTA_RULES["ng"], epochs=400, lr=1e8, batch_size=4,
                  rng=np.random.default_rng(1))  # fmt: skip
    assert r.outcome == "diverged" and r.epochs_run < 400 and r.epochs[-1] == r.epochs_run


class _NanRule:
    """A rule whose δ is non-finite (stands in for a formula that blows up): diverged, with finite weights."""

    name = "nan"

    def delta(self, loss, act, z, a, y):
        return np.full_like(a, np.nan)


def test_a_non_finite_rule_delta_is_diverged():
    data = load("xor")
    model = MLP.initialise([2, 4, 2], HIDDEN_ACTIVATIONS["sigmoid"], OUTPUT_ACTIVATIONS["sigmoid"],
                            np.random.default_rng(0))  # fmt: skip
    assert model.is_finite()
    bce = LOSSES["bce"].for_activation(model.output)
    assert reference_metrics(model, data, bce, _NanRule())[1] == "diverged"
    assert reference_metrics(model, data, bce, DELTA_RULES["ng"])[1] == "completed"
    r = train_one(model, data, LOSSES["bce"], _NanRule(), epochs=5, lr=1.0, batch_size=4,
                  rng=np.random.default_rng(1))  # fmt: skip
    assert r.outcome == "diverged" and r.epochs == [0] and np.isnan(r.final[names.GRAD_COSINE])


@pytest.mark.parametrize("loss,output,rule", list(itertools.product(["bce", "cce"], ["tanh", "identity"], ["ng"])))
def test_log_losses_on_unbounded_or_signed_outputs_now_train(loss, output, rule):
    # The "third of every grid" that used to stop at epoch 0: every one trains to the end.
    data = load("xor")
    model = MLP.initialise([2, 4, 2], HIDDEN_ACTIVATIONS["sigmoid"], OUTPUT_ACTIVATIONS[output],
                            np.random.default_rng(2))  # fmt: skip
    r = train_one(model, data, LOSSES[loss], DELTA_RULES[rule], epochs=100, lr=1.0, batch_size=4,
                  rng=np.random.default_rng(3))  # fmt: skip
    assert r.epochs_run == 100 and r.outcome in ("undefined", "completed")
