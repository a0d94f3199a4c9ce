"""Gradient checking for every (loss, activation, rule) triple: ``python -m harness.gradcheck``.

Ng's gradient check, applied to the output layer: each rule's δ against central finite differences of
the loss in float64,  ∂L/∂z_j ≈ (L(z + h e_j) − L(z − h e_j)) / 2h  with h = 1e-6, on random z and one-hot
targets (samples outside the loss's domain are redrawn). The error reported is the max over samples of
‖δ − δ_fd‖ / (‖δ‖ + ‖δ_fd‖): ≈ 1e-9 for an exact rule, of order 0.1–1 for a mismatched one.

``--l2 LAMBDA`` adds the whole-network check with L2 regularisation (:func:`l2_table`): each rule's
backpropagated gradient of the regularised cost C = mean L + λ/(2m) Σ W² against central differences of C in
every weight and bias, on ex4's checkNNGradients network. The penalty's gradient (λ/m) W is the same for every
rule, so each triple must keep its verdict from the output-layer table.
"""

from __future__ import annotations

import argparse
import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from harness.core import assignment
from harness.core.activations import OUTPUT_ACTIVATIONS
from harness.core.deltas import DELTA_RULES, pairing
from harness.core.losses import LOSSES

EXACT_TOLERANCE = 1e-6


@dataclass(frozen=True)
class CheckRow:
    loss: str
    activation: str
    delta: str
    rel_error: float
    pairing: str  # from harness.core.deltas.pairing (rule against chain), for comparison

    @property
    def verdict(self) -> str:
        """``exact`` when finite differences agree with the rule to 1e-6, else ``mismatched``."""
        return "exact" if self.rel_error < EXACT_TOLERANCE else "mismatched"


def sample_inputs(loss: str, activation: str, n: int = 32, k: int = 3, seed: int = 0):
    """Random z ~ N(0, 1) and one-hot y, keeping only samples inside the loss's domain."""
    rng = np.random.default_rng(seed)
    act = OUTPUT_ACTIVATIONS[activation]
    lo = LOSSES[loss].for_activation(act)
    zs, ys = [], []
    while len(zs) < n:
        z = rng.normal(0.0, 1.0, (1, k))
        y = np.eye(k)[rng.integers(0, k, 1)]
        if lo.defined(act.value(z), y):
            zs.append(z[0])
            ys.append(y[0])
    return np.array(zs), np.array(ys)


