"""``python -m harness.report EXPERIMENT [--out DIR]``: an executed report notebook for one experiment.

Builds a notebook (nbformat) whose cells load the experiment's latest sweep from MLflow
(:mod:`.loading`, :mod:`.stats`), draw the figures (:mod:`.plots`) and answer the four questions from the
measured numbers (:mod:`.questions`); runs it without a server (nbclient, ``ipykernel``); writes
``DIR/EXPERIMENT.ipynb`` and ``DIR/EXPERIMENT.html`` (nbconvert) and logs both to the sweep's parent run.

Preset studies (``report.auto: true``) call :func:`after_sweep` when their sweep ends, also when jobs failed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from harness.report.loading import AnalysisError, locate

KERNEL = "python3"
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

QUESTIONS = [
    (
        "Question 1",
        "Ng's δᴸ = a − y has no σ′(z); Nielsen's δᴸ = (a − y) ⊙ σ′(z) has it. Is the difference significant, "
        "and why does it arise — is it because one uses MSE and the other cross-entropy?",
        "questions.q1(study, summary).show()",
        None,
    ),
    (
        "Question 2",
        "With J = −y log h − (1 − y) log(1 − h) and a sigmoid output, prove that δ = h − y.",
        "questions.q2(study, summary).show()",
        Q2_MD,
    ),
    (
        "Question 3",
        "If I use a different output activation with log loss, do I need a different derivative?",
        "questions.q3(study, summary).show()",
        Q3_MD,
    ),
    (
        "Question 4",
        "Which is correct? My numpy XOR net seems to work a little better with σ′ factored in. Or does it not "
        "matter, and I just need the right hyperparameters for each?",
        "questions.q4(study, summary).show()",
        None,
    ),
]

FIGURES = """\
frame, runs = study.frame, summary
if summary["lr"].nunique() >= 3:  # a learning-rate grid: curves and heatmaps show each triple at its best rate
    best = stats.best_lr(summary)
    frame, runs = stats.at_best_lr(study.frame, best), stats.at_best_lr(summary, best)
    print("Learning-rate grid: the curves and heatmaps below show each triple at its own best rate.")
if study.dataset == "neuron":
    plots.slowdown(frame)
    plt.show()
else:
    plots.convergence(frame, "train_loss")
    plt.show()
    plots.convergence(frame, "test_accuracy", log=False)
    plt.show()
    plots.summary_heatmaps(runs, "final_accuracy")
    plt.show()
    if study.threshold is not None:
        plots.summary_heatmaps(runs, "epochs_to_threshold", stat="mean", fmt=".0f", cmap="viridis_r")
        plt.show()
    if plots.grad_cosine(frame) is not None:
        plt.show()
    if summary["lr"].nunique() >= 3:
        plots.lr_sensitivity(summary)
        plt.show()
        plots.best_lr(best)
        plt.show()
"""


def build(experiment: str, uri: str, parent_run_id: str | None) -> nbformat.NotebookNode:
    """The (unexecuted) report notebook: math, live gradient check, figures, one section per question."""
    cells = [
        new_markdown_cell(
            f"# Report: `{experiment}`\n\nOutput-layer error rules compared on the runs of experiment "
            f"`{experiment}` (MLflow store `{uri}`, sweep parent run `{parent_run_id}`). Every number below is "
            "computed when this notebook runs."
        ),
        new_code_cell(
            "%matplotlib inline\n"
            "import warnings\n"
            "warnings.filterwarnings('ignore', message='IProgress not found')  # tqdm, imported by mlflow\n"
            "import matplotlib.pyplot as plt\nimport pandas as pd\n"
            "from harness.report import loading, plots, questions, stats\n"
            "pd.set_option('display.width', 200)\n"
            f"study = loading.load({experiment!r}, uri={uri!r}, parent_run_id={parent_run_id!r})\n"
            "summary = loading.run_summary(study)\n"
            "print(study)\nprint('threshold (test accuracy):', study.threshold)\n"
            "summary.groupby(['status', 'outcome']).size().rename('runs').to_frame()"
        ),
        new_markdown_cell(RULES_MD),
        new_markdown_cell(
            "## Which rule is exact where: the gradient checker (live)\n\nEach rule's δ against central finite "
            "differences of the loss (float64, h = 1e-6); *exact* = agreement to 1e-6."
        ),
        new_code_cell("questions.exactness()"),
        new_markdown_cell(
            "## Figures\n\nMean over seeds with 95 % bands; runs that diverged or left the loss's domain end in a "
            "red ✕ and are counted in the panel titles and heatmap cells (✕k), never dropped."
        ),
        new_code_cell(FIGURES),
    ]
    for title, question, code, math in QUESTIONS:
        cells.append(new_markdown_cell(f"## {title}\n\n> {question}"))
        if math:
            cells.append(new_markdown_cell(math))
        cells.append(new_code_cell(code))
    cells.append(new_markdown_cell("## Runs that did not complete (diverged, undefined, failed), and all runs"))
    cells.append(
        new_code_cell(
            "columns = ['run_name', 'seed', 'lr', 'pairing', 'status', 'outcome', 'epochs_run', "
            "'final_accuracy', 'final_loss', 'epochs_to_threshold']\n"
            "stopped = summary[summary['outcome'] != 'completed']\n"
            "print(f'{len(stopped)} of {len(summary)} runs did not complete.')\n"
            "with pd.option_context('display.max_rows', 2000):\n"
            "    display(stopped[columns])\n"
            "summary[columns]"
        )
    )
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": KERNEL, "display_name": "Python 3", "language": "python"}
    return nb


def execute(nb: nbformat.NotebookNode, cwd: Path) -> nbformat.NotebookNode:
    """Run every cell in a fresh ``python3`` kernel, without a Jupyter server."""
    from nbclient import NotebookClient

    NotebookClient(nb, kernel_name=KERNEL, timeout=TIMEOUT, resources={"metadata": {"path": str(cwd)}}).execute()
    return nb


def to_html(nb: nbformat.NotebookNode) -> str:
    from nbconvert import HTMLExporter

    html, _ = HTMLExporter().from_notebook_node(nb)
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
    if study.parent_run_id:
        for path in (ipynb, html):
            client(uri).log_artifact(study.parent_run_id, str(path), artifact_path="report")
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
