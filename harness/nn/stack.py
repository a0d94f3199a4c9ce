"""The training engine's network: R networks of one architecture as one stack (a single run is R = 1).

Honest statistics need 20 to 30 seeds per cell. On small nets a single run's time is mostly the Python and
numpy per-call overhead around tiny products (on XOR a 25 µs step is about 8 µs of BLAS); stacking R networks
along a leading *replica axis* pays that overhead once per step for all of them.

- Weights are stacked (R, n_in, n_out), biases (R, n_out); one batched forward, backward and update per step
  (``np.matmul`` on the stacks: one BLAS product per replica slice, looped in C, on the same operands as a
  single network's step). Each bias is the last row of its layer's parameter array and enters the products
  through a ones column of the layer's input, so no broadcast add or reduction over the replica axis is
  needed; layers of ≥ ``FUSED_UPDATE_MIN`` parameters take the update inside BLAS (C ← C − AᵀB per replica),
  never writing a gradient array.
- Every intermediate array of a step (z, a, δ, f′, the gradients) is written into buffers allocated once per
  batch size (:class:`Workspace`); the small (m × k) error is scaled by the step size rather than every
  gradient; the hidden f′ comes from the kept activations (σ′ = a(1 − a), as Nielsen's ``sigmoid_prime`` and
  PyTorch's sigmoid backward do).
- Replica r is the reference network (:class:`harness.nn.network.MLP`) with seed ``seeds[r]``: the same
  :func:`harness.nn.weights.initial_parameters` draw from ``default_rng(seeds[r])``. Results equal the
  reference's up to rounding (BLAS orders the bias term and the batch sum its own way):
  ``tests/test_replicas.py`` holds weights and metrics to 1e-12.
- The rule's output error is the same ``DeltaRule.delta(loss, act, z, a, y)`` on (R, m, k) arrays: losses,
  activations and rules in :mod:`harness.core` work on any leading axes (softmax normalises and the losses sum
  over the last axis only).
- Measured on 2 shared cores (``benchmarks/bench_replicas.py``, per network step, CPU time): XOR at R = 30 ≈
  2.4 µs, ≈ 240× idiomatic PyTorch; MNIST minibatch 10 at R = 10 (float64) ≈ 7.5–10× PyTorch, 4–5×
  ``torch.func.vmap``, ≈ 1.6× one network's GEMM-only floor.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy.linalg.blas import get_blas_funcs

from harness.core.activations import Activation
from harness.nn.network import MLP
from harness.nn.weights import initial_parameters

# Layers with at least this many parameters per replica take their update in BLAS (see _update_in_blas); smaller
# ones (XOR's) compute every replica's gradient in one np.matmul and subtract it in one pass, since a BLAS call
# per replica costs ≈ 1.3 µs.
FUSED_UPDATE_MIN = 2048

OutputError = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]  # (zᴸ, aᴸ, y) ↦ δᴸ, all (R, m, k)

OutputError = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]  # (zᴸ, aᴸ, y) ↦ δᴸ, all (R, m, k)
ReplicaHook = Callable[[int, int, dict[str, float]], None]  # (replica, epoch, metrics)


class Workspace:
    """Every array one batched SGD step on R × m samples writes, allocated once and reused.

    With biases, each hidden layer's activations carry a trailing column of ones (the bias input), so the
    next layer's product adds the bias and its weight gradient holds the bias gradient as its last row.
    """

    def __init__(self, params: list[np.ndarray], fused: list[bool], use_bias: bool, m: int, dtype: np.dtype) -> None:
        r, extra, last = params[0].shape[0], int(use_bias), len(params) - 1
        self.key = (m, dtype)
        outs = [p.shape[2] for p in params]
        self.zs = [np.empty((r, m, n), dtype) for n in outs]  # zˡ
        # aˡ = f(zˡ), with the ones column below every layer but the output one
        self.acts_aug = [np.ones((r, m, n + (extra if i < last else 0)), dtype) for i, n in enumerate(outs)]
        self.acts = [a[..., : outs[i]] for i, a in enumerate(self.acts_aug)]  # f(zˡ) alone (a view)
        self.acts_t = [np.swapaxes(a, 1, 2) for a in self.acts_aug]  # (aˡ, 1)ᵀ per replica, for BP4
        self.deltas = [np.empty((r, m, n), dtype) for n in outs]  # step · δˡ
        self.fprimes = [np.empty((r, m, n), dtype) for n in outs[:-1]]  # f′(zˡ), hidden layers
        # step · ∂C/∂(Wˡ; bˡ), except for layers updated inside BLAS (no gradient array)
        self.grads = [None if f else np.empty_like(p) for p, f in zip(params, fused)]


class ReplicaMLP:
    """R networks of one architecture: weights (R, n_in, n_out), biases (R, n_out) (or none).

    Each layer's parameters live in one array (R, n_in + 1, n_out) whose last row is the bias:
    ``weights[i]`` and ``biases[i]`` are views of it. A product with the input's ones column then adds the
    bias (one BLAS call instead of a broadcast add: on XOR's 4 × 4 layers a broadcast over the replica axis
    costs as much as the product), and one subtraction updates weights and biases together. The sums are
    the single network's up to rounding: the bias enters each z as the last term of the product, and BLAS
    may order a sum differently from a separate add or ``np.add.reduce`` (after 300 XOR epochs the metrics
    differ from the single run's by at most a few 1e-16; ``tests/test_replicas.py`` holds them to 1e-12).
    """

    def __init__(
        self, weights: list[np.ndarray], biases: list[np.ndarray] | None, hidden: Activation, output: Activation
    ) -> None:
        self.use_bias = biases is not None
        if biases is not None:
            self.params = [np.concatenate([w, b[:, None, :]], axis=1) for w, b in zip(weights, biases)]
        else:
            self.params = [np.array(w, order="C") for w in weights]
        self.hidden = hidden
        self.output = output
        self._views()
        self._workspaces: dict[tuple[int, np.dtype], Workspace] = {}
        self._last_workspace: Workspace | None = None
        self._augmented: list[tuple[np.ndarray, np.ndarray]] = []  # (x, x with its ones column), latest last

    def _views(self) -> None:
        n_ins = [p.shape[1] - int(self.use_bias) for p in self.params]
        self.weights = [p[:, :n, :] for p, n in zip(self.params, n_ins)]
        self.biases = [p[:, n, :] for p, n in zip(self.params, n_ins)] if self.use_bias else []
        self._wt = [np.swapaxes(w, 1, 2) for w in self.weights]  # Wᵀ per replica, for BP2
        self._fused = [p.shape[1] * p.shape[2] >= FUSED_UPDATE_MIN for p in self.params]
        self._gemm = get_blas_funcs("gemm", dtype=self.params[0].dtype)

    # ------------------------------------------------------------------------------------------- building

    @classmethod
    def stack(cls, models: Sequence[MLP]) -> ReplicaMLP:
        """The replicas of ``models`` (copied), which must share sizes, activations and use of biases."""
        first = models[0]
        for m in models:
            if m.sizes != first.sizes or m.use_bias != first.use_bias:
                raise ValueError(f"replicas need one architecture: {m} vs {first}")
            if m.hidden.name != first.hidden.name or m.output.name != first.output.name:
                raise ValueError(f"replicas need one pair of activations: {m} vs {first}")
        weights = [np.stack([m.weights[i] for m in models]) for i in range(len(first.weights))]
        biases = [np.stack([m.biases[i] for m in models]) for i in range(len(first.biases))]
        return cls(weights, biases if first.use_bias else None, first.hidden, first.output)

    @classmethod
    def initialise(
        cls, sizes: list[int], hidden: Activation, output: Activation, seeds: Sequence[int], **init
    ) -> ReplicaMLP:
        """Replica r drawn from ``np.random.default_rng(seeds[r])``, as the reference ``MLP.initialise`` draws
        a network with that seed; ``init`` as in :func:`harness.nn.weights.initial_parameters`."""
        drawn = [initial_parameters(sizes, np.random.default_rng(seed), **init) for seed in seeds]
        weights = [np.stack(layer) for layer in zip(*(w for w, _ in drawn))]
        biases = [np.stack(layer) for layer in zip(*(b for _, b in drawn))] if drawn[0][1] is not None else None
        return cls(weights, biases, hidden, output)

    @property
    def n_replicas(self) -> int:
        return self.params[0].shape[0]

    @property
    def sizes(self) -> list[int]:
        return [self.weights[0].shape[1]] + [w.shape[2] for w in self.weights]

    def parameters(self) -> list[np.ndarray]:
        """Views (R, n_in, n_out) of the weights, then (R, n_out) of the biases, as ``MLP.parameters``."""
        return [*self.weights, *self.biases]

    def replica(self, r: int) -> MLP:
        """Replica ``r`` as a single network (a copy)."""
        biases = [b[r].copy() for b in self.biases] if self.use_bias else None
        return MLP([w[r].copy() for w in self.weights], biases, self.hidden, self.output)

    def select(self, rows: np.ndarray | Sequence[int]) -> ReplicaMLP:
        """A new stack of the replicas ``rows`` (copied), in that order."""
        rows = np.asarray(rows, dtype=np.intp)
        new = ReplicaMLP.__new__(ReplicaMLP)
        new.use_bias, new.hidden, new.output = self.use_bias, self.hidden, self.output
        new.params = [p[rows] for p in self.params]
        new._views()
        new._workspaces, new._last_workspace, new._augmented = {}, None, list(self._augmented)
        return new

    def assign(self, rows: np.ndarray | Sequence[int], other: ReplicaMLP) -> None:
        """Write ``other``'s replicas into rows ``rows`` of this stack, in place."""
        rows = np.asarray(rows, dtype=np.intp)
        for mine, theirs in zip(self.params, other.params):
            mine[rows] = theirs

    # ------------------------------------------------------------------------------------------- computing

    def augment(self, x: np.ndarray) -> np.ndarray:
        """``x`` (…, n, d) with a trailing column of ones (the bias input); ``x`` itself for a bias-free net.

        The last few are cached (the training and test sets): pass the result to :meth:`sgd_step` or gather
        minibatches from it.
        """
        if not self.use_bias:
            return x
        for original, augmented in self._augmented:
            if original is x:
                return augmented
        out = np.ones((*x.shape[:-1], x.shape[-1] + 1), x.dtype)
        out[..., :-1] = x
        self._augmented = [*self._augmented[-2:], (x, out)]
        return out

    def forward(self, x: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
        """Forward pass of every replica; ``x`` is (R, n, d), or (n, d) shared by all. Returns zˡ and aᴸ."""
        _, zs, a = self.forward_cache(x)
        return zs, a

    def forward_cache(self, x: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
        """:meth:`forward`, and the input of every layer (with its ones column when the net has biases):
        ``inputs[0]`` is x (augmented), ``inputs[l]`` the activations aˡ of the hidden layer below layer l + 1."""
        inputs, zs = [], []
        a = self.augment(x) if x.shape[-1] == self.sizes[0] else x
        last = len(self.params) - 1
        for i, p in enumerate(self.params):
            inputs.append(a)
            z = np.matmul(a, p)
            zs.append(z)
            if i == last:
                a = self.output.value(z)
            else:
                out = np.ones((*z.shape[:-1], z.shape[-1] + int(self.use_bias)), z.dtype)
                self.hidden.value(z, out=out[..., : z.shape[-1]])
                a = out
        return inputs, zs, a

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.forward(x)[1]

    def sgd_step(
        self,
        x: np.ndarray,
        y: np.ndarray,
        output_error: OutputError,
        steps: np.ndarray,
        active: np.ndarray | None = None,
        decays: np.ndarray | None = None,
    ) -> None:
        """One SGD step of every replica: Wˡ[r] ← (1 − decays[r])·Wˡ[r] − steps[r] · aˡ⁻¹[r]ᵀ δˡ[r], and
        bˡ[r] ← bˡ[r] − steps[r] · Σₙ δˡ[r] (``decays`` = η·λ/n for L2 regularisation; None: none).

        ``x`` is (R, m, d) and ``y`` (R, m, k) (each replica's own minibatch), or (m, d) and (m, k) shared by
        every replica (a full batch); ``x`` may already carry the ones column (:meth:`augment`; gathering
        minibatches from an augmented x saves a copy per step). ``steps`` has one step size per replica, (R,)
        (η/m for the mean reduction). ``active`` (R,) bool, if given, leaves the replicas where it is False as
        they are (their products are still computed: :func:`harness.nn.training.train` drops stopped replicas
        from the stack instead). The step is the reference :meth:`harness.nn.network.MLP.update` with a replica
        axis and buffers: each Wˡ⁺¹ is used by BP2 before its update.
        """
        if x.shape[-1] != self.params[0].shape[1]:
            x = self.augment(x)
        ws = self._workspace(x.shape[-2], x.dtype)
        params, wt, last = self.params, self._wt, len(self.params) - 1
        a = x
        for i, p in enumerate(params):  # forward, into the workspace
            z = np.matmul(a, p, out=ws.zs[i])
            (self.output if i == last else self.hidden).value(z, out=ws.acts[i])
            a = ws.acts_aug[i]
        steps3 = np.asarray(steps, dtype=a.dtype).reshape(-1, 1, 1)
        delta = np.multiply(output_error(z, a, y), steps3, out=ws.deltas[last])
        mask = None if active is None else np.asarray(active, dtype=bool)
        for i in range(last, -1, -1):  # backward, fused with the update
            p = params[i]
            below_delta = None
            if i > 0:  # BP2 with Wˡ before its update
                below_delta = np.matmul(delta, wt[i], out=ws.deltas[i - 1])
                below_delta *= self.hidden.derivative_from_value(ws.acts[i - 1], out=ws.fprimes[i - 1])
            below = ws.acts_aug[i - 1] if i > 0 else x
            if decays is not None:  # (1 − η·λ/n)·Wˡ, the bias row left alone
                keep = (1.0 - np.asarray(decays, dtype=p.dtype)).reshape(-1, 1, 1)
                np.multiply(self.weights[i], keep if mask is None else np.where(mask[:, None, None], keep, 1.0),
                            out=self.weights[i])  # fmt: skip
            if self._fused[i]:  # (W; b)[r] ← (W; b)[r] − (a, 1)[r]ᵀ δ[r]: one BLAS call, no gradient array
                self._update_in_blas(p, below, delta, mask)
            else:  # the (W; b) gradient of every replica, then one subtraction
                grad = np.matmul(ws.acts_t[i - 1] if i > 0 else np.swapaxes(x, -1, -2), delta, out=ws.grads[i])
                if mask is None:
                    np.subtract(p, grad, out=p)
                else:
                    np.subtract(p, grad, out=p, where=mask[:, None, None])
            delta = below_delta

    def _update_in_blas(self, p: np.ndarray, below: np.ndarray, delta: np.ndarray, mask: np.ndarray | None) -> None:
        """p[r] −= below[r]ᵀ delta[r] per replica as one GEMM each (C ← C − AᵀB, beta = 1), in place.

        In BLAS's column-major terms p[r]ᵀ is (n_out, n_in) and C ← C − δ[r]ᵀ · below[r]; every operand is
        passed as a transposed view, so f2py copies nothing. For large layers (MNIST's 785 × 30) this saves
        writing and re-reading an R × n_in × n_out gradient (which does not stay in cache) and a ufunc pass.
        """
        gemm = self._gemm
        shared = below.ndim == 2
        for r in range(len(p)):
            if mask is None or mask[r]:
                b = below if shared else below[r]
                gemm(-1.0, delta[r].T, b.T, 1.0, p[r].T, trans_b=1, overwrite_c=1)

    def _workspace(self, m: int, dtype: np.dtype) -> Workspace:
        ws = self._last_workspace
        if ws is not None and ws.key == (m, dtype):
            return ws
        key = (m, dtype)
        ws = self._workspaces.get(key)
        if ws is None:
            if dtype != self.params[0].dtype:
                raise TypeError(f"batch dtype {dtype} differs from the weights' {self.params[0].dtype}")
            ws = self._workspaces[key] = Workspace(self.params, self._fused, self.use_bias, m, dtype)
        self._last_workspace = ws
        return ws

    def finite(self) -> np.ndarray:
        """(R,) bool: every parameter of the replica is finite."""
        ok = np.ones(self.n_replicas, dtype=bool)
        for p in self.params:  # the ufunc's own reduction: np.all's Python wrapper costs more on small stacks
            ok &= np.logical_and.reduce(np.isfinite(p).reshape(len(p), -1), axis=1)
        return ok

    def __repr__(self) -> str:
        return (
            f"ReplicaMLP(replicas={self.n_replicas}, sizes={self.sizes}, hidden={self.hidden.name}, "
            f"output={self.output.name})"
        )


def estimate_bytes(sizes: Sequence[int], n_eval: int, replicas: int = 1, itemsize: int = 8) -> int:
    """Memory a stack of ``replicas`` networks of layer ``sizes`` needs to train and be evaluated on ``n_eval``
    samples, roughly: three copies of the parameters P = Σ (n_in + 1)·n_out (the stack, the training copy of
    the active replicas, the gradients) and six arrays of every layer's activations over the evaluation set
    (z, a, both δ of the cosine and their backprop)."""
    params = sum((n_in + 1) * n_out for n_in, n_out in zip(sizes, sizes[1:]))
    activations = n_eval * sum(sizes[1:])
    return int(itemsize * replicas * (3 * params + 6 * activations))
