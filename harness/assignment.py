"""``python -m harness.assignment``: will Nielsen's equations score full marks on Ng's ex4?

Grades the δ rules ``ng``, ``nielsen`` and ``chain`` on the assignment's own checks (checkNNGradients and the
submit.m grader, see :mod:`harness.core.assignment`) and prints the answer in Markdown: the verdict and the
scores, a table of points per part, then each part's numbers. ``--rules ng,nielsen`` grades a subset.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from harness.core import assignment
from harness.core.deltas import DELTA_RULES


def _rules(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    bad = [n for n in names if n not in DELTA_RULES]
    if not names or bad:
        raise argparse.ArgumentTypeError(
            f"--rules takes a comma-separated list of delta rules from {', '.join(DELTA_RULES)}; got {text!r}"
            + (f" ({', '.join(map(repr, bad))} unknown)" if bad else "")
        )
    return names


def markdown_table(rows: list[dict]) -> str:
    """Rows of equal keys as a Markdown table."""
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join(" --- " for _ in cols) + "|"]
    lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def report(rules: Sequence[str] = assignment.RULES) -> str:
    """The whole printed answer: verdict, points per part, and each rule's part-by-part numbers."""
    results = [assignment.result(r) for r in rules]
    out = [f"## {assignment.QUESTION}", assignment.answer(results), markdown_table(assignment.rows(results))]
    for r in results:
        lines = [f"**`{r.rule}`: {r.score} / 100**"]
        lines += [
            f"- {p.name} ({p.points}): {'pass' if p.passed else 'FAIL'} — {p.detail}" for p in r.parts
        ]  # fmt: skip
        out.append("\n".join(lines))
    return "\n\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.assignment", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rules",
        type=_rules,
        default=list(assignment.RULES),
        metavar="R1,R2",
        help=f"delta rules to grade (default: {','.join(assignment.RULES)})",
    )
    args = parser.parse_args(argv)
    sys.stdout.write(report(args.rules) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
