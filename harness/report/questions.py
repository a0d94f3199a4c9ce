"""The four questions, answered from a study's measured numbers (used by the report notebooks).

Each ``qN(study, summary, comps)`` returns an :class:`Answer`: one paragraph with the verdict and its key number
(with CI and n) first, then the evidence, all built from this experiment's data (so the words change with the
data), and the tables behind it. Which rule is exact for which pair comes from the live gradient checker, not
from prose. :func:`comparisons` makes every paired test of the report at once, so that the Benjamini–Hochberg
adjustment covers all of them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cache

import numpy as np
import pandas as pd

from harness.names import DELTA_COSINE
from harness.report import stats
from harness.report.loading import Study
from harness.report.stats import Comparison, compare, format_ci, group_ci

Q1_PAIRS = [("mse", "sigmoid"), ("bce", "sigmoid"), ("cce", "softmax"), ("mse", "tanh")]  # nielsen vs ng
UNITS = {"final_accuracy": "final test accuracy", "epochs_to_threshold": "epochs to threshold",
         "final_loss": "final training loss"}  # fmt: skip


@dataclass
class Answer:
    text: str
    tables: list[pd.DataFrame] = field(default_factory=list)

    def show(self) -> None:
        """Display in a notebook: the Markdown, then each table."""
        from IPython.display import Markdown, display

        display(Markdown(self.text))
        for t in self.tables:
            display(t.style.hide(axis="index").format(precision=3))


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


def _verdict(loss: str, act: str, rule: str) -> str:
    return "exact" if exactness().loc[(loss, act), rule] == "exact" else "mismatched"


def reference_rule(loss: str, act: str) -> str | None:
    """The exact rule the mismatched ones are measured against: ``chain`` (exact everywhere), else the first."""
    exact = [r for r in ("chain", "ng", "nielsen") if r in exactness().columns and _verdict(loss, act, r) == "exact"]
    return exact[0] if exact else None


# ------------------------------------------------------------------------------------------ comparisons


@dataclass
class Comparisons:
    """Every paired comparison one report makes, BH-adjusted together (:func:`harness.report.stats.adjust`).

    ``best`` (a learning-rate grid only): each triple's rate, chosen on the ``tuning`` seeds; every comparison
    then uses the ``evaluation`` seeds, each triple at its own chosen rate. Nothing pools across rates.
    """

    items: dict[tuple, Comparison]
    tuning: list[int]
    evaluation: list[int]
    best: pd.DataFrame | None = None

    def get(self, *key) -> Comparison | None:
        return self.items.get(tuple(key))

    def distinct(self) -> list[Comparison]:
        """Each test once: keys whose runs are the same training share one :class:`Comparison`."""
        return list({id(c): c for c in self.items.values()}.values())

    def design(self) -> str:
        """One sentence: which seeds and rates the comparisons stand on."""
        if self.best is None:
            return f"paired by seed over seeds {_seeds(self.evaluation)}, one learning rate"
        return (
            f"each triple at its own best learning rate, chosen on the tuning seeds {_seeds(self.tuning)} and "
            f"compared on the disjoint evaluation seeds {_seeds(self.evaluation)}, paired by seed"
        )

    def table(self) -> pd.DataFrame:
        return stats.table(self.distinct())


def _seeds(seeds: list[int]) -> str:
    s = sorted(seeds)
    return f"{s[0]}–{s[-1]}" if len(s) > 2 and s == list(range(s[0], s[-1] + 1)) else ", ".join(map(str, s))


def comparisons(study: Study, summary: pd.DataFrame) -> Comparisons:
    """Q1: ``nielsen`` − ``ng`` on the pairs where one of them is exact (accuracy, epochs to threshold); Q4:
    their final training loss on mse + sigmoid, and (a learning-rate grid) each mismatched rule against the
    exact reference rule on the same pair. All adjusted together."""
    grid = summary["lr"].nunique() > 1
    tuning, evaluation = stats.design_seeds(summary)
    best = stats.best_lr(summary, tuning=tuning) if grid else None
    rates = {} if best is None else {tuple(r[:3]): r[3] for r in best[[*stats.KEYS, "best_lr"]].itertuples(False)}
    metrics = ["final_accuracy"] + (["epochs_to_threshold"] if study.threshold is not None else [])

    def values(metric: str, loss: str, act: str, rule: str) -> pd.Series:
        lr = rates.get((loss, act, rule)) if grid else None
        return stats.paired_values(summary, metric, loss, act, rule, lr=lr, seeds=evaluation)

    prints = fingerprints(getattr(study, "frame", None))

    def runs(loss: str, act: str, rule: str) -> tuple:
        """The runs one side of a comparison stands on, as (seed, rate, history fingerprint) per seed."""
        if "run_id" not in summary:  # a frame without run ids: nothing shows two runs to be one
            return loss, act, rule
        lr = rates.get((loss, act, rule)) if grid else None
        ids = stats.paired_values(summary, "run_id", loss, act, rule, lr=lr, seeds=evaluation, numeric=False)
        return act, rule, tuple((seed, lr, prints.get(rid, rid)) for seed, rid in ids.items())

    frame = getattr(study, "frame", None)
    epochs = np.unique(frame["epoch"].dropna()) if frame is not None and "epoch" in frame else []
    step = float(np.median(np.diff(epochs))) if len(epochs) > 1 else 0.0  # the logging interval (train.eval_every)
    if "epochs_exact" in summary and summary["epochs_exact"].all():
        step = 0.0  # every run's epochs to threshold is its own summary, exact to the epoch

    def add(key: tuple, metric: str, loss: str, act: str, a: str, b: str) -> None:
        # the same runs on both sides (the same training under another loss name): the same test, made once
        own = loss if metric == "final_loss" else None  # a loss value depends on the loss named, accuracy does not
        signature = (metric, own, runs(loss, act, a), runs(loss, act, b))
        if signature in made:
            made[signature].same_as.append(f"{loss} + {act}")
            items[key] = made[signature]
            return
        resolution = step if metric == "epochs_to_threshold" else 0.0
        items[key] = made[signature] = compare(values(metric, loss, act, a), values(metric, loss, act, b), metric,
                                               (a, b), f"{loss} + {act}", resolution)  # fmt: skip

    items: dict[tuple, Comparison] = {}
    made: dict[tuple, Comparison] = {}
    if study.dataset != "neuron":
        for loss, act in Q1_PAIRS:
            if _has(summary, loss, act, "ng", "nielsen"):
                for m in metrics:
                    add(("q1", loss, act, m), m, loss, act, "nielsen", "ng")
        if _has(summary, "mse", "sigmoid", "nielsen", "ng"):
            add(("q4", "mse", "sigmoid", "final_loss"), "final_loss", "mse", "sigmoid", "nielsen", "ng")
        if grid:
            for (loss, act), g in summary.groupby(["loss", "activation"], sort=False):
                ref = reference_rule(loss, act)
                if ref is None or ref not in set(g["delta"]):
                    continue
                for rule in sorted(set(g["delta"])):
                    if _verdict(loss, act, rule) == "mismatched":
                        for m in metrics:
                            add(("fair", loss, act, rule, m), m, loss, act, rule, ref)
    stats.adjust(list(items.values()))
    return Comparisons(items, tuning, evaluation, best)


def fingerprints(frame: pd.DataFrame | None) -> dict[str, int]:
    """run id → a hash of its logged accuracy histories (test, and train where logged), epoch by epoch.

    Two runs with the same activation, rule, seed and rate whose fingerprints agree trained the same network:
    ``ng`` and ``nielsen`` never read the loss, so under two loss names they are one training (their loss
    histories differ only in what is measured). Accuracies are loss-free, so they are what is compared."""
    if frame is None or frame.empty or "test_accuracy" not in frame:
        return {}
    cols = ["epoch", *(m for m in ("test_accuracy", "train_accuracy") if m in frame)]
    f = frame[["run_id", *cols]].sort_values(["run_id", "epoch"])
    return {rid: hash(g[cols].to_numpy(dtype=float).tobytes()) for rid, g in f.groupby("run_id", sort=False)}


def overview(study: Study, summary: pd.DataFrame, comps: Comparisons) -> Answer:
    """The opening paragraph: what ran, how it ended, what the statistics stand on."""
    outcomes = summary["outcome"].value_counts()
    seeds = sorted(set(summary["seed"]))
    lrs = sorted(summary["lr"].dropna().unique())
    text = (
        f"**This study.** {len(summary)} runs of {summary['triple'].nunique()} (loss, output activation, δ rule) "
        f"triples on `{study.dataset}`, {len(seeds)} seeds, {len(lrs)} learning rate{'s' if len(lrs) > 1 else ''}; "
        + ", ".join(f"{n} {o}" for o, n in outcomes.items())
        + (f"; threshold: test accuracy ≥ {study.threshold:g}" if study.threshold is not None else "")
        + f". Comparisons: {comps.design()}; {len(comps.distinct())} distinct ones in all (the same runs under two "
        "loss names make one), adjusted together (see *Methods*)."
    )
    if comps.best is not None:
        text += " The figures show each triple at its own chosen rate on the evaluation seeds, except the rate sweep."
    if comps.best is not None and len(comps.evaluation) < stats.MIN_PAIRS:
        text += (
            f" With {len(comps.evaluation)} evaluation seeds no comparison can reach p < {stats.ALPHA:g}: run more "
            "seeds for verdicts."
        )
    elif comps.best is None and len(seeds) < stats.MIN_PAIRS:
        text += f" With {len(seeds)} seeds no comparison can reach p < {stats.ALPHA:g}: run more seeds for verdicts."
    return Answer(text)


# ------------------------------------------------------------------------------------------ questions

ROOT = (
    "At the root: Ng's δ = a − y is the exact gradient of the output activation's *matching loss* "
    "L = F(z) − y·z with F′ = f (binary cross-entropy for a sigmoid, categorical cross-entropy for a softmax, "
    "the quadratic cost for an identity output, log cosh z − y·z for tanh), whatever f is. Used with another "
    "loss, a − y does not descend that loss but the matching one: a different objective with the same minimisers "
    'where the target is reachable, which is why the "wrong" rule still trains. Against Nielsen\'s '
    "(a − y) ⊙ f′(z), the gradient of the quadratic cost, it differs by the factor f′(z) (σ′ ≤ ¼): a per-sample "
    'rescaling of the step, which is what the learning-rate study measures. So the difference is not "MSE vs '
    'cross-entropy" as such: each rule is the gradient of one loss, and the (loss, output activation) pair '
    "decides which rule is right."
)


def _comparison_lines(comps: Comparisons, prefix: str, loss: str, act: str, a: str, b: str) -> list[str]:
    """The pair's comparisons, one line per metric; a pair whose runs are another pair's (the same training under
    another loss name) says so and points there instead of repeating the test."""
    lines, same = [], None
    for metric, unit in UNITS.items():
        c = comps.get(prefix, loss, act, metric)
        if c is None:
            continue
        if f"{loss} + {act}" in c.same_as:
            same = c.label
        else:
            lines.append(f"- {unit}: {c.sentence()}")
    head = f"**{loss} + {act}** — `{a}` is {_verdict(loss, act, a)}, `{b}` is {_verdict(loss, act, b)}"
    if same and not lines:
        return [
            f"{head}: the very runs of {same} (`{a}` and `{b}` never read the loss; their accuracy histories are "
            f"identical under both names), so the same test as there, made and counted once."
        ]
    return [f"{head}:", *lines] if lines else []


def q1(study: Study, summary: pd.DataFrame, comps: Comparisons | None = None) -> Answer:
    """Ng vs Nielsen: is the difference significant, and is it because of MSE vs cross-entropy?"""
    comps = comps or comparisons(study, summary)
    if study.dataset == "neuron":
        paras = [f"**Answer.** {_slowdown_text(study)}", ROOT]
        return Answer("\n\n".join(paras), [slowdown_table(study)])
    pair = next(((lo, act) for lo, act in Q1_PAIRS if comps.get("q1", lo, act, "final_accuracy") is not None), None)
    main = comps.get("q1", *pair, "final_accuracy") if pair else None
    if main is None:
        lead = "This experiment has no (loss, activation) pair run with both `ng` and `nielsen`: see `xor_grid`."
    else:
        lead = f"On {main.where()}, final test accuracy, Nielsen's rule minus Ng's: {main.sentence()}"
        speed = comps.get("q1", *pair, "epochs_to_threshold")
        if speed is not None:  # how fast they get there is where the rules differ most (XOR, MNIST)
            lead += f" Epochs to threshold, Nielsen's minus Ng's: {speed.sentence()}"
        lead += (
            f" (comparisons: {comps.design()}; verdicts use Benjamini–Hochberg q-values over all "
            f"{len(comps.distinct())} distinct comparisons of this report)."
        )
    paras = [f"**Answer.** {lead}", ROOT]
    paras.append(
        "By the gradient checker (live, above), `ng` is exact on " + ", ".join(exact_pairs("ng"))
        + "; `nielsen` is exact on " + ", ".join(exact_pairs("nielsen")) + "."
    )  # fmt: skip
    for loss, act in Q1_PAIRS:
        lines = _comparison_lines(comps, "q1", loss, act, "nielsen", "ng")
        if lines:
            paras.append("\n".join(lines))
    same = _loss_blind(study)
    if same:
        paras.append(same)
    tables = []
    descent = descent_table(study.frame)
    if descent is not None:
        text, t = descent
        paras.append(text)
        tables.append(t)
    return Answer("\n\n".join(paras), tables)


def descent_table(frame: pd.DataFrame) -> tuple[str, pd.DataFrame] | None:
    """Per mismatched triple: the share of evaluated epochs whose step was a descent direction (``grad_cosine``
    > 0), beside what the output-δ cosine (``delta_cosine`` > 0) would have claimed. None: no mismatched run."""
    f = frame[(frame["pairing"] == "mismatched") & np.isfinite(frame["grad_cosine"])]
    if f.empty:
        return None
    has_delta = DELTA_COSINE in f and f[DELTA_COSINE].notna().any()
    f = f.assign(_descent=f["grad_cosine"] > 0)
    if has_delta:
        f = f.assign(_delta=(f[DELTA_COSINE] > 0).where(f[DELTA_COSINE].notna()))
    rows = []
    for (loss, act, rule), g in f.groupby(["loss", "activation", "delta"]):
        rows.append(
            {
                "loss": loss, "activation": act, "delta": rule, "runs": g["run_id"].nunique(), "epochs": len(g),
                "descent (grad_cosine > 0)": g["_descent"].mean(),
                "δ cosine > 0 would claim": g["_delta"].mean() if has_delta else math.nan,
                "min grad_cosine": g["grad_cosine"].min(),
            }
        )  # fmt: skip
    t = pd.DataFrame(rows)
    share = f["_descent"].mean()
    text = (
        f"Why a mismatched rule can still train: over {f['run_id'].nunique()} mismatched runs, "
        f"{int(f['_descent'].sum())} of {len(f)} evaluated epochs ({share:.1%}) had a parameter update that was a "
        f"descent direction for the loss (`grad_cosine` > 0: the cosine between the rule's update and the true "
        f"gradient ∂C/∂θ; min {f['grad_cosine'].min():.3f})"
    )
    if has_delta:
        text += (
            f"; the output-δ cosine (`{DELTA_COSINE}` > 0) would have claimed {f['_delta'].mean():.1%}. "
            "Only the first is about the step actually taken."
        )
    else:
        t = t.drop(columns=["δ cosine > 0 would claim"])
        text += (
            f". These runs logged no `{DELTA_COSINE}`: they predate it, and their `grad_cosine` is the cosine between "
            "the rule's output δ and the true ∂L/∂z, not yet that of the whole update."
        )
    return text + " Per triple in the table below.", t


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
            same += bool(g.max(axis=1).eq(g.min(axis=1)).all())  # each epoch: one value under every loss
    if not total:
        return None
    return (
        f"Note that `ng` and `nielsen` never read the loss: a rule trains the same network whatever the loss is "
        f"called. Measured: in {same} of {total} (activation, rule, seed, rate) groups run under several losses, "
        "the test-accuracy histories are identical. The loss only decides *which* rule is its gradient."
    )


def q2(study: Study, summary: pd.DataFrame, comps: Comparisons | None = None) -> Answer:
    """δ = h − y for sigmoid + BCE: the measured check beside the derivation."""
    row = next(r for r in _checks() if (r.loss, r.activation, r.delta) == ("bce", "sigmoid", "ng"))
    paras = [
        f"**Answer.** δ = h − y holds exactly (derivation below): finite differences agree with it for BCE + "
        f"sigmoid to a max relative error of {row.rel_error:.2e} (verdict: {row.verdict})."
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


def q3(study: Study, summary: pd.DataFrame, comps: Comparisons | None = None) -> Answer:
    """Log loss with another output activation: which rule is right, and what happens in training."""
    t = exactness().reset_index()
    t = t[t["loss"].isin(["bce", "cce"])]
    exact = {
        (lo, act): [r for r in ("ng", "nielsen", "chain") if t.set_index(["loss", "activation"]).loc[(lo, act), r]
                    == "exact"]
        for lo, act in t[["loss", "activation"]].itertuples(index=False)
    }  # fmt: skip
    only_chain = [f"{lo} + {act}" for (lo, act), rules in exact.items() if rules == ["chain"]]
    logs = summary[summary["loss"].isin(["bce", "cce"])]
    stopped = logs[logs["outcome"].isin(["undefined", "diverged"])]
    measured = (
        f" Measured here: {len(stopped)} of {len(logs)} log-loss runs ended undefined or diverged." if len(logs) else ""
    )
    paras = [
        "**Answer.** Yes. For a log loss, δ = a − y is the gradient only where the log loss is the output "
        "activation's matching loss (sigmoid for BCE, softmax for CCE); on " + ", ".join(only_chain)
        + " only the chain rule δ = J_f(z)ᵀ ∇ₐL is the gradient (live checker)." + measured,
        "Per pair, the rules that equal the true gradient: "
        + "; ".join(f"{lo} + {act}: {', '.join(r) or 'chain only'}" for (lo, act), r in exact.items())
        + ". With a tanh output the matching loss is log cosh z − y·z (Ng's a − y is its gradient), not BCE: the "
        "output activation's derivative does not cancel out of a log loss, so it has to be multiplied in.",
    ]  # fmt: skip
    if logs.empty:
        paras.append("This experiment has no log-loss runs.")
        return Answer("\n\n".join(paras))
    g = group_ci(logs, "final_accuracy")
    g["final accuracy (mean [95 % BCa CI], n)"] = [format_ci(c) for c in g["ci"]]
    g = g.drop(columns=["estimate", "ci_low", "ci_high", "ci", "finite"])
    if len(stopped):
        by = stopped.groupby(["loss", "activation"])["outcome"].agg(lambda o: o.value_counts().to_dict())
        paras.append(
            "Runs that ended undefined or diverged, per pair: "
            + "; ".join(f"{lo} + {act}: " + ", ".join(f"{n} {o}" for o, n in v.items()) for (lo, act), v in by.items())
            + ". A log loss needs outputs inside its domain (a ∈ (0, 1) for BCE, a > 0 for CCE), which identity and "
            "tanh outputs can leave. Such a run still trains to its last epoch (ng and nielsen never read the loss, "
            "chain needs only its gradient formula); its loss is logged as NaN on those epochs and its accuracy "
            "counts in the table below. It ends `undefined` only if the loss is still undefined at the last epoch."
        )
    else:
        paras.append(f"All {len(logs)} log-loss runs stayed inside the loss's domain.")
    return Answer("\n\n".join(paras), [g])


def q4(study: Study, summary: pd.DataFrame, comps: Comparisons | None = None) -> Answer:
    """Which rule is correct, and is a mismatch just a different learning rate?"""
    comps = comps or comparisons(study, summary)
    correct = (
        "*Correct* means: the δ that is the gradient of the loss being minimised. For the quadratic cost with a "
        "sigmoid output that is `nielsen` (with σ′); `ng` there descends the sigmoid's matching loss (BCE) "
        "instead, a different objective with the same minimisers on reachable targets, and its step differs from "
        "the gradient's by the per-sample factor 1/σ′(z) ≥ 4: a rescaled, not a wrong-signed, step."
    )
    tables = []
    fair = [c for k, c in comps.items.items() if k[0] == "fair"]
    if comps.best is not None and fair:
        lead, lines = _fairness(comps, study.dataset)
        paras = [f"**Answer.** {lead}", correct, "\n".join(lines)]
        best = comps.best.assign(
            **{
                "accuracy (evaluation seeds)": [format_ci(c) for c in comps.best["ci"]],
                "epochs to threshold (evaluation seeds, reached)": [
                    f"{format_ci(c)}; reached {r}" for c, r in zip(comps.best["epochs_ci"], comps.best["reached"])
                ],
            }
        )
        tables.append(
            best.drop(columns=["estimate", "ci_low", "ci_high", "epochs", "epochs_low", "epochs_high", "ci",
                               "epochs_ci", "reached"])
        )  # fmt: skip
    else:
        c = comps.get("q4", "mse", "sigmoid", "final_accuracy") or comps.get("q1", "mse", "sigmoid", "final_accuracy")
        lrs = sorted(summary["lr"].dropna().unique())
        lead = (
            f"On {DATASETS.get(study.dataset, study.dataset)}, mse + sigmoid (`nielsen` exact), final test accuracy: "
            f"{c.sentence()}"
            if c is not None else "This experiment has no mse + sigmoid runs under both `nielsen` and `ng`."
        )  # fmt: skip
        paras = [
            f"**Answer.** {lead} This experiment ran one learning rate per triple (η = "
            f"{', '.join(f'{v:g}' for v in lrs)}), so it cannot say whether a mismatch only rescales the rate: the "
            "learning-rate studies do (`lr_fairness` on XOR, `mnist_lr` on MNIST).",
            correct,
        ]
        lines = _comparison_lines(comps, "q1", "mse", "sigmoid", "nielsen", "ng")
        loss_c = comps.get("q4", "mse", "sigmoid", "final_loss")
        if loss_c is not None:
            lines.append(f"- final training loss (the quadratic cost both minimise): {loss_c.sentence()}")
        if lines:
            paras.append("\n".join(lines))
    return Answer("\n\n".join(paras), tables)


VERDICTS = {
    "equivalent": "equivalent at their own best rates: retuned, the mismatch costs nothing measurable",
    "worse": "worse even at its own best rate: retuning does not make up for the mismatch",
    "better": "the mismatched rule does better: the exact gradient of this loss is the worse training signal here",
    "untestable": "too few evaluation pairs for any verdict",
    "inconclusive": "inconclusive: neither a difference nor equivalence shown",
    "untrainable": "no rule trained at any rate",
}


def _case(acc: Comparison, ep: Comparison | None) -> str:
    """equivalent / worse / better / untestable / inconclusive for one mismatched rule against the reference."""
    parts = [c for c in (acc, ep) if c is not None]
    if all(c.n == 0 for c in parts):
        return "untrainable"
    if not any(c.testable for c in parts):
        return "untestable"

    def sign(c: Comparison) -> int:  # +1: the mismatched rule (a) is better on this metric
        if not c.testable or not c.q < stats.ALPHA:
            return 0
        s = int(stats._direction(c))
        return -s if c.metric == "epochs_to_threshold" else s

    signs = [sign(c) for c in parts]
    if -1 in signs:
        return "worse"
    if 1 in signs:
        return "better"
    if all(c.q_equiv < stats.ALPHA for c in parts):
        return "equivalent"
    return "inconclusive"


DATASETS = {"xor": "XOR", "xor1": "XOR", "mnist": "MNIST", "neuron": "the single neuron"}


def _rate(best: pd.DataFrame, key: tuple) -> str:
    """``η = 31.6``, with a warning when that rate is the grid's lowest or highest."""
    row = best.set_index(stats.KEYS).loc[key]
    edge = f", the grid's {row['edge']}: the best rate may lie beyond it" if row["edge"] else ""
    return f"η = {row['best_lr']:g}{edge}"


