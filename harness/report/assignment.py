"""The report's opening section: the seed question answered with Ng's ex4 checks (:mod:`harness.core.assignment`).

:func:`section` returns an :class:`~harness.report.questions.Answer` like the questions' own: the Markdown
(verdict and scores first, then the numbers) and two tables, the points per part and rule, and the numbers each
gradient part stands on. It needs no study: the assignment fixes its networks, data and checks, so the
section is the same for every experiment and is computed when the notebook runs (≈ 0.3 s).
A notebook places it like a question: a Markdown cell ``## {TITLE}`` and ``> {QUESTION}``, then a code cell
``from harness.report import assignment; assignment.section().show()``.
"""

from __future__ import annotations

from functools import cache

import pandas as pd

from harness.core import assignment
from harness.report.questions import Answer

TITLE = "Ng's assignment"
QUESTION = assignment.QUESTION


def scores(results: list[assignment.Result]) -> pd.DataFrame:
    """Points earned per part (rows, with a total) and rule (columns), out of the part's points."""
    return pd.DataFrame(assignment.rows(results))


def numbers(results: list[assignment.Result]) -> pd.DataFrame:
    """Per rule: checkNNGradients' relative difference (passes below 1e-9) and the grader's max |grad − exact|,
    as text in scientific notation (the values span 1e-13 to 1)."""
    out = []
    for r in results:
        row = {"rule": r.rule, "score": r.score}
        row |= {f"checkNNGradients λ = {lam:g}": f"{v:.2e}" for lam, v in r.check.items()}
        row |= {f"grader max |grad − exact|, λ = {lam:g}": f"{v:.2e}" for lam, v in r.grader_error.items()}
        out.append(row)
    return pd.DataFrame(out)


@cache
def section(rules: tuple[str, ...] = assignment.RULES) -> Answer:
    """The section: the answer in Markdown and the two tables (computed once per process)."""
    results = [assignment.result(r) for r in rules]
    return Answer(assignment.answer(results), [scores(results), numbers(results)])
