"""What an evaluated epoch measures, for every replica of a stack at once, and how a run ends.

Six metrics, each an (R,) array, on the whole training and test sets:

- ``train_loss`` / ``test_loss``: the mean loss C₀ = (1/n) Σₓ L(aᴸ(x), y(x)), plus λ/(2n)·Σ w² over the weights
  (not the biases) when L2 regularisation is on (n = the training-set size, in both: the cost the network
  minimises, measured on each set); NaN where the outputs leave the loss's domain, +∞ where it overflows;
- ``train_accuracy`` / ``test_accuracy``: the fraction of samples whose predicted class is the target class
  (argmax; one output: a ≥ ½);
- ``grad_cosine`` = cos ∠(g_rule, g_true), where g_true = ∂C/∂θ over every weight and bias and g_rule is what
  backprop (BP2–BP4) makes of the rule's δᴸ, i.e. the full-batch update is −η·g_rule. This is the cosine that
  says whether a step goes downhill: > 0 exactly when −g_rule is a descent direction of C;
- ``delta_cosine`` = cos ∠(δᴸ_rule, δᴸ_true) at the output layer. It can be > 0 while ``grad_cosine`` < 0:
  for one layer with inputs aₙ, ⟨g_rule, g_true⟩ = Σₙₘ (aₙ · aₘ)(δₙ · δ*ₘ), whose cross terms n ≠ m the
  output cosine never sees.

Outcomes. A loss outside its domain is a condition of an epoch, not a stop: ``ng`` and ``nielsen`` never read
the loss, and ``chain`` only evaluates its gradient formula, which stays finite off the domain (e.g. BCE's −y/a
at a tanh output a < 0). So training goes on while the weights, the outputs and the rule's δᴸ on the training
set are finite:

- ``diverged``: one of them is non-finite, or the loss is defined at the outputs but its value overflows to
  ±∞ (e.g. MSE of outputs ≈ 1e200); training stops there;
- an evaluated epoch where the loss is undefined on the training or the test outputs logs that loss as NaN
  (accuracy and both cosines as usual) and counts as an undefined epoch;
- at the end the outcome is ``undefined`` if the loss is still undefined at the last epoch, else ``completed``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from harness.core.deltas import DELTA_RULES, DeltaRule
from harness.core.losses import Loss
from harness.core.regularization import l2_penalty
from harness.names import DELTA_COSINE, GRAD_COSINE, TEST_ACCURACY, TEST_LOSS, TRAIN_ACCURACY, TRAIN_LOSS
from harness.nn.data import Dataset
from harness.nn.stack import ReplicaMLP

OUTCOMES = ("completed", "diverged", "undefined")


def accuracy(a: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per replica, the fraction of samples whose predicted class is the target class (argmax; one output:
    a ≥ ½); ``a`` is (R, n, k) (or (n, k): a scalar), ``y`` (n, k)."""
    if y.shape[-1] == 1:
        hits = (a[..., 0] >= 0.5) == (y[..., 0] >= 0.5)
    else:
        hits = a.argmax(axis=-1) == y.argmax(axis=-1)
    # the ufunc's own reduction (np.count_nonzero with an axis goes through Python); counts are exact
    return np.add.reduce(hits, axis=-1, dtype=np.intp) / hits.shape[-1]


