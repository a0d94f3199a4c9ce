"""``python -m harness.report EXPERIMENT [--out DIR]``: an executed report notebook for one experiment.

Builds a notebook (nbformat) whose cells load the experiment's latest sweep from MLflow
(:mod:`.loading`, :mod:`.stats`), draw the figures (:mod:`.plots`) and answer the four questions from the
measured numbers (:mod:`.questions`); runs it without a server (nbclient, ``ipykernel``); writes
``DIR/EXPERIMENT.ipynb`` (with its code and TeX), ``DIR/EXPERIMENT.html`` (nbconvert: no code, the math as
MathML, nothing loaded from the network) and ``DIR/EXPERIMENT-runs.csv``, and logs them to the sweep's parent run
(``report/``; the CSV as ``report/runs.csv``).

Preset studies (``report.auto: true``) call :func:`after_sweep` when their sweep ends, also when jobs failed.
"""

from __future__ import annotations

import argparse
import copy
import re
import shutil
import sys
import tempfile
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from harness.report.loading import AnalysisError, locate

KERNEL = "python3"
RUNS_CSV = "runs.csv"  # written by the notebook into its working directory, logged as report/runs.csv
TIMEOUT = 1200  # seconds per cell: a large sweep's figures take a while on a loaded machine

RULES_MD = r"""## The three output-error rules

Backprop starts from the output error $\delta^L = \partial L / \partial z^L$, where $a = f(z^L)$ is the output
activation and $L(a, y)$ the loss. The rules compared here:

| rule | $\delta^L$ | source |
|---|---|---|
| `ng` | $a - y$ | Andrew Ng's course |
| `nielsen` | $(a - y) \odot f'(z)$ | Nielsen's book, Mitchell |
| `chain` | $J_f(z)^\top \nabla_a L$ | the chain rule: always the true gradient |

For an elementwise $f$, $J_f(z) = \mathrm{diag}\, f'(z)$ and the chain rule reads
$\delta_k = f'(z_k)\, \partial L/\partial a_k$. With the quadratic cost $L = \tfrac12\lVert a - y\rVert^2$,
$\nabla_a L = a - y$, so Nielsen's rule *is* the chain rule for every elementwise $f$, and Ng's is exact only
where $f' \equiv 1$ (identity output).
"""

Q2_MD = r"""### Derivation: sigmoid + binary cross-entropy gives $\delta = h - y$

With $h = \sigma(z) = 1/(1 + e^{-z})$ and $J = -y \log h - (1 - y)\log(1 - h)$:

$$\frac{\partial J}{\partial h} = -\frac{y}{h} + \frac{1 - y}{1 - h} = \frac{h - y}{h(1 - h)},
\qquad \sigma'(z) = \frac{e^{-z}}{(1 + e^{-z})^2} = h(1 - h),$$

$$\delta = \frac{\partial J}{\partial z} = \frac{\partial J}{\partial h}\,\sigma'(z)
= \frac{h - y}{h(1 - h)}\; h(1 - h) = h - y. \qquad\blacksquare$$

The $\sigma'(z)$ that Nielsen's quadratic-cost rule keeps is cancelled here by the $1/(h(1-h))$ of the log
loss's derivative: that is all the difference between the two formulas.
"""

Q3_MD = r"""### Derivation: softmax + categorical cross-entropy gives $\delta = a - y$

With $a_k = e^{z_k} / \sum_j e^{z_j}$, the softmax Jacobian is
$\partial a_k / \partial z_i = a_k(\mathbb 1[i = k] - a_i)$; with $L = -\sum_k y_k \log a_k$,
$\partial L/\partial a_k = -y_k / a_k$. By the chain rule

$$\delta_i = \sum_k \frac{\partial L}{\partial a_k}\frac{\partial a_k}{\partial z_i}
= -\sum_k \frac{y_k}{a_k}\, a_k(\mathbb 1[i = k] - a_i) = -y_i + a_i \sum_k y_k = a_i - y_i,$$

using $\sum_k y_k = 1$ (one-hot or any probability target). With another output activation the factor
$f'(z)$ (or the full Jacobian) does not cancel: $\delta = J_f(z)^\top \nabla_a L$ must be computed as such.
"""

