"""The four questions, answered from a study's measured numbers (used by the report notebooks).

Each ``qN(study, summary)`` returns an :class:`Answer`: Markdown built from this experiment's data (the
estimates, CIs, counts and verdicts are computed here, so the words change with the data) and the tables
behind it. Which rule is exact for which pair comes from the live gradient checker, not from prose.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cache

import numpy as np
import pandas as pd

from harness.report.loading import Study
from harness.report.stats import best_lr as best_lr_table
from harness.report.stats import bootstrap_ci, format_ci, group_ci, rule_difference


@dataclass
class Answer:
    text: str
    tables: list[pd.DataFrame] = field(default_factory=list)

    def show(self) -> None:
        """Display in a notebook: the Markdown, then each table."""
        from IPython.display import Markdown, display

        display(Markdown(self.text))
        for t in self.tables:
            display(t)


@cache
def exactness() -> pd.DataFrame:
    """The gradient checker's verdict per (loss, activation, delta): rows = (loss, activation), cols = rule."""
    from harness.core.gradcheck import table

    rows = pd.DataFrame([vars(r) | {"verdict": r.verdict} for r in table()])
    return rows.pivot_table(index=["loss", "activation"], columns="delta", values="verdict", aggfunc="first")


def exact_pairs(rule: str, loss: str | None = None) -> list[str]:
    """'loss + activation' pairs on which ``rule`` is the true gradient, per the live checker."""
    t = exactness()
    hits = t[t[rule] == "exact"].index
    return [f"{lo} + {act}" for lo, act in hits if loss is None or lo == loss]


def _has(summary: pd.DataFrame, loss: str, activation: str, *rules: str) -> bool:
    part = summary[(summary["loss"] == loss) & (summary["activation"] == activation)]
    return all((part["delta"] == r).any() for r in rules)


def _significance(d: dict) -> str:
    if d["pairs"] == 0 or math.isnan(d["ci_low"]):
        return "no paired runs to compare"
    if d["ci_low"] > 0 or d["ci_high"] < 0:
        return "**significant** (the 95 % CI excludes 0)"
    return "not significant (the 95 % CI contains 0)"


def rule_table(summary: pd.DataFrame, loss: str, activation: str, value: str) -> pd.DataFrame:
    part = summary[(summary["loss"] == loss) & (summary["activation"] == activation)]
    t = group_ci(part, value)
    t["estimate [95 % CI]"] = [format_ci(*v) for v in t[["estimate", "ci_low", "ci_high"]].to_numpy()]
    if value == "epochs_to_threshold":
        reached = part.groupby("delta")[value].apply(lambda v: f"{int(np.isfinite(v).sum())}/{len(v)}")
        t["reached"] = t["delta"].map(reached)
    return t.drop(columns=["estimate", "ci_low", "ci_high"]).assign(value=value)


def _compare(summary: pd.DataFrame, loss: str, act: str, a: str, b: str, threshold: float | None) -> str:
    """One paragraph: rule a vs rule b on (loss, act), final accuracy and epochs-to-threshold, with CIs."""
    lines = [f"**{loss} + {act}** — `{a}` is {_verdict(loss, act, a)}, `{b}` is {_verdict(loss, act, b)}:"]
    for value, unit in [("final_accuracy", "final test accuracy"), ("epochs_to_threshold", "epochs to threshold")]:
        if value == "epochs_to_threshold" and threshold is None:
            continue
        part = summary[(summary["loss"] == loss) & (summary["activation"] == act)]
        est = {r: bootstrap_ci(part.loc[part["delta"] == r, value].replace(np.inf, np.nan)) for r in (a, b)}
        d = rule_difference(summary, value, loss, act, a, b)
        reach = ""
        if value == "epochs_to_threshold":
            reach = (
                " (mean over seeds that reached it: "
                + ", ".join(
                    f"`{r}` {int(np.isfinite(part.loc[part['delta'] == r, value]).sum())}/"
                    f"{int((part['delta'] == r).sum())}"
                    for r in (a, b)
                )
                + ")"
            )
        lines.append(
            f"- {unit}{reach}: `{a}` {format_ci(*est[a])}, `{b}` {format_ci(*est[b])}; paired difference "
            f"`{a}` − `{b}` = {format_ci(d['estimate'], d['ci_low'], d['ci_high'])} over {d['pairs']} seed pairs "
            f"({d['dropped']} pairs left out: diverged or never reached) — {_significance(d)}."
        )
    return "\n".join(lines)


