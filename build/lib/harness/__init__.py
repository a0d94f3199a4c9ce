"""harness: Ng's δ = a − y against Nielsen's δ = (a − y) ⊙ f′(z), measured on every pairing.

The math (losses, activations, delta rules) is importable without Hydra or MLflow::

    >>> import numpy as np, harness
    >>> harness.output_delta("ng", "bce", "sigmoid", np.zeros((1, 2)), np.array([[1.0, 0.0]]))
    array([[-0.5,  0.5]])
"""

from harness.core.activations import HIDDEN_ACTIVATIONS, OUTPUT_ACTIVATIONS
from harness.core.deltas import DELTA_RULES, is_exact, output_delta, pairing
from harness.core.losses import LOSSES

__all__ = [
    "DELTA_RULES",
    "HIDDEN_ACTIVATIONS",
    "LOSSES",
    "OUTPUT_ACTIVATIONS",
    "is_exact",
    "output_delta",
    "pairing",
]
