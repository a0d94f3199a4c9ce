"""Losses L(a, y) per sample, summed over the k outputs; a batch loss is the mean over samples.

One meaning per word: ``grad(a, y)`` is always ∂L/∂a (never ∂L/∂z). Turning it into ∂L/∂z needs the
output activation's Jacobian, which is the delta rules' business (:mod:`harness.core.deltas`).

Log terms use the convention 0 · log 0 = 0 (as ``scipy.special.xlogy``), so a target of exactly 0 or 1
contributes nothing from the log of the other side. Outside its domain (e.g. log of a ≤ 0, which ``tanh``
or ``identity`` outputs reach) a loss is undefined: ``value`` returns NaN there and ``defined`` says so.
"""

from __future__ import annotations

import numpy as np

from harness.core.registry import Registry


def _xlogy(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """x · log y with 0 · log y = 0 for any y; NaN where x > 0 and y < 0 (outside the domain)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(x == 0, 0.0, x * np.log(np.where(x == 0, 1.0, y)))


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


LOSSES: Registry[Loss] = Registry("loss", [BinaryCrossEntropy(), MeanSquaredError(), CategoricalCrossEntropy()])