MATCHING_MD = r"""### At the root: the matching loss

For an output activation $f = \nabla F$ (a gradient of a convex $F$), its *matching loss* is
$L_f(z, y) = F(z) - y \cdot z$ (plus a term in $y$ only), and its gradient in $z$ is exactly

$$\frac{\partial L_f}{\partial z} = f(z) - y = a - y .$$

$F$ = softplus gives binary cross-entropy (sigmoid), $F = \log\sum_k e^{z_k}$ categorical cross-entropy
(softmax), $F = \tfrac12 z^2$ the quadratic cost (identity), $F = \log\cosh z$ the matching loss of tanh. So Ng's
$a - y$ is the gradient of one loss per activation, whatever the loss named in the config: used with another loss
it descends the matching loss instead, a different objective with the same minimisers where the target is
reachable. Against Nielsen's $(a - y) \odot f'(z)$ it differs by the factor $f'(z)$ (for a sigmoid
$\sigma' \le \tfrac14$), a per-sample rescaling of the step: what the learning-rate study measures.
"""

METHODS_MD = r"""## Methods: how the numbers are made

- **Pairing.** The same seed gives every rule the same initial weights and minibatch order, so rules are compared
  on paired seeds. A pair with a run that diverged, became undefined or failed is left out and counted.
- **Effect and interval.** The mean paired difference with its 95 % BCa bootstrap interval (`scipy.stats.bootstrap`,
  9,999 resamples). No interval is given (and the text says why) for fewer than 3 values, all-equal values, or
  values that are infinite.
- **Test.** Wilcoxon's signed-rank test with Pratt's zeros (seeds on which the rules tie stay in the ranking, so
  they dilute the evidence rather than vanish) and its exact sign-flip null distribution: all $2^n$ sign flips up
  to 13 pairs, 9,999 random ones above. It is computed as `scipy.stats.permutation_test` over sign flips
  (`permutation_type="samples"`) with the signed-rank statistic in vectorised form: the same p-value as
  `scipy.stats.wilcoxon(d, zero_method="pratt", method=PermutationMethod())`, checked in the test suite.
- **Too few pairs.** An exact two-sided sign-flip test cannot give p < 0.05 with fewer than 6 pairs
  ($2/2^5 = 0.0625$): such comparisons get no verdict, say so, and are left out of the multiple-testing family.
- **Equivalence.** "Equivalent" means TOST: two one-sided signed-rank tests against the margins $\pm 0.02$ in
  final accuracy, $\pm 10\,\%$ of the reference rule's median epochs to threshold (at least one logging interval:
  a finer margin could not be met even by identical training), $\pm 10\,\%$ of its median final loss. The TOST
  p-value is the larger of the two. Overlapping intervals are not evidence of equivalence.
- **Multiple comparisons.** Benjamini–Hochberg (`scipy.stats.false_discovery_control`) across all the comparisons
  of this report: the difference tests form one family, the equivalence tests another; verdicts use q < 0.05.
  Each distinct test counts once: `ng` and `nielsen` never read the loss, so the same activation, rule, seed and
  rate under two loss names is one training (the report checks that their accuracy histories are identical), and
  a comparison that stands on the same runs under two loss names is made once.
- **Power of an inconclusive result.** An inconclusive comparison states the smallest mean difference its test
  would have found with 80 % power,
  $\mathrm{MDE} = (t_{1-\alpha/2,\,n-1} + t_{0.8,\,n-1})\, s_d / \sqrt{n \cdot 3/\pi}$, with $s_d$ the standard
  deviation of the $n$ finite paired differences. It is the paired t-test's minimum
  detectable effect, with $n$ shrunk by $3/\pi$, the signed-rank test's asymptotic relative efficiency on normal
  data. $\alpha$ is the level the comparison had to meet after Benjamini–Hochberg: with $k$ of the $m$ difference
  tests significant, the next needed $p \le (k+1)\,0.05/m$. "No difference larger than X" means a true difference
  of X would have been found with 80 % power; a smaller one may have been missed.
- **Never reached (censoring).** Epochs to threshold is $\infty$ for a run that never reached the threshold. A pair
  where neither rule reached it is a tie; a pair where only one did counts as a difference beyond every finite one
  (the signed-rank test ranks it last). Mean differences are over the pairs where both reached it.
- **Learning-rate grids.** Each triple's best rate (best mean final accuracy, a diverged run counting as the
  worst; ties to fewer epochs to threshold) is chosen on tuning seeds and judged on disjoint evaluation seeds: the
  seeds that choose a rate never grade it. A two-stage study (`hydra.sweeper.evaluation_seeds`) trains its tuning
  seeds at every rate, chooses each triple's rate from those runs with this same rule, then trains its evaluation
  seeds at the chosen rate only: the report tells them apart by the runs (tuning seeds ran at several rates). A
  one-stage grid tunes on the first 40 % of its seeds. Every comparison pairs two rules on the same evaluation
  seed, each at its own chosen rate; nothing pools across rates. A rate chosen at the grid's lowest or highest
  value is flagged: the best rate may lie beyond the grid.
"""

