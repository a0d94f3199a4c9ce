r"""Ng's Coursera ML exercise 4 (neural network backpropagation), graded for any δ rule.

The question: will Nielsen's equations score full marks on Ng's assignment? The assignment is a network of
sigmoid layers (hidden and output), the cross-entropy cost with L2 regularisation, and Ng's ``nnCostFunction``

.. math:: J(\Theta) = \frac1m \sum_{i=1}^m \sum_{k=1}^K \big[-y_k^{(i)} \log a_k^{(i)}
          - (1 - y_k^{(i)}) \log(1 - a_k^{(i)})\big]
          + \frac{\lambda}{2m} \sum_l \sum_{j,\,c \ge 1} (\Theta^{(l)}_{jc})^2

(the bias column c = 0 is not regularised), with backpropagation δ³ = (rule's output error),
δ² = (δ³ Θ²[:, 1:]) ⊙ σ′(z²), ∂J/∂Θ^{(l)} = (1/m) δ^{(l+1)ᵀ} [1, a^{(l)}] + (λ/m) Θ^{(l)} with the bias column's
penalty term zeroed. Only the output error depends on the rule; it comes from
:data:`harness.core.deltas.DELTA_RULES`, the losses and activations from :mod:`harness.core`.

The assignment's own checks, computed here:

- its gradient check (``checkNNGradients``): a 3-5-3 network on ``debugInitializeWeights`` weights, m = 5,
  the unrolled gradient against central differences with ε = 1e-4 (``computeNumericalGradient``), passing
  when ‖num − grad‖ / ‖num + grad‖ < 1e-9, at λ = 0 and λ = 3;
- its grader (``submit.m``): a 2-4-4 network on fixed sin/cos parameters, m = 16, which prints J, σ′ and the
  unrolled gradient to 5 decimals at λ = 0 and λ = 1.5 and compares them with the reference solution's.

Parameters are unrolled column by column (MATLAB's order, numpy's ``order="F"``), Θ¹ first.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from harness.core.activations import HIDDEN_ACTIVATIONS, OUTPUT_ACTIVATIONS
from harness.core.deltas import DELTA_RULES
from harness.core.losses import LOSSES
from harness.core.regularization import l2_gradient, l2_penalty

QUESTION = "Will Nielsen's equations score full marks on Ng's assignment (Coursera ML ex4, backpropagation)?"
RULES = ("ng", "nielsen", "chain")
CHECK_EPSILON = 1e-4  # computeNumericalGradient's e
CHECK_PASS = 1e-9  # checkNNGradients: "the relative difference will be small (less than 1e-9)"
CHECK_LAMBDAS = (0.0, 3.0)  # ex4.m runs checkNNGradients, then checkNNGradients(3)
GRADER_LAMBDAS = (0.0, 1.5)  # submit.m's parts 1 and 4 (λ = 0), 2 and 5 (λ = 1.5)
DECIMALS = 5  # submit.m prints every number with sprintf('%0.5f ')
# (name, points) of submit.m's five parts, in its order
PARTS = (
    ("Feedforward and cost function", 30),
    ("Regularized cost function", 15),
    ("Sigmoid gradient", 5),
    ("Neural network gradient (backpropagation)", 40),
    ("Regularized gradient", 10),
)


# ------------------------------------------------------------------------------------------ the problems


def matlab_reshape(values: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """MATLAB's ``reshape(values, rows, cols)``: fills the matrix column by column."""
    return np.reshape(np.asarray(values, dtype=np.float64), (rows, cols), order="F")


def debug_initialize_weights(fan_out: int, fan_in: int) -> np.ndarray:
    """ex4's ``debugInitializeWeights``: W = reshape(sin(1:numel(W)), fan_out, 1 + fan_in) / 10.

    The first column multiplies the bias unit; sin of 1, 2, 3, ... goes down the columns in turn."""
    size = fan_out * (1 + fan_in)
    return matlab_reshape(np.sin(np.arange(1, size + 1)), fan_out, 1 + fan_in) / 10.0


