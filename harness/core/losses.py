"""Losses L(a, y) per sample, summed over the k outputs; a batch loss is the mean over samples.

One meaning per word: ``grad(a, y)`` is always ∂L/∂a (never ∂L/∂z). Turning it into ∂L/∂z needs the
output activation's Jacobian, which is the delta rules' business (:mod:`harness.core.deltas`).

Log terms use the convention 0 · log 0 = 0 (``scipy.special.xlogy``: 0 · log y = 0 for any y ≥ 0 and for
y < 0 too, NaN where x > 0 and y < 0), so a target of exactly 0 or 1 contributes nothing from the log of
the other side. Outside its domain (e.g. log of a ≤ 0, which ``tanh`` or ``identity`` outputs reach) a loss
is undefined: ``value`` returns NaN there and ``defined`` says so.

**A loss takes (a, y), and the matching loss is no exception once f is known.** ``bce``, ``mse`` and ``cce``
are fixed functions of (a, y). The matching loss of an output activation f = ∇F (:class:`MatchingLoss`) is
a *family* indexed by f: L_f(a, y) = F(f⁻¹(a)) − y · f⁻¹(a) + F*(y). Each member is again a plain function
of (a, y) with ``value`` and ``grad`` = ∂L/∂a, but which member applies depends on the output layer, so the
registry entry ``LOSSES["matching"]`` is unbound and :meth:`Loss.for_activation` picks the member. Every
place where a loss meets its output activation (the runner building a job, the delta rules' exactness check,
the gradient checker, the training loop) calls ``loss.for_activation(act)``; for a fixed loss it returns the
loss itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from scipy.special import xlogy as _xlogy

from harness.core.registry import Registry

if TYPE_CHECKING:
    from harness.core.activations import Activation


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den with 0 / anything = 0 (the derivative of a vanishing xlogy term is 0)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(num == 0, 0.0, num / np.where(num == 0, 1.0, den))


class Loss:
    """A loss with its value and its gradient with respect to the output activation a."""

    name: str = ""

    def value(self, a: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Per-sample loss, shape (n,): summed over the k outputs."""
        raise NotImplementedError

    def grad(self, a: np.ndarray, y: np.ndarray) -> np.ndarray:
        """∂L/∂a per sample, shape (n, k)."""
        raise NotImplementedError

    def defined(self, a: np.ndarray, y: np.ndarray) -> bool:
        """True when every sample lies inside the loss's domain (so ``value`` is a real number)."""
        return bool(np.all(np.isfinite(a)))

    def mean(self, a: np.ndarray, y: np.ndarray) -> float:
        """Batch loss: the mean over samples of ``value``."""
        return float(np.mean(self.value(a, y)))

    def for_activation(self, act: Activation) -> Loss:
        """The loss to use on output activation ``act``: the loss itself, except for the matching loss,
        whose formula depends on ``act`` (see the module docstring)."""
        return self

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class BinaryCrossEntropy(Loss):
    r"""Binary cross-entropy, one Bernoulli per output.

    .. math:: L = -\sum_k [\, y_k \log a_k + (1 - y_k) \log(1 - a_k) \,], \qquad
              \frac{\partial L}{\partial a_k} = -\frac{y_k}{a_k} + \frac{1 - y_k}{1 - a_k}
              = \frac{a_k - y_k}{a_k (1 - a_k)}

    Defined for a in (0, 1) (where the target makes the log term count). With a sigmoid output the
    factor a(1 − a) cancels σ′(z), which is why Ng's δ = a − y is exact for sigmoid + BCE.
    """

    name = "bce"

    def value(self, a: np.ndarray, y: np.ndarray) -> np.ndarray:
        return -np.sum(_xlogy(y, a) + _xlogy(1.0 - y, 1.0 - a), axis=-1)

    def grad(self, a: np.ndarray, y: np.ndarray) -> np.ndarray:
        return -_safe_div(y, a) + _safe_div(1.0 - y, 1.0 - a)

    def defined(self, a: np.ndarray, y: np.ndarray) -> bool:
        ok = np.where(y > 0, a > 0, True) & np.where(y < 1, a < 1, True)
        return bool(np.all(ok) and np.all(np.isfinite(a)))


class MeanSquaredError(Loss):
    r"""Quadratic cost, Nielsen's C = ½‖a − y‖² per sample.

    .. math:: L = \tfrac12 \sum_k (a_k - y_k)^2, \qquad \frac{\partial L}{\partial a_k} = a_k - y_k

    The ½ makes the gradient exactly a − y, so Nielsen's δ = (a − y) ⊙ f′(z) is the chain rule for any
    elementwise output f, and Ng's a − y is exact only where f′ = 1 (identity output).
    """

    name = "mse"

    def value(self, a: np.ndarray, y: np.ndarray) -> np.ndarray:
        d = a - y
        return 0.5 * np.sum(d * d, axis=-1)

    def grad(self, a: np.ndarray, y: np.ndarray) -> np.ndarray:
        return a - y