QUESTIONS = [
    (
        "Question 1",
        "Ng's δᴸ = a − y has no σ′(z); Nielsen's δᴸ = (a − y) ⊙ σ′(z) has it. Is the difference significant, "
        "and why does it arise — is it because one uses MSE and the other cross-entropy?",
        "questions.q1(study, summary, comps).show()",
        MATCHING_MD,
        "Q1",
    ),
    (
        "Question 2",
        "With J = −y log h − (1 − y) log(1 − h) and a sigmoid output, prove that δ = h − y.",
        "questions.q2(study, summary, comps).show()",
        Q2_MD,
        None,
    ),
    (
        "Question 3",
        "If I use a different output activation with log loss, do I need a different derivative?",
        "questions.q3(study, summary, comps).show()",
        Q3_MD,
        "Q3",
    ),
    (
        "Question 4",
        "Which is correct? My numpy XOR net seems to work a little better with σ′ factored in. Or does it not "
        "matter, and I just need the right hyperparameters for each?",
        "questions.q4(study, summary, comps).show()",
        None,
        "Q4",
    ),
]

SETUP = """\
%matplotlib inline
import warnings
warnings.filterwarnings('ignore', message='IProgress not found')  # tqdm, imported by mlflow
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import Markdown, display
from harness.report import loading, plots, questions, stats
pd.set_option('display.width', 200)
study = loading.load({experiment!r}, uri={uri!r}, parent_run_id={parent!r})
summary = loading.run_summary(study)
comps = questions.comparisons(study, summary)
# on a learning-rate grid the figures show each triple at its own best rate (chosen on the tuning seeds), on the
# evaluation seeds: the runs the comparisons stand on
frame, runs = study.frame, summary
if comps.best is not None:
    frame, runs = stats.at_best_lr(study.frame, comps.best), stats.at_best_lr(summary, comps.best)
    frame, runs = frame[frame["seed"].isin(comps.evaluation)], runs[runs["seed"].isin(comps.evaluation)]
questions.overview(study, summary, comps).show()
"""

FIGURES = {
    "Q1": """\
if study.dataset == "neuron":
    plots.show(plots.slowdown(frame), plots.alt_slowdown(frame))
else:
    for metric in ("train_loss", "test_accuracy"):
        plots.show(plots.convergence(frame, metric, log=None if metric.endswith("loss") else False),
                   plots.alt_convergence(frame, metric))
    g = plots.grad_cosine(frame)
    if g is None:
        display(Markdown("*No descent-direction figure: this study has no mismatched (loss, activation, rule) run "
                         "with a logged `grad_cosine`.*"))
    else:
        plots.show(g, plots.alt_grad_cosine(frame))
""",
    "Q3": """\
if study.dataset != "neuron":
    plots.show(plots.summary_heatmaps(runs, "final_accuracy"), plots.alt_heatmaps(runs, "final_accuracy"))
""",
    "Q4": """\
if study.dataset != "neuron":
    if study.threshold is not None and not np.isfinite(runs["epochs_to_threshold"]).any():
        display(Markdown(f"*No epochs-to-threshold heatmap: no run reached test accuracy ≥ {study.threshold:g} "
                         "within its epochs.*"))
    elif study.threshold is not None:
        plots.show(plots.summary_heatmaps(runs, "epochs_to_threshold", stat="mean", fmt=".0f", cmap="viridis_r"),
                   plots.alt_heatmaps(runs, "epochs_to_threshold"))
    if comps.best is not None:
        tuned = summary[summary["seed"].isin(comps.tuning)]  # the seeds that ran at every rate
        plots.show(plots.lr_sensitivity(tuned), plots.alt_lr(tuned, "the tuning seeds"))
        plots.show(plots.best_lr(comps.best), plots.alt_best_lr(comps.best, comps))
""",
}