def _verdict(loss: str, act: str, rule: str) -> str:
    return "exact" if exactness().loc[(loss, act), rule] == "exact" else "mismatched"


def q1(study: Study, summary: pd.DataFrame) -> Answer:
    """Ng vs Nielsen: is the difference significant, and is it because of MSE vs cross-entropy?"""
    paras = [
        "By the gradient checker (live, above), Ng's δ = a − y is exact on "
        + ", ".join(exact_pairs("ng"))
        + "; Nielsen's δ = (a − y) ⊙ f′(z) is exact on "
        + ", ".join(exact_pairs("nielsen"))
        + ". So *which* rule is right is decided by the (loss, output activation) pair: the σ′(z) factor belongs "
        "to the quadratic cost's gradient and cancels out of cross-entropy's with a sigmoid output."
    ]
    if study.dataset == "neuron":
        paras.append(_slowdown_text(study))
        return Answer("\n\n".join(paras), [slowdown_table(study)])
    compared = []
    for loss, act in [("mse", "sigmoid"), ("bce", "sigmoid"), ("cce", "softmax"), ("mse", "tanh")]:
        if _has(summary, loss, act, "ng", "nielsen"):
            paras.append(_compare(summary, loss, act, "nielsen", "ng", study.threshold))
            compared.append((loss, act))
    if not compared:
        paras.append("This experiment has no (loss, activation) pair run with both `ng` and `nielsen`: see `xor_grid`.")
    same = _loss_blind(study)
    if same:
        paras.append(same)
    tables = []
    f = study.frame
    cos = f[(f["pairing"] == "mismatched") & (f["outcome"] == "completed") & np.isfinite(f["grad_cosine"])]
    if len(cos):
        t = cos.groupby(["loss", "activation", "delta"])["grad_cosine"].agg(["mean", "min"]).reset_index()
        t = t.rename(columns={"mean": "mean cos(δ_rule, true δ)", "min": "min cos"})
        tables.append(t)
        downhill = cos["grad_cosine"] > 0
        paras.append(
            f"Why a mismatched rule can still train: in the {cos['run_id'].nunique()} mismatched runs that trained "
            f"to the end, {int(downhill.sum())} of {len(cos)} logged epochs ({downhill.mean():.2%}) had "
            f"cos ∠(δ_rule, true δ) > 0 (min {cos['grad_cosine'].min():.3f}): the step still pointed downhill "
            "on the loss, only not steepest-downhill (table below)."
        )
    return Answer("\n\n".join(paras), tables)


def _loss_blind(study: Study) -> str | None:
    """`ng` and `nielsen` never read the loss: the same (activation, rule, seed, lr) under two losses is the
    same training. Checked on the logged test-accuracy histories; None when there is nothing to compare."""
    f = study.frame[study.frame["delta"].isin(["ng", "nielsen"])]
    keys = ["activation", "delta", "seed", "lr", "epoch"]
    wide = f.pivot_table(index=keys, columns="loss", values="test_accuracy", aggfunc="first")
    if wide.shape[1] < 2:
        return None
    runs = wide.reset_index().groupby(["activation", "delta", "seed", "lr"])
    same, total = 0, 0
    for _, g in runs:
        g = g.drop(columns=["activation", "delta", "seed", "lr", "epoch"]).dropna(axis=1, how="all").dropna()
        if g.shape[1] >= 2 and len(g):
            total += 1
            same += bool((g.nunique(axis=1) == 1).all())
    if not total:
        return None
    return (
        f"Note that `ng` and `nielsen` never read the loss: a rule trains the same network whatever the loss is "
        f"called. Measured: in {same} of {total} (activation, rule, seed, rate) groups run under several losses, "
        "the test-accuracy histories are identical. The loss only decides *which* rule is its gradient."
    )


