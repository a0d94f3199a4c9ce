"""Turn an experiment's MLflow runs into tidy pandas frames, and the statistics the reports quote.

- :func:`load` → :class:`Study`: ``runs`` (one row per run: loss, activation, delta, seed, lr, pairing,
  outcome, ...) and ``frame`` (one row per run × logged epoch, with the five metrics and the run columns).
  By default a study is the experiment's latest sweep (the children of its newest parent run).
- :func:`run_summary`: one row per run with its final accuracy and its epochs-to-threshold.
- :func:`bootstrap_ci`, :func:`group_ci`, :func:`rule_difference`, :func:`best_lr`: estimates with
  percentile-bootstrap 95 % confidence intervals over seeds.

Runs that diverged (non-finite weights or loss) or left the loss's domain ("undefined") stop early. They are
kept in every frame, with their ``outcome``; their final accuracy is NaN (a broken network has no accuracy)
and they are counted, never silently dropped.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

METRICS = ("train_loss", "train_accuracy", "test_loss", "test_accuracy", "grad_cosine")
KEYS = ["loss", "activation", "delta"]
SWEEP_TAG = "harness.sweep_dir"  # = harness.tracking.SWEEP_TAG (not imported: that module imports mlflow)
PARENT_TAG = "mlflow.parentRunId"
# Accuracy that counts as "trained": XOR is solved when all four points are right; MNIST at 85 % test
# accuracy (a 784-30-10 net passes it in 1–2 epochs with an exact rule).
THRESHOLDS = {"xor": 1.0, "xor1": 1.0, "mnist": 0.85}
HISTORY_CHUNK = 100  # run ids per history query (keeps the SQL IN (...) list short)


class AnalysisError(LookupError):
    """The experiment, its sweep or its finished runs cannot be found (message says which and where)."""


@dataclass
class Study:
    """One experiment's runs (``runs``, one row per run) and histories (``frame``, one row per run × epoch)."""

    experiment: str
    uri: str
    parent_run_id: str | None
    runs: pd.DataFrame
    frame: pd.DataFrame

    @property
    def dataset(self) -> str:
        return str(self.runs["dataset"].mode().iloc[0])

    @property
    def threshold(self) -> float | None:
        return THRESHOLDS.get(self.dataset)

    def __repr__(self) -> str:
        return (
            f"Study({self.experiment!r}, parent={self.parent_run_id!r}, runs={len(self.runs)}, rows={len(self.frame)})"
        )


# ---------------------------------------------------------------------------------------------- loading


