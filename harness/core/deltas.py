"""Output-layer error rules δᴸ and the computed knowledge of when each one is the true gradient ∂L/∂zᴸ.

A rule receives the loss and the activation explicitly and never assumes them:

- ``ng``       δ = a − y                       (Andrew Ng's course)
- ``nielsen``  δ = (a − y) ⊙ f′(z)             (Nielsen's book, Mitchell)
- ``chain``    δ = J_f(z)ᵀ ∇ₐL                 (the chain rule: always the true ∂L/∂z)

Which rule is exact for which (loss, activation) pair is not written down anywhere: :func:`is_exact`
compares the rule against ``chain`` on random inputs, and :func:`pairing` turns that into a run tag.
"""

from __future__ import annotations

from functools import cache

import numpy as np

from harness.core.activations import OUTPUT_ACTIVATIONS, Activation
from harness.core.losses import LOSSES, Loss
from harness.core.registry import Registry


class DeltaRule:
    """A rule for the output-layer error δᴸ, per sample, shape (n, k)."""

    name: str = ""

    def delta(self, loss: Loss, act: Activation, z: np.ndarray, a: np.ndarray, y: np.ndarray) -> np.ndarray:
        """δᴸ from pre-activation z, output a = f(z) and target y (a is passed to avoid recomputing).

        ``loss`` is the one bound to ``act`` (``loss.for_activation(act)``; only the matching loss differs).
        """
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class NgRule(DeltaRule):
    r"""Ng's rule :math:`\delta = a - y`; exact for sigmoid + BCE, softmax + CCE, identity + MSE: for each
    output activation f = ∇F, exactly on its matching loss F(z) − y·z + F*(y) (``loss=matching``)."""

    name = "ng"

    def delta(self, loss: Loss, act: Activation, z: np.ndarray, a: np.ndarray, y: np.ndarray) -> np.ndarray:
        return a - y


class NielsenRule(DeltaRule):
    r"""Nielsen's rule :math:`\delta = (a - y) \odot f'(z)`; exact for MSE with any elementwise f."""

    name = "nielsen"

    def delta(self, loss: Loss, act: Activation, z: np.ndarray, a: np.ndarray, y: np.ndarray) -> np.ndarray:
        return (a - y) * act.derivative(z)


class ChainRule(DeltaRule):
    r"""The chain rule :math:`\delta = J_f(z)^\top \nabla_a L`: the true ∂L/∂z for every pair."""

    name = "chain"

    def delta(self, loss: Loss, act: Activation, z: np.ndarray, a: np.ndarray, y: np.ndarray) -> np.ndarray:
        return act.vjp(z, loss.grad(a, y))


DELTA_RULES: Registry[DeltaRule] = Registry("delta", [NgRule(), NielsenRule(), ChainRule()])


def output_delta(rule: str, loss: str, activation: str, z: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-sample output error δᴸ, shape (n, k), of rule ``rule`` for ``loss`` on ``activation``.

    Not averaged over the batch. ``z`` is the output pre-activation and ``y`` the target, both (n, k).
    """
    act = OUTPUT_ACTIVATIONS[activation]
    lo = LOSSES[loss].for_activation(act)
    z = np.asarray(z, dtype=float)
    y = np.asarray(y, dtype=float)
    return DELTA_RULES[rule].delta(lo, act, z, act.value(z), y)


@cache
def is_exact(rule: str, loss: str, activation: str, n: int = 256, k: int = 3, seed: int = 0) -> bool:
    """Whether ``rule`` equals the chain rule for (loss, activation), tested on random inputs.

    z ~ N(0, 2²) and one-hot targets (valid for every loss). Samples outside the loss's domain
    (e.g. identity outputs ≤ 0 under a log) are left out: there the loss, hence its gradient, is undefined.
    Exact means agreement to rtol 1e-9 on every remaining sample (at least 16 of them).
    """
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 2.0, size=(n, k))
    y = np.eye(k)[rng.integers(0, k, size=n)]
    act = OUTPUT_ACTIVATIONS[activation]
    lo = LOSSES[loss].for_activation(act)
    a = act.value(z)
    ok = np.array([lo.defined(a[i : i + 1], y[i : i + 1]) for i in range(n)])
    got = DELTA_RULES[rule].delta(lo, act, z[ok], a[ok], y[ok])
    true = DELTA_RULES["chain"].delta(lo, act, z[ok], a[ok], y[ok])
    return bool(ok.sum() >= 16 and np.allclose(got, true, rtol=1e-9, atol=1e-12))


def pairing(rule: str, loss: str, activation: str) -> str:
    """Run tag: ``exact`` when the rule is the true gradient for (loss, activation), else ``mismatched``."""
    return "exact" if is_exact(rule, loss, activation) else "mismatched"
