"""Seaborn figures on the frames of :mod:`harness.report.loading` (each function returns its figure or grid).

- :func:`convergence`: a metric vs epoch, faceted loss × activation, colour = delta rule, mean over seeds
  with a 95 % band (mean ± 1.96 standard errors); a red ✕ where a run's curve ends early (it diverged, or its
  loss became undefined), and each panel's title counts runs that diverged or had an undefined loss, by kind.
- :func:`summary_heatmaps`: one panel per rule, a (loss × activation) heatmap of a per-run summary value,
  mismatched cells hatched, cells annotated with how many runs diverged.
- :func:`grad_cosine`: the cosine between a mismatched rule's update and the true gradient, over training.
- :func:`slowdown`: Nielsen's chapter-3 neuron, output vs epoch for both costs and both starting points.
- :func:`lr_sensitivity` and :func:`best_lr`: final metric vs learning rate, and each triple at its best rate.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.patches import Rectangle

from harness.core.activations import OUTPUT_ACTIVATIONS
from harness.core.deltas import DELTA_RULES
from harness.core.losses import LOSSES

RULE_ORDER = DELTA_RULES.names()
PALETTE = dict(zip(RULE_ORDER, sns.color_palette("colorblind", len(RULE_ORDER))))
Z95 = 1.96  # the band: mean ± 1.96 standard errors ≈ 95 % CI; cheap at every epoch, unlike a bootstrap per point
STOPPED = ("diverged", "undefined")


def _order(values: pd.Series, reference: list[str]) -> list[str]:
    present = set(values.dropna().unique())  # unique() first: a study's frame has ~10⁶ rows
    return [v for v in reference if v in present]


def thin(frame: pd.DataFrame, points: int = 150) -> pd.DataFrame:
    """Keep ≈ ``points`` evenly spaced logged epochs per curve (and every run's last epoch)."""
    epochs = np.sort(frame["epoch"].unique())
    if len(epochs) <= points:
        return frame
    keep = set(epochs[np.linspace(0, len(epochs) - 1, points).round().astype(int)])
    last = frame.groupby("run_id")["epoch"].transform("max")
    return frame[frame["epoch"].isin(keep) | (frame["epoch"] == last)]


def mean_band(data: pd.DataFrame, by: list[str], y: str) -> pd.DataFrame:
    """Per group of ``by`` (e.g. panel keys, rule and epoch): the mean of ``y`` over seeds and its band,
    mean ± 1.96·s/√n (s the sample standard deviation, n the seeds with a value; no band for n = 1).

    One vectorised groupby: seaborn's ``errorbar=("se", 1.96)`` computes the same band but calls pandas once
    per (panel, rule, epoch) group (12,452 calls, 11 s for a 720-run XOR study's two convergence figures).
    """
    agg = data.groupby(by, observed=True, sort=True)[y].agg(["mean", "std", "count"]).reset_index()
    half = Z95 * agg["std"] / np.sqrt(agg["count"])
    return agg.assign(low=agg["mean"] - half, high=agg["mean"] + half).rename(columns={"mean": y})


def _band_lines(data: pd.DataFrame, y: str, hue_order: list[str], facets: dict[str, str], **kwargs) -> sns.FacetGrid:
    """``relplot`` of the per-epoch means of ``y`` (one line per rule, :func:`mean_band`), with each rule's
    band filled in its colour: ``facets`` maps relplot's ``row``/``col`` to the frame's columns."""
    keys = list(facets.values())
    band = mean_band(data, [*keys, "delta", "epoch"], y)
    g = sns.relplot(data=band, x="epoch", y=y, hue="delta", hue_order=hue_order, kind="line", estimator=None,
                    palette=PALETTE, **facets, **kwargs)  # fmt: skip
    for panel_key, ax in g.axes_dict.items():
        panel_key = panel_key if isinstance(panel_key, tuple) else (panel_key,)
        panel = band[np.logical_and.reduce([band[k] == v for k, v in zip(keys, panel_key)])]
        for rule, curve in panel.groupby("delta", observed=True):
            ax.fill_between(curve["epoch"], curve["low"], curve["high"], color=PALETTE[rule], alpha=0.2, lw=0)
    return g


def convergence(frame: pd.DataFrame, metric: str = "train_loss", log: bool | None = None) -> sns.FacetGrid:
    """``metric`` vs epoch; rows = loss, columns = output activation, colour = delta rule."""
    data = thin(frame.dropna(subset=[metric]))
    log = metric.endswith("loss") if log is None else log
    if log:
        data = data[data[metric] > 0]
    g = _band_lines(
        data, metric, _order(data["delta"], RULE_ORDER), {"row": "loss", "col": "activation"},
        row_order=_order(data["loss"], LOSSES.names()),
        col_order=_order(data["activation"], OUTPUT_ACTIVATIONS.names()),
        height=2.3 if data["loss"].nunique() * data["activation"].nunique() > 2 else 3.5,
        aspect=1.3, facet_kws={"sharey": False, "margin_titles": True},
    )  # fmt: skip
    if log:
        g.set(yscale="log")
    _mark_stopped(g, frame, metric)
    lines = max(ax.get_title().count("\n") for ax in g.axes.flat)  # the counts under a panel's title
    if lines:
        g.figure.subplots_adjust(hspace=0.1 + 0.12 * lines)
    g.figure.suptitle(f"{metric} per epoch (mean and 95 % band over seeds; ✕ = where a run's {metric} ends: it "
                      "diverged or its loss became undefined)", y=1.02 + 0.03 * lines)  # fmt: skip
    return g


def what_happened(panel: pd.DataFrame, sep: str = "; ") -> str:
    """The runs of one panel that did not simply train to the end with a defined loss, each kind counted:
    ``3 diverged (stopped early); 27 loss undefined at the end; 2 loss undefined on some epochs`` ("" if none).

    *diverged*: non-finite weights or loss, training stopped. *undefined at the end*: trained to the last epoch
    but its outputs were outside the loss's domain there (its accuracy still counts). *undefined on some
    epochs*: completed with a defined final loss, after epochs whose loss was undefined (``undefined_epochs``).
    """
    runs = panel.drop_duplicates("run_id")
    diverged = int((runs["outcome"] == "diverged").sum())
    undefined = int((runs["outcome"] == "undefined").sum())
    some = 0
    if "undefined_epochs" in runs:
        some = int(((runs["outcome"] == "completed") & (runs["undefined_epochs"].fillna(0) > 0)).sum())
    parts = [
        f"{diverged} diverged (stopped early)" if diverged else "",
        f"{undefined} loss undefined at the end" if undefined else "",
        f"{some} loss undefined on some epochs" if some else "",
    ]
    return sep.join(p for p in parts if p)


def _mark_stopped(g: sns.FacetGrid, frame: pd.DataFrame, metric: str) -> None:
    """A red ✕ where a run's ``metric`` ends before the run does (it diverged, or its loss became undefined), and
    in each panel's title the count of runs that diverged or had an undefined loss (:func:`what_happened`)."""
    for (loss, act), ax in g.axes_dict.items():
        panel = frame[(frame["loss"] == loss) & (frame["activation"] == act)]
        n_runs = panel["run_id"].nunique()
        finite = panel[np.isfinite(panel[metric])]
        last = finite.sort_values("epoch").groupby("run_id").tail(1)
        end = panel.groupby("run_id")["epoch"].max()
        cut = last[(last["outcome"] == "diverged") | (last["epoch"].to_numpy() < last["run_id"].map(end).to_numpy())]
        if len(cut):
            ax.scatter(cut["epoch"], cut[metric], marker="x", color="red", s=30, zorder=5)
        happened = what_happened(panel, sep="\n")  # one kind per line: a panel is narrow
        if happened:
            ax.set_title(f"{ax.get_title()}\n{happened}\n(of {n_runs} runs)", fontsize=7, color="red")
        if n_runs and not np.isfinite(panel[metric]).any():
            ax.text(0.5, 0.5, f"no finite {metric}:\n" + _outcomes(panel), transform=ax.transAxes,
                    ha="center", va="center", fontsize=8, color="red")  # fmt: skip


def _outcomes(panel: pd.DataFrame) -> str:
    counts = panel.drop_duplicates("run_id")["outcome"].value_counts()
    return ", ".join(f"{n} {outcome}" for outcome, n in counts.items())


def summary_heatmaps(
    summary: pd.DataFrame, value: str = "final_accuracy", stat: str = "mean", fmt: str = ".2f", cmap: str = "viridis"
) -> plt.Figure:
    """One heatmap per delta rule: ``stat`` of ``value`` over seeds for each (loss, activation).

    Hatched cells are mismatched pairings (the rule is not the gradient there). A cell's annotation adds
    ``✕k`` when k runs diverged, ``uk`` when k trained to the end with an undefined final loss, and "(k/n)"
    when only k of n runs have a finite value (e.g. reached the accuracy threshold); "—" means no run has one.
    """
    rules = _order(summary["delta"], RULE_ORDER)
    losses = _order(summary["loss"], LOSSES.names())
    acts = _order(summary["activation"], OUTPUT_ACTIVATIONS.names())
    finite = summary.assign(_v=summary[value].where(np.isfinite(summary[value])))
    agg = finite.groupby(["delta", "loss", "activation"])["_v"].agg(stat)
    vmin, vmax = (
        np.nanmin(agg.to_numpy(dtype=float), initial=np.inf),
        np.nanmax(agg.to_numpy(dtype=float), initial=-np.inf),
    )
    if not np.isfinite(vmin):
        vmin, vmax = 0.0, 1.0
    fig, axes = plt.subplots(1, len(rules), figsize=(3.6 * len(rules) + 1, 0.9 * len(losses) + 1.4), squeeze=False)
    for ax, rule in zip(axes[0], rules):
        part = summary[summary["delta"] == rule]
        grid = agg.xs(rule, level="delta").unstack("activation").reindex(index=losses, columns=acts)
        sns.heatmap(grid.astype(float), cmap=cmap, vmin=vmin, vmax=vmax, cbar=False, ax=ax,
                    linewidths=0.5, linecolor="white")  # fmt: skip
        labels = _cell_labels(part, grid, losses, acts, fmt, value)
        for (i, j), text in np.ndenumerate(labels):  # by hand: seaborn leaves NaN cells unannotated
            ax.text(j + 0.5, i + 0.5, text, ha="center", va="center", fontsize=8,
                    bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.75})  # fmt: skip
        _hatch_mismatched(ax, part, losses, acts)
        ax.set_title(f"δ rule: {rule}")
        ax.set_xlabel("output activation")
        ax.set_ylabel("loss")
        ax.tick_params(axis="x", labelrotation=30)
    fig.colorbar(axes[0][0].collections[0], ax=axes[0].tolist(), shrink=0.8, label=f"{stat} {value}")
    fig.suptitle(
        f"{value}: {stat} over the seeds with a finite value ((k/n): only k of n); hatched = mismatched pairing; "
        "✕k = k runs diverged (stopped early); uk = k runs trained to the end with the loss undefined there",
        fontsize=9,
        y=1.04,
    )
    return fig


