"""The study presets in experiments/: every one composes and validates, its grid has the promised size, and
the two reproductions (Nielsen's ch. 3 neuron, the posted numpy XOR program) match independent code."""

from __future__ import annotations

import itertools
import math
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, harness_env
from hydra.core.override_parser.overrides_parser import OverridesParser
from mlflow import MlflowClient
from omegaconf import OmegaConf
from reference import train_one

from harness.app import build_stack
from harness.config import validate
from harness.core.deltas import DELTA_RULES
from harness.core.losses import LOSSES
from harness.nn.data import load

PRESETS = sorted(p.stem for p in (ROOT / "experiments").glob("*.yaml"))


def test_the_five_studies_exist():
    assert {"xor_grid", "mnist_grid", "slowdown", "seed_xor", "lr_fairness", "mnist_lr"} <= set(PRESETS)


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_composes_validates_and_is_in_the_template_idiom(compose_cfg, name):
    text = (ROOT / "experiments" / f"{name}.yaml").read_text().splitlines()
    assert text[0] == "# @package _global_"
    assert text[1].startswith(f"# python -m harness +experiment={name}")
    cfg = compose_cfg(f"+experiment={name}")
    validate(cfg)
    assert cfg.tracking.experiment == name and cfg.report.auto is True and name in cfg.tags
    # a study is a sweep: `python -m harness +experiment=NAME` must sweep without -m
    assert OmegaConf.load(ROOT / "experiments" / f"{name}.yaml").hydra.mode == "MULTIRUN"


