"""Replicas: R networks of one (loss, activation, rule, architecture) trained side by side, as one stack.

Honest statistics need 20 to 30 seeds per cell. On small nets a single run's time is mostly the Python and
numpy per-call overhead around tiny products (on XOR a 25 µs step is about 8 µs of BLAS); stacking R networks
along a leading *replica axis* pays that overhead once per step for all of them.

- Weights are stacked (R, n_in, n_out), biases (R, n_out); one batched forward, backward and update per step
  (``np.matmul`` on the stacks: one BLAS product per replica slice, looped in C, on the same operands as a
  single network's step). Each bias is the last row of its layer's parameter array and enters the products
  through a ones column of the layer's input, so no broadcast add or reduction over the replica axis is
  needed; layers of ≥ ``FUSED_UPDATE_MIN`` parameters take the update inside BLAS (C ← C − AᵀB per replica),
  never writing a gradient array. Results equal the single run's up to rounding (BLAS orders the bias term
  and the batch sum its own way): measured ≤ 1e-15 after 300 XOR epochs, 0 on the benchmarks' final losses.
- Measured on 2 shared cores (``benchmarks/bench_replicas.py``, per network step, CPU time): XOR at R = 30 ≈
  2.4 µs, ≈ 240× idiomatic PyTorch and ≈ 11× one harness network; MNIST minibatch 10 at R = 10 (float64) ≈
  7.5–10× PyTorch, 4–5× ``torch.func.vmap``, ≈ 1.6× one network's GEMM-only floor: the stack's products alone
  cost the floor, and each replica's own minibatch gather (≈ 8 %) and the elementwise work (activations, δ,
  f′: ≈ 30 %) do not shrink with R.
- Replica r is the single run with seed ``seeds[r]`` and rate ``lrs[r]``: :meth:`ReplicaMLP.initialise` draws
  its initial weights with ``MLP.initialise`` from ``default_rng(seeds[r])`` (as ``harness.app.build_model``
  does) and :func:`train_replicas` draws its minibatch shuffles from ``default_rng([seeds[r], 1])`` (as
  ``harness.app.shuffle_rng``), one ``permutation(n)`` per epoch, none for a full batch (as
  ``harness.nn.train.sgd_epoch``).
- The rule's output error is the same ``DeltaRule.delta(loss, act, z, a, y)`` on (R, m, k) arrays: losses,
  activations and rules in :mod:`harness.core` work on any leading axes (softmax normalises and the losses sum
  over the last axis only).
- Metrics are evaluated per replica in one batched pass over the training (and test) set, with the
  single run's definitions (:func:`harness.nn.train.evaluate`: ``grad_cosine`` in parameter space, both δs
  backpropagated together, ``delta_cosine`` at the output); outcomes are the single run's
  (:func:`harness.nn.train.train`): a replica whose weights, outputs or rule δ become non-finite stops as
  ``diverged`` at the first evaluated epoch where it happens, and is dropped from the stack (its weights
  kept as they were), so the survivors' steps cost no more than a stack of the survivors; an epoch whose
  loss is undefined counts in the replica's ``undefined_epochs``, which trains on.

``tests/test_replicas.py`` checks replica r against ``harness.nn.train.train`` with its seed and rate to 1e-12
(weights and every logged metric) on XOR and MNIST minibatch 10 with a diverging replica among them;
``benchmarks/bench_replicas.py`` measures the step against PyTorch (one net, and ``torch.func.vmap`` over the
same replicas) and one network's GEMM-only floor.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
from scipy.linalg.blas import get_blas_funcs

from harness.core.activations import Activation
from harness.core.deltas import DELTA_RULES, DeltaRule
from harness.core.losses import Loss
from harness.names import DELTA_COSINE, GRAD_COSINE, TEST_ACCURACY, TEST_LOSS, TRAIN_ACCURACY, TRAIN_LOSS
from harness.nn.data import Dataset
from harness.nn.model import MLP
from harness.nn.train import TrainResult, _progress

# Layers with at least this many parameters per replica take their update in BLAS (see _update_in_blas); smaller
# ones (XOR's) compute every replica's gradient in one np.matmul and subtract it in one pass, since a BLAS call
# per replica costs ≈ 1.3 µs.
FUSED_UPDATE_MIN = 2048

OutputError = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]  # (zᴸ, aᴸ, y) ↦ δᴸ, all (R, m, k)
ReplicaHook = Callable[[int, int, dict[str, float]], None]  # (replica, epoch, metrics)


class ReplicaWorkspace:
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
        self._workspaces: dict[tuple[int, np.dtype], ReplicaWorkspace] = {}
        self._last_workspace: ReplicaWorkspace | None = None
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
        cls,
        sizes: list[int],
        hidden: Activation,
        output: Activation,
        seeds: Sequence[int],
        scheme: str = "nielsen",
        bias: bool = True,
        constant: tuple[float, float] = (0.0, 0.0),
        dtype: np.dtype | type = np.float64,
    ) -> ReplicaMLP:
        """Replica r = ``MLP.initialise(..., np.random.default_rng(seeds[r]), ...)``: the very weights
        ``harness.app.build_model`` gives a single run with that seed."""
        models = [
            MLP.initialise(sizes, hidden, output, np.random.default_rng(seed), scheme, bias, constant, dtype)
            for seed in seeds
        ]
        return cls.stack(models)

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
    ) -> None:
        """One SGD step of every replica: Wˡ[r] ← Wˡ[r] − steps[r] · aˡ⁻¹[r]ᵀ δˡ[r], likewise the biases.

        ``x`` is (R, m, d) and ``y`` (R, m, k) (each replica's own minibatch), or (m, d) and (m, k) shared by
        every replica (a full batch); ``x`` may already carry the ones column (:meth:`augment`; gathering
        minibatches from an augmented x saves a copy per step). ``steps`` has one step size per replica, (R,)
        (η/m for the mean reduction). ``active`` (R,) bool, if given, leaves the replicas where it is False as
        they are (their products are still computed: :func:`train_replicas` drops stopped replicas from the
        stack instead). The step is :meth:`harness.nn.model.MLP.sgd_step` with a replica axis: buffers
        allocated once per batch size, the small (m × k) error scaled rather than the gradients, hidden f′
        from the kept activations, each Wˡ⁺¹ used by BP2 before its update.
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

    def _workspace(self, m: int, dtype: np.dtype) -> ReplicaWorkspace:
        ws = self._last_workspace
        if ws is not None and ws.key == (m, dtype):
            return ws
        key = (m, dtype)
        ws = self._workspaces.get(key)
        if ws is None:
            if dtype != self.params[0].dtype:
                raise TypeError(f"batch dtype {dtype} differs from the weights' {self.params[0].dtype}")
            ws = self._workspaces[key] = ReplicaWorkspace(self.params, self._fused, self.use_bias, m, dtype)
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


# ----------------------------------------------------------------------------------------------- evaluation


def _accuracy(a: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per replica: :func:`harness.nn.train.accuracy` (a (R, n, k), y (n, k))."""
    if y.shape[-1] == 1:
        hits = (a[..., 0] >= 0.5) == (y[..., 0] >= 0.5)
    else:
        hits = a.argmax(axis=-1) == y.argmax(axis=-1)
    # the ufunc's own reduction (np.count_nonzero with an axis goes through Python); counts are exact
    return np.add.reduce(hits, axis=-1, dtype=np.intp) / hits.shape[-1]


def _cosine(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Per replica: :func:`harness.nn.train.cosine` over all entries of u[r], v[r]."""
    r = len(u)
    u2, v2 = u.reshape(r, 1, -1), v.reshape(r, 1, -1)
    dot = np.matmul(u2, v2.transpose(0, 2, 1)).reshape(r)  # one ddot per replica
    nu = np.sqrt(np.matmul(u2, u2.transpose(0, 2, 1)).reshape(r))
    nv = np.sqrt(np.matmul(v2, v2.transpose(0, 2, 1)).reshape(r))
    zero = (nu == 0.0) | (nv == 0.0)
    with np.errstate(all="ignore"):
        cos = dot / (nu * nv)
    return np.where(zero, np.where(nu == nv, 1.0, 0.0), cos)


def _loss_or_nan(loss: Loss, a: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per replica: :func:`harness.nn.train._loss_or_nan`, the mean loss, NaN where the replica's outputs
    leave the loss's domain, +∞ where it is defined but overflows (∞ − ∞)."""
    means = np.mean(loss.value(a, y), axis=-1)
    if not loss.defined(a, y):  # one check for the whole stack; per replica only when something is outside
        undefined = np.array([not loss.defined(a[r], y) for r in range(len(a))])
    else:
        undefined = np.zeros(len(a), dtype=bool)
    overflow = np.isnan(means) & ~undefined
    means[undefined] = np.nan
    means[overflow] = np.inf
    return means


def _all_finite(x: np.ndarray) -> np.ndarray:
    """(R,) bool: every entry of x[r] is finite."""
    return np.logical_and.reduce(np.isfinite(x).reshape(len(x), -1), axis=1)


def _parameter_cosine(model: ReplicaMLP, inputs: list[np.ndarray], used: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Per replica: :func:`harness.nn.train._parameter_cosine`, cos ∠(g_rule, g_true) over all weights and
    biases, both backpropagated together as (R, 2, n, k). Each layer's (W; b) gradient is one product with
    its input's ones column; the inner products come from one 2 × 2 Gram matrix per replica."""
    delta = np.stack([used, true], axis=1)  # (R, 2, n, k)
    r = len(delta)
    gram = np.zeros((r, 2, 2), dtype=delta.dtype)
    for i in range(len(model.params) - 1, -1, -1):
        below = inputs[i]  # (n, d') shared, or (R, n, d')
        below_t = np.swapaxes(below, -1, -2)
        if below.ndim == 3:
            below_t = below_t[:, None]  # (R, 1, d', n): one product per replica and δ
        g = np.matmul(below_t, delta).reshape(r, 2, -1)  # (aˡ⁻¹, 1)ᵀ δˡ, each flattened
        gram += np.matmul(g, np.swapaxes(g, 1, 2))
        if i > 0:
            delta = np.matmul(delta, model._wt[i][:, None])  # BP2 with Wˡ (the bias row left out)
            act = below[..., : below.shape[-1] - int(model.use_bias)]
            delta *= model.hidden.derivative_from_value(act, np.empty_like(act))[:, None]
    rule_sq, dot, true_sq = gram[:, 0, 0], gram[:, 0, 1], gram[:, 1, 1]
    zero = (rule_sq == 0.0) | (true_sq == 0.0)
    with np.errstate(all="ignore"):
        cos = dot / np.sqrt(rule_sq * true_sq)
    return np.where(zero, np.where(rule_sq == true_sq, 1.0, 0.0), cos)


@dataclass
class ReplicaEvaluation:
    """One evaluated epoch of every replica: :class:`harness.nn.train.Evaluation` with a replica axis."""

    metrics: dict[str, np.ndarray]  # each (R,)
    outputs: np.ndarray  # aᴸ on the training set, (R, n, k)
    finite: np.ndarray  # (R,) the rule's δᴸ on the training set is finite, and so is the loss where defined
    undefined: np.ndarray  # (R,) the loss is undefined on the training or the test outputs


def evaluate_replicas(model: ReplicaMLP, data: Dataset, loss: Loss, rule: DeltaRule) -> ReplicaEvaluation:
    """The six epoch metrics of every replica as (R,) arrays, and what the outcome check needs.

    The definitions of :func:`harness.nn.train.evaluate` (``loss`` bound to the output activation), in one
    batched pass: the test pass is skipped when the test set *is* the training set (XOR), and the chain-rule δ
    is reused when the rule is the chain rule.
    """
    inputs, zs, a = model.forward_cache(data.x_train)
    z, y = zs[-1], data.y_train
    chain = DELTA_RULES["chain"]
    is_chain = rule is chain
    true = chain.delta(loss, model.output, z, a, y)
    used = true if is_chain else rule.delta(loss, model.output, z, a, y)
    same = data.x_test is data.x_train and data.y_test is data.y_train
    train_loss, train_accuracy = _loss_or_nan(loss, a, y), _accuracy(a, y)
    if same:
        test_loss, test_accuracy = train_loss, train_accuracy
    else:
        a_test = model.predict(data.x_test)
        test_loss, test_accuracy = _loss_or_nan(loss, a_test, data.y_test), _accuracy(a_test, data.y_test)
    true_finite = _all_finite(true)
    used_finite = true_finite if is_chain else _all_finite(used)
    finite = true_finite & used_finite
    nan = np.full(len(a), np.nan)
    if not finite.any():
        grad_cos, delta_cos = nan, nan
    elif is_chain:
        grad_cos, delta_cos = np.where(finite, 1.0, np.nan), np.where(finite, _cosine(used, true), np.nan)
    else:
        grad_cos = np.where(finite, _parameter_cosine(model, inputs, used, true), np.nan)
        delta_cos = np.where(finite, _cosine(used, true), np.nan)
    metrics = {
        TRAIN_LOSS: train_loss,
        TRAIN_ACCURACY: train_accuracy,
        TEST_LOSS: test_loss,
        TEST_ACCURACY: test_accuracy,
        GRAD_COSINE: grad_cos,
        DELTA_COSINE: delta_cos,
    }
    overflow = np.isinf(train_loss) | np.isinf(test_loss)
    undefined = np.isnan(train_loss) | np.isnan(test_loss)
    return ReplicaEvaluation(metrics, a, used_finite & ~overflow, undefined)


def _outcomes(model: ReplicaMLP, ev: ReplicaEvaluation) -> list[str]:
    """Per replica: :func:`harness.nn.train._outcome` (``diverged`` / ``undefined`` / ``completed``)."""
    ok = ev.finite & _all_finite(ev.outputs) & model.finite()
    undefined = ev.undefined.tolist()
    return ["diverged" if not k else "undefined" if u else "completed" for k, u in zip(ok.tolist(), undefined)]


# ----------------------------------------------------------------------------------------------- training


def replica_rngs(seeds: Sequence[int]) -> list[np.random.Generator]:
    """Each replica's minibatch-shuffling stream: ``harness.app.shuffle_rng`` of its seed."""
    return [np.random.default_rng([seed, 1]) for seed in seeds]


def sgd_epoch_replicas(
    model: ReplicaMLP,
    data: Dataset,
    loss: Loss,
    rule: DeltaRule,
    lrs: np.ndarray,
    batch_size: int,
    rngs: Sequence[np.random.Generator],
    reduction: str = "mean",
) -> None:
    """One epoch of every replica: :func:`harness.nn.train.sgd_epoch` with a replica axis.

    Replica r steps by ``lrs[r]`` and shuffles with ``rngs[r]`` (one ``permutation(n)`` per epoch, none for a
    full batch, whose one step sums over the same samples in any order: every replica then shares x and y).
    """
    x_all, y_all = model.augment(data.x_train), data.y_train  # minibatches gathered with their ones column
    n = len(x_all)
    output_error = partial(rule.delta, loss.for_activation(model.output), model.output)
    lrs = np.asarray(lrs, dtype=np.float64)  # steps as a single run's Python floats; cast to the data's dtype
    if batch_size >= n:
        model.sgd_step(x_all, y_all, output_error, lrs / n if reduction == "mean" else lrs)
        return
    perms = np.stack([rng.permutation(n) for rng in rngs])  # (R, n)
    full_steps = lrs / batch_size if reduction == "mean" else lrs
    r = len(perms)
    # Each replica's minibatch gathered into buffers made once per epoch (np.take with mode="clip" writes into
    # ``out`` directly; the indices are valid, so the mode changes nothing but the speed).
    x_batch = np.empty((r, batch_size, x_all.shape[1]), x_all.dtype)
    y_batch = np.empty((r, batch_size, y_all.shape[1]), y_all.dtype)
    for start in range(0, n, batch_size):
        idx = perms[:, start : start + batch_size]  # (R, m): replica r's minibatch
        m = idx.shape[1]
        if m == batch_size:
            xb = np.take(x_all, idx, axis=0, out=x_batch, mode="clip")
            yb = np.take(y_all, idx, axis=0, out=y_batch, mode="clip")
            model.sgd_step(xb, yb, output_error, full_steps)
        else:  # the last, smaller minibatch
            model.sgd_step(x_all[idx], y_all[idx], output_error, lrs / m if reduction == "mean" else lrs)


def train_replicas(
    model: ReplicaMLP,
    data: Dataset,
    loss: Loss,
    rule: DeltaRule,
    *,
    epochs: int,
    lrs: Sequence[float] | np.ndarray,
    batch_size: int,
    seeds: Sequence[int] | None = None,
    rngs: Sequence[np.random.Generator] | None = None,
    reduction: str = "mean",
    eval_every: int = 1,
    on_epoch: ReplicaHook | None = None,
    progress: bool | None = False,
) -> list[TrainResult]:
    """Train every replica for ``epochs`` epochs; one :class:`TrainResult` per replica, as ``train`` gives.

    Replica r is :func:`harness.nn.train.train` of its own network with ``lr=lrs[r]`` and
    ``rng=rngs[r]`` (by default ``replica_rngs(seeds)``). Epoch 0, every ``eval_every``-th epoch and the last
    are evaluated for every replica still training, passed to ``on_epoch(replica, epoch, metrics)`` and
    checked as ``train`` checks them: a replica that diverges is dropped from the stack (its outcome
    ``diverged``); an undefined loss only counts in its ``undefined_epochs``, and the replica trains on.
    ``model`` ends with every replica's last weights (a diverged one's as they were when it stopped).
    ``progress``: a bar of epochs as ``train`` shows it (None: only on a terminal).
    """
    loss = loss.for_activation(model.output)
    r_all = model.n_replicas
    lrs = np.broadcast_to(np.asarray(lrs, dtype=np.float64), (r_all,)).copy()
    if rngs is None:
        if seeds is None:
            raise TypeError("train_replicas needs seeds (or one shuffling rng per replica)")
        rngs = replica_rngs(seeds)
    if len(rngs) != r_all:
        raise ValueError(f"{len(rngs)} shuffling streams for {r_all} replicas")
    results = [TrainResult("completed", 0) for _ in range(r_all)]
    ids = np.arange(r_all)  # original index of each row of the active stack
    active = model.select(ids)
    active_rngs = list(rngs)
    bar = _progress(epochs, progress)
    with np.errstate(all="ignore"):  # non-finite values are detected and reported below, not warned
        for epoch in range(epochs + 1):
            if epoch > 0:
                sgd_epoch_replicas(active, data, loss, rule, lrs[ids], batch_size, active_rngs, reduction)
                for r in ids:
                    results[r].epochs_run = epoch
                bar.update(1)
                if epoch % eval_every and epoch != epochs:
                    continue
            ev = evaluate_replicas(active, data, loss, rule)
            names = list(ev.metrics)
            outcomes = _outcomes(active, ev)
            rows = zip(ids.tolist(), outcomes, zip(*(v.tolist() for v in ev.metrics.values())))
            for r, outcome, values in rows:
                entry = dict(zip(names, values))
                result = results[r]
                result.history.append(entry)
                result.epochs.append(epoch)
                if on_epoch is not None:
                    on_epoch(r, epoch, entry)
                result.outcome = outcome
                result.undefined_epochs += outcome == "undefined"
            if not bar.disable:  # the last replica's numbers (R = 1: the run's, as ``train`` shows them)
                bar.set_postfix(loss=f"{entry[TRAIN_LOSS]:.4g}", acc=f"{entry[TEST_ACCURACY]:.3f}")
            if "diverged" in outcomes:
                keep = [row for row, s in enumerate(outcomes) if s != "diverged"]
                model.assign(ids, active)  # the stopped replicas' weights as they are now
                ids = ids[keep]
                active_rngs = [active_rngs[row] for row in keep]
                if not len(ids):
                    break
                active = active.select(keep)
    bar.close()
    if len(ids):
        model.assign(ids, active)
    return results
