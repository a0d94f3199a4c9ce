"""The statistics the reports quote, over seeds, from :mod:`scipy.stats` (nothing re-derived by hand).

- :func:`bootstrap_ci`: a mean and its BCa bootstrap 95 % CI (``scipy.stats.bootstrap``); degenerate samples
  (none, n < 3, all equal, ∞ from a never-reached threshold) get no interval and a note that says why.
- :func:`compare`: two rules on the same seeds (same seed = same initial weights and minibatch order). The
  effect is the mean paired difference with its BCa CI; the test is Wilcoxon's signed-rank test with an exact
  sign-flip null (``scipy.stats.wilcoxon(..., method=PermutationMethod())``, exact up to 13 pairs, 9,999
  random sign flips above); equivalence is TOST: two one-sided signed-rank tests against ± a stated margin.
- :func:`adjust`: Benjamini–Hochberg q-values (``scipy.stats.false_discovery_control``) across all the
  comparisons one report makes; :meth:`Comparison.verdict` reads them.
- :func:`detectable`: the power of an inconclusive comparison in words: the smallest mean difference its test
  would have found with 80 % power at its n and level (the BH level where the family is adjusted).
- :func:`split_seeds`, :func:`design_seeds`, :func:`best_lr`, :func:`at_best_lr`: each triple's best learning
  rate, chosen on tuning seeds; the comparisons then use the disjoint evaluation seeds.

Censoring: epochs-to-threshold is ∞ for a run that never reached the threshold. A pair where neither rule
reached it is a tie (difference 0); a pair where only one did has difference ±∞, which the signed-rank test
ranks beyond every finite difference. The mean difference (the effect size) is taken over the pairs where
both reached it, and the report says how many did not.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from harness.report.loading import KEYS

LEVEL = 0.95  # confidence level of every interval
ALPHA = 0.05  # significance level, applied to Benjamini–Hochberg q-values
RESAMPLES = 9999
MIN_PAIRS = 6  # an exact two-sided sign-flip test cannot reach p < 0.05 below 6 pairs: 2 / 2⁵ = 0.0625
# Equivalence margins (TOST): (kind, size). "abs": ± size in the metric's unit; "rel": ± size × the median of
# the reference rule (the second one compared) over the pairs.
MARGINS: dict[str, tuple[str, float]] = {
    "final_accuracy": ("abs", 0.02),
    "epochs_to_threshold": ("rel", 0.10),
    "final_loss": ("rel", 0.10),
}
TUNING_SHARE = 0.4  # one-stage lr grids: the first 40 % of the seeds pick each triple's rate, the rest evaluate it
POWER = 0.80  # the power at which an inconclusive comparison's detectable difference is stated
ARE = 3.0 / math.pi  # asymptotic relative efficiency of the signed-rank test to the paired t-test (normal data)


def min_p(n: int, two_sided: bool = True) -> float:
    """The smallest p-value an exact sign-flip test on ``n`` non-tied pairs can give: 2/2ⁿ (one-sided 1/2ⁿ)."""
    return min(1.0, (2.0 if two_sided else 1.0) / 2.0**n) if n > 0 else 1.0


@dataclass
class CI:
    """An estimate with its confidence interval over ``n`` values; ``note`` says why an interval is missing."""

    estimate: float
    low: float
    high: float
    n: int
    note: str = ""

    def __str__(self) -> str:
        return format_ci(self)


def format_ci(ci: CI, digits: int = 3, n: bool = True) -> str:
    """``0.95 [0.90, 1.00], n = 5``; without an interval, the note: ``1 (all 5 values equal)``."""

    def f(v: float) -> str:
        return "n/a" if math.isnan(v) else ("∞" if math.isinf(v) else f"{v:.{digits}g}")

    if ci.n == 0:
        return "n/a"
    if math.isnan(ci.low):
        return f"{f(ci.estimate)} ({ci.note})"
    text = f"{f(ci.estimate)} [{f(ci.low)}, {f(ci.high)}]" + (f", n = {ci.n}" if n else "")
    return text + (f" ({ci.note})" if ci.note else "")


def bootstrap_ci(values: Sequence[float], level: float = LEVEL, seed: int = 0) -> CI:
    """The mean of ``values`` (NaN left out) and its BCa bootstrap CI (``scipy.stats.bootstrap``).

    No interval (NaN bounds, and a note) for: no value; ∞ among the values (a threshold some run never
    reached: the mean is not finite); n < 3 (too few to resample); all values equal (a point: the interval is
    that value, said as such); a bootstrap distribution BCa cannot handle (scipy's DegenerateDataWarning).
    """
    x = np.asarray(values, dtype=float)
    x = x[~np.isnan(x)]
    n = len(x)
    if n == 0:
        return CI(math.nan, math.nan, math.nan, 0, "no values")
    if np.isinf(x).any():
        k = int(np.isinf(x).sum())
        return CI(float(np.mean(x)), math.nan, math.nan, n, f"{k} of {n} never reached: no finite mean")
    mean = float(np.mean(x))
    if np.ptp(x) == 0:
        return CI(mean, mean, mean, n, f"all {n} values equal")
    if n < 3:
        return CI(mean, math.nan, math.nan, n, f"n = {n}: too few for a bootstrap CI")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # DegenerateDataWarning / divide by zero: checked below
        res = stats.bootstrap(
            (x,), np.mean, confidence_level=level, method="BCa", n_resamples=RESAMPLES, random_state=seed
        )
    lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return CI(mean, math.nan, math.nan, n, f"n = {n}: BCa interval undefined for this sample")
    return CI(mean, lo, hi, n)


def _pratt_r_plus(d: np.ndarray, axis: int = -1) -> np.ndarray:
    """Wilcoxon's T⁺ with Pratt's zeros, along ``axis``: T⁺ = Σᵢ [dᵢ > 0]·rank(|dᵢ|), where a zero keeps its
    place among the ranks of |d| and then counts for neither side (ties get their average rank).

    Vectorised over resamples: it is the statistic of ``scipy.stats.wilcoxon(zero_method="pratt")``, which
    scipy's permutation method evaluates one resample at a time (≈ 0.45 ms each: 108 s of a 720-run report's
    comparisons went there); one call on all 9,999 sign-flipped copies takes a few ms.
    """
    ranks = stats.rankdata(np.abs(d), axis=axis)
    return np.sum(np.where(d > 0, ranks, 0.0), axis=axis)


def _signed_rank(d: np.ndarray, alternative: str = "two-sided", seed: int = 0) -> float:
    """p of Wilcoxon's signed-rank test on paired differences ``d`` (±∞ allowed: ranked beyond all finite).

    ``zero_method="pratt"``: a tied pair (difference 0) keeps its place in the ranking and then counts for
    neither side, so seeds on which the rules tie dilute the evidence instead of vanishing ("wilcox" would drop
    them and test only the seeds that differ). The null distribution is the exact sign-flip one (all 2ⁿ flips up
    to n = 13, else 9,999 random flips), which handles ties and zeros without a normal approximation. It is
    ``scipy.stats.wilcoxon(d, zero_method="pratt", method=PermutationMethod(...))``'s own computation, a
    ``scipy.stats.permutation_test`` over sign flips (``permutation_type="samples"`` on one sample), given the
    statistic in vectorised form (:func:`_pratt_r_plus`).
    """
    if not np.any(d != 0):
        return 0.5 if alternative != "two-sided" else 1.0
    if len(d) == 1:  # one pair, two equally likely signs (scipy's permutation test needs two observations)
        toward = d[0] > 0 if alternative == "greater" else d[0] < 0
        return 1.0 if alternative == "two-sided" else (0.5 if toward else 1.0)
    result = stats.permutation_test(
        (np.asarray(d, dtype=float),),
        _pratt_r_plus,
        permutation_type="samples",
        vectorized=True,
        n_resamples=RESAMPLES,
        alternative=alternative,
        random_state=seed,
    )
    return float(result.pvalue)


@dataclass
class Comparison:
    """``a`` − ``b`` for one metric on paired seeds: effect, test, equivalence test; q-values from :func:`adjust`."""

    metric: str
    a: str
    b: str
    label: str = ""  # e.g. "mse + sigmoid"
    n: int = 0  # pairs with a value (finite or ∞) on both sides
    dropped: int = 0  # pairs left out: a NaN on either side (diverged, undefined, failed)
    only_a_never: int = 0  # epochs-to-threshold: a never reached it, b did
    only_b_never: int = 0
    both_never: int = 0
    differ: int = 0  # pairs whose difference is not 0
    effect: CI = field(default_factory=lambda: CI(math.nan, math.nan, math.nan, 0, "no pairs"))
    p: float = math.nan
    margin: float | None = None
    margin_text: str = ""
    p_equiv: float = math.nan
    q: float = math.nan
    q_equiv: float = math.nan
    sd: float = math.nan  # standard deviation of the finite paired differences (over effect.n pairs)
    level: float = ALPHA  # the p a difference needed to count: the BH cutoff of its family (set by adjust)
    same_as: list[str] = field(default_factory=list)  # other labels with the same runs (one test, counted once)

    @property
    def detectable(self) -> float:
        """The smallest mean difference this comparison would have found with 80 % power (:func:`detectable`)."""
        return detectable(self.effect.n, self.sd, self.level)

    @property
    def testable(self) -> bool:
        """Can a two-sided test reach p < α at this n at all (n ≥ 6 pairs)?"""
        return min_p(self.n) < ALPHA

    def where(self) -> str:
        """The label, and the other labels whose runs are the same (one test, counted once)."""
        return self.label + (f" (the same runs as on {', '.join(self.same_as)})" if self.same_as else "")

    def verdict(self) -> str:
        """Words for the result, from the BH-adjusted q-values (call :func:`adjust` first)."""
        if self.n == 0:
            return "no paired runs to compare"
        if not self.testable:
            return (
                f"n = {self.n} pairs: no test at this n can reach p < {ALPHA:g} (the smallest p an exact "
                f"two-sided sign-flip test can give is {min_p(self.n):.3g}), so no verdict"
            )
        if self.q < ALPHA:
            word = "higher" if _direction(self) > 0 else "lower"
            return f"**`{self.a}` is {word}** (signed-rank test, BH q = {self.q:.2g})"
        if self.q_equiv < ALPHA:
            return f"**equivalent** within {self.margin_text} (TOST, BH q = {self.q_equiv:.2g})"
        equiv = f"; equivalence within {self.margin_text} not shown (TOST q = {self.q_equiv:.2g})" if (
            self.margin is not None) else ""  # fmt: skip
        return f"inconclusive: {self.power_text()} (q = {self.q:.2g}){equiv}"

    def power_text(self) -> str:
        """What an inconclusive result still says: no difference larger than the detectable one."""
        mde = self.detectable
        if not math.isfinite(mde):
            return "no difference detected (too few finite pairs to say how large one could have been missed)"
        return (
            f"no difference larger than ±{size(mde)} (a mean difference that large would have been found with "
            f"{POWER:.0%} power at n = {self.effect.n}, level {self.level:.2g}; a smaller one may be missed)"
        )

    def short(self) -> str:
        """The verdict in a word or three, for tables."""
        if self.n == 0:
            return "no pairs"
        if not self.testable:
            return f"no verdict (n = {self.n} < {MIN_PAIRS})"
        if self.q < ALPHA:
            return f"{self.a} {'higher' if _direction(self) > 0 else 'lower'}"
        return "equivalent" if self.q_equiv < ALPHA else "inconclusive"

    def sentence(self) -> str:
        """One line: the effect with CI and n, censoring counts, the verdict."""
        never = ""
        if self.only_a_never or self.only_b_never or self.both_never:
            never = (
                f"; never reached: `{self.a}` only on {self.only_a_never}, `{self.b}` only on {self.only_b_never}, "
                f"both on {self.both_never} pairs (ranked last by the test)"
            )
        drop = f"; {self.dropped} pairs left out (diverged, undefined or failed)" if self.dropped else ""
        effect = format_ci(self.effect, n=False)
        if self.effect.n < self.n:
            effect += (
                f" (mean over the {self.effect.n} pairs where both reached it)"
                if self.effect.n
                else " (no pair where both reached it)"
            )
        return f"`{self.a}` − `{self.b}` = {effect} over n = {self.n} seed pairs{never}{drop} — {self.verdict()}."


def size(v: float) -> str:
    """A difference in a sentence: two significant digits (0.033, 4.5), whole from 100 on (120, not 1.2e+02)."""
    return f"{v:.0f}" if abs(v) >= 100 else f"{v:.2g}"


def detectable(n: int, sd: float, alpha: float = ALPHA, power: float = POWER) -> float:
    """The minimum detectable mean difference of a two-sided paired test on ``n`` pairs whose differences have
    standard deviation ``sd``, at level ``alpha`` and the given ``power``:

        MDE = (t₁₋α/₂,ν + t_power,ν) · sd / √(n · 3/π),   ν = n − 1,

    the paired t-test's MDE (a noncentral-t power calculation with the noncentrality approximated by shifting the
    central t), with n shrunk by 3/π, the signed-rank test's asymptotic relative efficiency to the t-test on
    normal data (Noether): the signed-rank test needs π/3 ≈ 1.05 × as many pairs for the same power.
    NaN below 2 pairs or without a finite ``sd``; 0 when every difference is the same (sd = 0).
    """
    if n < 2 or not math.isfinite(sd):
        return math.nan
    nu = n - 1
    return float((stats.t.ppf(1 - alpha / 2, nu) + stats.t.ppf(power, nu)) * sd / math.sqrt(n * ARE))


def _direction(c: Comparison) -> float:
    """Sign of the difference the test found: the mean effect, else (censored) who reached the threshold."""
    if np.isfinite(c.effect.estimate) and c.effect.estimate != 0:
        return float(np.sign(c.effect.estimate))
    return float(np.sign(c.only_b_never - c.only_a_never)) * (-1 if c.metric == "epochs_to_threshold" else 1)


def compare(
    a: pd.Series,
    b: pd.Series,
    metric: str,
    names: tuple[str, str] = ("a", "b"),
    label: str = "",
    resolution: float = 0.0,
) -> Comparison:
    """``a`` − ``b`` on the seeds both have (Series indexed by seed): effect, signed-rank p, TOST p.

    ``resolution``: the smallest difference the metric can show (epochs logged every 10 epochs: 10); a relative
    equivalence margin is never narrower, or equivalence could not be shown even for identical training.

    NaN on either side (the run diverged, became undefined or failed) drops the pair (counted in ``dropped``).
    """
    both = pd.concat([a.rename("a"), b.rename("b")], axis=1, join="inner")
    has = both.notna().all(axis=1)
    c = Comparison(metric, *names, label=label, dropped=int((~has).sum()))
    x, y = both.loc[has, "a"].to_numpy(float), both.loc[has, "b"].to_numpy(float)
    never_a, never_b = np.isposinf(x), np.isposinf(y)
    c.n = len(x)
    c.only_a_never, c.only_b_never = int((never_a & ~never_b).sum()), int((never_b & ~never_a).sum())
    c.both_never = int((never_a & never_b).sum())
    with np.errstate(invalid="ignore"):  # ∞ − ∞: neither reached it, a tie
        d = np.where(never_a & never_b, 0.0, x - y)
    c.differ = int((d != 0).sum())
    if c.n == 0:
        return c
    finite = d[np.isfinite(x) & np.isfinite(y)]
    c.effect = bootstrap_ci(finite)
    c.sd = float(np.std(finite, ddof=1)) if len(finite) >= 2 else math.nan
    c.p = _signed_rank(d)
    kind, size = MARGINS.get(metric, (None, 0.0))
    ref = y[np.isfinite(y)]
    if kind == "abs":
        c.margin, c.margin_text = size, f"±{size:g}"
    elif kind == "rel" and len(ref):
        c.margin = size * float(np.median(ref))
        c.margin_text = f"±{size:.0%} of `{c.b}`'s median ({c.margin:.3g})"
        if c.margin < resolution:
            c.margin, c.margin_text = resolution, f"±{resolution:g} (one logging interval; 10 % of the median is less)"
    if c.margin is not None and c.margin > 0:
        # TOST: H0 "d ≤ −m" rejected by a one-sided test of d + m > 0, H0 "d ≥ m" by d − m < 0; p = the larger
        c.p_equiv = max(_signed_rank(d + c.margin, "greater"), _signed_rank(d - c.margin, "less"))
    return c


def adjust(comparisons: Sequence[Comparison]) -> None:
    """Benjamini–Hochberg q-values across all the comparisons of a report: one family for the difference tests,
    one for the equivalence tests (a comparison is read against one or the other, never both at once).

    Comparisons with fewer than :data:`MIN_PAIRS` pairs are not in the families: no result of theirs could count.
    A comparison listed twice (the same object, e.g. the same runs under two loss names) counts once.

    Each comparison's ``level`` becomes the p it needed to be a discovery: with k of the m difference tests
    significant, the next one would have needed p ≤ (k + 1)·α/m (BH's step-up rule), at most α.
    """
    comparisons = list({id(c): c for c in comparisons}.values())
    for p_attr, q_attr in (("p", "q"), ("p_equiv", "q_equiv")):
        family = [c for c in comparisons if c.testable and np.isfinite(getattr(c, p_attr))]
        if family:
            qs = stats.false_discovery_control([getattr(c, p_attr) for c in family], method="bh")
            for c, q in zip(family, qs):
                setattr(c, q_attr, float(q))
            if p_attr == "p":
                found = sum(q < ALPHA for q in qs)
                for c in family:
                    c.level = min(ALPHA, (found + 1) * ALPHA / len(family))


def table(comparisons: Sequence[Comparison]) -> pd.DataFrame:
    """Every comparison as one row (the report's appendix)."""
    return pd.DataFrame(
        [
            {
                "comparison": " = ".join([c.label, *c.same_as]),
                "metric": c.metric,
                "a − b": f"{c.a} − {c.b}",
                "pairs": c.n,
                "dropped": c.dropped,
                "mean difference [95 % BCa CI]": format_ci(c.effect),
                "p (signed rank)": c.p,
                "q (BH)": c.q,
                "margin": c.margin_text.replace("`", "") or "—",
                "p (TOST)": c.p_equiv,
                "q TOST (BH)": c.q_equiv,
                "detectable (80 % power)": c.detectable,
                "verdict": c.short(),
            }
            for c in {id(c): c for c in comparisons}.values()
        ]
    )


# ---------------------------------------------------------------------------------------- per group


def group_ci(summary: pd.DataFrame, value: str, by: Sequence[str] = KEYS) -> pd.DataFrame:
    """Per group: runs, how many diverged / were undefined / failed, and the mean of ``value`` with its CI
    (finite values only; ``reached`` = how many runs had one)."""
    rows = []
    for key, g in summary.groupby(list(by), sort=False):
        v = g[value].to_numpy(dtype=float)
        ci = bootstrap_ci(v[np.isfinite(v)])
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
                "finite": int(np.isfinite(v).sum()),
                "estimate": ci.estimate,
                "ci_low": ci.low,
                "ci_high": ci.high,
                "ci": ci,
            }
        )
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------ learning rates