def sweeper(name: str):
    """The preset's ``hydra.sweeper`` node."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=[f"+experiment={name}"], return_hydra_config=True).hydra.sweeper


def grid(compose_cfg, name: str) -> list[dict[str, str]]:
    """Every job of the preset's sweep (of its stage 1), as the harness sweeper enumerates it: the cartesian
    product, less the jobs ``hydra.sweeper.only`` leaves out."""
    sweep = sweeper(name)
    params = OmegaConf.to_container(sweep.params)
    parsed = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in params.items()])
    axes = [[(o.get_key_element(), v) for v in o.sweep_string_iterator()] for o in parsed]
    jobs = [dict(job) for job in itertools.product(*axes)]
    only = [dict(o.split("=", 1) for o in entry.split()) for entry in sweep.get("only") or []]
    return [j for j in jobs if any(e.items() <= j.items() for e in only)] if only else jobs


@pytest.mark.parametrize(
    "name,jobs,seeds",
    [("xor_grid", 36 * 30, 30), ("mnist_grid", 36 * 10, 10), ("lr_fairness", 36 * 9 * 5, 5),
     ("mnist_lr", 9 * 6 * 3, 3), ("slowdown", 4, 1), ("seed_xor", 20, 10)],
)  # fmt: skip
def test_preset_grid_sizes(compose_cfg, name, jobs, seeds):
    runs = grid(compose_cfg, name)
    assert len(runs) == jobs
    assert len({j.get("seed") for j in runs}) == seeds
    # the header comment promises the same number of runs (of stage 1, in a two-stage study)
    header = (ROOT / "experiments" / f"{name}.yaml").read_text().splitlines()[1]
    assert f"= {jobs:,} runs" in header, header


@pytest.mark.parametrize("name,triples,rates", [("lr_fairness", 36, 9), ("mnist_lr", 9, 6)])
def test_rate_studies_tune_a_log_spaced_grid_then_evaluate_20_seeds(compose_cfg, name, triples, rates):
    jobs = grid(compose_cfg, name)
    lrs = sorted({float(j["train.lr"]) for j in jobs})
    assert len(lrs) == rates
    ratios = np.diff(np.log10(lrs))
    assert np.allclose(ratios, ratios[0], atol=0.03)  # log-spaced
    assert len({(j["loss"], j["activation"], j["delta"]) for j in jobs}) == triples
    assert sweeper(name).evaluation_seeds >= 20  # stage 2: every question-4 comparison on ≥ 20 seed pairs


def test_mnist_lr_runs_the_question_1_pairs_under_every_rule(compose_cfg):
    triples = {(j["loss"], j["activation"], j["delta"]) for j in grid(compose_cfg, "mnist_lr")}
    pairs = {("mse", "sigmoid"), ("bce", "sigmoid"), ("cce", "softmax")}
    assert triples == {(lo, a, d) for lo, a in pairs for d in ("ng", "nielsen", "chain")}


def test_slowdown_ties_each_cost_to_its_own_rate(compose_cfg):
    for loss, lr in [("mse", 0.15), ("bce", 0.005)]:
        cfg = compose_cfg("+experiment=slowdown", f"loss={loss}", "model={init_weight:2.0,init_bias:2.0}")
        validate(cfg)
        assert cfg.train.lr == lr and (cfg.model.init_weight, cfg.model.init_bias) == (2.0, 2.0)


def test_slowdown_with_a_loss_that_has_no_rate_is_one_clear_error(compose_cfg):
    from harness.config import ConfigError

    with pytest.raises(ConfigError) as err:
        validate(compose_cfg("+experiment=slowdown", "loss=cce"))
    assert str(err.value) == (
        "Invalid configuration: train.lr interpolates train.lr_by_loss, which has no rate for loss=cce "
        "(it has: mse, bce); add one, e.g. train.lr_by_loss.cce=0.1."
    )


def book_neuron(w: float, b: float, eta: float, cost: str, epochs: int = 300) -> np.ndarray:
    """Nielsen ch. 3 by hand: x = 1, y = 0, a = σ(w + b); C before each update and after the last.

    Quadratic C = a²/2, ∂C/∂w = ∂C/∂b = (a − y) σ′(z) = a · a(1 − a).
    Cross-entropy C = −ln(1 − a), ∂C/∂w = ∂C/∂b = a − y = a.
    """
    costs = []
    for _ in range(epochs + 1):
        a = 1.0 / (1.0 + math.exp(-(w + b)))
        costs.append(0.5 * a * a if cost == "mse" else -math.log(1.0 - a))
        grad = a * a * (1.0 - a) if cost == "mse" else a
        w, b = w - eta * grad, b - eta * grad
    return np.array(costs)


def test_slowdown_sweep_reproduces_nielsens_neuron(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    p = subprocess.run(
        [sys.executable, "-m", "harness", "-m", "+experiment=slowdown", "report.auto=false", f"tracking.uri={uri}"],
        cwd=tmp_path, capture_output=True, text=True, env=harness_env(), timeout=300,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    c = MlflowClient(uri)
    runs = c.search_runs([c.get_experiment_by_name("slowdown").experiment_id], "tags.outcome = 'completed'")
    seen = set()
    for run in runs:
        prm = run.data.params
        key = (prm["loss"], float(prm["model.init_weight"]), float(prm["model.init_bias"]), float(prm["train.lr"]))
        seen.add(key)
        history = sorted(c.get_metric_history(run.info.run_id, "train_loss"), key=lambda m: m.step)
        assert [m.step for m in history] == list(range(301))
        got = np.array([m.value for m in history])
        np.testing.assert_allclose(got, book_neuron(*key[1:], key[0]), rtol=0, atol=1e-9)
        assert run.data.tags["harness.tags"] == "slowdown,nielsen_ch3"
    assert seen == {
        ("mse", 0.6, 0.9, 0.15), ("mse", 2.0, 2.0, 0.15), ("bce", 0.6, 0.9, 0.005), ("bce", 2.0, 2.0, 0.005)
    }  # fmt: skip


@pytest.mark.parametrize("rule", ["nielsen", "ng"])
def test_seed_xor_is_the_posted_numpy_program(compose_cfg, rule):
    """The preset (shrunk to 300 iterations) against the program itself, written out with its own update."""
    epochs = 300
    cfg = compose_cfg("+experiment=seed_xor", f"delta={rule}", f"train.epochs={epochs}", "train.eval_every=1", "seed=3")
    data = load(cfg.dataset.name)
    model = build_stack(cfg, [cfg.seed], data).replica(0)
    syn0, syn1 = (w.copy() for w in model.weights)  # the program's U[-1, 1) weights, from the same seed
    assert syn0.shape == (3, 4) and syn1.shape == (4, 1) and not model.use_bias
    assert syn0.min() >= -1 and syn0.max() < 1
    X, y = data.x_train, data.y_train
    losses = []
    for _ in range(epochs + 1):
        l1 = 1 / (1 + np.exp(-(X @ syn0)))
        l2 = 1 / (1 + np.exp(-(l1 @ syn1)))
        losses.append(np.mean(0.5 * np.sum((y - l2) ** 2, axis=1)))
        l2_delta = (y - l2) * l2 * (1 - l2) if rule == "nielsen" else y - l2
        l1_delta = (l2_delta @ syn1.T) * l1 * (1 - l1)
        syn1 = syn1 + l1.T @ l2_delta
        syn0 = syn0 + X.T @ l1_delta
    result = train_one(
        model, data, LOSSES["mse"], DELTA_RULES[rule], epochs=epochs, lr=cfg.train.lr,
        batch_size=cfg.train.batch_size, rng=np.random.default_rng(0), reduction=cfg.train.reduction,
    )  # fmt: skip
    got = np.array([h["train_loss"] for h in result.history])
    np.testing.assert_allclose(got, np.array(losses), rtol=1e-9, atol=1e-12)