def _cell_labels(
    part: pd.DataFrame, grid: pd.DataFrame, losses: list[str], acts: list[str], fmt: str, value: str
) -> np.ndarray:
    """Per cell: the value, "(k/n)" when only k of n runs have a finite value, "✕k" diverged, "uk" undefined."""
    labels = np.empty((len(losses), len(acts)), dtype=object)
    for i, loss in enumerate(losses):
        for j, act in enumerate(acts):
            cell = part[(part["loss"] == loss) & (part["activation"] == act)]
            v = grid.iloc[i, j]
            text = "—" if pd.isna(v) else format(v, fmt)
            values = cell[value].to_numpy(dtype=float)
            if np.isinf(values).any():  # e.g. a threshold some seeds never reached: the stat is over the rest
                text += f" ({int(np.isfinite(values).sum())}/{len(values)})"
            diverged, undefined = (int((cell["outcome"] == kind).sum()) for kind in ("diverged", "undefined"))
            marks = " ".join(m for m in (f"✕{diverged}" * bool(diverged), f"u{undefined}" * bool(undefined)) if m)
            labels[i, j] = f"{text}\n{marks}" if marks else text
    return labels


def _hatch_mismatched(ax: plt.Axes, part: pd.DataFrame, losses: list[str], acts: list[str]) -> None:
    mismatched = part[part["pairing"] == "mismatched"][["loss", "activation"]].drop_duplicates()
    for loss, act in mismatched.itertuples(index=False):
        if loss in losses and act in acts:
            ax.add_patch(
                Rectangle((acts.index(act), losses.index(loss)), 1, 1, fill=False, hatch="///", edgecolor="0.6", lw=0)
            )