def split_seeds(seeds: Sequence[int]) -> tuple[list[int], list[int]]:
    """(tuning, evaluation): the first 40 % of the sorted seeds (at least one) tune, the rest evaluate.

    With one seed there is nothing to hold out: both are that seed (and the report says so).
    """
    s = sorted({int(v) for v in seeds})
    if len(s) < 2:
        return s, s
    k = min(len(s) - 1, max(1, round(TUNING_SHARE * len(s))))
    return s[:k], s[k:]


def design_seeds(summary: pd.DataFrame) -> tuple[list[int], list[int]]:
    """(tuning, evaluation) seeds of a learning-rate grid, read from the runs themselves.

    A two-stage study (``hydra.sweeper.evaluation_seeds``) trains its tuning seeds at every rate and its
    evaluation seeds only at each triple's chosen rate: the tuning seeds are those some triple ran at several
    rates, the evaluation seeds the rest. A one-stage grid (every seed at every rate): :func:`split_seeds`.
    One rate in all: no tuning seeds, every seed evaluates.
    """
    seeds = sorted({int(v) for v in summary["seed"]})
    if summary["lr"].nunique() < 2:
        return [], seeds
    rates = summary.groupby([*KEYS, "seed"])["lr"].nunique()
    tuning = sorted({int(s) for s in rates[rates > 1].index.get_level_values("seed")})
    evaluation = [s for s in seeds if s not in tuning]
    if not tuning or not evaluation:
        return split_seeds(seeds)
    return tuning, evaluation


