"""The harness's default sweeper: Hydra's ``BasicSweeper`` without its up-front re-composition of every job.

Before launching a batch, ``BasicSweeper`` composes the config of every job in it, in the launching
process and one after the other, only to catch composition errors early; the launcher then composes each
job again to run it. At ≈ 0.1 s per composition that is 3.6 s before the first job of a 36-job grid and
75 s for the 756 jobs of ``lr_fairness``. The harness's sweep callback (``harness.sweep.SweepCallback``)
already composes the config once per swept value and checks every combination of values with the
cross-key rules (``harness.sweep_check``; a bad sweep stops before any job or run exists), so this sweeper
skips the second check. The check stays in the callback, not here: it runs before the parent run is
created and for any sweeper, and its ``SystemExit`` is the one exception Hydra does not turn into a warning.
Everything else is ``BasicSweeper``'s:
``hydra.sweeper.params``, ``max_batch_size``, the order of jobs. ``hydra/sweeper=basic`` restores it.

It also folds (``harness.fold``): jobs that differ only in the keys of ``hydra.sweeper.fold`` (default
``[seed, train.lr]``) run as one job that trains them as replicas, at most ``hydra.sweeper.max_replicas``
(default 30) per job; each replica still logs its own run, as the unfolded job would.
``hydra.sweeper.fold=[]`` runs one job per run; ``max_batch_size`` counts folded jobs.

Two stages (``hydra.sweeper.evaluation_seeds`` = n > 0, for learning-rate studies): the sweep as given is
stage 1 (the tuning seeds at every rate); then each triple's rate is chosen from stage 1's runs in the store, by
the report's own rule (``harness.report.tuning``), and stage 2 launches n new seeds (after the tuning seeds) at
each triple's chosen rate, folded the same way. One Hydra launch per stage; a failed stage-1 job stops the sweep
before stage 2 (the report is still written). ``hydra.sweeper.only`` keeps only the jobs that match one of its
entries (``"loss=cce activation=softmax"``: every override of the entry is one of the job's), for studies of
chosen (loss, activation) pairs rather than the full product.

It lives in ``hydra_plugins`` because Hydra instantiates sweepers only from that package (and has no
``from __future__ import annotations``: Hydra's plugin scan imports modules in a way that breaks it).
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper, BasicSweeperConf
from hydra.core.config_store import ConfigStore


@dataclass
class HarnessSweeperConf(BasicSweeperConf):
    _target_: str = "hydra_plugins.harness_sweeper.harness_sweeper.HarnessSweeper"
    fold: list[str] = field(default_factory=lambda: ["seed", "train.lr"])  # [] = one job per run
    max_replicas: int = 30  # replicas per folded job
    evaluation_seeds: int = 0  # > 0: a second stage of this many seeds, each triple at its chosen rate
    only: list[str] = field(default_factory=list)  # [] = every job; else keep the jobs matching an entry


ConfigStore.instance().store(group="hydra/sweeper", name="harness", node=HarnessSweeperConf, provider="harness")


def _refuse(message: str) -> None:
    """A sweeper key with a value it cannot use: one paragraph on stderr, exit status 2, before any job runs.
    (``SystemExit``: Hydra reports any other exception as a traceback; the sweep's parent run, which the sweep
    callback created before the sweeper, is then ended FAILED with no child.)"""
    import sys

    print(f"harness: error: {message}", file=sys.stderr)
    raise SystemExit(2)


class HarnessSweeper(BasicSweeper):
    """``BasicSweeper`` whose batch check is the sweep callback's validation of every swept value, and
    which folds jobs into replicas."""

    def __init__(
        self,
        max_batch_size: int | None,
        params: dict[str, str] | None = None,
        fold: list[str] | None = None,
        max_replicas: int = 30,
        evaluation_seeds: int = 0,
        only: list[str] | None = None,
    ) -> None:
        if evaluation_seeds < 0:
            _refuse(
                f"hydra.sweeper.evaluation_seeds={evaluation_seeds}: the number of evaluation seeds of a second "
                "stage must be 0 (one stage, the default) or a positive count, e.g. 20."
            )
        super().__init__(max_batch_size=max_batch_size, params=params)
        self.fold = list(fold) if fold is not None else []
        self.max_replicas = max_replicas
        self.evaluation_seeds = evaluation_seeds
        self.only = [entry.split() for entry in only or []]  # each entry: the overrides a kept job must all have
        self.stage_one: list[list[str]] = []  # the unfolded jobs of the sweep as given (stage 1 of two)

    def split_arguments(self, overrides: list[Any], max_batch_size: int | None) -> list[list[list[str]]]:
        """``BasicSweeper.split_arguments``, with the jobs folded (``harness.fold.fold_jobs``) before they are
        split into batches."""
        from harness.fold import fold_jobs, select_only

        jobs = BasicSweeper.split_arguments(overrides, None)[0]
        only = getattr(self, "only", [])
        if only:
            kept = select_only(jobs, only)
            if not kept:
                _refuse(
                    f"hydra.sweeper.only={[' '.join(e) for e in only]} matches none of the sweep's {len(jobs)} "
                    "jobs: each entry is a space-separated list of key=value overrides, all of which a job must have "
                    "(e.g. 'loss=cce activation=softmax', written as the sweep writes them)."
                )
            jobs = kept
        self.stage_one = jobs
        folded = fold_jobs(jobs, getattr(self, "fold", []), getattr(self, "max_replicas", 30))
        return list(BasicSweeper.split_overrides_to_chunks(folded, max_batch_size))

    def sweep(self, arguments: list[str]) -> Any:
        """``BasicSweeper.sweep``, with each folded job's launch line shortened to its run count and folded
        values (``harness.fold.LaunchLineFilter``): ``#0 : loss=bce ... [30 runs: seed=0..29]``; no launch lines
        unless ``tracking.run_lines=true`` (the sweep shows a progress bar)."""
        from harness.fold import install_launch_line_filter

        tracking = self.config.get("tracking") if self.config is not None else None
        install_launch_line_filter(quiet=not (tracking is not None and tracking.get("run_lines", False)))
        try:
            returns = super().sweep(arguments)
        finally:
            self._mask_saved_config()
        if getattr(self, "evaluation_seeds", 0) > 0:
            returns.extend(self._stage_two(initial_job_idx=sum(len(batch) for batch in returns)))
        return returns

    def _stage_two(self, initial_job_idx: int) -> list[Any]:
        """Choose each triple's rate from stage 1's runs, then launch the evaluation seeds at those rates."""
        from harness.fold import fold_jobs
        from harness.report.tuning import shift_jobs, stage_two

        plan = stage_two(self.config, self.stage_one, self.evaluation_seeds)
        print(plan.describe())
        if not plan.jobs:
            return []
        folded = shift_jobs(fold_jobs(plan.jobs, self.fold, self.max_replicas), len(self.stage_one))
        returns = []
        for batch in BasicSweeper.split_overrides_to_chunks(folded, self.max_batch_size):
            results = self.launcher.launch(batch, initial_job_idx=initial_job_idx)
            for r in results:
                _ = r.return_value  # as BasicSweeper: a failed job raises here
            initial_job_idx += len(batch)
            returns.append(results)
        return returns

    def _mask_saved_config(self) -> None:
        """Hydra saves the sweep's config as ``multirun.yaml`` in the sweep directory: mask the tracking URI's
        password there, as everywhere the harness writes one."""
        from pathlib import Path

        from harness.tracking import redact_uri

        uri = self.config.get("tracking", {}).get("uri") if self.config is not None else None
        saved = Path(self.config.hydra.sweep.dir, "multirun.yaml") if uri else None
        if saved is not None and saved.is_file() and redact_uri(uri) != uri:
            saved.write_text(saved.read_text().replace(uri, redact_uri(uri)))

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        """Nothing to do: ``SweepCallback.on_multirun_start`` checked every job of the sweep already."""
