"""The statistics the reports quote, over seeds: bootstrap confidence intervals, paired rule differences,
each triple at its best learning rate.

- :func:`bootstrap_ci`, :func:`group_ci`, :func:`rule_difference`, :func:`best_lr`: estimates with
  percentile-bootstrap 95 % confidence intervals over seeds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from harness.report.loading import KEYS


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