def q2(study: Study, summary: pd.DataFrame) -> Answer:
    """δ = h − y for sigmoid + BCE: the measured check beside the derivation."""
    row = next(r for r in _checks() if (r.loss, r.activation, r.delta) == ("bce", "sigmoid", "ng"))
    paras = [
        f"Finite differences agree with δ = a − y for BCE + sigmoid to a max relative error of {row.rel_error:.2e} "
        f"(verdict: {row.verdict})."
    ]
    f = study.frame[(study.frame["loss"] == "bce") & (study.frame["activation"] == "sigmoid")]
    both = f[f["delta"].isin(["ng", "chain"])].pivot_table(
        index=["seed", "lr", "epoch"], columns="delta", values="train_loss", aggfunc="first"
    )
    if {"ng", "chain"} <= set(both.columns):
        diff = (both["ng"] - both["chain"]).abs().dropna()
        paras.append(
            f"In training, `ng` and `chain` on BCE + sigmoid (same seeds) produced train-loss histories that "
            f"differ by at most {diff.max():.2e} over {len(diff)} logged (seed, epoch) points: the same "
            "algorithm, up to floating-point rounding."
        )
    else:
        paras.append("This experiment has no BCE + sigmoid runs under both `ng` and `chain` to compare.")
    return Answer("\n\n".join(paras))


@cache
def _checks():
    from harness.core.gradcheck import table

    return tuple(table())


def q3(study: Study, summary: pd.DataFrame) -> Answer:
    """Log loss with another output activation: which rule is right, and what happens in training."""
    t = exactness().reset_index()
    t = t[t["loss"].isin(["bce", "cce"])]
    exact = {
        (lo, act): [r for r in ("ng", "nielsen", "chain") if t.set_index(["loss", "activation"]).loc[(lo, act), r]
                    == "exact"]
        for lo, act in t[["loss", "activation"]].itertuples(index=False)
    }  # fmt: skip
    only_chain = [f"{lo} + {act}" for (lo, act), rules in exact.items() if rules == ["chain"]]
    paras = [
        "Yes. For log losses the rules that equal the true gradient (live checker) are: "
        + "; ".join(f"{lo} + {act}: {', '.join(r)}" for (lo, act), r in exact.items())
        + ". On "
        + ", ".join(only_chain)
        + " only the chain rule δ = J_f(z)ᵀ ∇ₐL is the gradient: the output activation's derivative does not "
        "cancel, so it has to be multiplied in."
    ]
    logs = summary[summary["loss"].isin(["bce", "cce"])]
    if logs.empty:
        paras.append("This experiment has no log-loss runs.")
        return Answer("\n\n".join(paras))
    g = group_ci(logs, "final_accuracy")
    g["final accuracy [95 % CI]"] = [format_ci(*v) for v in g[["estimate", "ci_low", "ci_high"]].to_numpy()]
    g = g.drop(columns=["estimate", "ci_low", "ci_high"])
    stopped = logs[logs["outcome"].isin(["undefined", "diverged"])]
    if len(stopped):
        by = stopped.groupby(["loss", "activation"])["outcome"].agg(lambda o: o.value_counts().to_dict())
        paras.append(
            f"Measured: {len(stopped)} of {len(logs)} log-loss runs stopped — "
            + "; ".join(f"{lo} + {act}: {v}" for (lo, act), v in by.items())
            + ". A log loss needs outputs inside its domain (a ∈ (0, 1) for BCE, a > 0 for CCE); identity and "
            "tanh outputs leave it, whatever δ rule is used."
        )
    else:
        paras.append(f"Measured: all {len(logs)} log-loss runs stayed inside the loss's domain.")
    return Answer("\n\n".join(paras), [g])