def one_hot(labels: np.ndarray, k: int) -> np.ndarray:
    """Labels 1..k (MATLAB's) as rows of the k × k identity."""
    return np.eye(k)[np.asarray(labels, dtype=int) - 1]


def unroll(thetas: Sequence[np.ndarray]) -> np.ndarray:
    """``[Theta1(:); Theta2(:); ...]``: each matrix column by column, one after the other."""
    return np.concatenate([t.ravel(order="F") for t in thetas])


def roll(params: np.ndarray, sizes: Sequence[int]) -> list[np.ndarray]:
    """The inverse of :func:`unroll` for layer sizes (n_in, hidden..., n_out).

    Θ^{(l)} is sizes[l+1] × (1 + sizes[l]), its first column multiplying the bias unit."""
    shapes = [(fan_out, 1 + fan_in) for fan_in, fan_out in zip(sizes[:-1], sizes[1:])]
    needed = sum(r * c for r, c in shapes)
    if needed != len(params):
        raise ValueError(f"{len(params)} parameters do not fit layer sizes {tuple(sizes)} ({needed} needed)")
    thetas, start = [], 0
    for rows, cols in shapes:
        thetas.append(matlab_reshape(params[start : start + rows * cols], rows, cols))
        start += rows * cols
    return thetas


@dataclass(frozen=True)
class Problem:
    """A network's layer sizes, its unrolled parameters and its data (X: m × n_in, labels in 1..K)."""

    name: str
    sizes: tuple[int, ...]
    params: np.ndarray
    X: np.ndarray
    labels: np.ndarray

    @property
    def Y(self) -> np.ndarray:  # noqa: N802 (Ng's name for the one-hot targets)
        return one_hot(self.labels, self.sizes[-1])


def check_problem() -> Problem:
    """``checkNNGradients``: input 3, hidden 5, 3 labels, m = 5, every matrix from ``debugInitializeWeights``:
    Θ¹ = dIW(5, 3), Θ² = dIW(3, 5), X = dIW(5, 3 − 1) (a 5 × 3 matrix), y = 1 + mod(1:5, 3) = [2 3 1 2 3]."""
    n_in, hidden, k, m = 3, 5, 3, 5
    thetas = [debug_initialize_weights(hidden, n_in), debug_initialize_weights(k, hidden)]
    X = debug_initialize_weights(m, n_in - 1)
    return Problem("checkNNGradients", (n_in, hidden, k), unroll(thetas), X, 1 + np.arange(1, m + 1) % k)


def grader_problem() -> Problem:
    """``submit.m``: a 2-4-4 network, t1 = sin(reshape(1:2:24, 4, 3)), t2 = cos(reshape(1:2:40, 4, 5)),
    t = [t1(:); t2(:)], Xm = reshape(sin(1:32), 16, 2) / 5, ym = 1 + mod(1:16, 4)."""
    t1 = np.sin(matlab_reshape(np.arange(1, 25, 2), 4, 3))
    t2 = np.cos(matlab_reshape(np.arange(1, 41, 2), 4, 5))
    X = matlab_reshape(np.sin(np.arange(1, 33)), 16, 2) / 5.0
    return Problem("submit.m", (2, 4, 4), unroll([t1, t2]), X, 1 + np.arange(1, 17) % 4)


def sigmoid_gradient_input() -> np.ndarray:
    """``submit.m``'s sigmoidGradient test: X = reshape(3 * sin(1:30), 3, 10)."""
    return matlab_reshape(3.0 * np.sin(np.arange(1, 31)), 3, 10)


# ------------------------------------------------------------------------------------------ cost, backprop