def best_lr(
    summary: pd.DataFrame,
    value: str = "final_accuracy",
    higher_is_better: bool = True,
    tuning: Sequence[int] | None = None,
) -> pd.DataFrame:
    """Each triple's best learning rate on the ``tuning`` seeds, and how it does on the other seeds there.

    The rate with the best mean ``value`` over the tuning seeds wins; a diverged run counts as the worst value
    (a rate where some seeds blow up is not "best"); ties go to the rate that reached the accuracy threshold in
    fewer mean epochs (then the lower rate). ``tuning=None``: :func:`design_seeds`. ``edge`` says when the
    chosen rate is the lowest or highest one tried: the best rate may then lie beyond the grid; ``flat`` when
    every rate did the same (e.g. no rate trained), so no rate is better and the lowest is taken. The returned
    ``estimate``/``ci_*`` (``value``) and ``epochs``/``epochs_*`` (mean epochs to threshold over the seeds that
    reached it, ``reached``) are on the evaluation seeds only: the seeds that chose the rate do not grade it.
    """
    if tuning is None:
        tuning, evaluation = design_seeds(summary)
        tuning = tuning or evaluation  # one rate: nothing to choose, every seed both
    else:
        evaluation = sorted(set(summary["seed"]) - set(tuning)) or list(tuning)
    worst = -np.inf if higher_is_better else np.inf
    speed = summary["epochs_to_threshold"] if "epochs_to_threshold" in summary else pd.Series(0.0, summary.index)
    scored = summary.assign(_score=summary[value].fillna(worst), _speed=speed.fillna(np.inf))
    rows = []
    for key, g in scored.groupby(KEYS, sort=False):
        tune = g[g["seed"].isin(tuning)]
        by_lr = tune.groupby("lr").agg(score=("_score", "mean"), speed=("_speed", "mean"))
        tried = by_lr.index
        by_lr = by_lr.sort_values(["score", "speed"], ascending=[not higher_is_better, True], kind="stable")
        lr = float(by_lr.index[0])
        flat = len(by_lr.drop_duplicates()) == 1  # every rate did the same (e.g. none trained): nothing chosen
        edge = "" if flat else "lowest" if lr == tried.min() else "highest" if lr == tried.max() else ""
        at = g[(g["lr"] == lr) & g["seed"].isin(evaluation)]
        acc = bootstrap_ci(at[value].to_numpy(dtype=float))
        ep = at["_speed"].to_numpy(dtype=float)
        eps = bootstrap_ci(ep[np.isfinite(ep)])
        rows.append(
            {
                **dict(zip(KEYS, key)),
                "pairing": g["pairing"].iloc[0],
                "best_lr": lr,
                "edge": edge,  # the chosen rate is the grid's lowest / highest: the optimum may lie beyond it
                "flat": flat,  # every rate scored the same on the tuning seeds: the lowest is taken, arbitrarily
                "runs": len(at),
                "diverged_at_best": int((at["outcome"] == "diverged").sum()),
                "undefined_at_best": int((at["outcome"] == "undefined").sum()),
                "estimate": acc.estimate,
                "ci_low": acc.low,
                "ci_high": acc.high,
                "epochs": eps.estimate if eps.n else math.inf,
                "epochs_low": eps.low,
                "epochs_high": eps.high,
                "reached": f"{int(np.isfinite(ep).sum())}/{len(ep)}",
                "ci": acc,
                "epochs_ci": eps,
            }
        )
    return pd.DataFrame(rows)


