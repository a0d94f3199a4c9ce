"""harness: Ng's δ = a − y against Nielsen's δ = (a − y) ⊙ f′(z), measured on every pairing.

The math (losses, activations, delta rules) is importable without Hydra or MLflow::

    >>> import numpy as np, harness
    >>> harness.output_delta("ng", "bce", "sigmoid", np.zeros((1, 2)), np.array([[1.0, 0.0]]))
    array([[-0.5,  0.5]])

The layers, bottom up: :mod:`harness.core` (the math), :mod:`harness.nn` (network, training, data),
:mod:`harness.tracking` (MLflow), :mod:`harness.report` (from runs to answers), and the runner on top
(:mod:`harness.config`, :mod:`harness.app`, :mod:`harness.sweep`, ``python -m harness``).
"""

from __future__ import annotations

from typing import Any

# Public names, loaded on first use, so that importing one layer (say harness.tracking) does not load another.
_DELTAS = ("DELTA_RULES", "is_exact", "output_delta", "pairing")
_ACTIVATIONS = ("HIDDEN_ACTIVATIONS", "OUTPUT_ACTIVATIONS")
__all__ = sorted([*_DELTAS, *_ACTIVATIONS, "LOSSES"])


def __getattr__(name: str) -> Any:
    if name in _DELTAS:
        from harness.core import deltas as module
    elif name in _ACTIVATIONS:
        from harness.core import activations as module
    elif name == "LOSSES":
        from harness.core import losses as module
    else:
        raise AttributeError(f"module 'harness' has no attribute {name!r}")
    return getattr(module, name)


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