def _forward(thetas: list[np.ndarray], X: np.ndarray, hidden: str, activation: str):
    """Pre-activations z^{(l)} and the layers' inputs [1, a^{(l)}] (bias unit first), and the output a."""
    a, zs, inputs = X, [], []
    for i, theta in enumerate(thetas):
        inp = np.hstack([np.ones((a.shape[0], 1)), a])
        z = inp @ theta.T
        act = OUTPUT_ACTIVATIONS[activation] if i == len(thetas) - 1 else HIDDEN_ACTIVATIONS[hidden]
        inputs.append(inp)
        zs.append(z)
        a = act.value(z)
    return zs, inputs, a


def cost(params: np.ndarray, problem: Problem, lam: float, loss: str = "bce", activation: str = "sigmoid",
         hidden: str = "sigmoid") -> float:  # fmt: skip
    """J: the mean over the m samples of the loss (``loss.mean``) plus :func:`l2_penalty` on the non-bias
    columns. With the defaults this is Ng's ``nnCostFunction`` cost."""
    thetas = roll(params, problem.sizes)
    _, _, a = _forward(thetas, problem.X, hidden, activation)
    lo = LOSSES[loss].for_activation(OUTPUT_ACTIVATIONS[activation])
    return lo.mean(a, problem.Y) + l2_penalty([t[:, 1:] for t in thetas], lam, len(problem.X))


def cost_and_gradient(params: np.ndarray, problem: Problem, lam: float, rule: str, loss: str = "bce",
                      activation: str = "sigmoid", hidden: str = "sigmoid") -> tuple[float, np.ndarray]:  # fmt: skip
    """(J, unrolled ∂J/∂Θ) by backpropagation, the output error δᴸ from the δ rule ``rule``.

    δᴸ = rule.delta(loss, f, zᴸ, aᴸ, Y); for each layer from the top, ∂J/∂Θ^{(l)} = (1/m) δ^{(l+1)ᵀ} [1, a^{(l)}]
    and δ^{(l)} = J_g(z^{(l)})ᵀ (δ^{(l+1)} Θ^{(l)}[:, 1:]) (the hidden layers' chain rule, the same for every
    rule); then (λ/m) Θ is added to every column but the bias one. The gradient is the true ∂J/∂Θ exactly
    when the rule is exact for (loss, activation).
    """
    thetas = roll(params, problem.sizes)
    m, Y = len(problem.X), problem.Y
    zs, inputs, a = _forward(thetas, problem.X, hidden, activation)
    act = OUTPUT_ACTIVATIONS[activation]
    lo = LOSSES[loss].for_activation(act)
    delta = DELTA_RULES[rule].delta(lo, act, zs[-1], a, Y)
    grads = [np.empty(0)] * len(thetas)
    for i in range(len(thetas) - 1, -1, -1):
        grads[i] = delta.T @ inputs[i] / m
        grads[i][:, 1:] += l2_gradient(thetas[i][:, 1:], lam, m)
        if i:
            delta = HIDDEN_ACTIVATIONS[hidden].vjp(zs[i - 1], delta @ thetas[i][:, 1:])
    J = lo.mean(a, Y) + l2_penalty([t[:, 1:] for t in thetas], lam, m)
    return J, unroll(grads)


def numerical_gradient(f: Callable[[np.ndarray], float], params: np.ndarray, eps: float = CHECK_EPSILON,
                       order: int = 2) -> np.ndarray:  # fmt: skip
    """Central differences of f in each parameter, float64.

    ``order=2``: (f(θ + ε eᵢ) − f(θ − ε eᵢ)) / 2ε, ex4's ``computeNumericalGradient`` (error O(ε²));
    ``order=4``: (−f(θ + 2ε) + 8 f(θ + ε) − 8 f(θ − ε) + f(θ − 2ε)) / 12ε (error O(ε⁴)).
    """
    if order not in (2, 4):
        raise ValueError(f"order must be 2 or 4, got {order!r}")
    params = np.asarray(params, dtype=np.float64)
    grad = np.empty_like(params)
    for i in range(len(params)):
        e = np.zeros_like(params)
        e[i] = eps
        if order == 2:
            grad[i] = (f(params + e) - f(params - e)) / (2 * eps)
        else:
            grad[i] = (-f(params + 2 * e) + 8 * f(params + e) - 8 * f(params - e) + f(params - 2 * e)) / (12 * eps)
    return grad


