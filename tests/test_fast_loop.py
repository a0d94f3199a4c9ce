"""The engine's fast paths: the fused step, the evaluation shortcuts and float32 change speed, not results."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from reference import evaluate_one, reference_metrics, sgd_epoch_one, stack_of, train_one

from harness.config import ConfigError, validate
from harness.core.activations import HIDDEN_ACTIVATIONS, OUTPUT_ACTIVATIONS
from harness.core.deltas import DELTA_RULES
from harness.core.losses import LOSSES
from harness.nn.data import load
from harness.nn.network import MLP
from harness.nn.training import as_dtype


def _net(sizes, bias=True, seed=3, hidden="tanh", output="softmax", dtype=np.float64):
    return MLP.initialise(
        sizes, HIDDEN_ACTIVATIONS[hidden], OUTPUT_ACTIVATIONS[output], np.random.default_rng(seed), bias=bias,
        dtype=dtype,
    )  # fmt: skip


@pytest.mark.parametrize("hidden", ["sigmoid", "tanh", "relu"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("decay", [0.0, 0.01])
def test_the_fused_step_is_the_books_update(bias, hidden, decay):
    # Reference: MLP.update, forward then backward() (itself checked against finite differences in
    # test_train.py) then W ← (1 − decay)·W − step·∂C/∂W; the engine's fused, buffered step on a stack of one.
    rng = np.random.default_rng(0)
    loss, rule, step = LOSSES["cce"], DELTA_RULES["chain"], 0.3 / 7
    book = _net([3, 5, 4, 2], bias, hidden=hidden)
    fused = stack_of(book)
    err = lambda z, a, y: rule.delta(loss, book.output, z, a, y)  # noqa: E731
    for m in (7, 7, 3, 7):  # a few steps and two batch sizes: a stale buffer or an early update would show
        x, y = rng.normal(size=(m, 3)), np.eye(2)[rng.integers(0, 2, m)]
        book.update(x, y, err, step, decay=decay)
        fused.sgd_step(x[None], y[None], err, np.array([step]), decays=np.array([decay]) if decay else None)
    assert len(fused.parameters()) == (6 if bias else 3)
    for p, q in zip(fused.replica(0).parameters(), book.parameters()):
        np.testing.assert_allclose(p, q, rtol=1e-12, atol=1e-14)


def test_sgd_step_rejects_a_batch_of_another_dtype():
    model = stack_of(_net([2, 3, 2]))
    with pytest.raises(TypeError, match="float32"):
        model.sgd_step(np.zeros((1, 4, 2), np.float32), np.zeros((1, 4, 2), np.float32), lambda z, a, y: a - y,
                       np.array([0.1]))  # fmt: skip


def test_evaluate_shortcuts_give_the_metrics_of_separate_passes():
    # XOR's test set is its training set (the same arrays): evaluate() skips the test pass. A copy of the
    # data with *equal but distinct* test arrays takes the long way; the metrics must be identical.
    xor = load("xor")
    copied = dataclasses.replace(xor, x_test=xor.x_test.copy(), y_test=xor.y_test.copy())
    model = _net([2, 4, 2], output="sigmoid")
    for rule in ("ng", "chain"):
        fast = evaluate_one(model, xor, LOSSES["mse"], DELTA_RULES[rule])
        slow = evaluate_one(model, copied, LOSSES["mse"], DELTA_RULES[rule])
        assert fast == slow
        assert fast["test_loss"] == fast["train_loss"]
    assert evaluate_one(model, xor, LOSSES["mse"], DELTA_RULES["chain"])["grad_cosine"] == pytest.approx(1.0, abs=1e-12)


def test_train_stops_with_the_outcome_its_definition_gives():
    # train() reuses the evaluation's outputs to decide the outcome; the reference recomputes it by definition.
    data, loss = load("xor"), LOSSES["bce"]
    model = _net([2, 4, 2], output="tanh", hidden="sigmoid")
    r = train_one(model, data, loss, DELTA_RULES["ng"], epochs=50, lr=2.0, batch_size=4, rng=np.random.default_rng(1))
    _, outcome = reference_metrics(model, data, loss.for_activation(model.output), DELTA_RULES["ng"])
    assert r.outcome == outcome in ("undefined", "completed")
    assert r.epochs_run == 50  # an undefined loss does not stop training


def test_float32_training_stays_float32_and_tracks_float64():
    data64 = load("xor")
    data32 = as_dtype(data64, "float32")
    assert data32.x_train.dtype == np.float32 and data32.x_test is data32.x_train  # XOR's shortcut survives
    runs = {}
    for name, data in (("64", data64), ("32", data32)):
        model = _net([2, 4, 2], output="sigmoid", hidden="sigmoid", dtype=data.x_train.dtype)
        runs[name] = train_one(model, data, LOSSES["bce"], DELTA_RULES["ng"], epochs=100, lr=2.0, batch_size=4,
                               rng=np.random.default_rng(1))  # fmt: skip
        assert all(p.dtype == data.x_train.dtype for p in model.parameters())
    # same starting weights (float32 = rounded float64) and shuffles: the runs differ only by rounding
    assert runs["32"].final["train_loss"] == pytest.approx(runs["64"].final["train_loss"], rel=1e-4)
    assert runs["32"].history[0]["train_loss"] != runs["64"].history[0]["train_loss"]  # really single precision


def test_sgd_epoch_in_float32_matches_float64_step():
    data = load("xor")
    m64 = _net([2, 3, 2], output="identity")
    m32 = MLP([w.astype(np.float32) for w in m64.weights], [b.astype(np.float32) for b in m64.biases],
              m64.hidden, m64.output)  # fmt: skip
    for m, d in ((m64, data), (m32, as_dtype(data, np.float32))):
        sgd_epoch_one(m, d, LOSSES["mse"], DELTA_RULES["ng"], 0.1, 2, np.random.default_rng(5))
    for p, q in zip(m32.parameters(), m64.parameters()):
        assert p.dtype == np.float32
        np.testing.assert_allclose(p, q, rtol=1e-6, atol=1e-6)


def test_unknown_dtype_is_rejected_naming_the_key(compose_cfg):
    with pytest.raises(ConfigError, match=r"train\.dtype='float16' is not a known option; allowed: float64, float32"):
        validate(compose_cfg("train.dtype=float16"))
    validate(compose_cfg("train.dtype=float32"))


def test_a_float32_run_is_logged_like_any_other(compose_cfg, store):
    from mlflow import MlflowClient

    from harness.app import run_job

    result = run_job(compose_cfg(f"tracking.uri={store}", "train.dtype=float32", "train.epochs=20"))
    run = MlflowClient(store).get_run(result["run_id"])
    assert run.info.status == "FINISHED" and run.data.params["train.dtype"] == "float32"
    assert isinstance(result["train_loss"], float) and np.isfinite(result["train_loss"])


def _sigmoid_reference(z):
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _sigmoid_prime_reference(z):
    """σ′(z) = σ(z)(1 − σ(z)) in 60-digit decimal arithmetic, from the exact value of each float z, rounded
    once to z's dtype: independent of numpy's exp and of the rounding order of the code under test."""
    import decimal

    ctx = decimal.Context(prec=60)

    def one(v: float) -> float:
        s = ctx.divide(1, ctx.add(1, ctx.exp(ctx.minus(decimal.Decimal(v)))))  # σ(v)
        return float(ctx.multiply(s, ctx.subtract(1, s)))

    return np.vectorize(one, otypes=[np.float64])(z.astype(np.float64)).astype(z.dtype)


def _softmax_reference(z):
    e = np.exp(z - np.max(z, axis=-1, keepdims=True))
    return e / np.sum(e, axis=-1, keepdims=True)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_fast_activations_agree_with_the_textbook_forms(dtype):
    # The in-place forms in harness.core.activations against the straightforward expressions (which
    # test_math.py checks against finite differences): softmax and σ′ to the bit; σ (scipy's expit, one
    # pass instead of six) to 4 ulp, including where σ rounds to 0 or 1.
    z = np.random.default_rng(0).normal(0, 20, (50, 7)).astype(dtype)
    z[0, :5] = [0.0, -0.0, 800.0, -800.0, 1e-30]
    sig, sm = OUTPUT_ACTIVATIONS["sigmoid"], OUTPUT_ACTIVATIONS["softmax"]
    got = sig.derivative(z)
    assert got.dtype == dtype
    # a handful of roundings (exp, 1 + e, the square, the division) against one: ≤ 4 ulp, also where σ(z)
    # rounds to 1 and the textbook σ(z)(1 − σ(z)) in floating point would give 0
    np.testing.assert_array_max_ulp(got, _sigmoid_prime_reference(z), maxulp=4)
    got = sm.value(z)
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, _softmax_reference(z))
    got = sig.value(z)
    assert got.dtype == dtype
    np.testing.assert_array_max_ulp(got, _sigmoid_reference(z).astype(dtype), maxulp=4)


@pytest.mark.parametrize("name", ["sigmoid", "tanh", "relu"])
def test_derivative_from_value_matches_central_differences(name):
    # f′ from a = f(z), against float64 central differences of f (away from relu's kink at 0).
    act = HIDDEN_ACTIVATIONS[name]
    z = np.random.default_rng(1).normal(0, 3, (40, 6))
    z = z[np.abs(z).min(axis=1) > 1e-3]
    h = 1e-6
    numeric = (act.value(z + h) - act.value(z - h)) / (2 * h)
    got = act.derivative_from_value(act.value(z), out=np.empty_like(z))
    np.testing.assert_allclose(got, numeric, rtol=1e-7, atol=1e-9)


def test_activations_write_into_out_when_given():
    z = np.random.default_rng(2).normal(0, 3, (5, 4))
    for act in [*(OUTPUT_ACTIVATIONS[n] for n in OUTPUT_ACTIVATIONS), HIDDEN_ACTIVATIONS["relu"]]:
        out = np.empty_like(z)
        got = act.value(z, out=out)
        np.testing.assert_array_equal(got, act.value(z))
        assert got is out


def _bench_loop():
    """benchmarks/bench_loop.py as a module (it is a script, not part of the package)."""
    import importlib.util
    import sys
    from pathlib import Path

    if "bench_loop" in sys.modules:
        return sys.modules["bench_loop"]
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_loop.py"
    spec = importlib.util.spec_from_file_location("bench_loop", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_loop"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "case",
    [("xor", 4, "sigmoid", "bce", 2.0, 4, 100), ("mnist", 30, "softmax", "cce", 0.5, 10, 1)],
    ids=["xor", "mnist-mb10"],
)
def test_fused_loop_trains_like_nielsens_per_sample_loop(case):
    # An independent reference: the benchmark's transcription of Nielsen's network2.py (column vectors,
    # one backprop per sample, gradients summed in lists), from the same weights in the same order.
    bench = _bench_loop()
    setup = bench.Setup(bench.Case(*case, dtype="float64"))
    ours, nielsen = bench.harness_loop(setup)(), bench.nielsen_loop(setup)()
    assert ours == pytest.approx(nielsen, rel=1e-9)
    assert ours < setup.final_loss(setup.init.predict(setup.data.x_train))  # and it did learn
