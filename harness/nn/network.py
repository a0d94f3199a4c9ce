"""One fully connected network (MLP) in numpy, with backprop written as Nielsen's four equations.

This is the *reference*: it reads like the book, one array per layer and no buffers, and the tests compare
the training engine (:mod:`harness.nn.stack`, :mod:`harness.nn.training`: every job trains through it, a single
run as a stack of one) against it step by step. It holds no training loop.

Samples are rows: zˡ = aˡ⁻¹ Wˡ + bˡ, aˡ = f(zˡ), with Wˡ of shape (n_in, n_out). Backprop, per batch:

- (BP1) δᴸ is given by the delta rule (the object of study; see :mod:`harness.core.deltas`);
- (BP2) δˡ = (δˡ⁺¹ Wˡ⁺¹ᵀ) ⊙ f′(zˡ) for hidden layers;
- (BP3) ∂C/∂bˡ = Σₙ δˡ;  (BP4) ∂C/∂Wˡ = aˡ⁻¹ᵀ δˡ   (summed over the batch; the caller scales).

and the update (Nielsen's ``update_mini_batch``, with L2 weight decay as in his ``network2.py``):
Wˡ ← (1 − η·λ/n)·Wˡ − step · ∂C/∂Wˡ,  bˡ ← bˡ − step · ∂C/∂bˡ.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from harness.core.activations import Activation
from harness.nn.weights import initial_parameters


@dataclass
class Forward:
    """What a forward pass keeps for backprop: the inputs of every layer and the output z and a."""

    inputs: list[np.ndarray] = field(default_factory=list)  # a⁰ … aᴸ⁻¹ (a⁰ = x)
    zs: list[np.ndarray] = field(default_factory=list)  # z¹ … zᴸ

    @property
    def z_out(self) -> np.ndarray:
        return self.zs[-1]


class MLP:
    """Layers ``sizes = [n_in, *hidden, n_out]``; ``hidden`` activation between, ``output`` at the end."""

    def __init__(
        self,
        weights: list[np.ndarray],
        biases: list[np.ndarray] | None,
        hidden: Activation,
        output: Activation,
    ) -> None:
        """``biases=None`` makes a bias-free network (e.g. when a constant input column plays the bias)."""
        self.weights = weights
        self.biases = biases if biases is not None else []
        self.use_bias = biases is not None
        self.hidden = hidden
        self.output = output

    @classmethod
    def initialise(
        cls, sizes: list[int], hidden: Activation, output: Activation, rng: np.random.Generator, **init
    ) -> MLP:
        """A new network drawn from ``rng``; ``init`` as in :func:`harness.nn.weights.initial_parameters`
        (``scheme``, ``bias``, ``constant``, ``dtype``)."""
        return cls(*initial_parameters(sizes, rng, **init), hidden, output)

    @property
    def sizes(self) -> list[int]:
        return [self.weights[0].shape[0]] + [w.shape[1] for w in self.weights]

    def parameters(self) -> list[np.ndarray]:
        return [*self.weights, *self.biases]

    def forward(self, x: np.ndarray) -> tuple[Forward, np.ndarray]:
        """Forward pass; returns the cache for backprop and the output activation aᴸ."""
        cache, a = Forward(), x
        last = len(self.weights) - 1
        for i, w in enumerate(self.weights):
            cache.inputs.append(a)
            z = a @ w + self.biases[i] if self.use_bias else a @ w
            cache.zs.append(z)
            a = (self.output if i == last else self.hidden).value(z)
        return cache, a

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.forward(x)[1]

    def backward(self, cache: Forward, delta_out: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Gradients (BP2–BP4) summed over the batch, given the output error δᴸ (BP1)."""
        n_layers = len(self.weights)
        grad_w: list[np.ndarray] = [np.empty(0)] * n_layers
        grad_b: list[np.ndarray] = [np.empty(0)] * n_layers
        delta = delta_out
        for i in range(n_layers - 1, -1, -1):
            grad_w[i] = cache.inputs[i].T @ delta  # BP4
            grad_b[i] = delta.sum(axis=0)  # BP3 (unused when the network has no biases)
            if i > 0:  # BP2, with f′(zˡ) from aˡ = f(zˡ) as Nielsen's sigmoid_prime: σ′(z) = σ(z)(1 − σ(z))
                below = cache.inputs[i]
                delta = (delta @ self.weights[i].T) * self.hidden.derivative_from_value(below, np.empty_like(below))
        return grad_w, grad_b if self.use_bias else []

    def update(
        self,
        x: np.ndarray,
        y: np.ndarray,
        output_error: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray],
        step: float,
        decay: float = 0.0,
    ) -> None:
        """One SGD step on the batch (x, y): forward, δᴸ = ``output_error(zᴸ, aᴸ, y)`` (BP1), backward, then
        Wˡ ← (1 − decay)·Wˡ − step · ∂C/∂Wˡ and bˡ ← bˡ − step · ∂C/∂bˡ (``step`` = η/m for Nielsen's mean,
        ``decay`` = η·λ/n for L2 regularisation, 0 without)."""
        cache, a = self.forward(x)
        # step · ∂C/∂θ, as the backprop of step · δᴸ (backprop is linear in δ)
        grad_w, grad_b = self.backward(cache, step * output_error(cache.z_out, a, y))
        self.weights = [(1.0 - decay) * w - g for w, g in zip(self.weights, grad_w)]
        if self.use_bias:
            self.biases = [b - g for b, g in zip(self.biases, grad_b)]

    def is_finite(self) -> bool:
        return all(np.isfinite(p).all() for p in self.parameters())

    def __repr__(self) -> str:
        return f"MLP(sizes={self.sizes}, hidden={self.hidden.name}, output={self.output.name})"