def relative_difference(num: np.ndarray, grad: np.ndarray) -> float:
    """checkNNGradients' measure ‖num − grad‖ / ‖num + grad‖."""
    return float(np.linalg.norm(num - grad) / np.linalg.norm(num + grad))


def gradient_check(rule: str, lam: float) -> float:
    """``checkNNGradients(lambda)`` for δ rule ``rule``: the relative difference between the rule's
    backpropagated gradient and ``computeNumericalGradient``'s on the 3-5-3 debug network. Passes below 1e-9."""
    DELTA_RULES[rule]  # an unknown name fails here, naming the allowed ones
    p = check_problem()
    _, grad = cost_and_gradient(p.params, p, lam, rule)
    num = numerical_gradient(lambda t: cost(t, p, lam), p.params, CHECK_EPSILON)
    return relative_difference(num, grad)


# ------------------------------------------------------------------------------------------ the grader


def printed(values: np.ndarray | float) -> list[str]:
    """What ``sprintf('%0.5f ', values)`` shows, one string per number (column by column); −0.00000 is 0.00000."""
    flat = np.ravel(np.asarray(values, dtype=np.float64), order="F")
    return [f"{v:.{DECIMALS}f}".replace(f"-0.{'0' * DECIMALS}", f"0.{'0' * DECIMALS}") for v in flat]


def _mismatches(got: np.ndarray | float, ref: np.ndarray | float) -> int:
    return sum(a != b for a, b in zip(printed(got), printed(ref)))


def rounding_margin(values: np.ndarray) -> float:
    """The smallest distance from any value to a point where its 5-decimal print changes (x.xxxxx5): an error
    below this cannot change what the grader sees."""
    scaled = np.asarray(values, dtype=np.float64) * 10**DECIMALS
    return float(np.min(np.abs(scaled - np.floor(scaled) - 0.5)) / 10**DECIMALS)


def reference_cost(problem: Problem, lam: float) -> float:
    """Ng's J written out as in ``nnCostFunction`` (log terms and the Θ(:, 2:end) sums), the grader's reference
    for the cost parts; :func:`cost` reaches it through the harness's loss and :func:`l2_penalty`."""
    thetas = roll(problem.params, problem.sizes)
    a = problem.X
    for theta in thetas:
        a = 1.0 / (1.0 + np.exp(-(np.hstack([np.ones((len(a), 1)), a]) @ theta.T)))
    Y, m = problem.Y, len(problem.X)
    data = np.sum(-Y * np.log(a) - (1.0 - Y) * np.log(1.0 - a)) / m
    return float(data + lam / (2 * m) * sum(np.sum(t[:, 1:] ** 2) for t in thetas))


def exact_gradient(problem: Problem, lam: float) -> np.ndarray:
    """The true ∂J/∂Θ, independent of every δ rule: fourth-order central differences of J with ε = 1e-3
    (truncation ≈ ε⁴ ≈ 1e-12, rounding ≈ 1e-16 / ε ≈ 1e-13: far below the grader's 5e-6)."""
    return numerical_gradient(lambda t: cost(t, problem, lam), problem.params, eps=1e-3, order=4)


@dataclass(frozen=True)
class Part:
    """One graded part: its name, its points, whether the rule passes it, and the numbers behind that."""

    name: str
    points: int
    passed: bool
    detail: str
    depends_on_rule: bool

    @property
    def earned(self) -> int:
        return self.points if self.passed else 0


def _cost_part(index: int, problem: Problem, lam: float) -> Part:
    name, points = PARTS[index]
    J, ref = cost(problem.params, problem, lam), reference_cost(problem, lam)
    ok = printed(J) == printed(ref)
    detail = (
        f"J = {printed(J)[0]} at λ = {lam:g} (Ng's formula: {printed(ref)[0]}); the cost uses no δ rule, "
        "so every rule gets the same"
    )
    return Part(name, points, ok, detail, depends_on_rule=False)