APPENDIX = """\
summary.to_csv({csv!r}, index=False)
columns = ['run_name', 'seed', 'lr', 'pairing', 'status', 'outcome', 'epochs_run', 'undefined_epochs',
           'final_accuracy', 'final_loss', 'epochs_to_threshold']
display(plots.details(f"All {{len(comps.distinct())}} distinct comparisons of this report (p, BH q, TOST, "
                      "detectable difference)", comps.table()))
stopped = summary[summary['outcome'] != 'completed']
display(plots.details(f"{{len(stopped)}} of {{len(summary)}} runs did not complete", stopped[columns]))
display(plots.details(f"All {{len(summary)}} runs (also the CSV artifact report/runs.csv of the sweep's parent run)",
                      summary[columns]))
"""


def assignment_cells() -> list[nbformat.NotebookNode]:
    """HOOK for ``harness.report.assignment`` (written by another engineer): its answer (an object with
    ``.show()``, like :class:`harness.report.questions.Answer`: ``section()`` in main, ``assignment_answer()`` in
    the brief) opens the questions. Until that module exists, no cells; the lead may instead move this call or its
    cells wherever the answer belongs."""
    import importlib
    import importlib.util

    if importlib.util.find_spec("harness.report.assignment") is None:
        return []
    module = importlib.import_module("harness.report.assignment")
    name = next((n for n in ("section", "assignment_answer") if callable(getattr(module, n, None))), None)
    if name is None:
        return []
    return [
        new_markdown_cell("## Ng's assignment"),
        new_code_cell(f"from harness.report.assignment import {name}\n{name}().show()"),
    ]


def build(experiment: str, uri: str, parent_run_id: str | None) -> nbformat.NotebookNode:
    """The (unexecuted) report notebook: an overview, the math, one section per question (the answer first, then
    its evidence: derivations, tables, figures), the methods, and the run tables folded away."""
    cells = [
        new_markdown_cell(
            f"# Report: `{experiment}`\n\nOutput-layer error rules compared on the runs of experiment "
            f"`{experiment}` (MLflow store `{uri}`, sweep parent run `{parent_run_id}`). Every number below is "
            "computed when this notebook runs; the statistics are described under *Methods*."
        ),
        new_code_cell(SETUP.format(experiment=experiment, uri=uri, parent=parent_run_id)),
        new_markdown_cell(RULES_MD),
        new_markdown_cell(
            "## Which rule is exact where: the gradient checker (live)\n\nEach rule's δ against central finite "
            "differences of the loss (float64, h = 1e-6); *exact* = agreement to 1e-6."
        ),
        new_code_cell("questions.exactness()"),
    ]
    cells += assignment_cells()  # HOOK: Ng's assignment answer, first among the questions (when it exists)
    for title, question, code, math, figures in QUESTIONS:
        cells.append(new_markdown_cell(f"## {title}\n\n> {question}"))
        cells.append(new_code_cell(code))
        if math:
            cells.append(new_markdown_cell(math))
        if figures:
            cells.append(new_code_cell(FIGURES[figures]))
    cells.append(new_markdown_cell(METHODS_MD))
    cells.append(new_markdown_cell("## Appendix: comparisons and runs"))
    cells.append(new_code_cell(APPENDIX.format(csv=RUNS_CSV)))
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": KERNEL, "display_name": "Python 3", "language": "python"}
    return nb


def execute(nb: nbformat.NotebookNode, cwd: Path) -> nbformat.NotebookNode:
    """Run every cell in a fresh ``python3`` kernel, without a Jupyter server."""
    from nbclient import NotebookClient

    NotebookClient(nb, kernel_name=KERNEL, timeout=TIMEOUT, resources={"metadata": {"path": str(cwd)}}).execute()
    return nb


# nbconvert's lab template loads require.js, MathJax and mermaid.js from a CDN: offline, formulas show as raw
# TeX. This template drops all three; the math is MathML made at build time (:func:`offline_math`), which
# browsers render natively.
OFFLINE_TEMPLATE = """{%- extends 'lab/index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block extra_css -%}
<style>
main { max-width: 64rem; margin: 0 auto; }
.wide { overflow-x: auto; } .jp-OutputArea-output { overflow-x: auto; }
figure { margin: 1em 0; } figure img { max-width: 100%; } figcaption { font-size: 0.85em; color: #555; }
details { margin: 0.5em 0; } summary { cursor: pointer; font-weight: 600; }
math[display="block"] { margin: 0.6em 0; }
</style>
{%- endblock extra_css -%}
"""
DISPLAY_MATH = re.compile(r"\$\$(.+?)\$\$", re.S)
FUNCTION_NAME = re.compile(r"\\(log|exp|cosh|tanh|diag)(?![A-Za-z])")
INLINE_MATH = re.compile(r"(?<![\\$])\$(?!\s)([^$\n]+?)(?<!\s)\$(?!\$)")