def grad_cosine(frame: pd.DataFrame) -> sns.FacetGrid | None:
    """``grad_cosine`` vs epoch for every mismatched triple (None when there is none): the cosine between the
    rule's whole parameter update and the true gradient ∂C/∂θ of the loss (not ``delta_cosine``, which compares
    only the output δ).

    While it is > 0 the rule's step is still a descent direction for the loss, which is why a wrong δ can
    train; where it crosses 0 the step climbs the loss.
    """
    data = thin(frame[(frame["pairing"] == "mismatched")].dropna(subset=["grad_cosine"]))
    if data.empty:
        return None
    data = data.assign(pair=data["loss"] + " + " + data["activation"])
    pairs = [f"{lo} + {act}" for lo in LOSSES.names() for act in OUTPUT_ACTIVATIONS.names()]
    g = _band_lines(
        data, "grad_cosine", _order(data["delta"], RULE_ORDER), {"col": "pair"},
        col_order=_order(data["pair"], pairs), col_wrap=min(4, data["pair"].nunique()), height=2.2, aspect=1.3,
    )  # fmt: skip
    for pair, ax in g.axes_dict.items():
        ax.axhline(0.0, color="0.4", lw=0.8, ls="--")
        ax.set_ylim(-1.05, 1.05)
        panel = data[data["pair"] == pair]
        if panel["epoch"].nunique() < 2:  # e.g. runs that stopped at epoch 0: one point, no curve
            ax.text(0.5, 0.3, f"only epoch {panel['epoch'].max():g} logged:\n" + _outcomes(panel),
                    transform=ax.transAxes, ha="center", va="center", fontsize=8, color="red")  # fmt: skip
    g.figure.suptitle("grad_cosine of mismatched rules: cosine between the rule's step and the true gradient "
                      "(> 0: still a descent direction)", y=1.02)  # fmt: skip
    return g