def at_best_lr(frame: pd.DataFrame, best: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``frame`` (runs or per-epoch) run at their triple's best rate (from :func:`best_lr`)."""
    chosen = best[[*KEYS, "best_lr"]].rename(columns={"best_lr": "lr"})
    return frame.merge(chosen, on=[*KEYS, "lr"], how="inner")


def paired_values(
    summary: pd.DataFrame, value: str, loss: str, activation: str, rule: str, lr: float | None = None,
    seeds: Sequence[int] | None = None, numeric: bool = True,
) -> pd.Series:  # fmt: skip
    """``value`` of one triple indexed by seed, at one learning rate (``lr``; None: the study must have one);
    ``numeric=False`` for a column that is not a number (e.g. ``run_id``)."""
    part = summary[(summary["loss"] == loss) & (summary["activation"] == activation) & (summary["delta"] == rule)]
    if lr is not None:
        part = part[np.isclose(part["lr"], lr)]
    elif part["lr"].nunique() > 1:
        raise ValueError(f"{loss}-{activation}-{rule} ran at several rates: pass lr (nothing pools across rates)")
    if seeds is not None:
        part = part[part["seed"].isin(seeds)]
    out = part.drop_duplicates("seed").set_index("seed")[value]
    return out.astype(float) if numeric else out