def _sigmoid_part() -> Part:
    name, points = PARTS[2]
    z = sigmoid_gradient_input()
    sig = OUTPUT_ACTIVATIONS["sigmoid"]
    got = sig.derivative(z)
    h = 1e-5
    ref = (sig.value(z + h) - sig.value(z - h)) / (2 * h)  # σ′ by central differences of σ
    bad = _mismatches(got, ref)
    detail = (
        f"σ′ on reshape(3·sin(1:30), 3, 10): {z.size - bad} of {z.size} printed values equal central differences "
        f"(max |Δ| = {np.max(np.abs(got - ref)):.1e}); σ′ is not a δ rule's business, so every rule gets the same"
    )
    return Part(name, points, bad == 0, detail, depends_on_rule=False)


def _gradient_part(index: int, rule: str, problem: Problem, lam: float, check_lam: float) -> Part:
    name, points = PARTS[index]
    J, grad = cost_and_gradient(problem.params, problem, lam, rule)
    exact = exact_gradient(problem, lam)
    bad = _mismatches(np.concatenate([[J], grad]), np.concatenate([[reference_cost(problem, lam)], exact]))
    rel = gradient_check(rule, check_lam)
    ok = bad == 0 and rel < CHECK_PASS
    detail = (
        f"grader (λ = {lam:g}): {bad} of {1 + len(grad)} printed numbers (J and {len(grad)} gradient entries) differ "
        f"from the exact gradient's, max |grad − exact| = {np.max(np.abs(grad - exact)):.2e} (the exact values lie "
        f"≥ {rounding_margin(exact):.1e} from a rounding boundary); checkNNGradients "
        f"(λ = {check_lam:g}): relative difference {rel:.2e} ({'<' if rel < CHECK_PASS else '≥'} {CHECK_PASS:g})"
    )
    return Part(name, points, ok, detail, depends_on_rule=True)


def grade(rule: str) -> list[Part]:
    """The five graded parts of ex4 for δ rule ``rule`` on sigmoid + cross-entropy, in submit.m's order.

    A cost part passes when the harness's J (``loss.mean`` + :func:`l2_penalty`) prints like Ng's formula; the
    sigmoid-gradient part when σ′ prints like central differences of σ; a gradient part when J and the rule's
    unrolled gradient print (5 decimals) like the exact gradient's *and* checkNNGradients' relative difference
    is below 1e-9 (λ = 0 for backpropagation, λ = 3 for the regularised gradient).
    """
    DELTA_RULES[rule]
    p = grader_problem()
    lam0, lam1 = GRADER_LAMBDAS
    return [
        _cost_part(0, p, lam0),
        _cost_part(1, p, lam1),
        _sigmoid_part(),
        _gradient_part(3, rule, p, lam0, CHECK_LAMBDAS[0]),
        _gradient_part(4, rule, p, lam1, CHECK_LAMBDAS[1]),
    ]


def score(parts: Sequence[Part]) -> int:
    """Points earned out of 100."""
    return sum(p.earned for p in parts)


# ------------------------------------------------------------------------------------------ the answer


@dataclass(frozen=True)
class Result:
    """One rule's grade: its parts and the numbers the answer quotes."""

    rule: str
    parts: list[Part]
    check: dict[float, float]  # checkNNGradients' relative difference per λ
    grader_error: dict[float, float]  # max |grad − exact| on the grader's network per λ
    l2_shift: float  # max |(grad − exact) at λ = 1.5 − (grad − exact) at λ = 0|: what L2 changes in the error

    @property
    def score(self) -> int:
        return score(self.parts)


