"""Activations f(z): ``value(z)``, elementwise ``derivative(z)`` and ``vjp(z, g)`` = J_f(z)ᵀ g.

Hidden layers also have ``derivative_from_value(a)``: f′ written in terms of the output a = f(z)
(σ′ = a(1 − a), tanh′ = 1 − a², relu′ = 1[a > 0]), which backprop can evaluate from the activations the
forward pass already kept (as Nielsen's ``sigmoid_prime`` and PyTorch's sigmoid backward do).

``derivative`` is the elementwise f′ that Nielsen's rule multiplies by. For an elementwise f it *is* the
Jacobian's diagonal and the Jacobian is diagonal. For softmax it is only the diagonal s(1 − s) of a full
Jacobian, J = diag(s) − s sᵀ; ``vjp`` uses the full Jacobian, so it is the true chain rule for every f.
All functions work on arrays of shape (n, k) and are stable for |z| up to 1e3 (no overflow warnings).
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit

from harness.core.registry import Registry


class Activation:
    """An activation function with its derivative and vector-Jacobian product."""

    name: str = ""
    elementwise: bool = True

    def value(self, z: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """f(z), written into ``out`` when given (``out`` may be ``z`` itself)."""
        raise NotImplementedError

    def derivative(self, z: np.ndarray) -> np.ndarray:
        """Elementwise f′(z) (for softmax: the Jacobian's diagonal)."""
        raise NotImplementedError

    def derivative_from_value(self, a: np.ndarray, out: np.ndarray) -> np.ndarray:
        """f′(z) computed from a = f(z) into ``out`` (hidden-layer activations only)."""
        raise NotImplementedError(f"{self.name} has no derivative in terms of its value")

    def vjp(self, z: np.ndarray, g: np.ndarray) -> np.ndarray:
        """J_f(z)ᵀ g per sample; for elementwise f this is g ⊙ f′(z)."""
        return g * self.derivative(z)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def _floating(z: np.ndarray) -> np.ndarray:
    """z as a float array (the in-place exp below needs one; integer input is promoted as np.exp would)."""
    z = np.asarray(z)
    return z if z.dtype.kind == "f" else z.astype(np.float64)


def _exp_minus_abs(z: np.ndarray) -> np.ndarray:
    """e^{-|z|} (in (0, 1], never overflows), computed in one new array (float, whatever z was)."""
    e = np.abs(_floating(z))
    np.negative(e, out=e)
    np.exp(e, out=e)
    return e


class Sigmoid(Activation):
    r"""Logistic sigmoid.

    .. math:: \sigma(z) = \frac{1}{1 + e^{-z}}, \qquad \sigma'(z) = \sigma(z)\,(1 - \sigma(z))
              = \sigma(z)\,\sigma(-z)
    """

    name = "sigmoid"

    def value(self, z: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        # scipy's expit is one ufunc pass, stable for any z (within 2 ulp of 1/(1 + e^{-|z|}) picked by
        # sign), where the numpy expression takes six passes; it runs twice per training step.
        return expit(_floating(z), out=out)

    def derivative_from_value(self, a: np.ndarray, out: np.ndarray) -> np.ndarray:
        """σ′ = a(1 − a) with a = σ(z)."""
        np.subtract(1.0, a, out=out)
        out *= a
        return out

    def derivative(self, z: np.ndarray) -> np.ndarray:
        # σ(z)σ(−z) = e^{-|z|} / (1 + e^{-|z|})² keeps full precision when σ(z) rounds to 1.
        e = _exp_minus_abs(z)
        d = 1.0 + e
        d *= d
        e /= d
        return e


class Tanh(Activation):
    r"""Hyperbolic tangent.

    .. math:: \tanh'(z) = 1 - \tanh^2(z) = \frac{4 e^{-2|z|}}{(1 + e^{-2|z|})^2}
    """

    name = "tanh"

    def value(self, z: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        return np.tanh(z, out=out)

    def derivative_from_value(self, a: np.ndarray, out: np.ndarray) -> np.ndarray:
        """tanh′ = 1 − a² with a = tanh(z)."""
        np.multiply(a, a, out=out)
        np.subtract(1.0, out, out=out)
        return out

    def derivative(self, z: np.ndarray) -> np.ndarray:
        e = np.exp(-2.0 * np.abs(z))
        return 4.0 * e / (1.0 + e) ** 2


class Identity(Activation):
    r"""Identity (linear output): f(z) = z, f′(z) = 1."""

    name = "identity"

    def value(self, z: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        if out is None or out is z:
            return z
        np.copyto(out, z)
        return out

    def derivative(self, z: np.ndarray) -> np.ndarray:
        return np.ones_like(z)

    def vjp(self, z: np.ndarray, g: np.ndarray) -> np.ndarray:
        return g


class Relu(Activation):
    r"""Rectifier (hidden layers only): f(z) = max(0, z), f′(z) = 1[z > 0] (0 at z = 0)."""

    name = "relu"

    def value(self, z: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        return np.maximum(z, 0.0, out=out)

    def derivative(self, z: np.ndarray) -> np.ndarray:
        return (z > 0).astype(z.dtype)

    def derivative_from_value(self, a: np.ndarray, out: np.ndarray) -> np.ndarray:
        """relu′ = 1[a > 0] = sign(a), since a = max(0, z) ≥ 0."""
        return np.sign(a, out=out)


class Softmax(Activation):
    r"""Softmax over the last axis (a probability vector per sample).

    .. math:: s_i = \frac{e^{z_i}}{\sum_j e^{z_j}}, \qquad
              J_{ij} = \frac{\partial s_i}{\partial z_j} = s_i(\delta_{ij} - s_j), \qquad
              (J^\top g)_j = s_j \,(g_j - g \cdot s)

    ``derivative`` returns only the diagonal s(1 − s), which is what Nielsen's elementwise rule uses;
    it ignores the off-diagonal −s_i s_j, so (a − y) ⊙ s(1 − s) is *not* the gradient for any loss.
    """

    name = "softmax"
    elementwise = False

    def value(self, z: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        # Subtracting the row max leaves s unchanged and keeps exp() ≤ 1. (In place, and the ufuncs'
        # own reductions rather than np.max / np.sum, whose Python wrappers cost more than a small row.)
        z = _floating(z)
        e = np.subtract(z, np.maximum.reduce(z, axis=-1, keepdims=True), out=out)
        np.exp(e, out=e)
        e /= np.add.reduce(e, axis=-1, keepdims=True)
        return e

    def derivative(self, z: np.ndarray) -> np.ndarray:
        s = self.value(z)
        return s * (1.0 - s)

    def vjp(self, z: np.ndarray, g: np.ndarray) -> np.ndarray:
        s = self.value(z)
        return s * (g - np.sum(g * s, axis=-1, keepdims=True))


OUTPUT_ACTIVATIONS: Registry[Activation] = Registry("activation", [Sigmoid(), Softmax(), Identity(), Tanh()])
HIDDEN_ACTIVATIONS: Registry[Activation] = Registry("model.hidden_activation", [Sigmoid(), Tanh(), Relu()])