class CategoricalCrossEntropy(Loss):
    r"""Categorical cross-entropy (log loss over k classes).

    .. math:: L = -\sum_k y_k \log a_k, \qquad \frac{\partial L}{\partial a_k} = -\frac{y_k}{a_k}

    Defined where a_k > 0 for every class with y_k > 0. With a softmax output, Σ y = 1 makes
    J_softmax(z)ᵀ(−y/a) = a − y, which is why Ng's δ = a − y is exact for softmax + CCE.
    """

    name = "cce"

    def value(self, a: np.ndarray, y: np.ndarray) -> np.ndarray:
        return -np.sum(_xlogy(y, a), axis=-1)

    def grad(self, a: np.ndarray, y: np.ndarray) -> np.ndarray:
        return -_safe_div(y, a)

    def defined(self, a: np.ndarray, y: np.ndarray) -> bool:
        return bool(np.all(np.where(y > 0, a > 0, True)) and np.all(np.isfinite(a)))


class MatchingLoss(Loss):
    r"""The matching loss of the output activation f = ∇F: the loss for which f's δ is exactly a − y.

    For a convex potential F with f = ∇F (Helmbold, Kivinen & Warmuth 1995, "matching loss"; the canonical
    link of a generalised linear model, Bishop PRML §4.3.6), in terms of the pre-activation z:

    .. math:: L_f(z, y) = F(z) - y \cdot z + F^*(y), \qquad \frac{\partial L_f}{\partial z} = f(z) - y = a - y

    with F*(y) = sup_z (y · z − F(z)) the convex conjugate. By Fenchel–Young L_f ≥ 0, with equality exactly
    where y = f(z): L_f is the Bregman divergence D_{F*}(y, a) and vanishes at a = y whenever the target is
    reachable. Written in a through the inverse link z = f⁻¹(a), so that ``value(a, y)`` and ``grad(a, y)``
    = ∂L/∂a keep their meaning for every loss:

    =========  ==============  =====================================================================
    f          F(z)            L_f(a, y)
    =========  ==============  =====================================================================
    sigmoid    softplus z      y log(y/a) + (1 − y) log((1 − y)/(1 − a))      (BCE − H(y): KL)
    softmax    logsumexp z     Σ_k y_k log(y_k / a_k)                          (CCE − H(y): KL)
    identity   ½ z²            ½ ‖a − y‖²                                      (MSE)
    tanh       log cosh z      ½(1 + y) log((1 + y)/(1 + a)) + ½(1 − y) log((1 − y)/(1 − a))
    =========  ==============  =====================================================================

    With one-hot targets the entropy terms vanish (0 · log 0 = 0) and the first three are exactly ``bce``,
    ``cce`` and ``mse``. This unbound registry entry has no formula of its own: :meth:`for_activation`
    returns the member for a given f (``value`` / ``grad`` / ``defined`` here raise a ``TypeError`` saying
    so).
    """

    name = "matching"
    activation: str | None = None  # the output activation this member is bound to (None: the family)

    def for_activation(self, act: Activation) -> Loss:
        try:
            return _MATCHING[act.name]
        except KeyError:
            allowed = ", ".join(_MATCHING)
            raise KeyError(f"the matching loss has no form for activation {act.name!r}; allowed: {allowed}") from None

    def _unbound(self) -> TypeError:
        return TypeError(
            "the matching loss depends on the output activation: use LOSSES['matching'].for_activation(act)"
        )

    def value(self, a: np.ndarray, y: np.ndarray) -> np.ndarray:
        raise self._unbound()

    def grad(self, a: np.ndarray, y: np.ndarray) -> np.ndarray:
        raise self._unbound()

    def defined(self, a: np.ndarray, y: np.ndarray) -> bool:
        raise self._unbound()

    def __repr__(self) -> str:
        return f"MatchingLoss(name={self.name!r}, activation={self.activation!r})"


class _SigmoidMatching(MatchingLoss):
    r"""Matching loss of the sigmoid, F = softplus, F*(y) = y log y + (1 − y) log(1 − y) on [0, 1].

    z = logit a, F(z) = −log(1 − a), so

    .. math:: L = -y \log a - (1 - y) \log(1 - a) + y \log y + (1 - y) \log(1 - y), \qquad
              \frac{\partial L}{\partial a} = \frac{a - y}{a (1 - a)}

    Defined for targets y ∈ [0, 1] and a ∈ (0, 1) wherever the target weights the log term.
    """

    activation = "sigmoid"

    def value(self, a: np.ndarray, y: np.ndarray) -> np.ndarray:
        return _BCE.value(a, y) + np.sum(_xlogy(y, y) + _xlogy(1.0 - y, 1.0 - y), axis=-1)

    def grad(self, a: np.ndarray, y: np.ndarray) -> np.ndarray:
        return _BCE.grad(a, y)

    def defined(self, a: np.ndarray, y: np.ndarray) -> bool:
        return bool(np.all((y >= 0) & (y <= 1))) and _BCE.defined(a, y)