def slowdown(frame: pd.DataFrame) -> sns.FacetGrid:
    """The neuron's output a vs epoch (as in Nielsen's ch. 3 figures): colour = cost, panel = start (w, b)."""
    from harness.report.loading import neuron_output

    data = frame.assign(output=neuron_output(frame))
    data = data.assign(
        start="(w, b) = (" + data["init_weight"].map("{:g}".format) + ", " + data["init_bias"].map("{:g}".format) + ")",
        cost=data["loss"].map({"mse": "quadratic", "bce": "cross-entropy"}).fillna(data["loss"])
        + ", η = "
        + data["lr"].map("{:g}".format),
    )
    g = sns.relplot(data=data, x="epoch", y="output", hue="cost", col="start", kind="line", height=3, aspect=1.3)
    g.set(ylim=(0, 1))
    g.figure.suptitle("Learning slowdown: neuron output vs epoch (x = 1, target y = 0)", y=1.03)
    return g


def lr_sensitivity(summary: pd.DataFrame, value: str = "final_accuracy") -> sns.FacetGrid:
    """Final ``value`` vs learning rate (log axis) per triple: rows = loss, columns = activation."""
    data = summary.dropna(subset=["lr"])
    g = sns.relplot(
        data=data, x="lr", y=value, hue="delta", hue_order=_order(data["delta"], RULE_ORDER), row="loss",
        col="activation", row_order=_order(data["loss"], LOSSES.names()),
        col_order=_order(data["activation"], OUTPUT_ACTIVATIONS.names()), kind="line", marker="o",
        errorbar=("ci", 95), palette=PALETTE, height=2.2, aspect=1.3, facet_kws={"margin_titles": True},
    )  # fmt: skip
    g.set(xscale="log")
    g.figure.suptitle(f"{value} vs learning rate (mean, 95 % bootstrap CI over seeds; diverged runs omitted)", y=1.02)
    return g


