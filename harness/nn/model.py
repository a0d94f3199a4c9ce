"""A fully connected network (MLP) in numpy, with backprop written as Nielsen's four equations.

Samples are rows: zˡ = aˡ⁻¹ Wˡ + bˡ, aˡ = f(zˡ), with Wˡ of shape (n_in, n_out). Backprop, per batch:

- (BP1) δᴸ is given by the delta rule (the object of study; see :mod:`harness.core.deltas`);
- (BP2) δˡ = (δˡ⁺¹ Wˡ⁺¹ᵀ) ⊙ f′(zˡ) for hidden layers;
- (BP3) ∂C/∂bˡ = Σₙ δˡ;  (BP4) ∂C/∂Wˡ = aˡ⁻¹ᵀ δˡ   (summed over the batch; the caller scales).

:meth:`MLP.backward` returns the gradients; :meth:`MLP.sgd_step` is a whole SGD step (forward, output error,
backprop fused with the update: the training loop's hot path) that writes every intermediate array into
buffers allocated once per batch size, scales the small (m × k) error instead of every (n_in × n_out)
gradient, and takes the hidden f′ from the kept activations (σ′ = a(1 − a)) instead of recomputing f(z).
At minibatch 10 on MNIST a step is ~30 small numpy calls around 5 matrix products, so every call saved
shows (``benchmarks/bench_loop.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from harness.core.activations import Activation


@dataclass
class Forward:
    """What a forward pass keeps for backprop: the inputs of every layer and the output z and a."""

    inputs: list[np.ndarray] = field(default_factory=list)  # a⁰ … aᴸ⁻¹ (a⁰ = x)
    zs: list[np.ndarray] = field(default_factory=list)  # z¹ … zᴸ

    @property
    def z_out(self) -> np.ndarray:
        return self.zs[-1]


INIT_SCHEMES = ("nielsen", "uniform", "constant")

OutputError = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]  # (zᴸ, aᴸ, y) ↦ δᴸ


class Workspace:
    """Every array one SGD step on a batch of ``m`` samples writes, allocated once and reused."""

    def __init__(self, weights: list[np.ndarray], m: int) -> None:
        dtype = weights[0].dtype
        self.key = (m, dtype)
        self.zs = [np.empty((m, w.shape[1]), dtype) for w in weights]  # zˡ
        self.acts = [np.empty((m, w.shape[1]), dtype) for w in weights]  # aˡ = f(zˡ)
        self.deltas = [np.empty((m, w.shape[1]), dtype) for w in weights]  # step · δˡ
        self.fprimes = [np.empty((m, w.shape[1]), dtype) for w in weights[:-1]]  # f′(zˡ), hidden layers
        self.grads = [np.empty_like(w) for w in weights]  # step · ∂C/∂Wˡ
        self.bias_grads = [np.empty(w.shape[1], dtype) for w in weights]  # step · ∂C/∂bˡ


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
        self._workspaces: dict[tuple[int, np.dtype], Workspace] = {}  # sgd_step's buffers per batch size
        self._last_workspace: Workspace | None = None

    @classmethod
    def nielsen_init(cls, sizes: list[int], hidden: Activation, output: Activation, rng: np.random.Generator) -> MLP:
        """Nielsen's default initialiser: W ~ N(0, 1/n_in), b ~ N(0, 1)."""
        return cls.initialise(sizes, hidden, output, rng, scheme="nielsen")

    @classmethod
    def initialise(
        cls,
        sizes: list[int],
        hidden: Activation,
        output: Activation,
        rng: np.random.Generator,
        scheme: str = "nielsen",
        bias: bool = True,
        constant: tuple[float, float] = (0.0, 0.0),
        dtype: np.dtype | type = np.float64,
    ) -> MLP:
        """A new network; ``scheme`` is one of :data:`INIT_SCHEMES`:

        - ``nielsen``: W ~ N(0, 1/n_in), b ~ N(0, 1) (Nielsen's ``default_weight_initializer``);
        - ``uniform``: W, b ~ U[−1, 1) (the ``2 * np.random.random(shape) - 1`` of numpy XOR programs);
        - ``constant``: every weight = ``constant[0]``, every bias = ``constant[1]`` (Nielsen's chapter-3
          single neuron starts at (w, b) = (0.6, 0.9) or (2.0, 2.0)).

        The draws are made in float64 and then rounded to ``dtype``, so a float32 network starts from the
        float64 one's weights (same seed, same starting point).
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
        biases = [b.astype(dtype, copy=False) for b in biases]
        return cls(weights, biases if bias else None, hidden, output)

    @property
    def sizes(self) -> list[int]:
        return [self.weights[0].shape[0]] + [w.shape[1] for w in self.weights]

    def parameters(self) -> list[np.ndarray]:
        return [*self.weights, *self.biases]

    def forward(self, x: np.ndarray) -> tuple[Forward, np.ndarray]:
        """Forward pass; returns the cache for backprop and the output activation aᴸ."""
        inputs, zs = [], []
        a = x
        last = len(self.weights) - 1
        for i, w in enumerate(self.weights):
            inputs.append(a)
            z = a @ w
            if self.use_bias:
                z += self.biases[i]  # in place: one temporary fewer than a @ w + b
            zs.append(z)
            a = (self.output if i == last else self.hidden).value(z)
        return Forward(inputs, zs), a

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.forward(x)[1]

    def backward(self, cache: Forward, delta_out: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Gradients (BP2–BP4) summed over the batch, given the output error δᴸ (BP1)."""
        n_layers = len(self.weights)
        grad_w: list[np.ndarray] = [np.empty(0)] * n_layers
        grad_b: list[np.ndarray] = [np.empty(0)] * n_layers
        delta = delta_out
        for i in range(n_layers - 1, -1, -1):
            grad_w[i] = cache.inputs[i].T @ delta
            grad_b[i] = delta.sum(axis=0)  # unused (and not returned) when the network has no biases
            if i > 0:
                delta = (delta @ self.weights[i].T) * self.hidden.derivative(cache.zs[i - 1])
        return grad_w, grad_b if self.use_bias else []

    def sgd_step(self, x: np.ndarray, y: np.ndarray, output_error: OutputError, step: float) -> None:
        """One SGD step on the batch (x, y): Wˡ ← Wˡ − step · aˡ⁻¹ᵀ δˡ, bˡ ← bˡ − step · Σₙ δˡ.

        ``output_error(zᴸ, aᴸ, y)`` gives δᴸ (BP1: the delta rule under study); BP2–BP4 follow as in
        :meth:`backward`, each Wˡ⁺¹ used by BP2 *before* its update. The scale is applied once to the
        (m × k) error, since aᵀ(step · δ) = step · aᵀδ. The weights are updated in place (never replaced).
        """
        ws = self._workspace(len(x), x.dtype)
        weights, biases, use_bias, last = self.weights, self.biases, self.use_bias, len(self.weights) - 1
        a = x
        for i, w in enumerate(weights):  # forward, into the workspace
            z = np.matmul(a, w, out=ws.zs[i])
            if use_bias:
                z += biases[i]
            a = (self.output if i == last else self.hidden).value(z, out=ws.acts[i])
        delta = np.multiply(output_error(z, a, y), step, out=ws.deltas[last])
        for i in range(last, -1, -1):  # backward, fused with the update
            w, grad = weights[i], ws.grads[i]
            below = ws.acts[i - 1] if i > 0 else x
            np.matmul(below.T, delta, out=grad)
            if use_bias:
                b = biases[i]
                np.subtract(b, np.add.reduce(delta, axis=0, out=ws.bias_grads[i]), out=b)
            if i > 0:
                delta = np.matmul(delta, w.T, out=ws.deltas[i - 1])
                delta *= self.hidden.derivative_from_value(below, out=ws.fprimes[i - 1])
            np.subtract(w, grad, out=w)

    def _workspace(self, m: int, dtype: np.dtype) -> Workspace:
        ws = self._last_workspace
        if ws is not None and ws.key == (m, dtype):  # the common case: the same batch size as last step
            return ws
        key = (m, dtype)
        ws = self._workspaces.get(key)
        if ws is None:
            if dtype != self.weights[0].dtype:
                raise TypeError(f"batch dtype {dtype} differs from the weights' {self.weights[0].dtype}")
            ws = self._workspaces[key] = Workspace(self.weights, m)
        self._last_workspace = ws
        return ws

    def is_finite(self) -> bool:
        return all(np.isfinite(p).all() for p in self.parameters())

    def __repr__(self) -> str:
        return f"MLP(sizes={self.sizes}, hidden={self.hidden.name}, output={self.output.name})"