def _undetected(cases: list[tuple[Comparison, Comparison | None]]) -> str:
    """For the inconclusive cases: the largest difference their inconclusive tests could have missed, per metric."""
    parts = []
    for i, unit in enumerate(("in final accuracy", "epochs to threshold")):
        open_ = [c for c in (case[i] for case in cases) if c is not None and c.short() == "inconclusive"]
        mdes = [c.detectable for c in open_ if math.isfinite(c.detectable)]
        if mdes:
            parts.append(f"±{stats.size(max(mdes))} {unit}")
    if not parts:
        return ""
    return (
        f" (no difference larger than {' or '.join(parts)}: differences that large would have been found with "
        f"{stats.POWER:.0%} power)"
    )


def _equivalent_accuracy(cases: list[tuple[Comparison, Comparison | None]]) -> str:
    """How many inconclusive cases were still shown equivalent in final accuracy (only their speed is open)."""
    k = sum(acc.short() == "equivalent" for acc, _ in cases)
    return f"; {k} of the {len(cases)} inconclusive are equivalent in final accuracy" if k else ""


def _per_metric(acc: Comparison, ep: Comparison | None) -> str:
    """An inconclusive case, metric by metric: which one was shown equivalent, which one could not be decided."""
    parts = []
    for unit, c in (("final accuracy", acc), ("epochs to threshold", ep)):
        if c is None:
            continue
        mde = c.detectable
        open_ = f"inconclusive (no difference larger than ±{stats.size(mde)})" if math.isfinite(mde) else "inconclusive"
        parts.append(f"{unit} {'equivalent' if c.short() == 'equivalent' else open_}")
    return "inconclusive overall: " + "; ".join(parts)