def best_lr(best: pd.DataFrame, value: str = "final_accuracy") -> plt.Figure:
    """Each triple at its own best rate (from :func:`harness.report.stats.best_lr`): the value and the epochs to
    threshold there, with 95 % CIs; the label is that rate. A triple with no finite value is marked ✕."""
    data = best.assign(pair=best["loss"] + " + " + best["activation"]).reset_index(drop=True)
    pairs = list(dict.fromkeys(data["pair"]))
    rules = _order(data["delta"], RULE_ORDER)
    width = 0.8 / max(1, len(rules))
    fig, axes = plt.subplots(2, 1, figsize=(min(14.0, 1.1 * len(pairs) + 2), 6.5), sharex=True)
    panels = [(axes[0], "estimate", "ci_low", "ci_high", f"{value} at best lr"),
              (axes[1], "epochs", "epochs_low", "epochs_high", "epochs to threshold at best lr")]  # fmt: skip
    for ax, col, lo, hi, label in panels:
        for k, rule in enumerate(rules):
            part = data[data["delta"] == rule]
            x = np.array([pairs.index(p) for p in part["pair"]]) + (k - (len(rules) - 1) / 2) * width
            ok = np.isfinite(part[col].to_numpy(dtype=float))
            err = np.array([part[col] - part[lo], part[hi] - part[col]], dtype=float)[:, ok]
            err = np.nan_to_num(err, nan=0.0, posinf=0.0).clip(min=0)
            ax.errorbar(x[ok], part[col][ok], yerr=err, fmt="o", color=PALETTE[rule], label=rule, capsize=2)
            ax.scatter(
                x[~ok], np.zeros((~ok).sum()), marker="x", color=PALETTE[rule], transform=ax.get_xaxis_transform()
            )
            for xi, r, y in zip(x[ok], part["best_lr"][ok], part[col][ok]):
                ax.annotate(f"{r:g}", (xi, y), fontsize=6, xytext=(2, 3), textcoords="offset points")
        ax.set_ylabel(label)
    axes[0].legend(title="δ rule", fontsize=7)
    axes[1].set_xticks(range(len(pairs)), pairs, rotation=45, ha="right")
    fig.suptitle("Each triple at its own best learning rate (label = the rate; bars = 95 % CI over seeds; "
                 "✕ at the bottom = no finished run / never reached)", fontsize=9)  # fmt: skip
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------- showing, with alt text