def finite_difference_delta(loss: str, activation: str, z: np.ndarray, y: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """∂L/∂z per sample by central differences of L(f(z), y) (float64)."""
    act = OUTPUT_ACTIVATIONS[activation]
    lo = LOSSES[loss].for_activation(act)
    grad = np.empty_like(z)
    for j in range(z.shape[1]):
        step = np.zeros_like(z)
        step[:, j] = h
        grad[:, j] = (lo.value(act.value(z + step), y) - lo.value(act.value(z - step), y)) / (2 * h)
    return grad


def check(loss: str, activation: str, delta: str) -> CheckRow:
    """One row of the table."""
    act, rule = OUTPUT_ACTIVATIONS[activation], DELTA_RULES[delta]
    lo = LOSSES[loss].for_activation(act)
    z, y = sample_inputs(loss, activation)
    got = rule.delta(lo, act, z, act.value(z), y)
    ref = finite_difference_delta(loss, activation, z, y)
    per_sample = np.linalg.norm(got - ref, axis=1) / (
        np.linalg.norm(got, axis=1) + np.linalg.norm(ref, axis=1) + 1e-300
    )
    err = float(per_sample.max())
    return CheckRow(loss, activation, delta, err, pairing(delta, loss, activation))


def table() -> list[CheckRow]:
    """All 4 × 4 × 3 = 48 rows (losses × output activations × rules), in registry order."""
    return [check(*t) for t in itertools.product(LOSSES, OUTPUT_ACTIVATIONS, DELTA_RULES)]


def format_table(rows: list[CheckRow]) -> str:
    lines = [f"{'loss':<8} {'activation':<10} {'delta':<8} {'max rel error':>14}  verdict"]
    for r in rows:
        lines.append(f"{r.loss:<8} {r.activation:<10} {r.delta:<8} {r.rel_error:>14.3e}  {r.verdict}")
    exact = sum(r.verdict == "exact" for r in rows)
    lines.append(f"{exact} of {len(rows)} triples exact (finite differences agree to {EXACT_TOLERANCE:g}).")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ with L2

L2_EPSILON = 1e-5  # central differences of the whole cost: truncation ≈ ε² ≈ 1e-10, rounding ≈ 1e-16 / ε


@dataclass(frozen=True)
class L2Row:
    loss: str
    activation: str
    delta: str
    lam: float
    rel_error: float  # ‖num − grad‖ / ‖num + grad‖ over every weight and bias (checkNNGradients' measure)
    output_verdict: str  # the triple's verdict in the output-layer table

    @property
    def verdict(self) -> str:
        """``exact`` when finite differences of the regularised cost agree to 1e-6, else ``mismatched``."""
        return "exact" if self.rel_error < EXACT_TOLERANCE else "mismatched"


def l2_problem() -> assignment.Problem:
    """checkNNGradients' 3-5-3 network (debug weights, m = 5, one-hot targets), the output biases raised by 0.5
    so that identity and tanh outputs (then in (0.45, 0.56)) lie inside every loss's domain."""
    p = assignment.check_problem()
    thetas = assignment.roll(p.params, p.sizes)
    thetas[-1][:, 0] += 0.5
    return assignment.Problem("checkNNGradients, output biases + 0.5", p.sizes, assignment.unroll(thetas), p.X,
                              p.labels)  # fmt: skip


def l2_check(loss: str, activation: str, delta: str, lam: float, output_verdict: str = "") -> L2Row:
    """One triple: the rule's gradient of the regularised cost against central differences of it."""
    p = l2_problem()
    _, grad = assignment.cost_and_gradient(p.params, p, lam, delta, loss, activation)
    num = assignment.numerical_gradient(lambda t: assignment.cost(t, p, lam, loss, activation), p.params, L2_EPSILON)
    return L2Row(loss, activation, delta, lam, assignment.relative_difference(num, grad), output_verdict)


def l2_table(lam: float, rows: Sequence[CheckRow] | None = None) -> list[L2Row]:
    """All 48 triples with L2 strength ``lam``, beside each triple's verdict in the output-layer ``rows``."""
    rows = table() if rows is None else rows
    return [l2_check(r.loss, r.activation, r.delta, lam, r.verdict) for r in rows]


def format_l2_table(rows: list[L2Row]) -> str:
    lam = rows[0].lam
    lines = [
        f"Whole network with L2 (lambda = {lam:g}): C = mean L + lambda/(2m) sum W^2 on checkNNGradients' 3-5-3 net",
        f"{'loss':<8} {'activation':<10} {'delta':<8} {'rel difference':>14}  {'verdict':<10}  output-layer verdict",
    ]
    for r in rows:
        lines.append(
            f"{r.loss:<8} {r.activation:<10} {r.delta:<8} {r.rel_error:>14.3e}  {r.verdict:<10}  {r.output_verdict}"
        )
    same = sum(r.verdict == r.output_verdict for r in rows)
    lines.append(f"{same} of {len(rows)} triples keep their output-layer verdict with the L2 term.")
    return "\n".join(lines)


def _lambda(text: str) -> float:
    try:
        lam = float(text)
    except ValueError:
        lam = float("nan")
    if not (lam >= 0 and lam < float("inf")):
        raise argparse.ArgumentTypeError(f"--l2 takes the L2 strength lambda, a finite number >= 0; got {text!r}")
    return lam


DESCRIPTION = (
    "Each delta rule's output error against central differences for every (loss, output activation) pair: the "
    "48-triple exact/mismatched table. --l2 adds the whole network's gradient of the L2-regularised cost."
)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m harness.gradcheck", description=DESCRIPTION)
    parser.add_argument(
        "--l2",
        type=_lambda,
        metavar="LAMBDA",
        default=None,
        help="also check the whole network's gradient of the L2-regularised cost at this lambda",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    rows = table()
    print(format_table(rows))
    disagree = [r for r in rows if r.verdict != r.pairing]
    for r in disagree:
        print(
            f"warning: {r.loss}-{r.activation}-{r.delta}: finite differences say {r.verdict}, "
            f"the rule-vs-chain check says {r.pairing}"
        )
    l2_disagree = []
    if args.l2 is not None:
        l2_rows = l2_table(args.l2, rows)
        print()
        print(format_l2_table(l2_rows))
        l2_disagree = [r for r in l2_rows if r.verdict != r.output_verdict]
        for r in l2_disagree:
            print(
                f"warning: {r.loss}-{r.activation}-{r.delta}: with L2 the whole network says {r.verdict}, "
                f"the output layer says {r.output_verdict}"
            )
    return 1 if disagree or l2_disagree else 0


if __name__ == "__main__":
    raise SystemExit(main())
