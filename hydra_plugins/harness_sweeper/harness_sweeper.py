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


ConfigStore.instance().store(group="hydra/sweeper", name="harness", node=HarnessSweeperConf, provider="harness")


class HarnessSweeper(BasicSweeper):
    """``BasicSweeper`` whose batch check is the sweep callback's validation of every swept value, and
    which folds jobs into replicas."""

    def __init__(
        self,
        max_batch_size: int | None,
        params: dict[str, str] | None = None,
        fold: list[str] | None = None,
        max_replicas: int = 30,
    ) -> None:
        super().__init__(max_batch_size=max_batch_size, params=params)
        self.fold = list(fold) if fold is not None else []
        self.max_replicas = max_replicas

    def split_arguments(self, overrides: list[Any], max_batch_size: int | None) -> list[list[list[str]]]:
        """``BasicSweeper.split_arguments``, with the jobs folded (``harness.fold.fold_jobs``) before they are
        split into batches."""
        from harness.fold import fold_jobs

        jobs = BasicSweeper.split_arguments(overrides, None)[0]
        folded = fold_jobs(jobs, getattr(self, "fold", []), getattr(self, "max_replicas", 30))
        return list(BasicSweeper.split_overrides_to_chunks(folded, max_batch_size))

    def sweep(self, arguments: list[str]) -> Any:
        """``BasicSweeper.sweep``, with each folded job's launch line shortened to its run count and folded
        values (``harness.fold.LaunchLineFilter``): ``#0 : loss=bce ... [30 runs: seed=0..29]``; no launch lines
        unless ``tracking.run_lines=true`` (the sweep shows a progress bar)."""
        from harness.fold import install_launch_line_filter

        tracking = self.config.get("tracking") if self.config is not None else None
        install_launch_line_filter(quiet=not (tracking is not None and tracking.get("run_lines", False)))
        return super().sweep(arguments)

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        """Nothing to do: ``SweepCallback.on_multirun_start`` checked every job of the sweep already."""
