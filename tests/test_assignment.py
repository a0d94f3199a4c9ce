"""Ng's ex4 checks against an implementation written out here, from the assignment's definitions.

The reference below follows Ng's ``nnCostFunction`` sample by sample in plain Python loops (its own sigmoid,
its own MATLAB-order fills, its own one-hot labels), and takes the exact gradient by its own central
differences; nothing in it calls the module under test.
"""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

from harness import assignment as cli
from harness.core import assignment as A

# ------------------------------------------------------------------------------------------ the reference


def sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def fill_by_columns(values: list[float], rows: int, cols: int) -> list[list[float]]:
    """MATLAB's reshape: values go down the first column, then the second, ..."""
    m = [[0.0] * cols for _ in range(rows)]
    for i, v in enumerate(values):
        m[i % rows][i // rows] = v
    return m


def debug_weights(fan_out: int, fan_in: int) -> list[list[float]]:
    n = fan_out * (1 + fan_in)
    return fill_by_columns([math.sin(i) / 10 for i in range(1, n + 1)], fan_out, 1 + fan_in)


def by_columns(m: list[list[float]]) -> list[float]:
    return [m[r][c] for c in range(len(m[0])) for r in range(len(m))]


def split(params: list[float], sizes: tuple[int, int, int]) -> tuple[list[list[float]], list[list[float]]]:
    n_in, hid, k = sizes
    n1 = hid * (n_in + 1)
    return fill_by_columns(params[:n1], hid, n_in + 1), fill_by_columns(params[n1:], k, hid + 1)


def forward(t1, t2, x):
    a1 = [1.0, *x]
    z2 = [sum(w * a for w, a in zip(row, a1)) for row in t1]
    a2 = [1.0, *(sig(z) for z in z2)]
    z3 = [sum(w * a for w, a in zip(row, a2)) for row in t2]
    return a1, z2, a2, [sig(z) for z in z3]


def ref_cost(params, sizes, X, labels, lam) -> float:
    """J = (1/m) Σ_i Σ_k [−y log a − (1 − y) log(1 − a)] + λ/(2m) Σ Θ² over the non-bias columns."""
    t1, t2 = split(list(params), sizes)
    m, k = len(X), sizes[2]
    J = 0.0
    for x, label in zip(X, labels):
        a3 = forward(t1, t2, x)[3]
        for j in range(k):
            y = 1.0 if j == label - 1 else 0.0
            J += -y * math.log(a3[j]) - (1 - y) * math.log(1 - a3[j])
    reg = sum(w * w for t in (t1, t2) for row in t for w in row[1:])
    return J / m + lam / (2 * m) * reg


def ref_backprop(params, sizes, X, labels, lam, nielsen: bool = False) -> list[float]:
    """Ng's loop: δ3 = a3 − y (times σ′(z3) = a3(1 − a3) for Nielsen's quadratic-cost rule), δ2 = Θ2ᵀδ3 ⊙ σ′(z2),
    Δ accumulated per sample, divided by m, plus (λ/m) Θ off the bias column; unrolled column by column."""
    t1, t2 = split(list(params), sizes)
    m, k = len(X), sizes[2]
    D1 = [[0.0] * len(t1[0]) for _ in t1]
    D2 = [[0.0] * len(t2[0]) for _ in t2]
    for x, label in zip(X, labels):
        a1, z2, a2, a3 = forward(t1, t2, x)
        d3 = [a3[j] - (1.0 if j == label - 1 else 0.0) for j in range(k)]
        if nielsen:
            d3 = [d * a * (1 - a) for d, a in zip(d3, a3)]
        d2 = [sum(t2[j][h + 1] * d3[j] for j in range(k)) * sig(z2[h]) * (1 - sig(z2[h])) for h in range(len(z2))]
        for j in range(k):
            for c in range(len(a2)):
                D2[j][c] += d3[j] * a2[c]
        for h in range(len(d2)):
            for c in range(len(a1)):
                D1[h][c] += d2[h] * a1[c]
    grads = []
    for D, t in ((D1, t1), (D2, t2)):
        grads.append(
            [[D[r][c] / m + (lam / m * t[r][c] if c else 0.0) for c in range(len(t[0]))] for r in range(len(t))]
        )
    return by_columns(grads[0]) + by_columns(grads[1])


def ref_numeric(params, sizes, X, labels, lam, eps: float) -> np.ndarray:
    out = []
    for i in range(len(params)):
        plus, minus = list(params), list(params)
        plus[i] += eps
        minus[i] -= eps
        out.append((ref_cost(plus, sizes, X, labels, lam) - ref_cost(minus, sizes, X, labels, lam)) / (2 * eps))
    return np.array(out)


def ref_check_problem():
    """checkNNGradients: Θ1 = dIW(5, 3), Θ2 = dIW(3, 5), X = dIW(5, 2) (5 × 3), y = 1 + mod(1:5, 3)."""
    params = by_columns(debug_weights(5, 3)) + by_columns(debug_weights(3, 5))
    return params, (3, 5, 3), debug_weights(5, 2), [1 + i % 3 for i in range(1, 6)]


def ref_grader_problem():
    """submit.m: t1 = sin(reshape(1:2:24, 4, 3)), t2 = cos(reshape(1:2:40, 4, 5)),
    Xm = reshape(sin(1:32), 16, 2) / 5, ym = 1 + mod(1:16, 4)."""
    t1 = fill_by_columns([math.sin(v) for v in range(1, 24, 2)], 4, 3)
    t2 = fill_by_columns([math.cos(v) for v in range(1, 40, 2)], 4, 5)
    X = fill_by_columns([math.sin(v) / 5 for v in range(1, 33)], 16, 2)
    return by_columns(t1) + by_columns(t2), (2, 4, 4), X, [1 + i % 4 for i in range(1, 17)]


def rel_diff(a, b) -> float:
    a, b = np.asarray(a), np.asarray(b)
    return float(np.linalg.norm(a - b) / np.linalg.norm(a + b))


# ------------------------------------------------------------------------------------------ the problems


@pytest.mark.parametrize("which", ["check", "grader"])
def test_problems_are_the_assignments(which):
    params, sizes, X, labels = ref_check_problem() if which == "check" else ref_grader_problem()
    p = A.check_problem() if which == "check" else A.grader_problem()
    assert p.sizes == sizes
    np.testing.assert_array_equal(p.params, params)
    np.testing.assert_array_equal(p.X, X)
    np.testing.assert_array_equal(p.labels, labels)
    assert p.X.shape == ((5, 3) if which == "check" else (16, 2))


def test_matlab_order_by_hand():
    # debugInitializeWeights(2, 1): a 2 × 2 matrix filled down the columns: [sin 1, sin 3; sin 2, sin 4] / 10
    np.testing.assert_allclose(A.debug_initialize_weights(2, 1), np.sin([[1, 3], [2, 4]]) / 10, rtol=0, atol=0)
    # checkNNGradients' labels 1 + mod(1:5, 3) = [2 3 1 2 3]; the grader's 1 + mod(1:16, 4) starts 2 3 4 1
    assert list(A.check_problem().labels) == [2, 3, 1, 2, 3]
    assert list(A.grader_problem().labels[:5]) == [2, 3, 4, 1, 2]
    thetas = [np.arange(6.0).reshape(2, 3), np.arange(12.0).reshape(4, 3)]  # Θ1: 2 × (1 + 2), Θ2: 4 × (1 + 2)
    back = A.roll(A.unroll(thetas), (2, 2, 4))
    assert all(np.array_equal(a, b) for a, b in zip(back, thetas))
    with pytest.raises(ValueError, match="do not fit layer sizes"):
        A.roll(np.zeros(5), (2, 2, 4))


# ------------------------------------------------------------------------------------------ cost and gradient


@pytest.mark.parametrize("which", ["check", "grader"])
@pytest.mark.parametrize("lam", [0.0, 1.5, 3.0])
def test_cost_matches_ngs_formula(which, lam):
    params, sizes, X, labels = ref_check_problem() if which == "check" else ref_grader_problem()
    p = A.check_problem() if which == "check" else A.grader_problem()
    assert A.cost(p.params, p, lam) == pytest.approx(ref_cost(params, sizes, X, labels, lam), rel=1e-13)


@pytest.mark.parametrize("which", ["check", "grader"])
@pytest.mark.parametrize("lam", [0.0, 1.5, 3.0])
@pytest.mark.parametrize("rule", ["ng", "chain"])
def test_exact_rules_give_the_central_difference_gradient(which, lam, rule):
    params, sizes, X, labels = ref_check_problem() if which == "check" else ref_grader_problem()
    p = A.check_problem() if which == "check" else A.grader_problem()
    J, grad = A.cost_and_gradient(p.params, p, lam, rule)
    assert J == pytest.approx(ref_cost(params, sizes, X, labels, lam), rel=1e-13)
    np.testing.assert_allclose(grad, ref_numeric(params, sizes, X, labels, lam, 1e-6), rtol=0, atol=1e-9)
    np.testing.assert_allclose(grad, ref_backprop(params, sizes, X, labels, lam), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("lam", [0.0, 1.5])
def test_nielsens_rule_is_the_quadratic_cost_delta_and_not_the_gradient(lam):
    params, sizes, X, labels = ref_grader_problem()
    p = A.grader_problem()
    _, grad = A.cost_and_gradient(p.params, p, lam, "nielsen")
    np.testing.assert_allclose(grad, ref_backprop(params, sizes, X, labels, lam, nielsen=True), rtol=1e-12, atol=1e-15)
    assert np.max(np.abs(grad - ref_numeric(params, sizes, X, labels, lam, 1e-6))) > 0.1


def test_hand_worked_zero_weights():
    # All weights 0 on the grader's data (m = 16, 4 classes, each label 4 times): every hidden unit and output is
    # σ(0) = 1/2, so J = Σ_k [−y log ½ − (1 − y) log ½] = 4 log 2 = 2.7725887 per sample, and the penalty is 0.
    # Ng: δ3 = ½ − y; ∂J/∂Θ2 = mean(δ3 ⊗ [1, ½, ½, ½, ½]): bias column ½ − ¼ = 0.25 (y_k = 1 in 4 of 16 samples),
    # the others ½ · 0.25 = 0.125. Θ2's non-bias columns are 0, so δ2 = 0 and ∂J/∂Θ1 = 0.
    # Nielsen: δ3 = (½ − y) σ′(0) = (½ − y) / 4, a quarter of each: 0.0625 and 0.03125.
    p = A.grader_problem()
    zero = A.Problem("zero", p.sizes, np.zeros_like(p.params), p.X, p.labels)
    for rule, bias, other in [("ng", 0.25, 0.125), ("chain", 0.25, 0.125), ("nielsen", 0.0625, 0.03125)]:
        J, grad = A.cost_and_gradient(zero.params, zero, 1.5, rule)
        assert J == pytest.approx(4 * math.log(2), rel=1e-14)
        t1, t2 = A.roll(grad, zero.sizes)
        assert np.all(t1 == 0.0)
        np.testing.assert_allclose(t2[:, 0], bias, rtol=1e-14)
        np.testing.assert_allclose(t2[:, 1:], other, rtol=1e-14)


# ------------------------------------------------------------------------------------------ the checks


@pytest.mark.parametrize("lam", [0.0, 3.0])
def test_gradient_check_against_checknngradients_written_out(lam):
    params, sizes, X, labels = ref_check_problem()
    numgrad = ref_numeric(params, sizes, X, labels, lam, 1e-4)  # computeNumericalGradient's e = 1e-4
    ng_ref = rel_diff(numgrad, ref_backprop(params, sizes, X, labels, lam))
    nielsen_ref = rel_diff(numgrad, ref_backprop(params, sizes, X, labels, lam, nielsen=True))
    assert ng_ref < 1e-9  # the assignment's pass mark, reached by Ng's own loop
    assert A.gradient_check("ng", lam) < 1e-9
    assert A.gradient_check("chain", lam) < 1e-9
    assert nielsen_ref > 0.1
    assert A.gradient_check("nielsen", lam) == pytest.approx(nielsen_ref, rel=1e-6)


def printed(values) -> list[str]:
    return [f"{v:.5f}".replace("-0.00000", "0.00000") for v in values]


def test_grader_parts_follow_the_printed_comparison():
    params, sizes, X, labels = ref_grader_problem()
    verdict = {}
    for lam in (0.0, 1.5):
        exact = printed([ref_cost(params, sizes, X, labels, lam), *ref_numeric(params, sizes, X, labels, lam, 1e-6)])
        p = A.grader_problem()
        for rule in A.RULES:
            J, grad = A.cost_and_gradient(p.params, p, lam, rule)
            verdict[rule, lam] = printed([J, *grad]) == exact
    assert verdict == {("ng", 0.0): True, ("chain", 0.0): True, ("nielsen", 0.0): False,
                       ("ng", 1.5): True, ("chain", 1.5): True, ("nielsen", 1.5): False}  # fmt: skip
    for rule in A.RULES:
        parts = A.grade(rule)
        assert [(p.name, p.points) for p in parts] == list(A.PARTS)
        assert sum(p.points for p in parts) == 100
        assert [p.passed for p in parts[:3]] == [True] * 3  # cost, regularised cost, σ′: no rule involved
        assert (parts[3].passed, parts[4].passed) == (verdict[rule, 0.0], verdict[rule, 1.5])
        assert A.score(parts) == (100 if verdict[rule, 0.0] else 50)


def test_cost_part_values_and_sigmoid_gradient_by_reference():
    params, sizes, X, labels = ref_grader_problem()
    parts = A.grade("nielsen")
    for part, lam in ((parts[0], 0.0), (parts[1], 1.5)):
        assert f"J = {ref_cost(params, sizes, X, labels, lam):.5f} at λ = {lam:g}" in part.detail
    assert not parts[0].depends_on_rule and parts[3].depends_on_rule
    assert "32 of 33 printed numbers" in parts[3].detail  # J prints alike, every gradient entry differs
    # σ′ on submit.m's input reshape(3 sin(1:30), 3, 10), against σ(z)(1 − σ(z)) here
    z = fill_by_columns([3 * math.sin(v) for v in range(1, 31)], 3, 10)
    np.testing.assert_allclose(A.sigmoid_gradient_input(), z, rtol=0, atol=0)
    from harness.core.activations import OUTPUT_ACTIVATIONS

    want = [[sig(v) * (1 - sig(v)) for v in row] for row in z]
    np.testing.assert_allclose(OUTPUT_ACTIVATIONS["sigmoid"].derivative(np.array(z)), want, rtol=1e-13)


def test_rounding_margin_by_hand():
    # 0.123452 prints 0.12345 and would print 0.12346 from 0.123455: 3e-6 away; −0.123452 likewise; 0.1 is 5e-6
    # from both 0.099995 and 0.100005
    assert A.rounding_margin(np.array([0.123452])) == pytest.approx(3e-6, rel=1e-6)
    assert A.rounding_margin(np.array([-0.123452])) == pytest.approx(3e-6, rel=1e-6)
    assert A.rounding_margin(np.array([0.1, 0.123452])) == pytest.approx(3e-6, rel=1e-6)
    assert A.rounding_margin(np.array([0.1])) == pytest.approx(5e-6, rel=1e-6)


def test_unknown_rule_names_the_allowed_ones():
    with pytest.raises(KeyError, match="unknown delta 'hinton'; allowed: ng, nielsen, chain"):
        A.grade("hinton")


# ------------------------------------------------------------------------------------------ the answer


def test_answer_and_scores():
    results = [A.result(r) for r in A.RULES]
    text = A.answer(results)
    assert text.startswith("**Answer.** No: with Nielsen's quadratic-cost rule δ = (a − y) ⊙ σ′(z)")
    assert "`ng` 100, `nielsen` 50, `chain` 100" in text
    total = A.rows(results)[-1]
    assert total == {"part": "Total", "points": 100, "ng": 100, "nielsen": 50, "chain": 100}
    nielsen = results[1]
    assert nielsen.grader_error[0.0] > 0.1 and nielsen.l2_shift < 1e-9  # L2 leaves the rule's error as it was


def test_cli_prints_the_answer(capsys):
    assert cli.main(["--rules", "ng,nielsen"]) == 0
    out = capsys.readouterr().out
    assert "`ng` 100, `nielsen` 50." in out
    assert "| Total | 100 | 100 | 50 |" in out
    assert "Regularized gradient (10): FAIL" in out


def test_cli_bad_rules_exit_2_naming_the_option(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--rules", "ng,foo"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--rules takes a comma-separated list of delta rules from ng, nielsen, chain; got 'ng,foo'" in err


def test_module_runs_without_hydra_or_mlflow():
    run = subprocess.run([sys.executable, "-m", "harness.assignment"], capture_output=True, text=True, check=True)
    assert run.stdout.startswith("## Will Nielsen's equations score full marks on Ng's assignment")
    code = "import sys, harness.assignment; print(sorted(m for m in ('hydra', 'mlflow', 'pandas') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_report_section():
    from harness.report import assignment as section

    answer = section.section()
    assert answer.text == A.answer([A.result(r) for r in A.RULES])
    scores, numbers = answer.tables
    assert list(scores.columns) == ["part", "points", "ng", "nielsen", "chain"]
    assert scores.iloc[-1].to_dict() == {"part": "Total", "points": 100, "ng": 100, "nielsen": 50, "chain": 100}
    assert list(numbers["rule"]) == ["ng", "nielsen", "chain"]
    assert float(numbers.set_index("rule").loc["nielsen", "checkNNGradients λ = 0"]) > 0.1
