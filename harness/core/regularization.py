r"""L2 regularisation (weight decay), in Ng's and Nielsen's convention.

Both add to the data cost C₀ (a mean over the n training samples) the penalty

.. math:: C = C_0 + \frac{\lambda}{2n} \sum_{W} \sum_{ij} W_{ij}^2, \qquad
          \frac{\partial C}{\partial W} = \frac{\partial C_0}{\partial W} + \frac{\lambda}{n} W

over the weight matrices only, never the biases: Ng's ex4 skips the first column of each Θ (the one that
multiplies the bias unit, ``Theta(:, 2:end)``), Nielsen's ``network2.py`` decays ``self.weights`` and not
``self.biases``. The divisor is the size n of the *training set* (Ng's m, Nielsen's ``lmbda/n`` with
``n = len(training_data)``), also when a step uses a minibatch: the penalty belongs to the whole cost, not
to one batch. Since the penalty does not involve the output layer's error, its gradient is the same for
every δ rule: a rule that is exact for C₀ stays exact for C, and a mismatched one stays mismatched.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


def _check(lam: float, m: int) -> None:
    if not lam >= 0 or not np.isfinite(lam):
        raise ValueError(f"the L2 strength lambda must be a finite number >= 0, got {lam!r}")
    if int(m) != m or m < 1:
        raise ValueError(
            f"m, the number of training samples the cost averages over, must be an integer >= 1, got {m!r}"
        )


def l2_penalty(weights: np.ndarray | Iterable[np.ndarray], lam: float, m: int) -> float:
    r"""The penalty λ/(2m) · Σ over the weight matrices of the sum of their squared entries.

    ``weights`` is one matrix or an iterable of them, *without* bias terms (pass ``Theta[:, 1:]`` for a Θ
    whose first column multiplies the bias unit); ``m`` is the training-set size n.
    """
    _check(lam, m)
    mats = [weights] if isinstance(weights, np.ndarray) else list(weights)
    total = sum(float(np.sum(np.square(w, dtype=np.float64))) for w in mats)
    return lam / (2.0 * m) * total


def l2_gradient(w: np.ndarray, lam: float, m: int) -> np.ndarray:
    r"""∂/∂W of :func:`l2_penalty`: (λ/m) · W, for one weight matrix (no bias terms; same shape as ``w``)."""
    _check(lam, m)
    return (lam / m) * np.asarray(w, dtype=np.float64)
