"""The second stage of a two-stage learning-rate study: each triple's rate, chosen on the tuning runs in the store.

A two-stage study (``hydra.sweeper.evaluation_seeds`` > 0, ``hydra_plugins/harness_sweeper``) first trains its
tuning seeds at every rate of the grid (stage 1). Then :func:`evaluation_jobs` reads those runs back from the
store (the children of the sweep's parent run, :mod:`harness.report.loading`), chooses each triple's rate with
:func:`harness.report.stats.best_lr` (the function the report uses, on the same runs, so the report finds the
same rates), and returns stage 2: every stage-1 job's other overrides at its triple's chosen rate, once per
evaluation seed. Evaluation seeds follow the tuning seeds (tuning 0–4, 20 evaluation seeds: 5–24), so the two
never overlap, and the report tells them apart by the runs alone (:func:`harness.report.stats.design_seeds`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from harness.report import stats
from harness.tracking import redact_overrides

FOLDED = ("seed", "train.lr")  # the keys stage 2 sets itself; every other override of a job is kept


@dataclass
class StageTwo:
    """Stage 2's jobs (unfolded override lists), its seeds, and the rates chosen (``best``, one row per triple)."""

    jobs: list[list[str]]
    seeds: list[int]
    tuning: list[int]
    best: pd.DataFrame
    skipped: list[str]  # stage-1 jobs whose triple had no run to choose a rate from

    def describe(self) -> str:
        """What stage 2 runs, in one paragraph (printed by the sweeper)."""
        edge = self.best[self.best["edge"] != ""]
        text = (
            f"harness: stage 2: {len(self.best)} triples, each at its rate chosen on tuning seeds "
            f"{_span(self.tuning)}, × {len(self.seeds)} evaluation seeds {_span(self.seeds)} = {len(self.jobs)} runs"
        )
        if len(edge):
            text += "; chosen at the grid's edge (the best rate may lie beyond it): " + ", ".join(
                f"{r.loss}-{r.activation}-{r.delta} η = {r.best_lr:g} ({r.edge})" for r in edge.itertuples()
            )
        if self.skipped:
            text += f"; no tuning run to choose from, left out: {'; '.join(self.skipped)}"
        return text


def _span(seeds: Sequence[int]) -> str:
    s = sorted(seeds)
    return f"{s[0]}–{s[-1]}" if len(s) > 2 and s == list(range(s[0], s[-1] + 1)) else ", ".join(map(str, s))


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def rest(overrides: Sequence[str]) -> tuple[str, ...]:
    """A job's overrides without the ones stage 2 sets (seed, rate): what identifies its triple's runs."""
    return tuple(o for o in overrides if _key(o) not in FOLDED)


def evaluation_jobs(stage_one: Sequence[Sequence[str]], summary: pd.DataFrame, n_seeds: int) -> StageTwo:
    """Stage 2 from stage 1's job override lists (``stage_one``, unfolded) and its runs (``summary``: one row per
    run, from :func:`harness.report.loading.run_summary`, with the ``overrides`` each job was launched with).

    Each triple's rate is ``stats.best_lr`` over all of ``summary``'s seeds (they are all tuning seeds); each
    distinct stage-1 job without its seed and rate becomes ``n_seeds`` jobs, ``train.lr`` = the chosen rate and
    ``seed`` = one more than the largest tuning seed, and on.
    """
    if n_seeds < 1:
        raise ValueError(f"hydra.sweeper.evaluation_seeds={n_seeds}: a second stage needs at least 1 seed")
    tuning = sorted({int(s) for s in summary["seed"]})
    seeds = list(range(tuning[-1] + 1, tuning[-1] + 1 + n_seeds))
    best = stats.best_lr(summary, tuning=tuning)
    rate = {tuple(r[:3]): float(r[3]) for r in best[[*stats.KEYS, "best_lr"]].itertuples(index=False)}
    triple_of = {
        rest(o.split()): t for o, t in zip(summary["overrides"], summary[stats.KEYS].itertuples(index=False, name=None))
    }
    jobs, skipped = [], []
    for other in dict.fromkeys(rest(j) for j in stage_one):
        lr = rate.get(triple_of.get(tuple(redact_overrides(other))))  # type: ignore[arg-type]  (runs store them so)
        if lr is None:
            skipped.append(" ".join(other))
            continue
        jobs.extend([*other, f"train.lr={lr!r}", f"seed={s}"] for s in seeds)
    return StageTwo(jobs, seeds, tuning, best, skipped)


_JOB = re.compile(r'"job": (\d+)')


def shift_jobs(folded: Sequence[Sequence[str]], offset: int) -> list[list[str]]:
    """Folded jobs (``harness.fold.fold_jobs``) whose replicas' unfolded job numbers start at ``offset``: stage 2's
    runs are numbered after stage 1's, as one sweep's would be (each run's ``harness.job`` tag)."""

    def shift(o: str) -> str:
        return _JOB.sub(lambda m: f'"job": {int(m.group(1)) + offset}', o) if _key(o) == "replicas" else o

    return [[shift(o) for o in job] for job in folded]


def stage_two(config, stage_one: Sequence[Sequence[str]], n_seeds: int) -> StageTwo:  # noqa: ANN001 (DictConfig)
    """Read the sweep's stage-1 runs from its store (parent run found by its ``harness.sweep_dir`` tag) and plan
    stage 2 (:func:`evaluation_jobs`). Raises :class:`harness.report.loading.AnalysisError` without runs."""
    from harness.report.loading import AnalysisError, load, run_summary
    from harness.sweep import sweep_dir
    from harness.tracking import find_sweep_parent, resolve_uri

    cwd = config.hydra.runtime.cwd
    uri = resolve_uri(config.tracking.uri, cwd)
    directory = sweep_dir(cwd, config.hydra.sweep.dir)
    parent = find_sweep_parent(uri, config.tracking.experiment, directory)
    if parent is None:
        raise AnalysisError(f"no running parent run of the sweep in {directory} in {uri}: cannot choose rates")
    study = load(config.tracking.experiment, uri, parent_run_id=parent)
    return evaluation_jobs(stage_one, run_summary(study), n_seeds)
