"""L2 regularisation against float64 central differences and a hand-worked case; the gradient checker's --l2."""

from __future__ import annotations

import numpy as np
import pytest

from harness.core import gradcheck
from harness.core.regularization import l2_gradient, l2_penalty

# The penalty is quadratic: central differences have no truncation error (its third derivative is 0), only
# rounding, ≈ 1e-16 · penalty / H.
H = 1e-4


def test_penalty_by_hand():
    # squares 1 + 4 + 9 + 16 (first matrix) + 1 (second) = 31; λ/(2m) = 0.6 / 6 = 0.1; penalty 3.1
    ws = [np.array([[1.0, 2.0], [3.0, 4.0]]), np.array([[-1.0]])]
    assert l2_penalty(ws, 0.6, 3) == pytest.approx(3.1, rel=1e-15)
    assert l2_penalty(ws[0], 0.6, 3) == pytest.approx(3.0, rel=1e-15)  # one matrix on its own
    assert l2_penalty(ws, 0.0, 3) == 0.0
    # gradient (λ/m) W = 0.2 W
    np.testing.assert_allclose(l2_gradient(ws[0], 0.6, 3), [[0.2, 0.4], [0.6, 0.8]], rtol=1e-15)


@pytest.mark.parametrize("lam,m", [(0.7, 1), (3.0, 5), (1.5, 16), (10.0, 4500)])
def test_gradient_matches_central_differences(lam, m):
    rng = np.random.default_rng(7)
    ws = [rng.normal(0, 1, (4, 3)), rng.normal(0, 1, (2, 5))]
    for k, w in enumerate(ws):
        numeric = np.empty_like(w)
        for idx in np.ndindex(w.shape):
            plus, minus = [x.copy() for x in ws], [x.copy() for x in ws]
            plus[k][idx] += H
            minus[k][idx] -= H
            numeric[idx] = (l2_penalty(plus, lam, m) - l2_penalty(minus, lam, m)) / (2 * H)
        np.testing.assert_allclose(l2_gradient(w, lam, m), numeric, rtol=1e-9, atol=1e-10)


def test_nielsens_weight_decay_step_is_the_gradient_step():
    # network2.update_mini_batch: w <- (1 - η λ / n) w - (η / |B|) Σ_batch ∇C₀ — the same as a gradient step on
    # the batch's mean data gradient plus (λ / n) w, with n the training-set size (not the batch size).
    rng = np.random.default_rng(8)
    w, grad_sum = rng.normal(0, 1, (3, 4)), rng.normal(0, 1, (3, 4))
    eta, lmbda, n, batch = 0.5, 5.0, 50_000, 10
    nielsen = (1 - eta * (lmbda / n)) * w - (eta / batch) * grad_sum
    ours = w - eta * (grad_sum / batch + l2_gradient(w, lmbda, n))
    np.testing.assert_allclose(ours, nielsen, rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("lam,m", [(-1.0, 5), (float("nan"), 5), (float("inf"), 5), (1.0, 0), (1.0, 2.5)])
def test_bad_lambda_or_m_is_refused(lam, m):
    with pytest.raises(ValueError, match="lambda must be a finite number >= 0|m, the number of training samples"):
        l2_penalty([np.ones((2, 2))], lam, m)


# ------------------------------------------------------------------------------------------ gradcheck --l2


def test_l2_check_keeps_every_output_layer_verdict():
    rows = gradcheck.table()
    l2 = gradcheck.l2_table(3.0, rows)
    assert len(l2) == 48
    assert all(r.verdict == r.output_verdict for r in l2)
    chain = [r for r in l2 if r.delta == "chain"]
    assert max(r.rel_error for r in chain) < 1e-8  # the chain rule's gradient of the regularised cost
    mismatched = [r for r in l2 if r.output_verdict == "mismatched"]
    assert len(mismatched) == 48 - 27 and min(r.rel_error for r in mismatched) > 1e-2


def test_l2_problem_is_inside_every_loss_domain_and_lambda_changes_the_gradient():
    from harness.core import assignment

    p = gradcheck.l2_problem()
    for loss, act in [("bce", "identity"), ("bce", "tanh"), ("cce", "identity"), ("matching", "tanh")]:
        assert np.isfinite(assignment.cost(p.params, p, 3.0, loss, act))
    _, g0 = assignment.cost_and_gradient(p.params, p, 0.0, "chain", "mse", "tanh")
    _, g3 = assignment.cost_and_gradient(p.params, p, 3.0, "chain", "mse", "tanh")
    thetas = assignment.roll(p.params, p.sizes)
    decay = assignment.unroll([np.hstack([np.zeros((len(t), 1)), 3.0 / 5 * t[:, 1:]]) for t in thetas])
    np.testing.assert_allclose(g3 - g0, decay, rtol=1e-12, atol=1e-15)  # (λ/m) Θ, the bias column untouched


def test_cli_default_table_is_unchanged_and_l2_adds_a_second(capsys):
    assert gradcheck.main([]) == 0
    default = capsys.readouterr().out
    assert default == gradcheck.format_table(gradcheck.table()) + "\n"
    assert gradcheck.main(["--l2", "1.5"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(default)
    assert "Whole network with L2 (lambda = 1.5)" in out
    assert "48 of 48 triples keep their output-layer verdict" in out


@pytest.mark.parametrize("value", ["-1", "nan", "x"])
def test_cli_bad_lambda_exits_2_naming_the_option(value, capsys):
    with pytest.raises(SystemExit) as exc:
        gradcheck.main(["--l2", value])
    assert exc.value.code == 2
    assert f"--l2 takes the L2 strength lambda, a finite number >= 0; got '{value}'" in capsys.readouterr().err