def q4(study: Study, summary: pd.DataFrame) -> Answer:
    """Which rule is correct, and is a mismatch just a different learning rate?"""
    paras = [
        "*Correct* means: the δ that is the gradient of the loss being minimised. For the quadratic cost with a "
        "sigmoid output that is "
        + ("`nielsen`" if _verdict("mse", "sigmoid", "nielsen") == "exact" else "?")
        + " (with σ′); `ng` there follows a different vector field, which may or may not train faster."
    ]
    tables = []
    if _has(summary, "mse", "sigmoid", "nielsen", "ng"):
        loss_d = rule_difference(summary, "final_loss", "mse", "sigmoid", "nielsen", "ng")
        paras.append(_compare(summary, "mse", "sigmoid", "nielsen", "ng", study.threshold))
        paras.append(
            f"- final training loss (the quadratic cost both minimise): paired difference `nielsen` − `ng` = "
            f"{format_ci(loss_d['estimate'], loss_d['ci_low'], loss_d['ci_high'], 3)} — {_significance(loss_d)}."
        )
    lrs = summary["lr"].dropna().unique()
    if len(lrs) >= 3:
        best = best_lr_table(summary)
        best["accuracy at best lr [95 % CI]"] = [
            format_ci(*v) for v in best[["estimate", "ci_low", "ci_high"]].to_numpy()
        ]
        best["epochs to threshold [95 % CI]"] = [
            format_ci(*v) for v in best[["epochs", "epochs_low", "epochs_high"]].to_numpy()
        ]
        tables.append(best.drop(columns=["estimate", "ci_low", "ci_high", "epochs", "epochs_low", "epochs_high"]))
        paras.append(_fairness(best))
    else:
        paras.append(
            f"This experiment ran one learning rate per triple (η = {', '.join(f'{v:g}' for v in sorted(lrs))}), so "
            "it cannot say whether a mismatch only rescales the rate: the `lr_fairness` study does."
        )
    return Answer("\n\n".join(paras), tables)


def _fairness(best: pd.DataFrame) -> str:
    """Compare exact and mismatched rules on the same pair, each at its own best rate."""
    lines = ["Each triple at its own best learning rate (table below; final accuracy, then epochs to threshold):"]
    counts = {"same": 0, "worse": 0, "better": 0}
    untrainable = []
    for (loss, act), g in best.groupby(["loss", "activation"], sort=False):
        exact, wrong = g[g["pairing"] == "exact"], g[g["pairing"] == "mismatched"]
        if exact.empty or wrong.empty:
            continue
        if g["estimate"].isna().all():  # no rule produced a finished network here: nothing to compare
            untrainable.append(f"{loss} + {act}")
            continue
        e = exact.sort_values(["estimate", "epochs"], ascending=[False, True], na_position="last").iloc[0]
        for _, w in wrong.iterrows():
            verdict = _versus(w, e)
            counts[verdict] += 1
            lines.append(
                f"- {loss} + {act}: `{w['delta']}` (mismatched) at η = {w['best_lr']:g}: accuracy "
                f"{format_ci(w['estimate'], w['ci_low'], w['ci_high'])}, epochs "
                f"{format_ci(w['epochs'], w['epochs_low'], w['epochs_high'])} vs `{e['delta']}` (exact) at "
                f"η = {e['best_lr']:g}: {format_ci(e['estimate'], e['ci_low'], e['ci_high'])}, epochs "
                f"{format_ci(e['epochs'], e['epochs_low'], e['epochs_high'])} — " + VERDICTS[verdict]
            )
    total = sum(counts.values())
    if total:
        lines.insert(
            1,
            f"Of {total} (pair, mismatched rule) cases, the mismatched rule at its own best rate is "
            f"indistinguishable from the exact rule at its best rate (overlapping 95 % CIs) in {counts['same']}, "
            f"worse in {counts['worse']} and better in {counts['better']}.",
        )
    if untrainable:
        lines.append(f"- No rule trained at any rate on {', '.join(untrainable)} (every run diverged or undefined).")
    return "\n".join(lines)


VERDICTS = {
    "same": "CIs overlap on both: retuned, the mismatch costs nothing measurable.",
    "worse": "worse even at its own best rate: retuning does not make up for the mismatch.",
    "better": "the mismatched rule does better: the exact gradient of this loss is the worse training signal here.",
}