def show(fig: plt.Figure | sns.FacetGrid, alt: str) -> None:
    """Display a figure in the notebook as ``<figure><img alt=…><figcaption>``, then close it.

    nbconvert's lab template writes no ``alt`` for a plain ``image/png`` output (it fills in "No description has
    been provided"), so the figure goes out as HTML that carries its own alt text and caption.
    """
    import base64
    import html
    import io

    from IPython.display import HTML, display

    fig = getattr(fig, "figure", fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    text = html.escape(alt, quote=True)
    display(
        HTML(f'<figure><img alt="{text}" src="data:image/png;base64,{data}"><figcaption>{text}</figcaption></figure>')
    )


def details(summary: str, table: pd.DataFrame) -> object:
    """A table folded into ``<details>`` (collapsed in the HTML), with its one-line summary."""
    import html

    from IPython.display import HTML

    body = table.to_html(index=False, na_rep="—", float_format=lambda v: f"{v:.4g}", border=0)
    return HTML(f'<details><summary>{html.escape(summary)}</summary><div class="wide">{body}</div></details>')


def _panels(frame: pd.DataFrame) -> str:
    pairs = frame[["loss", "activation"]].drop_duplicates()
    return f"{len(pairs)} panels, one per (loss, output activation) pair: " + ", ".join(
        f"{lo} + {a}" for lo, a in pairs.itertuples(index=False)
    )


def _stopped(frame: pd.DataFrame) -> str:
    runs = frame.drop_duplicates("run_id")
    happened = what_happened(frame)
    if not happened:
        return f"All {len(runs)} runs trained to their last epoch with a defined loss."
    return f"Of {len(runs)} runs: {happened} (red ✕ where a run's curve ends before its last epoch)."


def alt_convergence(frame: pd.DataFrame, metric: str) -> str:
    rules = ", ".join(_order(frame["delta"], RULE_ORDER))
    return (
        f"{metric.replace('_', ' ')} against epoch. {_panels(frame)}. One line per δ rule ({rules}): mean over seeds "
        f"with a 95 % band. {_stopped(frame)}"
    )


def alt_grad_cosine(frame: pd.DataFrame) -> str:
    f = frame[frame["pairing"] == "mismatched"]
    share = (f["grad_cosine"] > 0).mean() if len(f) else float("nan")
    return (
        f"Cosine between each mismatched rule's update and the true gradient, against epoch, one panel per "
        f"(loss, output activation) pair with a mismatched rule; the dashed line is 0. Above 0 the step descends "
        f"the loss: {share:.0%} of the plotted epochs."
    )


def alt_heatmaps(summary: pd.DataFrame, value: str) -> str:
    rules = ", ".join(_order(summary["delta"], RULE_ORDER))
    return (
        f"Heatmaps of the mean {value.replace('_', ' ')} over seeds, one per δ rule ({rules}); rows are losses, "
        "columns output activations. Hatched cells are mismatched pairings; ✕k counts runs that diverged, uk runs "
        "that trained to the end with an undefined loss there; (k/n) means only k of n runs have a finite value; "
        "— means none has."
    )


def alt_slowdown(frame: pd.DataFrame) -> str:
    return (
        "Output of Nielsen's single sigmoid neuron against epoch, one panel per starting point (w, b), one line "
        "per cost (quadratic, cross-entropy). From the saturated start the quadratic cost's output stays flat "
        "for many epochs; cross-entropy's drops at once."
    )


def alt_lr(summary: pd.DataFrame, seeds: str = "all seeds") -> str:
    rates = ", ".join(f"{v:g}" for v in sorted(summary["lr"].dropna().unique()))
    return (
        f"Final test accuracy against learning rate (log axis: {rates}), one panel per (loss, output activation) "
        f"pair, one line per δ rule, mean and 95 % interval over {seeds} ({summary['seed'].nunique()}); diverged "
        "runs are omitted."
    )


def alt_best_lr(best: pd.DataFrame, comps: object) -> str:
    return (
        "Each triple at its own best learning rate (chosen on the tuning seeds; the label is the rate), graded on "
        "the evaluation seeds: final accuracy (top) and epochs to threshold (bottom) with 95 % intervals, one "
        "colour per δ rule, one group per (loss, output activation) pair; ✕ at the bottom: no finished run or the "
        f"threshold never reached. {len(best)} triples."
    )
