"""Initial weights and biases: the schemes a network can start from.

Both the reference network (:class:`harness.nn.network.MLP`) and the training engine's stack
(:class:`harness.nn.stack.ReplicaMLP`, one :func:`initial_parameters` draw per seed) start from here, so a
replica with seed s starts from the very weights a single network with seed s does.
"""

from __future__ import annotations

import numpy as np

INIT_SCHEMES = ("nielsen", "uniform", "constant")


def initial_parameters(
    sizes: list[int],
    rng: np.random.Generator,
    scheme: str = "nielsen",
    bias: bool = True,
    constant: tuple[float, float] = (0.0, 0.0),
    dtype: np.dtype | type | str = np.float64,
) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
    """Weights Wˡ of shape (n_in, n_out) and biases bˡ of shape (n_out,) for layers ``sizes``
    (``None`` for the biases when ``bias`` is false). ``scheme`` is one of :data:`INIT_SCHEMES`:

    - ``nielsen``: W ~ N(0, 1/n_in), b ~ N(0, 1) (Nielsen's ``default_weight_initializer``);
    - ``uniform``: W, b ~ U[−1, 1) (the ``2 * np.random.random(shape) - 1`` of numpy XOR programs);
    - ``constant``: every weight = ``constant[0]``, every bias = ``constant[1]`` (Nielsen's chapter-3
      single neuron starts at (w, b) = (0.6, 0.9) or (2.0, 2.0)).

    The draws are made in float64 and then rounded to ``dtype``, so a float32 network starts from the
    float64 one's weights (same seed, same starting point). The biases are drawn even when ``bias`` is
    false, so the weights do not depend on it.
    """
    shapes = list(zip(sizes, sizes[1:]))
    if scheme == "nielsen":
        weights = [rng.normal(0.0, 1.0, shape) / np.sqrt(shape[0]) for shape in shapes]
        biases = [rng.normal(0.0, 1.0, n_out) for _, n_out in shapes]
    elif scheme == "uniform":
        weights = [rng.uniform(-1.0, 1.0, shape) for shape in shapes]
        biases = [rng.uniform(-1.0, 1.0, n_out) for _, n_out in shapes]
    elif scheme == "constant":
        weights = [np.full(shape, float(constant[0])) for shape in shapes]
        biases = [np.full(n_out, float(constant[1])) for _, n_out in shapes]
    else:
        raise KeyError(f"unknown init scheme {scheme!r}; allowed: {', '.join(INIT_SCHEMES)}")
    weights = [w.astype(dtype, copy=False) for w in weights]
    return weights, [b.astype(dtype, copy=False) for b in biases] if bias else None