def _versus(w: pd.Series, e: pd.Series) -> str:
    """same / worse / better for mismatched row ``w`` against exact row ``e`` (accuracy first, then speed)."""

    def separate(lo1: float, hi1: float, lo2: float, hi2: float) -> int:
        """+1 if interval 1 lies above interval 2, −1 if below, 0 if they overlap (NaN = lowest)."""
        lo1, hi1, lo2, hi2 = (-np.inf if math.isnan(v) else v for v in (lo1, hi1, lo2, hi2))
        return 1 if lo1 > hi2 else -1 if hi1 < lo2 else 0

    acc = separate(w["ci_low"], w["ci_high"], e["ci_low"], e["ci_high"])
    speed = -separate(w["epochs_low"], w["epochs_high"], e["epochs_low"], e["epochs_high"])  # fewer is better
    order = acc or speed
    return "same" if order == 0 else "better" if order > 0 else "worse"


def slowdown_table(study: Study) -> pd.DataFrame:
    """Per (cost, start): output a at the start and the end, σ′(z₀) = a₀(1 − a₀), and the initial learning
    speed: the drop per epoch of z = w + b = logit(a) over the first tenth of training (both parameters move
    by −η δ, so this is 2η δ: Nielsen's ∂C/∂w, ∂C/∂b up to the factor η)."""
    from harness.report.loading import neuron_output

    f = study.frame.assign(output=neuron_output(study.frame))
    rows = []
    for (loss, w, b, lr), g in f.groupby(["loss", "init_weight", "init_bias", "lr"]):
        g = g.sort_values("epoch")
        a = g["output"].to_numpy()
        k = max(1, len(a) // 10)
        rows.append(
            {
                "cost": loss,
                "lr": lr,
                "start (w, b)": f"({w:g}, {b:g})",
                "a at epoch 0": a[0],
                "σ′(z₀) = a₀(1 − a₀)": a[0] * (1 - a[0]),
                f"initial speed (Δz per epoch, first {k} epochs)": (_logit(a[0]) - _logit(a[k])) / k,
                f"a at epoch {int(g['epoch'].iloc[-1])}": a[-1],
            }
        )
    return pd.DataFrame(rows)


def _logit(a: float) -> float:
    return float(np.log(a) - np.log1p(-a))


def _slowdown_text(study: Study) -> str:
    t = slowdown_table(study)
    speed = next(c for c in t.columns if c.startswith("initial speed"))
    parts, ratio = [], {}
    for cost, g in t.groupby("cost"):
        g = g.sort_values("a at epoch 0")
        if len(g) < 2:
            continue
        fresh, saturated = g.iloc[0], g.iloc[-1]
        ratio[cost] = saturated[speed] / fresh[speed]
        parts.append(
            f"with the {'quadratic' if cost == 'mse' else 'cross-entropy'} cost (η = {fresh['lr']:g}) the "
            f"saturated start {saturated['start (w, b)']} (σ′ = {saturated['σ′(z₀) = a₀(1 − a₀)']:.3f}) learns "
            f"{saturated[speed] / fresh[speed]:.2f}× as fast at first (in z = w + b) as {fresh['start (w, b)']} "
            f"(σ′ = {fresh['σ′(z₀) = a₀(1 − a₀)']:.3f})"
        )
    shown = ratio.get("mse", 1.0) < 0.5 <= ratio.get("bce", 0.0)
    verdict = (
        "The quadratic cost's δ = (a − y) σ′(z) carries σ′, which is tiny on a saturated neuron: learning slows "
        "down. Cross-entropy's δ = a − y has no σ′, so saturation does not slow it. The difference comes from "
        "the cost (MSE vs cross-entropy), not from a disagreement about calculus."
        if shown
        else "These runs do not show the slowdown (quadratic saturated/fresh speed ratio ≥ 0.5 or cross-entropy "
        "< 0.5): check the starting points and rates."
    )
    return "The single neuron shows what the σ′(z) factor does: " + "; ".join(parts) + ". " + verdict