def _client(uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _all_runs(client, experiment_id: str) -> list:
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def select_sweep(runs: list, parent_run_id: str | None = None) -> tuple[str | None, list]:
    """The runs of one sweep: the children of ``parent_run_id``, by default of the newest parent run.

    An experiment without sweep parents (only single runs) gives all its runs.
    """
    parents = [r for r in runs if SWEEP_TAG in r.data.tags]
    if parent_run_id is None and parents:
        parent_run_id = max(parents, key=lambda r: r.info.start_time).info.run_id
    if parent_run_id is None:
        return None, runs
    return parent_run_id, [r for r in runs if r.data.tags.get(PARENT_TAG) == parent_run_id]


def _number(text: str | None) -> float:
    try:
        return float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan


def runs_frame(runs: list) -> pd.DataFrame:
    """One row per MLflow run: names, swept settings (from params), status and tags."""
    rows = []
    for r in runs:
        p, t = r.data.params, r.data.tags
        rows.append(
            {
                "run_id": r.info.run_id,
                "run_name": r.info.run_name,
                "status": r.info.status,
                "loss": p.get("loss"),
                "activation": p.get("activation"),
                "delta": p.get("delta"),
                "dataset": p.get("dataset"),
                "seed": int(_number(p.get("seed", "0"))),
                "lr": _number(p.get("train.lr")),
                "init_weight": _number(p.get("model.init_weight")),
                "init_bias": _number(p.get("model.init_bias")),
                "pairing": t.get("pairing"),
                # a run still RUNNING has no outcome yet; a FAILED one may have died before tagging
                "outcome": t.get("outcome", "failed" if r.info.status == "FAILED" else "running"),
                "epochs_run": _number(t.get("epochs_run")),
            }
        )
    frame = pd.DataFrame(rows)
    if not frame.empty:
        frame["triple"] = frame["loss"] + "-" + frame["activation"] + "-" + frame["delta"]
        frame = frame.sort_values(["loss", "activation", "delta", "lr", "seed"], ignore_index=True)
    return frame


def _sql_history(client, run_ids: list[str], metrics: Sequence[str]) -> pd.DataFrame | None:
    """(run_id, metric, epoch, value) straight from a SQL store's ``metrics`` table, one query per 100 runs.

    Selecting four columns skips building an MLflow ``Metric`` object per value: 600,000 values load in
    ≈ 5 s instead of ≈ 60 s (the store's ``get_metric_history_bulk``) or ≈ 100 s (``get_metric_history``
    per run and metric). Uses MLflow's SQLAlchemy model, so None (→ the public API) for any other store.
    """
    store = getattr(getattr(client, "_tracking_client", None), "store", None)
    if not hasattr(store, "ManagedSessionMaker"):
        return None
    try:
        from mlflow.store.tracking.dbmodels.models import SqlMetric
    except ImportError:  # a future MLflow moved it: the public API still works
        return None
    rows = []
    with store.ManagedSessionMaker() as session:
        for start in range(0, len(run_ids), HISTORY_CHUNK):
            columns = (SqlMetric.run_uuid, SqlMetric.key, SqlMetric.step, SqlMetric.value, SqlMetric.is_nan)
            query = session.query(*columns).filter(
                SqlMetric.run_uuid.in_(run_ids[start : start + HISTORY_CHUNK]), SqlMetric.key.in_(list(metrics))
            )
            rows.extend(query.all())
    frame = pd.DataFrame(rows, columns=["run_id", "metric", "epoch", "value", "is_nan"])
    # MLflow stores NaN as value 0 with is_nan set (as its own Metric entities decode it)
    frame["value"] = frame["value"].where(~frame["is_nan"].astype(bool), np.nan)
    return frame.drop(columns="is_nan")


def _api_history(client, run_ids: list[str], metrics: Sequence[str]) -> pd.DataFrame:
    rows = [
        (rid, key, m.step, m.value) for rid in run_ids for key in metrics for m in client.get_metric_history(rid, key)
    ]
    return pd.DataFrame(rows, columns=["run_id", "metric", "epoch", "value"])


def histories(uri: str, run_ids: Sequence[str], metrics: Sequence[str] = METRICS) -> pd.DataFrame:
    """Every logged value of ``metrics`` as one row per (run_id, epoch), one column per metric.

    On a SQL store (SQLite, PostgreSQL, ...) a few column queries; otherwise one ``get_metric_history``
    call per run and metric.
    """
    client = _client(uri)
    run_ids = list(run_ids)
    tall = _sql_history(client, run_ids, metrics)
    if tall is None:
        tall = _api_history(client, run_ids, metrics)
    if tall.empty:
        return pd.DataFrame(columns=["run_id", "epoch", *metrics])
    # groupby/unstack, not pivot_table(dropna=False): that would add every (run, epoch) combination
    wide = tall.groupby(["run_id", "epoch", "metric"])["value"].last().unstack("metric")
    wide = wide.reindex(columns=list(metrics)).reset_index()
    wide.columns.name = None
    return wide


def locate(experiment: str, uri: str | None = None, parent_run_id: str | None = None) -> Study:
    """The runs of the latest sweep of ``experiment`` (or of the sweep under ``parent_run_id``), without their
    histories (``frame`` is empty): cheap, for checking that there is something to report.

    Raises :class:`AnalysisError` when the store or the experiment does not exist or has no FINISHED run.
    """
    from harness.tracking import resolve_uri

    uri = resolve_uri(uri)
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///") :]).exists():  # don't create one by reading
        raise AnalysisError(
            f"there is no MLflow tracking store at {uri} (the file does not exist), so no experiment "
            f"{experiment!r}. Run a study there first, e.g. `python -m harness +experiment={experiment}`, "
            "or pass the store with --uri."
        )
    client = _client(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        names = sorted(e.name for e in client.search_experiments())
        raise AnalysisError(
            f"experiment {experiment!r} does not exist in the tracking store {uri}; "
            f"experiments there: {', '.join(names) or 'none'}. Run a study first, e.g. "
            f"`python -m harness +experiment={experiment}`, or pass the store with --uri."
        )
    parent, runs = select_sweep(_all_runs(client, exp.experiment_id), parent_run_id)
    table = runs_frame(runs)
    if table.empty or not (table["status"] == "FINISHED").any():
        where = f"sweep {parent}" if parent else "the experiment"
        raise AnalysisError(
            f"experiment {experiment!r} in {uri} has no finished runs in {where} "
            f"({len(table)} runs, none FINISHED): nothing to report."
        )
    return Study(experiment, uri, parent, table, pd.DataFrame())


def load(experiment: str, uri: str | None = None, parent_run_id: str | None = None) -> Study:
    """:func:`locate`, plus every run's metric histories in ``frame`` (one row per run × logged epoch)."""
    study = locate(experiment, uri, parent_run_id)
    frame = histories(study.uri, study.runs["run_id"].tolist()).merge(study.runs, on="run_id", how="left")
    study.frame = frame.sort_values(["run_id", "epoch"], ignore_index=True)
    return study


# ------------------------------------------------------------------------------------------- per run


def neuron_output(frame: pd.DataFrame) -> pd.Series:
    """The single neuron's output a, recovered exactly from its loss at target y = 0.

    Quadratic: L = a²/2, so a = √(2L).  Cross-entropy: L = −ln(1 − a), so a = 1 − e^(−L).
    """
    a = pd.Series(np.nan, index=frame.index)
    mse, bce = frame["loss"] == "mse", frame["loss"] == "bce"
    a[mse] = np.sqrt(2.0 * frame.loc[mse, "train_loss"])
    a[bce] = -np.expm1(-frame.loc[bce, "train_loss"])
    return a


def first_epoch_at(history: pd.DataFrame, metric: str, threshold: float) -> float:
    """First logged epoch with ``metric ≥ threshold`` (inf if never: a right-censored run)."""
    hit = history.loc[history[metric] >= threshold, "epoch"]
    return float(hit.min()) if len(hit) else math.inf


def run_summary(study: Study, threshold: float | None = None) -> pd.DataFrame:
    """One row per run: its settings, final metrics and epochs to ``threshold`` test accuracy.

    ``final_accuracy`` / ``final_loss`` are the last logged values of a completed run and NaN for a run that
    diverged, became undefined or failed; ``epochs_to_threshold`` is inf when the threshold was never reached
    (also when the run diverged before reaching it).
    """
    threshold = study.threshold if threshold is None else threshold
    last = study.frame.sort_values("epoch").groupby("run_id").tail(1).set_index("run_id")
    out = study.runs.copy()
    done = out["outcome"] == "completed"
    out["final_accuracy"] = out["run_id"].map(last["test_accuracy"]).where(done)
    out["final_loss"] = out["run_id"].map(last["train_loss"]).where(done)
    out["last_epoch"] = out["run_id"].map(last["epoch"])
    if threshold is not None:
        reach = {rid: first_epoch_at(h, "test_accuracy", threshold) for rid, h in study.frame.groupby("run_id")}
        out["epochs_to_threshold"] = out["run_id"].map(reach).fillna(math.inf)
    else:
        out["epochs_to_threshold"] = math.nan
    return out


# ------------------------------------------------------------------------------------------ statistics


def bootstrap_ci(
    values: Sequence[float], stat: Callable = np.mean, n_boot: int = 4000, level: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """(estimate, low, high): ``stat`` of the values and its percentile-bootstrap CI.

    Resamples the values with replacement ``n_boot`` times; the CI is the (1 ± level)/2 quantiles of the
    resampled statistic (quantiles without interpolation, so an inf from a never-reached threshold stays
    an honest "≥" bound instead of becoming NaN). NaN values are left out; none left gives NaNs.
    """
    x = np.asarray(values, dtype=float)
    x = x[~np.isnan(x)]
    if len(x) == 0:
        return math.nan, math.nan, math.nan
    rng = np.random.default_rng(seed)
    samples = x[rng.integers(0, len(x), size=(n_boot, len(x)))]
    with np.errstate(invalid="ignore"):
        stats = stat(samples, axis=1)
    lo, hi = np.quantile(stats, [(1 - level) / 2, (1 + level) / 2], method="inverted_cdf")
    return float(stat(x)), float(lo), float(hi)


def group_ci(summary: pd.DataFrame, value: str, by: Sequence[str] = KEYS, stat: Callable = np.mean) -> pd.DataFrame:
    """Per group: runs, how many diverged / were undefined / failed, and ``stat(value)`` with its 95 % CI."""
    rows = []
    for key, g in summary.groupby(list(by), sort=False):
        est, lo, hi = bootstrap_ci(g[value].to_numpy(), stat)
        key = key if isinstance(key, tuple) else (key,)
        outcomes = g["outcome"].value_counts()
        rows.append(
            {
                **dict(zip(by, key)),
                "pairing": g["pairing"].iloc[0],
                "runs": len(g),
                "diverged": int(outcomes.get("diverged", 0)),
                "undefined": int(outcomes.get("undefined", 0)),
                "failed": int(outcomes.get("failed", 0) + outcomes.get("killed", 0)),
                "estimate": est,
                "ci_low": lo,
                "ci_high": hi,
            }
        )
    return pd.DataFrame(rows)


def rule_difference(
    summary: pd.DataFrame, value: str, loss: str, activation: str, rule_a: str, rule_b: str
) -> dict[str, float]:
    """Mean paired difference ``value(rule_a) − value(rule_b)`` on (loss, activation), with its 95 % CI.

    Runs are paired by seed (same seed = same initial weights and minibatch order for every rule); pairs
    where either value is NaN or infinite (diverged, never reached) are left out and counted in ``dropped``.
    """
    pair = summary[(summary["loss"] == loss) & (summary["activation"] == activation)]
    lr = pair["lr"].fillna(-1.0)
    wide = pair.assign(lr=lr).pivot_table(index=["seed", "lr"], columns="delta", values=value, aggfunc="first")
    if rule_a not in wide or rule_b not in wide:
        return {"estimate": math.nan, "ci_low": math.nan, "ci_high": math.nan, "pairs": 0, "dropped": 0}
    d = (wide[rule_a] - wide[rule_b]).to_numpy(dtype=float)
    ok = np.isfinite(d)
    est, lo, hi = bootstrap_ci(d[ok])
    return {"estimate": est, "ci_low": lo, "ci_high": hi, "pairs": int(ok.sum()), "dropped": int((~ok).sum())}


def best_lr(summary: pd.DataFrame, value: str = "final_accuracy", higher_is_better: bool = True) -> pd.DataFrame:
    """Each triple at its own best learning rate: the lr whose mean ``value`` over seeds is best.

    Diverged runs count as the worst value at that rate (a rate where some seeds blow up is not "best").
    Ties (e.g. several rates that all solve XOR) go to the rate that reaches the accuracy threshold in the
    fewest epochs, when the summary has ``epochs_to_threshold``. Returns one row per triple with the chosen
    lr, the value's mean and 95 % CI over seeds there (``estimate``, ``ci_low``, ``ci_high``) and the mean
    epochs to threshold with its CI (``epochs``, ``epochs_low``, ``epochs_high``; inf = some seed never did).
    """
    worst = -np.inf if higher_is_better else np.inf
    speed = summary["epochs_to_threshold"] if "epochs_to_threshold" in summary else pd.Series(0.0, summary.index)
    scored = summary.assign(_score=summary[value].fillna(worst), _speed=speed.fillna(np.inf))
    rows = []
    for key, g in scored.groupby(KEYS, sort=False):
        by_lr = g.groupby("lr").agg(score=("_score", "mean"), speed=("_speed", "mean"))
        by_lr = by_lr.sort_values(["score", "speed"], ascending=[not higher_is_better, True])
        lr = float(by_lr.index[0])
        at = g[g["lr"] == lr]
        est, lo, hi = bootstrap_ci(at[value].to_numpy())
        ep, ep_lo, ep_hi = bootstrap_ci(at["_speed"].to_numpy())
        rows.append(
            {
                **dict(zip(KEYS, key)),
                "pairing": g["pairing"].iloc[0],
                "best_lr": lr,
                "runs": len(at),
                "diverged_at_best": int((at["outcome"] != "completed").sum()),
                "estimate": est,
                "ci_low": lo,
                "ci_high": hi,
                "epochs": ep,
                "epochs_low": ep_lo,
                "epochs_high": ep_hi,
            }
        )
    return pd.DataFrame(rows)


def at_best_lr(frame: pd.DataFrame, best: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``frame`` (runs or per-epoch) run at their triple's best rate (from :func:`best_lr`)."""
    chosen = best[[*KEYS, "best_lr"]].rename(columns={"best_lr": "lr"})
    return frame.merge(chosen, on=[*KEYS, "lr"], how="inner")


def format_ci(est: float, lo: float, hi: float, digits: int = 3) -> str:
    """``0.95 [0.90, 1.00]``; inf shows as ∞ (never reached), NaN as "n/a"."""

    def f(v: float) -> str:
        if math.isnan(v):
            return "n/a"
        if math.isinf(v):
            return "∞"
        return f"{v:.{digits}g}"

    return f"{f(est)} [{f(lo)}, {f(hi)}]"