def tex_to_mathml(text: str) -> str:
    """``$$…$$`` and ``$…$`` in Markdown replaced by MathML (``latex2mathml``), for the offline HTML."""
    from latex2mathml.converter import convert as to_mathml

    def convert(tex: str, display: str = "inline") -> str:
        return to_mathml(FUNCTION_NAME.sub(r"\\\1\\,", tex), display=display)  # "log h", not "logh"

    text = DISPLAY_MATH.sub(lambda m: "\n\n" + convert(m.group(1).strip(), display="block") + "\n\n", text)
    return INLINE_MATH.sub(lambda m: convert(m.group(1)), text)


def offline_math(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A copy of ``nb`` whose Markdown (cells and ``text/markdown`` outputs) has MathML instead of TeX."""
    nb = copy.deepcopy(nb)
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = tex_to_mathml(cell.source)
        for out in cell.get("outputs", []):
            if "text/markdown" in out.get("data", {}):
                out["data"]["text/markdown"] = tex_to_mathml(out["data"]["text/markdown"])
    return nb


def to_html(nb: nbformat.NotebookNode) -> str:
    """The report as one self-contained HTML page: no code, no prompts, MathML, nothing loaded from a network."""
    import jinja2
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(
        extra_loaders=[jinja2.DictLoader({"offline.html.j2": OFFLINE_TEMPLATE})],
        template_file="offline.html.j2",
        exclude_input=True,
        exclude_input_prompt=True,
        exclude_output_prompt=True,
    )
    html, _ = exporter.from_notebook_node(offline_math(nb))
    return html


def write_report(
    experiment: str, out: str | Path = "reports", uri: str | None = None, parent_run_id: str | None = None
) -> tuple[Path, Path]:
    """Build, execute and write ``out/EXPERIMENT.ipynb`` and ``.html``; log both to the sweep's parent run.

    Raises :class:`harness.report.loading.AnalysisError` (before any kernel starts) when the experiment does not
    exist or has no finished runs.
    """
    from harness.tracking import client, resolve_uri

    uri = resolve_uri(uri)
    study = locate(experiment, uri=uri, parent_run_id=parent_run_id)  # fails fast, with one clear message
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    nb = execute(build(experiment, uri, study.parent_run_id), out)
    ipynb, html = out / f"{experiment}.ipynb", out / f"{experiment}.html"
    nbformat.write(nb, ipynb)
    html.write_text(to_html(nb), encoding="utf-8")
    csv = out / f"{experiment}-runs.csv"
    (out / RUNS_CSV).replace(csv)  # the notebook wrote it; several experiments can share ``out``
    if study.parent_run_id:
        for path in (ipynb, html):
            client(uri).log_artifact(study.parent_run_id, str(path), artifact_path="report")
        with tempfile.TemporaryDirectory() as tmp:
            shutil.copy(csv, Path(tmp) / RUNS_CSV)
            client(uri).log_artifact(study.parent_run_id, str(Path(tmp) / RUNS_CSV), artifact_path="report")
    return ipynb, html


def after_sweep(experiment: str, uri: str, parent_run_id: str, out: str | Path) -> None:
    """The end-of-sweep hook (``harness.sweep.end_parent``): write the report, print where it is.

    Never raises: a report that cannot be written is reported on stderr, and the sweep's parent run is
    still ended by the caller.
    """
    try:
        _, html = write_report(experiment, out, uri, parent_run_id)
        print(f"harness: report written to {html}")
    except Exception as err:  # noqa: BLE001  (a failed report must not mask the sweep's own status)
        print(f"harness: warning: could not write the report of {experiment!r}: {err}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.report", description=__doc__.splitlines()[0])
    parser.add_argument("experiment", help="MLflow experiment name (a preset's name, e.g. xor_grid)")
    parser.add_argument("--out", default="reports", help="output directory (default: reports/)")
    parser.add_argument("--uri", default=None, help="tracking URI (default: $MLFLOW_TRACKING_URI, else ./mlflow.db)")
    parser.add_argument("--parent", default=None, help="sweep parent run id (default: the latest sweep)")
    args = parser.parse_args(argv)
    try:
        _, html = write_report(args.experiment, args.out, args.uri, args.parent)
    except AnalysisError as err:
        print(f"harness.report: error: {err}", file=sys.stderr)
        return 2
    print(f"harness.report: wrote {html} and {html.with_suffix('.ipynb')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