def result(rule: str) -> Result:
    """Grade ``rule`` and collect the key numbers (checkNNGradients at λ = 0, 3; the grader's max error)."""
    p = grader_problem()
    diffs = [cost_and_gradient(p.params, p, lam, rule)[1] - exact_gradient(p, lam) for lam in GRADER_LAMBDAS]
    errors = {lam: float(np.max(np.abs(d))) for lam, d in zip(GRADER_LAMBDAS, diffs)}
    shift = float(np.max(np.abs(diffs[1] - diffs[0])))
    return Result(rule, grade(rule), {lam: gradient_check(rule, lam) for lam in CHECK_LAMBDAS}, errors, shift)


def rows(results: Sequence[Result]) -> list[dict]:
    """One row per graded part: its points and each rule's earned points, then a total row."""
    out = []
    for i, (name, points) in enumerate(PARTS):
        out.append({"part": name, "points": points} | {r.rule: r.parts[i].earned for r in results})
    out.append({"part": "Total", "points": sum(p for _, p in PARTS)} | {r.rule: r.score for r in results})
    return out


def answer(results: Sequence[Result]) -> str:
    """The answer to :data:`QUESTION` in Markdown, shaped like the report's answers: the verdict with each rule's
    score first, then the numbers, then why."""
    by = {r.rule: r for r in results}
    scores = ", ".join(f"`{r.rule}` {r.score}" for r in results)
    lead = "**Answer.** "
    if "nielsen" in by:
        n = by["nielsen"]
        failed = [p.name.lower() for p in n.parts if not p.passed]
        lead += (
            f"{'Yes' if n.score == 100 else 'No'}: with Nielsen's quadratic-cost rule δ = (a − y) ⊙ σ′(z) in place "
            f"of Ng's δ³ = a − y, ex4 (sigmoid layers, cross-entropy, L2) scores {n.score} of 100"
            + (f", failing {' and '.join(failed)}" if failed else "")
            + "."
        )
    lead += f" Scores out of 100, computed with the assignment's own checks: {scores}."
    paras = [lead]
    lines = []
    for r in results:
        lines.append(
            f"- `{r.rule}`: checkNNGradients relative difference "
            + ", ".join(f"{v:.2e} at λ = {lam:g}" for lam, v in r.check.items())
            + f" (passes below {CHECK_PASS:g}); on the grader's 2-4-4 network, max |grad − exact| = "
            + ", ".join(f"{v:.2e} at λ = {lam:g}" for lam, v in r.grader_error.items())
            + f" (the grader prints {DECIMALS} decimals)."
        )
    paras.append("\n".join(lines))
    shift = max(r.l2_shift for r in results)
    paras.append(
        "The cost (30 + 15 points) and the sigmoid gradient (5) do not involve the output error, so every rule "
        "earns them alike; backpropagation (40) and the regularised gradient (10) pass only for a rule whose δ is "
        "the gradient of the cross-entropy in z. The L2 term (λ/m)·Θ is added after backpropagation and is the "
        "same for every rule, so on the grader's network a rule's error at λ = 1.5 is its error at λ = 0 (they "
        f"differ by at most {shift:.1e} over the rules graded): the regularised part stands or falls with the "
        "unregularised one."
    )
    paras.append(
        "Nielsen's own equations agree once the cost is the one Ng uses: for the cross-entropy cost his book "
        "derives δᴸ = aᴸ − y (ch. 3), which is what `CrossEntropyCost.delta` in his `network2.py` returns: Ng's "
        "rule. The σ′ factor belongs to the quadratic cost. His L2 convention is Ng's too (λ/2n Σ w², weights "
        "only, n the training-set size)."
    )
    return "\n\n".join(paras)


def format_rows(table: list[dict]) -> str:
    """The score table as fixed-width text."""
    cols = list(table[0])
    width = {c: max(len(c), *(len(str(r[c])) for r in table)) for c in cols}

    def line(r: dict) -> str:
        return "  ".join(str(r[c]).ljust(width[c]) if c == "part" else str(r[c]).rjust(width[c]) for c in cols)

    return "\n".join([line({c: c for c in cols}), *(line(r) for r in table)])
