"""Gradient checking for every (loss, activation, rule) triple: ``python -m harness.gradcheck``.

Ng's gradient check, applied to the output layer: each rule's δ against central finite differences of
the loss in float64,  ∂L/∂z_j ≈ (L(z + h e_j) − L(z − h e_j)) / 2h  with h = 1e-6, on random z and one-hot
targets (samples outside the loss's domain are redrawn). The error reported is the max over samples of
‖δ − δ_fd‖ / (‖δ‖ + ‖δ_fd‖): ≈ 1e-9 for an exact rule, of order 0.1–1 for a mismatched one.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

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


def main() -> int:
    rows = table()
    print(format_table(rows))
    disagree = [r for r in rows if r.verdict != r.pairing]
    for r in disagree:
        print(
            f"warning: {r.loss}-{r.activation}-{r.delta}: finite differences say {r.verdict}, "
            f"the rule-vs-chain check says {r.pairing}"
        )
    return 1 if disagree else 0


if __name__ == "__main__":
    raise SystemExit(main())
