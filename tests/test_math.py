"""Losses, activations and delta rules against float64 central differences (an independent reference)."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest

import harness
from harness.core.activations import HIDDEN_ACTIVATIONS, OUTPUT_ACTIVATIONS
from harness.core.deltas import DELTA_RULES, is_exact, output_delta, pairing
from harness.core.losses import LOSSES

H = 1e-6
RTOL, ATOL = 1e-6, 1e-8
ALL_ACTIVATIONS = {**{n: OUTPUT_ACTIVATIONS[n] for n in OUTPUT_ACTIVATIONS}, "relu": HIDDEN_ACTIVATIONS["relu"]}


def central_jacobian_vjp(f, z: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Σ_i g_i ∂f_i/∂z_j per sample, by central differences of the scalar g·f(z)."""
    out = np.empty_like(z)
    for j in range(z.shape[1]):
        e = np.zeros_like(z)
        e[:, j] = H
        out[:, j] = (np.sum(g * f(z + e), axis=1) - np.sum(g * f(z - e), axis=1)) / (2 * H)
    return out


def domain_inputs(loss: str, rng: np.random.Generator, n: int = 20, k: int = 4):
    """a strictly inside (0, 1) (every loss's domain) and soft targets y in [0, 1]."""
    a = rng.uniform(0.05, 0.95, (n, k))
    y = rng.uniform(0.0, 1.0, (n, k))
    if loss == "cce":
        y /= y.sum(axis=1, keepdims=True)
    return a, y


FIXED_LOSSES = [n for n in LOSSES if n != "matching"]  # the matching loss per activation: tests/test_science.py


@pytest.mark.parametrize("loss", FIXED_LOSSES)
def test_loss_grad_matches_central_differences(loss):
    rng = np.random.default_rng(1)
    a, y = domain_inputs(loss, rng)
    lo = LOSSES[loss]
    numeric = np.empty_like(a)
    for j in range(a.shape[1]):
        e = np.zeros_like(a)
        e[:, j] = H
        numeric[:, j] = (lo.value(a + e, y) - lo.value(a - e, y)) / (2 * H)
    np.testing.assert_allclose(lo.grad(a, y), numeric, rtol=RTOL, atol=ATOL)


def test_loss_values_by_hand():
    a = np.array([[0.8, 0.1]])
    y = np.array([[1.0, 0.0]])
    # bce: −log 0.8 − log 0.9 ; mse: ½(0.2² + 0.1²) ; cce: −log 0.8
    assert LOSSES["bce"].value(a, y)[0] == pytest.approx(-np.log(0.8) - np.log(0.9), rel=1e-12)
    assert LOSSES["mse"].value(a, y)[0] == pytest.approx(0.5 * (0.04 + 0.01), rel=1e-12)
    assert LOSSES["cce"].value(a, y)[0] == pytest.approx(-np.log(0.8), rel=1e-12)


