"""harness.report.loading and .stats on a real small sweep in a temporary store, its statistics against
hand-worked cases, and every plot function on a synthetic frame."""

from __future__ import annotations

import itertools
import math
import subprocess
import sys
import warnings
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from conftest import harness_env
from matplotlib.collections import PathCollection
from scipy import stats as scipy_stats

from harness import names
from harness.core.losses import LOSSES
from harness.report import loading, plots, stats
from harness.tracking import mlflow_sql, queries


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """A real sweep: {bce, mse} × {sigmoid, identity} × {ng, nielsen} × 2 seeds, 20 epochs (16 runs)."""
    tmp = tmp_path_factory.mktemp("sweep")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    args = ["loss=bce,mse", "activation=sigmoid,identity", "delta=ng,nielsen", "seed=0,1", "train.epochs=20"]
    p = subprocess.run(
        [sys.executable, "-m", "harness", "-m", *args, "tracking.experiment=tiny", f"tracking.uri={uri}"],
        cwd=tmp, capture_output=True, text=True, env=harness_env(), timeout=600,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    return uri


def test_load_gives_one_row_per_run_and_logged_epoch(sweep):
    study = loading.load("tiny", uri=sweep)
    runs, frame = study.runs, study.frame
    assert len(runs) == 16 and study.parent_run_id is not None
    assert set(runs["triple"]) == {f"{lo}-{a}-{d}" for lo in ("bce", "mse") for a in ("sigmoid", "identity")
                                   for d in ("ng", "nielsen")}  # fmt: skip
    assert set(runs["seed"]) == {0, 1} and set(runs["lr"]) == {2.0}
    assert set(frame.columns) >= {"run_id", "epoch", *names.METRICS, "loss", "activation", "delta", "seed",
                                  "lr", "pairing", "outcome"}  # fmt: skip
    assert not frame.duplicated(["run_id", "epoch"]).any()
    for _, run in runs.iterrows():
        epochs = frame.loc[frame["run_id"] == run["run_id"], "epoch"].tolist()
        assert epochs == list(range(int(run["epochs_run"]) + 1))  # every logged epoch, in order, no more
    # the pairing tags are the computed ones: ng is exact for bce + sigmoid, nielsen for mse + sigmoid
    exact = set(runs.loc[runs["pairing"] == "exact", "triple"])
    assert exact == {"bce-sigmoid-ng", "mse-sigmoid-nielsen", "mse-identity-ng", "mse-identity-nielsen"}


def test_runs_read_from_the_tables_are_mlflows_search_runs(sweep):
    from mlflow import MlflowClient

    c = MlflowClient(sweep)
    experiment_id = c.get_experiment_by_name("tiny").experiment_id
    fast = queries.all_runs(c, experiment_id)
    slow = queries.all_runs(c, experiment_id, fast_path=False)  # MLflow's search_runs, every page
    # 16 seed runs, their 8 configuration runs (2 seeds each) and the parent
    assert type(fast[0]).__name__ == "LightRun" and len(fast) == len(slow) == 25
    assert [r.info.run_id for r in fast] == [r.info.run_id for r in slow]  # same order: newest first
    for a, b in zip(fast, slow):
        for field in ("run_id", "run_name", "status", "start_time", "end_time", "experiment_id"):
            assert getattr(a.info, field) == getattr(b.info, field), field
        assert a.data.params == b.data.params and a.data.tags == b.data.tags
        assert str(a.data.metrics) == str(b.data.metrics)  # latest values, NaN included


def test_histories_match_mlflow_per_run_calls(sweep):
    from mlflow import MlflowClient

    study = loading.load("tiny", uri=sweep)
    c = MlflowClient(sweep)
    ids = study.runs["run_id"].tolist()
    fast = mlflow_sql.history(c, ids, ["train_loss"])  # one query, not one call per run
    assert fast is not None and {row[0] for row in fast} == set(ids)
    slow = queries._api_history(c, ids[:2], names.METRICS)
    assert len(slow) == len(study.frame[study.frame["run_id"].isin(ids[:2])])  # one row per (run, epoch)
    real_runs = mlflow_sql.runs
    mlflow_sql.runs = lambda *a: pytest.fail("MLflow's SQL internals read with fast_path=False")
    try:
        public = loading.load("tiny", uri=sweep, fast_path=False)  # tracking.fast_path=false: the public API only
    finally:
        mlflow_sql.runs = real_runs
    pd.testing.assert_frame_equal(public.frame, study.frame)
    for run_id in study.runs["run_id"][:3]:
        for key in names.METRICS:
            ref = {m.step: m.value for m in c.get_metric_history(run_id, key)}
            got = study.frame.loc[study.frame["run_id"] == run_id].set_index("epoch")[key]
            assert got.to_dict().keys() == ref.keys()
            np.testing.assert_array_equal(got.to_numpy(), np.array([ref[s] for s in got.index]))


def test_stopped_runs_are_kept_and_flagged(sweep):
    study = loading.load("tiny", uri=sweep)
    summary = loading.run_summary(study)
    undefined = summary[summary["triple"].str.startswith("bce-identity")]
    assert len(undefined) == 4 and set(undefined["outcome"]) == {"undefined"}  # a < 0 under BCE's log
    # they trained to the last epoch (the loss is undefined, the network is not): an accuracy, counted epochs
    assert undefined["final_accuracy"].between(0, 1).all() and (undefined["last_epoch"] == 20).all()
    assert (undefined["undefined_epochs"] >= 1).all() and np.isinf(undefined["epochs_to_threshold"]).all()
    assert set(undefined["run_id"]) <= set(study.frame["run_id"])  # still in the per-epoch frame
    done = summary[summary["outcome"] == "completed"]
    assert done["final_accuracy"].between(0, 1).all()
    table = stats.group_ci(summary, "final_accuracy")
    assert table.loc[(table["loss"] == "bce") & (table["activation"] == "identity"), "undefined"].tolist() == [2, 2]


def test_missing_experiment_and_no_finished_runs_are_clear_errors(sweep, store):
    with pytest.raises(loading.AnalysisError, match="experiment 'nope' does not exist .* experiments there: "):
        loading.load("nope", uri=sweep)
    from harness.tracking import Run

    Run.start(store, "empty", "x").end("FAILED")
    with pytest.raises(loading.AnalysisError, match="has no finished runs"):
        loading.load("empty", uri=store)


def test_select_sweep_takes_the_newest_parent_or_all_single_runs():
    def run(rid, start, tags):
        return SimpleNamespace(info=SimpleNamespace(run_id=rid, start_time=start), data=SimpleNamespace(tags=tags))

    old, new = run("p1", 1, {names.SWEEP_TAG: "/a"}), run("p2", 2, {names.SWEEP_TAG: "/b"})
    kids = [run("c1", 1, {names.PARENT_TAG: "p1"}), run("c2", 3, {names.PARENT_TAG: "p2"})]
    assert queries.select_sweep([old, new, *kids]) == ("p2", [kids[1]])
    assert queries.select_sweep([old, new, *kids], "p1") == ("p1", [kids[0]])
    singles = [run("s1", 1, {}), run("s2", 2, {})]
    assert queries.select_sweep(singles) == (None, singles)


# ------------------------------------------------------------------------------------------ statistics


def test_bootstrap_ci_is_scipys_bca_interval():
    x = np.array([0.5, 0.75, 1.0, 1.0, 0.25, 0.75, 1.0])
    ci = stats.bootstrap_ci(x)
    ref = scipy_stats.bootstrap((x,), np.mean, method="BCa", n_resamples=stats.RESAMPLES, random_state=0)
    assert (ci.estimate, ci.n) == (pytest.approx(x.mean()), 7)
    assert (ci.low, ci.high) == (ref.confidence_interval.low, ref.confidence_interval.high)


def test_bootstrap_ci_says_why_a_degenerate_sample_has_no_interval():
    assert stats.format_ci(stats.bootstrap_ci([])) == "n/a"
    assert stats.format_ci(stats.bootstrap_ci([math.nan])) == "n/a"
    same = stats.bootstrap_ci([3.0, 3.0, 3.0])
    assert (same.estimate, same.low, same.high) == (3.0, 3.0, 3.0) and same.note == "all 3 values equal"
    two = stats.bootstrap_ci([2.0, 6.0])
    assert (
        two.estimate == 4.0 and math.isnan(two.low) and stats.format_ci(two) == "4 (n = 2: too few for a bootstrap CI)"
    )
    never = stats.bootstrap_ci([1.0, math.inf, 3.0])  # a threshold one run never reached: no finite mean
    assert math.isinf(never.estimate) and math.isnan(never.low) and "1 of 3 never reached" in never.note


def test_bootstrap_ci_covers_a_normal_mean():
    rng = np.random.default_rng(1)
    x = rng.normal(10.0, 1.0, 400)
    ci = stats.bootstrap_ci(x)
    se = x.std(ddof=1) / math.sqrt(len(x))
    assert ci.low == pytest.approx(x.mean() - 1.96 * se, abs=0.3 * se)
    assert ci.high == pytest.approx(x.mean() + 1.96 * se, abs=0.3 * se)


def _seeds(values):
    return pd.Series(values, index=range(len(values)), dtype=float)


@pytest.mark.parametrize("n", [5, 6, 8])
def test_paired_test_is_the_exact_signed_rank_test_in_the_small_n_regime(n):
    rng = np.random.default_rng(n)
    a, b = rng.normal(1.0, 1.0, n), rng.normal(0.0, 1.0, n)
    c = stats.compare(_seeds(a), _seeds(b), "final_accuracy")
    assert c.p == pytest.approx(scipy_stats.wilcoxon(a - b, method="exact").pvalue, rel=1e-12)
    up = stats.compare(_seeds(np.arange(n) + 1.0), _seeds(np.zeros(n)), "final_accuracy")
    assert up.p == pytest.approx(2 / 2**n)  # every pair one way: the smallest p an exact test can give
    assert stats.min_p(n) == pytest.approx(2 / 2**n)


@pytest.mark.parametrize("n", [4, 9, 13, 14, 20])
@pytest.mark.parametrize("alternative", ["two-sided", "greater", "less"])
def test_signed_rank_p_is_scipys_wilcoxon_pratt_permutation_p(n, alternative):
    # the vectorised statistic against scipy's own (one resample at a time): same sign flips, same p, with
    # zeros (Pratt), ties and an infinite difference (a never-reached threshold) among the pairs; n = 14 and
    # 20 are past the exact 2ⁿ enumeration, so the 9,999 random flips must match too
    rng = np.random.default_rng(n)
    d = np.round(rng.normal(0.3, 1.0, n), 1)
    d[: n // 4] = 0.0
    d[-1] = np.inf
    method = scipy_stats.PermutationMethod(n_resamples=stats.RESAMPLES, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = scipy_stats.wilcoxon(d, zero_method="pratt", alternative=alternative, method=method).pvalue
    assert stats._signed_rank(d, alternative) == pytest.approx(ref, rel=1e-12)


def test_one_pair_gets_the_exact_sign_flip_p_and_no_verdict():
    # one seed (a shrunk study): the two signs are equally likely, so p = 1 two-sided and 1/2 one-sided
    c = stats.compare(_seeds([0.9]), _seeds([0.5]), "final_accuracy", ("x", "y"))
    assert c.n == 1 and c.p == 1.0 and not c.testable
    assert "no test at this n can reach" in c.verdict()
    assert stats._signed_rank(np.array([0.3]), "greater") == 0.5
    assert stats._signed_rank(np.array([0.3]), "less") == 1.0


def test_below_six_pairs_there_is_no_verdict_and_no_place_in_the_fdr_family():
    c = stats.compare(_seeds([0.9, 1.0, 0.8, 0.95]), _seeds([0.5, 0.6, 0.4, 0.55]), "final_accuracy", ("x", "y"))
    assert c.p == pytest.approx(0.125) and not c.testable
    stats.adjust([c])
    assert math.isnan(c.q)
    assert c.verdict().startswith("n = 4 pairs: no test at this n can reach p < 0.05")
    assert stats.min_p(5) > 0.05 > stats.min_p(6)


def test_ties_count_as_pairs_and_equal_rules_are_equivalent_by_tost():
    # 8 seeds, the rules tie on all: no difference, and equivalence within ±0.02 with p = 1/2⁸ per one-sided test
    c = stats.compare(_seeds([1.0] * 8), _seeds([1.0] * 8), "final_accuracy", ("ng", "nielsen"))
    assert c.p == 1.0 and c.p_equiv == pytest.approx(1 / 2**8)
    stats.adjust([c])
    assert c.q_equiv == pytest.approx(1 / 2**8)  # a family of one: q = p
    assert c.verdict().startswith("**equivalent** within ±0.02")
    # a consistent 0.1 difference is not equivalent within ±0.02, and is a difference
    far = stats.compare(_seeds([1.0] * 8), _seeds([0.9] * 8), "final_accuracy", ("ng", "nielsen"))
    stats.adjust([far])
    assert far.p_equiv == 1.0 and far.q < 0.05 and "**`ng` is higher**" in far.verdict()


def test_never_reached_is_ranked_last_and_the_mean_uses_pairs_where_both_reached():
    inf = math.inf
    a = _seeds([10, 20, inf, inf, 30, 40, 50])
    b = _seeds([15, 25, 35, inf, 45, 55, math.nan])  # seed 6: b failed, the pair is dropped
    c = stats.compare(a, b, "epochs_to_threshold", ("x", "y"))
    assert (c.n, c.dropped, c.only_a_never, c.only_b_never, c.both_never) == (6, 1, 1, 0, 1)
    d = np.array([-5, -5, inf, 0, -15, -15])
    assert c.p == pytest.approx(
        scipy_stats.wilcoxon(d, zero_method="pratt", method=scipy_stats.PermutationMethod()).pvalue
    )
    assert c.effect.n == 4 and c.effect.estimate == pytest.approx(-10.0)
    assert c.margin == pytest.approx(0.1 * 35.0)  # 10 % of y's median over its finite values (15, 25, 35, 45, 55)
    assert "never reached: `x` only on 1, `y` only on 0, both on 1 pairs" in c.sentence()


def test_an_epoch_margin_is_never_finer_than_the_logging_interval():
    a, b = _seeds([20.0, 30, 20, 30, 20, 30]), _seeds([30.0, 20, 30, 20, 30, 20])  # logged every 10 epochs
    fine = stats.compare(a, b, "epochs_to_threshold")
    assert fine.margin == pytest.approx(2.5)  # 10 % of the median 25: no pair can fall inside it
    coarse = stats.compare(a, b, "epochs_to_threshold", resolution=10.0)
    assert coarse.margin == 10.0 and "one logging interval" in coarse.margin_text


def test_adjust_is_benjamini_hochberg_over_every_testable_p():
    cs = [stats.compare(_seeds(np.arange(8) + k), _seeds(np.arange(8) * 1.1), "final_accuracy") for k in (0, 1, 3)]
    stats.adjust(cs)
    for p, q in [("p", "q"), ("p_equiv", "q_equiv")]:  # two families: difference tests, equivalence tests
        ps = [getattr(c, p) for c in cs]
        np.testing.assert_allclose([getattr(c, q) for c in cs], scipy_stats.false_discovery_control(ps, method="bh"))


def test_split_seeds_tunes_on_the_first_40_percent():
    assert stats.split_seeds(range(10)) == ([0, 1, 2, 3], [4, 5, 6, 7, 8, 9])
    assert stats.split_seeds([2, 0, 1]) == ([0], [1, 2])
    assert stats.split_seeds([5]) == ([5], [5])


def _summary(rows):
    cols = ["loss", "activation", "delta", "seed", "lr", "pairing", "outcome", "final_accuracy"]
    return pd.DataFrame(rows, columns=cols)


def test_best_lr_is_chosen_on_tuning_seeds_and_graded_on_the_others():
    rows = []
    for seed in range(5):  # tuning: seeds 0, 1; evaluation: 2, 3, 4
        tuned = seed < 2
        rows += [
            ("mse", "sigmoid", "ng", seed, 0.1, "mismatched", "completed", 0.9 if tuned else 0.5),
            ("mse", "sigmoid", "ng", seed, 1.0, "mismatched", "completed", 0.7 if tuned else 1.0),
        ]
    best = stats.best_lr(_summary(rows)).set_index("delta")
    assert best.loc["ng", "best_lr"] == 0.1  # what the tuning seeds say, not what the evaluation seeds would
    assert best.loc["ng", "estimate"] == pytest.approx(0.5) and best.loc["ng", "runs"] == 3
    with pytest.raises(ValueError, match="several rates: pass lr"):
        stats.paired_values(_summary(rows), "final_accuracy", "mse", "sigmoid", "ng")


def test_best_lr_picks_each_triples_best_rate_and_punishes_divergence():
    rows = []
    for seed in range(3):
        rows += [
            ("mse", "sigmoid", "ng", seed, 0.1, "mismatched", "completed", 0.6),
            ("mse", "sigmoid", "ng", seed, 1.0, "mismatched", "completed", 0.9),
            # higher on the seeds that survive, but one seed diverged: not the best rate
            ("mse", "sigmoid", "ng", seed, 10.0, "mismatched", "diverged" if seed == 0 else "completed",
             math.nan if seed == 0 else 1.0),
            ("mse", "sigmoid", "nielsen", seed, 10.0, "exact", "completed", 0.8),
        ]  # fmt: skip
    best = stats.best_lr(_summary(rows)).set_index("delta")
    assert best.loc["ng", "best_lr"] == 1.0 and best.loc["ng", "estimate"] == pytest.approx(0.9)
    assert best.loc["nielsen", "best_lr"] == 10.0


def test_neuron_output_inverts_both_costs():
    a = np.array([0.1, 0.5, 0.98])
    y = np.zeros((3, 1))
    frame = pd.DataFrame(
        {
            "loss": ["mse"] * 3 + ["bce"] * 3,
            "train_loss": np.concatenate([LOSSES["mse"].value(a[:, None], y), LOSSES["bce"].value(a[:, None], y)]),
        }
    )
    np.testing.assert_allclose(loading.neuron_output(frame), np.concatenate([a, a]), rtol=1e-12)


# ---------------------------------------------------------------------------------------------- plots


def synthetic_frame(epochs: int = 30, seeds: int = 3) -> pd.DataFrame:
    """2 losses × 2 activations × 2 rules × seeds; one run of mse-identity-ng diverges at epoch 10."""
    rows = []
    rng = np.random.default_rng(0)
    for loss, act, rule, seed in np.ndindex(2, 2, 2, seeds):
        loss, act, rule = ("bce", "mse")[loss], ("sigmoid", "identity")[act], ("ng", "nielsen")[rule]
        pairing = "exact" if (loss, act, rule) in {("bce", "sigmoid", "ng"), ("mse", "sigmoid", "nielsen")} or (
            loss == "mse" and act == "identity") else "mismatched"  # fmt: skip
        stop = 10 if (loss, act, rule, seed) == ("mse", "identity", "ng", 0) else epochs
        for epoch in range(stop + 1):
            rows.append(
                {
                    "run_id": f"{loss}-{act}-{rule}-{seed}", "epoch": epoch, "loss": loss, "activation": act,
                    "delta": rule, "seed": seed, "lr": 1.0, "pairing": pairing,
                    "outcome": "diverged" if stop < epochs else "completed",
                    "train_loss": math.exp(-epoch / 10) + 0.01 * rng.random(), "test_accuracy": min(1.0, epoch / 20),
                    "grad_cosine": 0.9 - 0.01 * epoch if pairing == "mismatched" else 1.0,
                }
            )  # fmt: skip
    return pd.DataFrame(rows)


def test_convergence_has_a_panel_per_pair_a_line_per_rule_and_marks_stopped_runs():
    g = plots.convergence(synthetic_frame())
    assert g.axes.shape == (2, 2)
    ax = g.axes_dict[("mse", "identity")]
    assert len(ax.get_lines()) >= 2  # one mean line per rule
    crosses = [c for c in ax.collections if isinstance(c, PathCollection)]  # scatter; the bands are polygons
    assert len(crosses) == 1 and "\n1 diverged (stopped early)\n(of 6 runs)" in ax.get_title()
    assert "diverged" not in g.axes_dict[("bce", "sigmoid")].get_title()
    assert g.axes_dict[("bce", "sigmoid")].get_yscale() == "log"


def test_panel_titles_say_a_run_trained_on_with_an_undefined_loss_not_that_it_stopped():
    frame = synthetic_frame(epochs=20)
    # bce + identity, ng, seed 1: trained to epoch 20, its loss undefined from epoch 12 on (outcome "undefined");
    # seed 2: completed, after 3 epochs with an undefined loss (tag undefined_epochs = 3)
    run = frame["run_id"] == "bce-identity-ng-1"
    frame.loc[run, "outcome"] = "undefined"
    frame.loc[run & (frame["epoch"] >= 12), "train_loss"] = np.nan
    frame["undefined_epochs"] = np.where(frame["run_id"] == "bce-identity-ng-2", 3.0, 0.0)
    assert plots.what_happened(frame[frame["run_id"].str.startswith("bce-identity")]) == (
        "1 loss undefined at the end; 1 loss undefined on some epochs"
    )
    g = plots.convergence(frame, "train_loss")
    ax = g.axes_dict[("bce", "identity")]
    assert ax.get_title().endswith("\n1 loss undefined at the end\n1 loss undefined on some epochs\n(of 6 runs)")
    crosses = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert len(crosses) == 1 and crosses[0].get_offsets()[0][0] == 11  # where its loss curve ends
    g = plots.convergence(frame, "test_accuracy", log=False)  # its accuracy is defined to the end: no ✕
    assert not [c for c in g.axes_dict[("bce", "identity")].collections if isinstance(c, PathCollection)]


def test_convergence_band_is_the_mean_plus_minus_1_96_standard_errors():
    # hand-worked: seeds give 1 and 3 at epoch 0 (mean 2, s = √2, SE = s/√2 = 1) and 5, 5 at epoch 1 (SE 0);
    # one seed alone gets a line and no band
    rows = [(0, 0, 1.0), (1, 0, 3.0), (0, 1, 5.0), (1, 1, 5.0), (0, 2, 7.0)]
    frame = pd.DataFrame(
        [{"run_id": f"r{s}", "seed": s, "epoch": e, "train_loss": v, "loss": "mse", "activation": "sigmoid",
          "delta": "ng", "pairing": "mismatched", "outcome": "completed"} for s, e, v in rows]
    )  # fmt: skip
    band = plots.mean_band(frame, ["delta", "epoch"], "train_loss")
    assert band["train_loss"].tolist() == [2.0, 5.0, 7.0]
    assert band["low"].tolist()[:2] == pytest.approx([2.0 - 1.96, 5.0]) and math.isnan(band["low"].iloc[2])
    assert band["high"].tolist()[:2] == pytest.approx([2.0 + 1.96, 5.0])
    ax = plots.convergence(frame, "train_loss", log=False).axes_dict[("mse", "sigmoid")]
    line = ax.get_lines()[0]
    assert line.get_xdata().tolist() == [0, 1, 2] and line.get_ydata().tolist() == [2.0, 5.0, 7.0]
    (fill,) = [c for c in ax.collections if not isinstance(c, PathCollection)]
    vertices = fill.get_paths()[0].vertices
    assert sorted(set(vertices[vertices[:, 0] == 0, 1].round(12))) == pytest.approx([2.0 - 1.96, 2.0 + 1.96])
    assert set(vertices[vertices[:, 0] == 1, 1]) == {5.0}


def test_summary_heatmaps_one_panel_per_rule_with_mismatched_cells_hatched():
    frame = synthetic_frame()
    last = frame.sort_values("epoch").groupby("run_id").tail(1)
    summary = last.assign(final_accuracy=last["test_accuracy"].where(last["outcome"] == "completed"))
    fig = plots.summary_heatmaps(summary, "final_accuracy")
    panels = [ax for ax in fig.axes if ax.get_title().startswith("δ rule")]
    assert [ax.get_title() for ax in panels] == ["δ rule: ng", "δ rule: nielsen"]
    hatched = {ax.get_title(): sum(1 for p in ax.patches if p.get_hatch()) for ax in panels}
    # mismatched in the synthetic pairing: ng on bce + identity, mse + sigmoid; nielsen on bce + sigmoid, bce + identity
    assert hatched == {"δ rule: ng": 2, "δ rule: nielsen": 2}
    texts = [t.get_text() for t in panels[0].texts]
    assert "1.00\n✕1" in texts  # mse + identity under ng: the diverged seed is counted, not dropped


def test_grad_cosine_only_mismatched_and_none_without_any():
    frame = synthetic_frame()
    g = plots.grad_cosine(frame)
    titles = {ax.get_title() for ax in g.axes.flat}
    assert titles == {"pair = bce + sigmoid", "pair = bce + identity", "pair = mse + sigmoid"}
    assert plots.grad_cosine(frame[frame["pairing"] == "exact"]) is None


def test_slowdown_plot_has_a_panel_per_start_and_a_line_per_cost():
    rows = []
    for loss, lr, (w, b) in [("mse", 0.15, (0.6, 0.9)), ("bce", 0.005, (0.6, 0.9)), ("mse", 0.15, (2, 2)),
                             ("bce", 0.005, (2, 2))]:  # fmt: skip
        for epoch in range(5):
            rows.append({"run_id": f"{loss}{w}", "epoch": epoch, "loss": loss, "lr": lr, "init_weight": w,
                         "init_bias": b, "train_loss": 0.5 / (epoch + 1)})  # fmt: skip
    g = plots.slowdown(pd.DataFrame(rows))
    assert g.axes.shape == (1, 2)
    assert all(len(ax.get_lines()) >= 2 for ax in g.axes.flat)
    labels = [t.get_text() for t in g.legend.texts]
    assert "quadratic, η = 0.15" in labels and "cross-entropy, η = 0.005" in labels


def test_lr_plots():
    rows = []
    for rule, lr, seed in np.ndindex(2, 3, 2):
        rows.append(("mse", "sigmoid", ("ng", "nielsen")[rule], seed, (0.1, 1.0, 10.0)[lr],
                     ("mismatched", "exact")[rule], "completed", 0.5 + 0.1 * lr + 0.01 * seed))  # fmt: skip
    summary = _summary(rows)
    g = plots.lr_sensitivity(summary)
    assert g.axes.shape == (1, 1) and g.axes[0, 0].get_xscale() == "log"
    fig = plots.best_lr(stats.best_lr(summary))
    top, bottom = fig.axes
    assert [t.get_text() for t in bottom.get_xticklabels()] == ["mse + sigmoid"]
    assert [t.get_text() for t in top.texts] == ["10", "10"]  # both rules' best rate is annotated
    assert bottom.get_ylabel() == "epochs to threshold at best lr"


def test_at_best_lr_keeps_only_each_triples_chosen_rate():
    rows = [("mse", "sigmoid", rule, seed, lr, "exact", "completed", acc)
            for rule, accs in [("ng", {0.1: 0.5, 1.0: 0.9}), ("nielsen", {0.1: 0.8, 1.0: 0.6})]
            for lr, acc in accs.items() for seed in range(2)]  # fmt: skip
    summary = _summary(rows)
    kept = stats.at_best_lr(summary, stats.best_lr(summary))
    assert sorted(set(zip(kept["delta"], kept["lr"]))) == [("ng", 1.0), ("nielsen", 0.1)] and len(kept) == 4


def test_question_4_compares_each_mismatched_rule_with_the_exact_one_at_their_best_rates():
    from harness.report import questions

    def comps(ng_acc, chain_acc, seeds=10):
        rows = []
        for seed in range(seeds):
            for lr in (0.1, 1.0):
                good = lr == 1.0
                rows.append(
                    ("mse", "sigmoid", "ng", seed, lr, "mismatched", "completed", ng_acc(seed) if good else 0.5)
                )
                rows.append(
                    ("mse", "sigmoid", "chain", seed, lr, "exact", "completed", chain_acc(seed) if good else 0.4)
                )
        summary = _summary(rows).assign(epochs_to_threshold=math.inf)
        study = SimpleNamespace(dataset="xor", threshold=None)
        return questions.comparisons(study, summary)

    same = comps(lambda s: 1.0, lambda s: 1.0)
    assert same.tuning == [0, 1, 2, 3] and same.evaluation == [4, 5, 6, 7, 8, 9]
    lead, lines = questions._fairness(same, "xor")
    assert lead.startswith(
        "On XOR, at each rule's own tuned learning rate, of 1 mismatched rule (one per (pair, "
        "rule) case) 1 is equivalent to the exact rule, 0 better, 0 worse and 0 inconclusive."
    )
    assert "tuning seeds 0–3" in lead and "evaluation seeds 4–9" in lead
    assert "2 of 2 chosen rates are at the edge of the grid" in lead and "mse-sigmoid-ng η = 1 (highest)" in lead
    assert "costs nothing measurable" in lines[0] and "η = 1, the grid's highest: the best rate may lie" in lines[0]
    worse = comps(lambda s: 0.75, lambda s: 1.0)
    assert "0 better, 1 worse" in questions._fairness(worse)[0]
    few = comps(lambda s: 0.75, lambda s: 1.0, seeds=4)  # tuning 0, 1 (40 %: 2 of 4); 2 evaluation pairs
    lead, lines = questions._fairness(few)
    assert lead.startswith("At each") and "1 has too few evaluation pairs" in lead
    assert "n = 2 pairs: no test at this n" in lines[0]
    # noisy, no real difference: inconclusive, and the lead says how large a difference could have been missed
    noisy = comps(lambda s: 0.8 + 0.05 * ((s * 7) % 5 - 2), lambda s: 0.8 + 0.05 * ((s * 3) % 5 - 2), seeds=30)
    lead, lines = questions._fairness(noisy, "mnist")
    acc = noisy.get("fair", "mse", "sigmoid", "ng", "final_accuracy")
    assert acc.short() == "inconclusive" and "1 inconclusive (no difference larger than ±" in lead
    mde = stats.size(acc.detectable)
    assert f"±{mde} in final accuracy: differences that large would have been found with 80% power" in lead
    assert lead.startswith("On MNIST")
    assert f"inconclusive overall: final accuracy inconclusive (no difference larger than ±{mde})" in lines[0]


def test_question_4_reads_a_two_stage_studys_tuning_and_evaluation_seeds():
    from harness.report import questions

    rows = []
    for rule, pairing in (("ng", "mismatched"), ("chain", "exact")):
        rows += [
            ("mse", "sigmoid", rule, s, lr, pairing, "completed", 1.0 if lr == 1.0 else 0.5)
            for s in range(3)
            for lr in (0.1, 1.0, 10.0)
        ]  # stage 1: tuning seeds 0-2, every rate
        rows += [("mse", "sigmoid", rule, s, 1.0, pairing, "completed", 1.0) for s in range(3, 23)]  # stage 2
    comps = questions.comparisons(SimpleNamespace(dataset="xor", threshold=None), _summary(rows))
    assert comps.tuning == [0, 1, 2] and comps.evaluation == list(range(3, 23))
    c = comps.get("fair", "mse", "sigmoid", "ng", "final_accuracy")
    assert c.n == 20 and c.short() == "equivalent"
    lead, _ = questions._fairness(comps)
    assert "No chosen rate is at the edge of the grid" in lead


def test_descent_share_is_quoted_beside_what_the_delta_cosine_would_claim():
    from harness.report import questions

    frame = synthetic_frame(epochs=9)  # mismatched runs: grad_cosine 0.9 − 0.01·epoch, always > 0
    text, table = questions.descent_table(frame)
    assert "had a parameter update that was a descent direction" in text and "(100.0%)" in text
    assert "logged no `delta_cosine`" in text and "δ cosine > 0 would claim" not in table  # runs before the metric
    newer = frame.assign(grad_cosine=np.where(frame["epoch"] % 2 == 0, 0.5, -0.2), delta_cosine=0.8)
    text, table = questions.descent_table(newer)
    assert "(50.0%)" in text and "`delta_cosine` > 0) would have claimed 100.0%" in text
    assert (table["δ cosine > 0 would claim"] == 1.0).all() and (table["descent (grad_cosine > 0)"] == 0.5).all()
    assert questions.descent_table(frame[frame["pairing"] == "exact"]) is None


def test_loss_blind_counts_the_groups_whose_histories_agree_under_every_loss():
    from harness.report import questions

    # (sigmoid, ng, seed 0): identical under bce and mse; (sigmoid, ng, seed 1): differs at epoch 1;
    # (sigmoid, nielsen, seed 0): only one loss, so not a comparison
    rows = [("bce", "ng", 0, [0.5, 0.75]), ("mse", "ng", 0, [0.5, 0.75]), ("bce", "ng", 1, [0.5, 1.0]),
            ("mse", "ng", 1, [0.5, 0.75]), ("bce", "nielsen", 0, [0.25, 0.5])]  # fmt: skip
    frame = pd.DataFrame(
        [
            {"loss": lo, "activation": "sigmoid", "delta": d, "seed": s, "lr": 1.0, "epoch": e, "test_accuracy": v}
            for lo, d, s, values in rows
            for e, v in enumerate(values)
        ]  # fmt: skip
    )
    study = loading.Study("x", "sqlite://", None, pd.DataFrame(), frame)
    assert "in 1 of 2 (activation, rule, seed, rate) groups" in questions._loss_blind(study)


# ------------------------------------------------------------------ power, distinct tests, two-stage designs


def test_detectable_difference_is_the_hand_worked_paired_mde():
    # n = 20 pairs, s_d = 0.1, α = 0.05, power 0.8. From a t table with ν = 19: t_0.975 = 2.093, t_0.80 = 0.861;
    # n·3/π = 60/3.14159 = 19.099, √19.099 = 4.3702; MDE = (2.093 + 0.861) × 0.1 / 4.3702 = 0.2954 / 4.3702 = 0.06759
    assert stats.detectable(20, 0.1) == pytest.approx(0.06759, rel=1e-3)
    # a stricter level (a BH cutoff 0.0025): t_0.99875,19 = 3.481 (table), so (3.481 + 0.861) × 0.1 / 4.3702 = 0.09936
    assert stats.detectable(20, 0.1, alpha=0.0025) == pytest.approx(0.09936, rel=1e-3)
    assert math.isnan(stats.detectable(1, 0.1)) and stats.detectable(20, 0.0) == 0.0
    assert [stats.size(v) for v in (0.06759, 4.54, 123.4)] == ["0.068", "4.5", "123"]


def test_an_inconclusive_verdict_says_how_large_a_difference_was_ruled_out():
    rng = np.random.default_rng(3)
    a, b = rng.normal(0.8, 0.05, 20), rng.normal(0.8, 0.05, 20)
    c = stats.compare(_seeds(a), _seeds(b), "final_accuracy", ("x", "y"))
    stats.adjust([c])
    assert c.short() == "inconclusive" and c.level == 0.05  # a family of one, nothing found: (0 + 1)·α/1
    mde = stats.detectable(20, float(np.std(a - b, ddof=1)), 0.05)
    assert f"no difference larger than ±{stats.size(mde)}" in c.verdict() and "80% power at n = 20" in c.verdict()


def test_adjust_sets_the_bh_level_the_next_discovery_would_have_needed():
    # 4 tests: two clear differences (8 pairs, all one sign: p = 2/2⁸), two null: BH finds 2, so the level a
    # third one needed is (2 + 1) × 0.05 / 4 = 0.0375
    clear = [stats.compare(_seeds(np.arange(8) + 1.0), _seeds(np.arange(8.0)), "final_accuracy") for _ in range(2)]
    null = [stats.compare(_seeds([1.0, 2, 3, 4, 5, 6, 7, 8]), _seeds([2.0, 1, 4, 3, 6, 5, 8, 7]), "final_accuracy")
            for _ in range(2)]  # fmt: skip
    stats.adjust(clear + null)
    assert [c.short() for c in clear] == ["a higher", "a higher"] and null[0].short() == "inconclusive"
    assert null[0].level == pytest.approx(0.0375)
    stats.adjust(clear + clear + null)  # the same comparison listed twice counts once: still m = 4
    assert null[0].level == pytest.approx(0.0375)


def test_design_seeds_reads_a_two_stage_study_from_its_runs():
    rows = [("mse", "sigmoid", "ng", s, lr, "mismatched", "completed", 1.0) for s in (0, 1) for lr in (0.1, 1.0)]
    rows += [("mse", "sigmoid", "ng", s, 1.0, "mismatched", "completed", 1.0) for s in range(2, 8)]
    assert stats.design_seeds(_summary(rows)) == ([0, 1], [2, 3, 4, 5, 6, 7])
    one_stage = [("mse", "sigmoid", "ng", s, lr, "mismatched", "completed", 1.0) for s in range(5) for lr in (0.1, 1)]
    assert stats.design_seeds(_summary(one_stage)) == ([0, 1], [2, 3, 4])  # split_seeds: the first 40 %
    one_rate = [r for r in one_stage if r[4] == 1]
    assert stats.design_seeds(_summary(one_rate)) == ([], [0, 1, 2, 3, 4])


def test_best_lr_flags_a_rate_chosen_at_the_grids_edge():
    rows = [("mse", "sigmoid", rule, s, lr, "exact", "completed", acc)
            for rule, accs in [("ng", (0.5, 0.9, 0.7)), ("nielsen", (0.5, 0.6, 0.9)), ("chain", (0.9, 0.5, 0.4))]
            for lr, acc in zip((0.1, 1.0, 10.0), accs) for s in range(3)]  # fmt: skip
    best = stats.best_lr(_summary(rows)).set_index("delta")
    assert best["edge"].to_dict() == {"ng": "", "nielsen": "highest", "chain": "lowest"}


def _two_losses(seeds: int = 8, differ: bool = False):
    """ng and nielsen on mse + sigmoid and bce + sigmoid: the same training under both losses (identical accuracy
    histories) unless ``differ``; each run logs epochs 0, 1, 2."""
    runs, rows = [], []
    for loss, rule, seed in itertools.product(("mse", "bce"), ("ng", "nielsen"), range(seeds)):
        acc = [0.5, 0.75, 1.0 if rule == "ng" or seed % 3 else 0.75]
        if differ and loss == "bce":
            acc[1] = 0.5
        rid = f"{loss}-{rule}-{seed}"
        pairing = "exact" if (loss, rule) in {("mse", "nielsen"), ("bce", "ng")} else "mismatched"
        runs.append({"run_id": rid, "loss": loss, "activation": "sigmoid", "delta": rule, "seed": seed, "lr": 1.0,
                     "pairing": pairing, "outcome": "completed", "final_accuracy": acc[-1], "final_loss": 0.1 * seed,
                     "epochs_to_threshold": 2.0 if acc[-1] == 1.0 else math.inf})  # fmt: skip
        rows += [
            {"run_id": rid, "epoch": e, "test_accuracy": v, "train_loss": 0.1, "grad_cosine": 1.0}
            for e, v in enumerate(acc)
        ]
    summary = pd.DataFrame(runs)
    summary["triple"] = summary["loss"] + "-" + summary["activation"] + "-" + summary["delta"]
    frame = pd.DataFrame(rows).merge(
        summary.drop(columns=["final_accuracy", "final_loss", "epochs_to_threshold"]), on="run_id"
    )
    return loading.Study("x", "sqlite://", None, summary, frame), summary


def test_two_losses_under_ng_make_one_comparison_counted_once_by_bh():
    from harness.report import questions

    study, summary = _two_losses()
    study.runs["dataset"] = "xor"
    comps = questions.comparisons(study, summary)
    mse, bce = comps.get("q1", "mse", "sigmoid", "final_accuracy"), comps.get("q1", "bce", "sigmoid", "final_accuracy")
    assert mse is bce and mse.same_as == ["bce + sigmoid"]
    assert len(comps.distinct()) == 3 < len(comps.items) == 5  # accuracy and epochs once each, mse's final loss
    assert len(comps.table()) == 3 and comps.table()["comparison"].iloc[0] == "mse + sigmoid = bce + sigmoid"
    text = questions.q1(study, summary, comps).text
    assert "**bce + sigmoid** — `nielsen` is mismatched, `ng` is exact: the very runs of mse + sigmoid" in text
    assert "**mse + sigmoid** — `nielsen` is exact, `ng` is mismatched:" in text  # still says which is exact where
    # histories that differ under the two losses are two trainings: two tests
    study, summary = _two_losses(differ=True)
    study.runs["dataset"] = "xor"
    comps = questions.comparisons(study, summary)
    assert comps.get("q1", "mse", "sigmoid", "final_accuracy") is not comps.get("q1", "bce", "sigmoid",
                                                                                 "final_accuracy")  # fmt: skip
    assert len(comps.distinct()) == 5