class _SoftmaxMatching(MatchingLoss):
    r"""Matching loss of the softmax, F = logsumexp, F*(y) = Σ y log y on the probability simplex.

    f⁻¹ is defined up to a constant, z = log a + c, and L does not depend on c because Σ y = 1, so

    .. math:: L = -\sum_k y_k \log a_k + \sum_k y_k \log y_k, \qquad \frac{\partial L}{\partial a_k} = -\frac{y_k}{a_k}

    Defined for probability targets (y ≥ 0, Σ y = 1; elsewhere F*(y) = +∞) and a_k > 0 where y_k > 0.
    """

    activation = "softmax"

    def value(self, a: np.ndarray, y: np.ndarray) -> np.ndarray:
        return -np.sum(_xlogy(y, a) - _xlogy(y, y), axis=-1)

    def grad(self, a: np.ndarray, y: np.ndarray) -> np.ndarray:
        return _CCE.grad(a, y)

    def defined(self, a: np.ndarray, y: np.ndarray) -> bool:
        simplex = bool(np.all(y >= 0)) and np.allclose(np.sum(y, axis=-1), 1.0, rtol=0.0, atol=1e-9)
        return simplex and _CCE.defined(a, y)


class _IdentityMatching(MatchingLoss):
    r"""Matching loss of the identity, F = ½ z², F*(y) = ½ y²: L = ½ z² − y z + ½ y² = ½ ‖a − y‖²,
    ∂L/∂a = a − y (the quadratic cost)."""

    activation = "identity"

    def value(self, a: np.ndarray, y: np.ndarray) -> np.ndarray:
        return _MSE.value(a, y)

    def grad(self, a: np.ndarray, y: np.ndarray) -> np.ndarray:
        return a - y

    def defined(self, a: np.ndarray, y: np.ndarray) -> bool:
        return bool(np.all(np.isfinite(a)))


class _TanhMatching(MatchingLoss):
    r"""Matching loss of tanh, F = log cosh, F*(y) = ½(1 + y) log(1 + y) + ½(1 − y) log(1 − y) on [−1, 1].

    z = artanh a = ½ log((1 + a)/(1 − a)) and log cosh z = −½ log(1 − a²), so F(z) − y z =
    −½(1 + y) log(1 + a) − ½(1 − y) log(1 − a), and with F*(y):

    .. math:: L = \tfrac12 (1 + y) \log\frac{1 + y}{1 + a} + \tfrac12 (1 - y) \log\frac{1 - y}{1 - a}, \qquad
              \frac{\partial L}{\partial a} = -\frac{1 + y}{2 (1 + a)} + \frac{1 - y}{2 (1 - a)}
              = \frac{a - y}{1 - a^2}

    (the KL divergence between Bernoullis of means (1 + y)/2 and (1 + a)/2). tanh′ = 1 − a² cancels the
    denominator: δ = a − y. Defined for targets y ∈ [−1, 1] and a ∈ (−1, 1) wherever the target weights the
    log term (a target of 1 reaches its minimum 0 only as a → 1; a target of 0 at a = 0).
    """

    activation = "tanh"

    def value(self, a: np.ndarray, y: np.ndarray) -> np.ndarray:
        p, q = 1.0 + y, 1.0 - y
        return 0.5 * np.sum(_xlogy(p, p) - _xlogy(p, 1.0 + a) + _xlogy(q, q) - _xlogy(q, 1.0 - a), axis=-1)

    def grad(self, a: np.ndarray, y: np.ndarray) -> np.ndarray:
        return 0.5 * (_safe_div(1.0 - y, 1.0 - a) - _safe_div(1.0 + y, 1.0 + a))

    def defined(self, a: np.ndarray, y: np.ndarray) -> bool:
        ok = np.where(y > -1, a > -1, True) & np.where(y < 1, a < 1, True) & (y >= -1) & (y <= 1)
        return bool(np.all(ok) and np.all(np.isfinite(a)))


_BCE, _MSE, _CCE = BinaryCrossEntropy(), MeanSquaredError(), CategoricalCrossEntropy()
_MATCHING: dict[str, MatchingLoss] = {
    m.activation: m for m in (_SigmoidMatching(), _SoftmaxMatching(), _IdentityMatching(), _TanhMatching())
}


LOSSES: Registry[Loss] = Registry("loss", [_BCE, _MSE, _CCE, MatchingLoss()])