@pytest.mark.parametrize("name", list(ALL_ACTIVATIONS))
def test_vjp_matches_central_differences_with_random_upstream(name):
    rng = np.random.default_rng(2)
    act = ALL_ACTIVATIONS[name]
    z = rng.normal(0, 2, (16, 5))
    if name == "relu":
        z[np.abs(z) < 1e-3] = 0.5  # keep away from the kink
    g = rng.normal(0, 1, z.shape)  # random upstream: a vector of ones would make softmax's side ≈ 0
    np.testing.assert_allclose(act.vjp(z, g), central_jacobian_vjp(act.value, z, g), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("name", [n for n, a in ALL_ACTIVATIONS.items() if a.elementwise])
def test_elementwise_derivative_matches_central_differences(name):
    rng = np.random.default_rng(3)
    act = ALL_ACTIVATIONS[name]
    z = rng.normal(0, 2, (16, 5))
    z[np.abs(z) < 1e-3] = 0.5
    numeric = (act.value(z + H) - act.value(z - H)) / (2 * H)
    np.testing.assert_allclose(act.derivative(z), numeric, rtol=RTOL, atol=ATOL)


def test_softmax_derivative_is_the_jacobian_diagonal():
    rng = np.random.default_rng(4)
    sm = OUTPUT_ACTIVATIONS["softmax"]
    z = rng.normal(0, 1, (6, 4))
    diag = np.empty_like(z)
    for j in range(z.shape[1]):
        e = np.zeros_like(z)
        e[:, j] = H
        diag[:, j] = (sm.value(z + e)[:, j] - sm.value(z - e)[:, j]) / (2 * H)
    np.testing.assert_allclose(sm.derivative(z), diag, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("name", list(ALL_ACTIVATIONS))
def test_activations_are_stable_for_large_inputs(name):
    act = ALL_ACTIVATIONS[name]
    z = np.array([[-1000.0, 0.0, 1000.0], [1000.0, 999.0, -1000.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with np.errstate(over="raise", invalid="raise", divide="raise"):  # underflow to 0 is fine
            values = [act.value(z), act.derivative(z), act.vjp(z, np.ones_like(z))]
    assert all(np.all(np.isfinite(v)) for v in values)
    if name == "sigmoid":
        np.testing.assert_allclose(act.value(z)[0], [0.0, 0.5, 1.0])
    if name == "softmax":
        np.testing.assert_allclose(act.value(z).sum(axis=1), 1.0)


def inputs_in_domain(loss: str, activation: str, seed: int = 5, n: int = 24, k: int = 3):
    rng = np.random.default_rng(seed)
    act = OUTPUT_ACTIVATIONS[activation]
    lo = LOSSES[loss].for_activation(act)
    zs, ys = [], []
    while len(zs) < n:
        z = rng.normal(0, 1, (1, k))
        y = np.eye(k)[rng.integers(0, k, 1)]
        if lo.defined(act.value(z), y):
            zs.append(z[0])
            ys.append(y[0])
    return np.array(zs), np.array(ys)


def numeric_dldz(loss: str, activation: str, z: np.ndarray, y: np.ndarray) -> np.ndarray:
    act = OUTPUT_ACTIVATIONS[activation]
    lo = LOSSES[loss].for_activation(act)
    out = np.empty_like(z)
    for j in range(z.shape[1]):
        e = np.zeros_like(z)
        e[:, j] = H
        out[:, j] = (lo.value(act.value(z + e), y) - lo.value(act.value(z - e), y)) / (2 * H)
    return out


# Ng's a − y is exact on each activation's matching loss: BCE, CCE, MSE for sigmoid, softmax, identity, and
# ``matching`` for all four (log cosh z − y·z + c(y) for tanh).
NATURAL_NG = [("bce", "sigmoid"), ("cce", "softmax"), ("mse", "identity")] + [
    ("matching", a) for a in OUTPUT_ACTIVATIONS
]
NIELSEN_EXACT = [("mse", "sigmoid"), ("mse", "identity"), ("mse", "tanh"), ("matching", "identity")]


@pytest.mark.parametrize("loss,activation", list(itertools.product(LOSSES, OUTPUT_ACTIVATIONS)))
def test_chain_rule_is_the_true_gradient_for_every_pair(loss, activation):
    z, y = inputs_in_domain(loss, activation)
    got = output_delta("chain", loss, activation, z, y)
    np.testing.assert_allclose(got, numeric_dldz(loss, activation, z, y), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("loss,activation", NATURAL_NG)
def test_ng_equals_chain_on_the_natural_pairs(loss, activation):
    z, y = inputs_in_domain(loss, activation)
    np.testing.assert_allclose(
        output_delta("ng", loss, activation, z, y), numeric_dldz(loss, activation, z, y), rtol=1e-5, atol=1e-7
    )


@pytest.mark.parametrize("loss,activation", NIELSEN_EXACT)
def test_nielsen_equals_chain_on_mse_with_elementwise_outputs(loss, activation):
    z, y = inputs_in_domain(loss, activation)
    np.testing.assert_allclose(
        output_delta("nielsen", loss, activation, z, y), numeric_dldz(loss, activation, z, y), rtol=1e-5, atol=1e-7
    )


MISMATCHED = [
    (r, lo, a)
    for r, lo, a in itertools.product(["ng", "nielsen"], LOSSES, OUTPUT_ACTIVATIONS)
    if not ((r == "ng" and (lo, a) in NATURAL_NG) or (r == "nielsen" and (lo, a) in NIELSEN_EXACT))
]


@pytest.mark.parametrize("rule,loss,activation", MISMATCHED)
def test_rules_differ_from_the_gradient_where_theory_says(rule, loss, activation):
    z, y = inputs_in_domain(loss, activation)
    got = output_delta(rule, loss, activation, z, y)
    ref = numeric_dldz(loss, activation, z, y)
    assert np.max(np.abs(got - ref)) > 1e-2
    assert not is_exact(rule, loss, activation)
    assert pairing(rule, loss, activation) == "mismatched"


def test_pairing_table_matches_theory():
    exact = {
        (r, lo, a)
        for r, lo, a in itertools.product(DELTA_RULES, LOSSES, OUTPUT_ACTIVATIONS)
        if pairing(r, lo, a) == "exact"
    }
    theory = (
        {("chain", lo, a) for lo, a in itertools.product(LOSSES, OUTPUT_ACTIVATIONS)}
        | {("ng", lo, a) for lo, a in NATURAL_NG}
        | {("nielsen", lo, a) for lo, a in NIELSEN_EXACT}
    )
    assert exact == theory
    assert len(exact) == 27  # 16 chain + 7 ng + 4 nielsen


def test_output_delta_shape_and_no_batch_averaging():
    z = np.array([[0.0, 0.0], [2.0, -1.0], [0.5, 0.5]])
    y = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    d = harness.output_delta("ng", "bce", "sigmoid", z, y)
    assert d.shape == (3, 2)
    # per-sample a − y, e.g. sample 0: σ(0) − 1 = −0.5, σ(0) − 0 = 0.5 (not divided by n = 3)
    np.testing.assert_allclose(d[0], [-0.5, 0.5])
    np.testing.assert_allclose(d[1], [1 / (1 + np.exp(-2.0)), 1 / (1 + np.exp(1.0)) - 1.0])


def test_unknown_names_say_what_is_allowed():
    with pytest.raises(KeyError, match="unknown loss 'hinge'; allowed: bce, mse, cce, matching"):
        output_delta("ng", "hinge", "sigmoid", np.zeros((1, 2)), np.zeros((1, 2)))


def test_math_modules_import_neither_hydra_nor_mlflow():
    import subprocess
    import sys

    code = (
        "import sys, harness, harness.nn.network, harness.nn.stack, harness.nn.training, harness.nn.data; "
        "import harness.gradcheck; "
        "bad = [m for m in ('hydra', 'mlflow', 'omegaconf') if m in sys.modules]; print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_loss_domain_is_reported():
    y = np.array([[1.0, 0.0]])
    assert LOSSES["bce"].defined(np.array([[0.5, 0.5]]), y)
    assert not LOSSES["bce"].defined(np.array([[-0.2, 0.5]]), y)  # log of a ≤ 0 where y = 1
    assert np.isnan(LOSSES["bce"].value(np.array([[-0.2, 0.5]]), y)[0])
    assert not LOSSES["cce"].defined(np.array([[0.0, 0.5]]), y)
    assert LOSSES["mse"].defined(np.array([[-5.0, 7.0]]), y)