def cosine(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Per replica, cos ∠(u[r], v[r]) over all entries; 1 when both are zero (identical directions), 0 when one is."""
    r = len(u)
    u2, v2 = u.reshape(r, 1, -1), v.reshape(r, 1, -1)
    dot = np.matmul(u2, v2.transpose(0, 2, 1)).reshape(r)  # one ddot per replica
    nu = np.sqrt(np.matmul(u2, u2.transpose(0, 2, 1)).reshape(r))
    nv = np.sqrt(np.matmul(v2, v2.transpose(0, 2, 1)).reshape(r))
    return _ratio(dot, nu * nv, nu == 0.0, nv == 0.0)


def _ratio(dot: np.ndarray, norms: np.ndarray, u_zero: np.ndarray, v_zero: np.ndarray) -> np.ndarray:
    """dot / norms, with the cosine's conventions where a vector is zero: 1 if both are, 0 if one is."""
    with np.errstate(all="ignore"):
        cos = dot / norms
    return np.where(u_zero | v_zero, np.where(u_zero == v_zero, 1.0, 0.0), cos)


def all_finite(x: np.ndarray) -> np.ndarray:
    """(R,) bool: every entry of x[r] is finite."""
    return np.logical_and.reduce(np.isfinite(x).reshape(len(x), -1), axis=1)


def loss_or_nan(loss: Loss, a: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per replica, the mean loss; NaN where the replica's outputs leave the loss's domain, +∞ where it is
    defined but overflows (∞ − ∞ gives NaN: the outputs are diverging)."""
    means = np.mean(loss.value(a, y), axis=-1)
    if not loss.defined(a, y):  # one check for the whole stack; per replica only when something is outside
        undefined = np.array([not loss.defined(a[r], y) for r in range(len(a))])
    else:
        undefined = np.zeros(len(a), dtype=bool)
    overflow = np.isnan(means) & ~undefined
    means[undefined] = np.nan
    means[overflow] = np.inf
    return means


def stack_l2_penalty(model: ReplicaMLP, l2: float, n: int) -> np.ndarray:
    """Per replica, :func:`harness.core.regularization.l2_penalty`: λ/(2n) · Σ w² over every weight (not the
    biases), the L2 term of the cost."""
    if not l2:
        return np.zeros(model.n_replicas)
    return np.array([l2_penalty([w[r] for w in model.weights], l2, n) for r in range(model.n_replicas)])


def parameter_cosine(
    model: ReplicaMLP, inputs: list[np.ndarray], used: np.ndarray, true: np.ndarray, l2: float = 0.0
) -> np.ndarray:
    r"""Per replica, cos ∠(g_rule, g_true) over all weights and biases, each g backpropagated from its δᴸ (BP2–BP4).

    .. math:: g = \big(\, (a^{l-1})^\top \delta^l + \lambda W^l,\ \textstyle\sum_n \delta^l_n \,\big)_{l = 1 \dots L},
              \qquad \cos = \frac{\langle g_{rule}, g_{true} \rangle}{\lVert g_{rule} \rVert \, \lVert g_{true} \rVert}

    with δᴸ the rule's (g_rule) or the chain rule's (g_true = n · ∂C/∂θ, C the mean loss over the n training
    samples plus λ/(2n)·Σw²; the factor n, like the step size, does not change the angle). The update is
    −η·g_rule, so a cosine > 0 means a descent direction of C.

    Backprop is linear in δ, so both errors go through together, stacked as (R, 2, n, k); each layer's (W; b)
    gradient is one product with its input's ones column, and the inner products come from one 2 × 2 Gram
    matrix per replica (tests/test_science.py checks the cosine against finite differences).
    """
    delta = np.stack([used, true], axis=1)  # (R, 2, n, k)
    r = len(delta)
    # Each δ divided by its largest entry (the angle does not change, and so does λW below): the squared norms of
    # a diverging network's gradients (loss ≈ 1e155) would otherwise overflow.
    scale = np.max(np.abs(delta.reshape(r, 2, -1)), axis=2)
    scale[scale == 0.0] = 1.0
    delta = delta / scale[:, :, None, None]
    gram = np.zeros((r, 2, 2), dtype=delta.dtype)
    for i in range(len(model.params) - 1, -1, -1):
        below = inputs[i]  # (n, d') shared, or (R, n, d')
        below_t = np.swapaxes(below, -1, -2)
        if below.ndim == 3:
            below_t = below_t[:, None]  # (R, 1, d', n): one product per replica and δ
        g = np.matmul(below_t, delta)  # (R, 2, d', k): (aˡ⁻¹, 1)ᵀ δˡ
        if l2:
            # n · (λ/n) · Wˡ, not the bias row, at each δ's scale
            g[:, :, : model.weights[i].shape[1]] += l2 * model.weights[i][:, None] / scale[:, :, None, None]
        g = g.reshape(r, 2, -1)
        gram += np.matmul(g, np.swapaxes(g, 1, 2))
        if i > 0:
            delta = np.matmul(delta, model._wt[i][:, None])  # BP2 with Wˡ (the bias row left out)
            act = below[..., : below.shape[-1] - int(model.use_bias)]
            delta *= model.hidden.derivative_from_value(act, np.empty_like(act))[:, None]
    rule_sq, dot, true_sq = gram[:, 0, 0], gram[:, 0, 1], gram[:, 1, 1]
    return _ratio(dot, np.sqrt(rule_sq * true_sq), rule_sq == 0.0, true_sq == 0.0)


@dataclass
class Evaluation:
    """One evaluated epoch of every replica: its metrics, and what the outcome check needs from the same passes."""

    metrics: dict[str, np.ndarray]  # each (R,)
    outputs: np.ndarray  # aᴸ on the training set, (R, n, k)
    finite: np.ndarray  # (R,) the rule's δᴸ on the training set is finite, and so is the loss where defined
    undefined: np.ndarray  # (R,) the loss is undefined on the training or the test outputs


def evaluate(model: ReplicaMLP, data: Dataset, loss: Loss, rule: DeltaRule, l2: float = 0.0) -> Evaluation:
    """The six epoch metrics of every replica as (R,) arrays (``loss`` bound to the output activation), and
    what :func:`outcomes` needs.

    Each forward pass is done once: the test pass is skipped when the test set *is* the training set (XOR), and
    the chain-rule δ is reused when the rule is the chain rule.
    """
    inputs, zs, a = model.forward_cache(data.x_train)
    z, y = zs[-1], data.y_train
    chain = DELTA_RULES["chain"]
    is_chain = rule is chain
    true = chain.delta(loss, model.output, z, a, y)
    used = true if is_chain else rule.delta(loss, model.output, z, a, y)
    same = data.x_test is data.x_train and data.y_test is data.y_train
    penalty = stack_l2_penalty(model, l2, len(y))
    train_loss, train_accuracy = loss_or_nan(loss, a, y) + penalty, accuracy(a, y)
    if same:
        test_loss, test_accuracy = train_loss, train_accuracy
    else:
        a_test = model.predict(data.x_test)
        test_loss = loss_or_nan(loss, a_test, data.y_test) + penalty
        test_accuracy = accuracy(a_test, data.y_test)
    true_finite = all_finite(true)
    used_finite = true_finite if is_chain else all_finite(used)
    finite = true_finite & used_finite
    nan = np.full(len(a), np.nan)
    if not finite.any():
        grad_cos, delta_cos = nan, nan
    elif is_chain:  # the rule's update *is* the true gradient
        grad_cos, delta_cos = np.where(finite, 1.0, np.nan), np.where(finite, cosine(used, true), np.nan)
    else:
        grad_cos = np.where(finite, parameter_cosine(model, inputs, used, true, l2), np.nan)
        delta_cos = np.where(finite, cosine(used, true), np.nan)
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
    return Evaluation(metrics, a, used_finite & ~overflow, undefined)


def outcomes(model: ReplicaMLP, ev: Evaluation) -> list[str]:
    """Per replica, the outcome if training ended now: ``diverged``, ``undefined`` or ``completed``."""
    ok = ev.finite & all_finite(ev.outputs) & model.finite()
    undefined = ev.undefined.tolist()
    return ["diverged" if not k else "undefined" if u else "completed" for k, u in zip(ok.tolist(), undefined)]


def accuracy_pass(model: ReplicaMLP, data: Dataset, loss: Loss) -> tuple[np.ndarray, np.ndarray]:
    """The cheapest pass that finds when a replica reaches an accuracy threshold: one forward pass over the
    test set (``loss`` bound to the output activation). Returns each replica's test accuracy, and whether it is
    still sound: finite weights, finite test outputs, a test loss that does not overflow (if not, the caller
    evaluates the epoch fully, so that :func:`outcomes` decides whether it diverged)."""
    a = model.predict(data.x_test)
    sound = model.finite() & all_finite(a) & ~np.isinf(loss_or_nan(loss, a, data.y_test))
    return accuracy(a, data.y_test), sound
