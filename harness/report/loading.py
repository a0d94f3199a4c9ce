"""Turn an experiment's MLflow runs into tidy pandas frames (the statistics are in :mod:`.stats`).

- :func:`load` → :class:`Study`: ``runs`` (one row per run: loss, activation, delta, seed, lr, pairing,
  outcome, ...) and ``frame`` (one row per run × logged epoch, with the metrics and the run columns).
  By default a study is the experiment's latest sweep (the children of its newest parent run).
- :func:`run_summary`: one row per run with its final accuracy and its epochs-to-threshold.

Runs that diverged (non-finite weights or loss) or left the loss's domain ("undefined") stop early. They are
kept in every frame, with their ``outcome``; their final accuracy is NaN (a broken network has no accuracy)
and they are counted, never silently dropped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from harness.names import (
    BEST_TEST_ACCURACY,
    DELTA_COSINE,
    EPOCHS_RUN_TAG,
    EPOCHS_TO_THRESHOLD,
    METRICS,
    OUTCOME_TAG,
    OVERRIDES_TAG,
    PAIRING_TAG,
    TEST_ACCURACY,
    TRAIN_LOSS,
    UNDEFINED_EPOCHS_TAG,
)
from harness.nn.data import ACCURACY_THRESHOLDS
from harness.tracking import all_runs, client, histories, resolve_uri, select_sweep

# Runs that predate the output-δ cosine or the undefined-epochs tag have NaN there (columns still exist).
REPORT_METRICS = (*METRICS, *((DELTA_COSINE,) if DELTA_COSINE not in METRICS else ()))

KEYS = ["loss", "activation", "delta"]
THRESHOLDS = ACCURACY_THRESHOLDS  # the per-dataset test accuracy that counts as "trained" (harness.nn.data)


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
                # the run's own summary, measured at every epoch whatever its logging cadence (NaN: not logged)
                "logged_epochs_to_threshold": r.data.metrics.get(EPOCHS_TO_THRESHOLD, math.nan),
                "has_summary": BEST_TEST_ACCURACY in r.data.metrics,
                "lr": _number(p.get("train.lr")),
                "init_weight": _number(p.get("model.init_weight")),
                "init_bias": _number(p.get("model.init_bias")),
                "pairing": t.get(PAIRING_TAG),
                # a run still RUNNING has no outcome yet; a FAILED one may have died before tagging
                "outcome": t.get(OUTCOME_TAG, "failed" if r.info.status == "FAILED" else "running"),
                "epochs_run": _number(t.get(EPOCHS_RUN_TAG)),
                "undefined_epochs": _number(t.get(UNDEFINED_EPOCHS_TAG)),
                "overrides": t.get(OVERRIDES_TAG, ""),  # the sweep job's overrides (a two-stage sweep reads them)
            }
        )
    frame = pd.DataFrame(rows)
    if not frame.empty:
        frame["triple"] = frame["loss"] + "-" + frame["activation"] + "-" + frame["delta"]
        frame = frame.sort_values(["loss", "activation", "delta", "lr", "seed"], ignore_index=True)
    return frame


def locate(experiment: str, uri: str | None = None, parent_run_id: str | None = None, fast_path: bool = True) -> Study:
    """The runs of the latest sweep of ``experiment`` (or of the sweep under ``parent_run_id``), without their
    histories (``frame`` is empty): cheap, for checking that there is something to report.

    Raises :class:`AnalysisError` when the store or the experiment does not exist or has no FINISHED run.
    """
    uri = resolve_uri(uri)
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///") :]).exists():  # don't create one by reading
        raise AnalysisError(
            f"there is no MLflow tracking store at {uri} (the file does not exist), so no experiment "
            f"{experiment!r}. Run a study there first, e.g. `python -m harness +experiment={experiment}`, "
            "or pass the store with --uri."
        )
    mlflow_client = client(uri)
    exp = mlflow_client.get_experiment_by_name(experiment)
    if exp is None:
        names = sorted(e.name for e in mlflow_client.search_experiments())
        raise AnalysisError(
            f"experiment {experiment!r} does not exist in the tracking store {uri}; "
            f"experiments there: {', '.join(names) or 'none'}. Run a study first, e.g. "
            f"`python -m harness +experiment={experiment}`, or pass the store with --uri."
        )
    parent, runs = select_sweep(all_runs(mlflow_client, exp.experiment_id, fast_path), parent_run_id)
    table = runs_frame(runs)
    if table.empty or not (table["status"] == "FINISHED").any():
        where = f"sweep {parent}" if parent else "the experiment"
        raise AnalysisError(
            f"experiment {experiment!r} in {uri} has no finished runs in {where} "
            f"({len(table)} runs, none FINISHED): nothing to report."
        )
    return Study(experiment, uri, parent, table, pd.DataFrame())


def load(experiment: str, uri: str | None = None, parent_run_id: str | None = None, fast_path: bool = True) -> Study:
    """:func:`locate`, plus every run's metric histories in ``frame`` (one row per run × logged epoch).

    ``fast_path=False`` reads them through MLflow's public API only (see :mod:`harness.tracking.mlflow_sql`).
    """
    study = locate(experiment, uri, parent_run_id, fast_path)
    frame = histories(study.uri, study.runs["run_id"].tolist(), REPORT_METRICS, fast_path=fast_path)
    frame = frame.merge(study.runs, on="run_id", how="left")
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

    ``final_accuracy`` is the last logged test accuracy of a run that trained to its last epoch: ``completed``,
    or ``undefined`` (its loss was undefined at the end, but its network is finite and has an accuracy; runs
    tagged ``undefined_epochs`` train to the end, older ones stopped at epoch 0 and get NaN). It is NaN for a
    run that diverged or failed. ``final_loss`` is the last logged training loss (NaN where undefined);
    ``epochs_to_threshold`` is inf when the threshold was never reached (also when the run diverged first): the
    run's logged summary metric, exact to the epoch (``epochs_exact``), else (older runs, another threshold)
    the first logged epoch at the threshold.
    """
    threshold = study.threshold if threshold is None else threshold
    last = study.frame.sort_values("epoch").groupby("run_id").tail(1).set_index("run_id")
    out = study.runs.copy()
    trained_on = out["outcome"].eq("undefined") & out["undefined_epochs"].notna()
    done = out["outcome"].eq("completed") | trained_on
    out["final_accuracy"] = out["run_id"].map(last[TEST_ACCURACY]).where(done)
    out["final_loss"] = out["run_id"].map(last[TRAIN_LOSS]).where(done)
    out["last_epoch"] = out["run_id"].map(last["epoch"])
    if threshold is not None:
        reach = {rid: first_epoch_at(h, TEST_ACCURACY, threshold) for rid, h in study.frame.groupby("run_id")}
        out["epochs_to_threshold"] = out["run_id"].map(reach).fillna(math.inf)
        # At the dataset's own threshold a run's logged summary is exact to the epoch (the history has only the
        # logged epochs): a run with a summary that lacks the metric never reached it.
        exact = out["has_summary"].fillna(False).astype(bool) & (threshold == study.threshold)
        logged = out["logged_epochs_to_threshold"].fillna(math.inf)
        out.loc[exact, "epochs_to_threshold"] = logged[exact]
        out["epochs_exact"] = exact
    else:
        out["epochs_to_threshold"] = math.nan
        out["epochs_exact"] = False
    return out