def _fairness(comps: Comparisons, dataset: str = "") -> tuple[str, list[str]]:
    """The lead sentence (counts of verdicts) and one line per (pair, mismatched rule) against the exact rule."""
    counts = dict.fromkeys(VERDICTS, 0)
    lines, seen, open_cases = [], set(), []
    cases = sorted({k[1:4] for k in comps.items if k[0] == "fair"})
    for loss, act, rule in cases:
        acc = comps.get("fair", loss, act, rule, "final_accuracy")
        ep = comps.get("fair", loss, act, rule, "epochs_to_threshold")
        ref = acc.b
        head = f"- **{loss} + {act}**: `{rule}` (mismatched, {_rate(comps.best, (loss, act, rule))}) vs `{ref}` " \
               f"(exact, {_rate(comps.best, (loss, act, ref))})"  # fmt: skip
        if id(acc) in seen:  # the same runs as a case above: one test, counted once
            lines.append(f"{head}: the same runs as on {acc.label}, so the same test (counted there).")
            continue
        seen.add(id(acc))
        verdict = _case(acc, ep)
        counts[verdict] += 1
        if verdict == "inconclusive":
            open_cases.append((acc, ep))
        words = _per_metric(acc, ep) if verdict == "inconclusive" else VERDICTS[verdict]
        lines.append(
            f"{head} — {words}. Accuracy: {acc.sentence()}"
            + (f" Epochs to threshold: {ep.sentence()}" if ep is not None else "")
        )
    n = sum(counts.values())
    where = f"On {DATASETS.get(dataset, dataset)}, at" if dataset else "At"
    lead = (
        f"{where} each rule's own tuned learning rate, of {n} mismatched rule{'s' * (n != 1)} (one per (pair, rule) "
        f"case) {counts['equivalent']} {'is' if counts['equivalent'] == 1 else 'are'} equivalent to the exact rule, "
        f"{counts['better']} better, {counts['worse']} worse and {counts['inconclusive']} "
        f"inconclusive{_undetected(open_cases)}{_equivalent_accuracy(open_cases)}"
        + (f"; {counts['untestable']} {'has' if counts['untestable'] == 1 else 'have'} too few evaluation pairs for "
           "any verdict" if counts["untestable"] else "")
        + (f"; in {counts['untrainable']} no rule trained" if counts["untrainable"] else "")
        + "."
    )  # fmt: skip
    m_acc = stats.MARGINS["final_accuracy"][1]
    m_ep = stats.MARGINS["epochs_to_threshold"][1]
    lead += (
        f" Design: {comps.design()}. Equivalent means TOST within ±{m_acc:g} accuracy and ±{m_ep:.0%} of the exact "
        f"rule's median epochs to threshold; verdicts use Benjamini–Hochberg q < {stats.ALPHA:g} over all "
        f"{len(comps.distinct())} distinct comparisons of this report."
    )
    edge = comps.best[comps.best["edge"] != ""]
    if len(edge):
        lead += (
            f" {len(edge)} of {len(comps.best)} chosen rates {'is' if len(edge) == 1 else 'are'} at the edge of the "
            "grid, where the best rate may lie "
            "beyond it: " + ", ".join(f"{r.loss}-{r.activation}-{r.delta} η = {r.best_lr:g} ({r.edge})"
                                      for r in edge.itertuples()) + "."
        )  # fmt: skip
    else:
        lead += " No chosen rate is at the edge of the grid: each triple's best rate lies inside it."
    return lead, lines


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
