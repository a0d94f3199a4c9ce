"""Hydra glue: the job function, and the callback that owns a sweep's parent run.

In a ``-m`` sweep the launching process, before any job starts (``on_multirun_start``): validates every
swept value, creates the MLflow store and experiment (so parallel jobs never race MLflow's first-use
schema creation) and the parent run, tagged with the sweep directory. Each job finds its parent by that
tag, which works in-process, in joblib workers and on Ray nodes alike. The callback owns the sweep
(:class:`Sweep`, no module state) and ends it in ``on_multirun_end``, or, since Hydra does not call that when a
job failed, when the process exits.
"""

from __future__ import annotations

import atexit
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache, partial
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from harness.config import ConfigError
from harness.names import BLAS_TAG, JOB_TAG, OVERRIDES_TAG, SWEEP_TAG, TAGS_TAG


def sweep_dir(cwd: str, directory: str) -> str:
    """Absolute sweep directory (the key that ties jobs to their parent run)."""
    return str(Path(cwd, directory).resolve())


def job(cfg: DictConfig) -> float | list[float]:
    """Hydra task function: train the job's runs; returns the final test accuracy (for optimising sweepers),
    one per replica in a list when the sweeper folded several runs into the job (``harness.fold``).

    Reads top to bottom: the job's run configs (unfolded, each validated once), the ones to skip
    (``tracking.resume=true``: a run whose identical config already has a FINISHED run), then training and
    recording the rest as one stack. An invalid run fails the job after the valid ones trained, as separate
    jobs would; outside a sweep it stops the command (one paragraph, exit status 2).
    """
    from harness.app import check, report_config_error, run_name, train_and_record
    from harness.fold import unfold
    from harness.tracking import resolve_uri

    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    uri = resolve_uri(cfg.tracking.uri, hc.runtime.cwd)
    replicas = unfold(cfg, list(hc.overrides.task), hc.job.num if multirun else None)
    errors = [check(rep.cfg) for rep in replicas]
    invalid = [(rep, err) for rep, err in zip(replicas, errors) if err is not None]
    if not multirun:  # a sweep's launching process checked all of this before any job
        if invalid:
            report_config_error(invalid[0][1])
        check_store_or_exit(uri)
    valid = [rep for rep, err in zip(replicas, errors) if err is None]
    parent = find_parent(uri, cfg.tracking.experiment, sweep_dir(hc.runtime.cwd, hc.sweep.dir)) if multirun else None
    accuracies, todo = skip_finished(valid, uri, parent) if cfg.tracking.resume else ({}, valid)
    if todo:
        names = [run_name(rep.cfg, with_lr=multirun and varies_lr(rep.overrides)) for rep in todo]
        tags = [run_tags(rep) for rep in todo] if multirun else None
        with blas_limit(hc):
            for t in tags or []:
                t[BLAS_TAG] = str(blas_pool_size())
            cfgs = [rep.cfg for rep in todo]
            results = train_and_record(cfgs, parent_run_id=parent, cwd=hc.runtime.cwd, tags=tags, names=names,
                                       epoch_bar=not multirun)  # fmt: skip
        for rep, result, name in zip(todo, results, names):
            if not multirun or cfg.tracking.run_lines:
                print(summary_line(rep.cfg, result, uri, name))
            accuracies[id(rep)] = float(result["test_accuracy"])
    if invalid:  # an ordinary exception: every launcher records a failed job
        rep, err = invalid[0]
        raise ConfigError(f"job #{rep.job} ({shown_overrides(rep.overrides)}): {err}")
    values = [accuracies[id(rep)] for rep in valid]
    return values[0] if len(values) == 1 else values


def skip_finished(replicas: list, uri: str, parent: str | None) -> tuple[dict[int, float], list]:
    """``tracking.resume=true``: the final test accuracy of each replica that already has a FINISHED run with its
    config hash (by ``id`` of the replica), and the replicas still to train. In a sweep the finished runs are
    adopted by its parent (:func:`harness.tracking.study.adopt_runs`): the study's report, table, dashboard and
    configuration runs count every run once, those of the interrupted sweep included."""
    from harness.tracking import config_hash, find_finished
    from harness.tracking.study import adopt_runs

    done, todo, finished_ids = {}, [], []
    for rep in replicas:
        digest = config_hash(OmegaConf.to_container(rep.cfg, resolve=True))
        finished = find_finished(uri, rep.cfg.tracking.experiment, digest)
        if finished is None:
            todo.append(rep)
            continue
        if rep.cfg.tracking.run_lines:
            print(f"harness: skipped {shown_overrides(rep.overrides)}: already FINISHED as run {finished.info.run_id}")
        done[id(rep)] = float(finished.data.metrics.get("test_accuracy", float("nan")))
        finished_ids.append(finished.info.run_id)
    if parent is not None and finished_ids:
        adopt_runs(uri, parent, finished_ids)
    return done, todo


def check_store_or_exit(uri: str) -> None:
    """:func:`harness.tracking.check_store`, its error as one paragraph and exit status 2."""
    from harness.app import report_config_error
    from harness.tracking import StoreError, check_store

    try:
        check_store(uri)
    except StoreError as err:
        report_config_error(err)


def run_tags(rep: Any) -> dict[str, str]:
    """A sweep run's tags: its job number in the unfolded sweep and its overrides (passwords masked)."""
    return {JOB_TAG: str(rep.job), OVERRIDES_TAG: shown_overrides(rep.overrides)}


def shown_overrides(overrides: Any) -> str:
    """Overrides as one line to print or store, every URI's password masked (``tracking.uri=...``)."""
    from harness.tracking import redact_overrides

    return " ".join(redact_overrides(overrides))


@lru_cache(maxsize=8)
def find_parent(uri: str, experiment: str, directory: str) -> str | None:
    """The sweep's parent run, found by its ``harness.sweep_dir`` tag (the same from the launching process, a
    joblib worker or a Ray node); looked up once per process and sweep."""
    from harness.tracking import find_sweep_parent

    return find_sweep_parent(uri, experiment, directory)


def varies_lr(overrides: list[str]) -> bool:
    """Whether a sweep job's overrides set ``train.lr`` (then its run name carries the rate)."""
    return any(o.split("=", 1)[0].lstrip("+~") == "train.lr" for o in overrides)


def summary_line(cfg: DictConfig, result: dict[str, Any], uri: str, name: str) -> str:
    """One line per run: what ran, how it ended, its final numbers and where its run is (password masked)."""
    from harness.tracking import redact_uri

    return (
        f"harness: {name} on {cfg.dataset.name}: "
        f"{result['outcome']}, train_loss {result['train_loss']:.4g}, test_accuracy {result['test_accuracy']:.3f}; "
        f"run {result['run_id']} in {redact_uri(uri)}"
    )


def blas_threads(hc: DictConfig) -> int | None:
    """BLAS threads for one job: 1 when a launcher runs jobs side by side, else None (no limit).

    Two jobs on two cores, each with a BLAS pool as wide as the machine, oversubscribe the cores; and at our
    sizes a second BLAS thread pays only from batch ≈ 128 (``benchmarks/bench_loop.py --threads 2``). Loky's own
    limit is an environment variable read when BLAS loads, so it misses a BLAS already loaded; threadpoolctl
    is not.
    """
    if hc.mode != RunMode.MULTIRUN:
        return None
    target = str(hc.launcher.get("_target_", ""))
    if target.endswith("BasicLauncher"):
        return None
    if target.endswith("JoblibLauncher") and hc.launcher.get("n_jobs") == 1:
        return None
    return 1


def blas_pool_size() -> int:
    """Threads of the widest BLAS pool loaded in this process (recorded as tag ``harness.blas_threads``)."""
    from threadpoolctl import threadpool_info

    return max((p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"), default=0)


def blas_limit(hc: DictConfig):
    """Context manager that applies :func:`blas_threads` (and restores the pool after the job)."""
    from contextlib import nullcontext

    from threadpoolctl import threadpool_limits

    threads = blas_threads(hc)
    return nullcontext() if threads is None else threadpool_limits(limits=threads, user_api="blas")


def validate_sweep(config: DictConfig) -> int:
    """Check every job of the sweep (``harness.sweep_check``) before any job or run exists; returns the
    number of jobs. Raises :class:`ConfigError`."""
    from hydra import compose

    from harness.fold import fold_problem
    from harness.sweep_check import check_sweep

    sweeper = config.hydra.sweeper
    if "fold" in sweeper:  # the harness sweeper's own keys: checked here, before the parent run exists
        problem = fold_problem(list(sweeper.fold), sweeper.get("max_replicas", 30)) or stage_problem(config)
        if problem:
            raise ConfigError(f"Invalid sweep: {problem}")
    name = config.hydra.job.config_name
    return check_sweep(config, lambda overrides: compose(config_name=name, overrides=overrides))


class SweepCallback(Callback):
    """Checks every job of a sweep, then creates the store, experiment and parent run, before any job starts;
    owns the sweep (:class:`Sweep`) until it ends.

    A bad sweep stops here with ``SystemExit`` (status 2, one paragraph): Hydra turns any ``Exception`` a
    callback raises into a warning and goes on, but lets ``SystemExit`` through. The callback runs before
    the sweeper, whichever sweeper it is (``hydra/sweeper=harness`` or ``basic``), and before the parent run.
    Hydra calls ``on_multirun_end`` only when every job succeeded; otherwise the sweep ends itself when the
    process exits (:meth:`Sweep.watch`).
    """

    def __init__(self) -> None:
        self.sweep: Sweep | None = None

    def __getstate__(self) -> dict[str, Any]:
        # The joblib and Ray launchers pickle Hydra's context, this callback included, for every job: the sweep
        # (its client, its progress thread) stays in the launching process, the one that ends it.
        return {**self.__dict__, "sweep": None}

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from harness.app import report_config_error

        try:
            total = validate_sweep(config)
        except ConfigError as err:
            report_config_error(err)
        except Exception as err:  # a bug in the check itself: stop rather than run an unchecked sweep
            print(f"harness: error: could not check the sweep: {err}", file=sys.stderr)
            raise SystemExit(1) from err
        from harness.tracking import resolve_uri

        check_store_or_exit(resolve_uri(config.tracking.uri, config.hydra.runtime.cwd))
        try:
            self.sweep = Sweep.start(config, total)
        except Exception as err:  # Hydra would only warn and run every job without a parent
            print(f"harness: error: could not create the sweep's MLflow parent run: {err}", file=sys.stderr)
            raise SystemExit(1) from err
        self.sweep.watch()

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.sweep is not None:
            self.sweep.end("FINISHED")


@dataclass
class Sweep:
    """A sweep's parent run, in the launching process, and what happens when the sweep ends: its configuration
    runs, its table, its report, its dashboard, and the end of every run it left unfinished."""

    run: Any  # harness.tracking.Run
    directory: str  # the sweep directory: the tag jobs find the parent by
    experiment_id: str
    name: str  # the preset's name, or "sweep"
    report: tuple[str, str, str] | None = None  # (experiment, uri, out directory) when the preset asks for one
    tuning_seeds: int = 0  # a two-stage rate study: the seeds of stage 1 (its chosen rates carry more)
    progress: Any = None  # harness.tracking.progress.StudyProgress while the sweep runs
    interrupted: bool = False
    ended: bool = False

    @classmethod
    def start(cls, config: DictConfig, total: int = 0) -> Sweep:
        """Create the store, the experiment and the parent run (tagged with the sweep directory); on
        ``tracking.resume=true`` end KILLED what a killed launching process of the same study left RUNNING; show
        a progress bar over the ``total`` runs (unless ``tracking.run_lines=true``)."""
        from harness.tracking import Run, ensure_experiment, redact_uri, resolve_uri

        cwd = config.hydra.runtime.cwd
        uri = resolve_uri(config.tracking.uri, cwd)
        experiment_id = ensure_experiment(uri, config.tracking.experiment)
        directory = sweep_dir(cwd, config.hydra.sweep.dir)
        name = config.hydra.runtime.choices.get("experiment") or "sweep"
        overrides = shown_overrides(config.hydra.overrides.task)
        tags = {SWEEP_TAG: directory, OVERRIDES_TAG: overrides}
        if config.get("tags"):
            tags[TAGS_TAG] = ",".join(config.tags)
        run = Run.start(uri, config.tracking.experiment, name, tags)
        report = None
        if config.get("report") and config.report.auto:  # presets ask for a report at the end of the sweep
            report = (config.tracking.experiment, uri, str(Path(cwd, config.report.out)))
        print(f"harness: sweep parent run {run.run_id} in experiment {config.tracking.experiment!r} at "
              f"{redact_uri(uri)}")  # fmt: skip
        sweep = cls(run, directory, experiment_id, name, report, tuning_seeds=_tuning_seeds(config))
        if config.tracking.resume:
            sweep.end_stale(config.tracking.experiment, overrides)
        if not config.tracking.run_lines and total:
            sweep.show_progress(config.tracking.experiment, planned_total(config))
        return sweep

    def end_stale(self, experiment: str, overrides: str) -> None:
        from harness.tracking.study import end_stale_runs

        ended = end_stale_runs(self.run.uri, experiment, overrides, current_parent_run_id=self.run.run_id)
        if ended:
            print(f"harness: ended {len(ended)} runs KILLED that a killed earlier launch of this study left RUNNING")

    def show_progress(self, experiment: str, total: int) -> None:
        from harness.tracking.progress import StudyProgress

        self.progress = StudyProgress(self.run.uri, experiment, self.run.run_id, total).__enter__()

    def watch(self) -> None:
        """End the sweep when the process exits, if nothing ended it before (a job failed, or Ctrl-C / SIGTERM:
        then KILLED, which this notes from the signal handlers it chains in front of the current ones)."""
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous = signal.getsignal(signum)
            if callable(previous):
                signal.signal(signum, partial(self._on_signal, previous))
        atexit.register(self._at_exit)

    def _on_signal(self, previous: Callable, signum: int, frame: Any) -> None:
        self.interrupted = True
        previous(signum, frame)

    def _at_exit(self) -> None:
        self.end("KILLED" if self.interrupted else "FAILED")

    def end(self, status: str) -> None:
        """End the parent run with ``status`` (idempotent).

        First ends any child still RUNNING as KILLED (its worker was killed before its own ``finally``) and
        says which jobs did not finish and where their runs are. Then, unless interrupted, it writes the study's
        configuration runs and prints its table; if the sweep asked for it (``report.auto``) writes its report
        (also when jobs failed); saves the sweep's views in the MLflow UI and prints the link to them on a line
        that starts with ``dashboard:``. A step that fails is printed, never raised, and the parent run is ended
        anyway.
        """
        if self.ended:
            return
        self.ended = True
        if self.progress is not None:
            self.progress.__exit__(None, None, None)
        uri, parent = self.run.uri, self.run.run_id
        try:
            report_children(uri, parent)
            if status != "KILLED":
                _best_effort("no configuration runs for the sweep", self._configurations)
                if self.report is not None:
                    _write_report(*self.report, parent_run_id=parent)
            _print_dashboard(uri, self.experiment_id, self.name, parent_run_id=parent, chosen=self.tuning_seeds > 0)
        finally:
            self.run.end(status)

    def _configurations(self) -> None:
        """The configuration runs (:mod:`harness.tracking.study`), the chosen rates marked, and the table."""
        from harness.names import SEEDS
        from harness.tracking.study import configuration_runs, mark_chosen, study_table, write_configuration_runs

        uri, parent = self.run.uri, self.run.run_id
        ids = write_configuration_runs(uri, parent)
        if self.tuning_seeds and ids:  # stage 2 added evaluation seeds at each triple's chosen rate only
            runs = configuration_runs(uri, parent, self.experiment_id)
            mark_chosen(uri, [r.info.run_id for r in runs if r.data.metrics.get(SEEDS, 0) > self.tuning_seeds])
        print(study_table(uri, parent))


def _tuning_seeds(config: DictConfig) -> int:
    """A two-stage study (``hydra.sweeper.evaluation_seeds`` > 0): how many seeds stage 1 sweeps; else 0."""
    from harness.sweep_check import sweep_params

    if not config.hydra.sweeper.get("evaluation_seeds"):
        return 0
    return len(dict(sweep_params(config)[1]).get("seed", ["0"]))


def planned_jobs(config: DictConfig) -> tuple[list[list[str]], int]:
    """The sweep's unfolded jobs (override lists) that ``hydra.sweeper.only`` keeps, and how many there are in
    all, as the harness sweeper makes them."""
    import itertools

    from harness.fold import select_only
    from harness.sweep_check import sweep_params

    fixed, swept = sweep_params(config)
    jobs = [[*fixed, *(f"{k}={v}" for k, v in zip([k for k, _ in swept], combo))]
            for combo in itertools.product(*(values for _, values in swept))]  # fmt: skip
    only = [entry.split() for entry in config.hydra.sweeper.get("only") or []]
    return select_only(jobs, only), len(jobs)


def planned_total(config: DictConfig) -> int:
    """The runs the sweep will train (the progress bar's total): the jobs ``hydra.sweeper.only`` keeps, plus a
    two-stage study's evaluation runs (:func:`harness.fold.planned_runs`)."""
    from harness.fold import planned_runs

    return planned_runs(planned_jobs(config)[0], config.hydra.sweeper.get("evaluation_seeds") or 0)


def stage_problem(config: DictConfig) -> str | None:
    """What is wrong with ``hydra.sweeper.evaluation_seeds`` / ``only`` (one paragraph), or None."""
    sweeper = config.hydra.sweeper
    seeds = sweeper.get("evaluation_seeds") or 0
    if seeds < 0:
        return (
            f"hydra.sweeper.evaluation_seeds={seeds}: the number of evaluation seeds of a second stage must be 0 "
            "(one stage, the default) or a positive count, e.g. 20."
        )
    kept, total = planned_jobs(config)
    if sweeper.get("only") and not kept:
        return (
            f"hydra.sweeper.only={list(sweeper.only)} matches none of the sweep's {total} jobs: each entry is a "
            "space-separated list of key=value overrides, all of which a job must have (e.g. "
            "'loss=cce activation=softmax', written as the sweep writes them)."
        )
    return None


def _best_effort(what: str, fn: Callable[[], None]) -> None:
    try:
        fn()
    except Exception as err:  # noqa: BLE001  (the sweep's own status matters more)
        print(f"harness: warning: {what}: {err}", file=sys.stderr)


def _print_dashboard(uri: str, experiment_id: str, name: str, parent_run_id: str, chosen: bool = False) -> None:
    """Save the sweep's views (:mod:`harness.tracking.dashboard`) and print the link; never raises."""
    from harness.tracking import redact_uri

    try:
        from harness.tracking.dashboard import create_dashboard

        url = create_dashboard(uri, experiment_id, parent_run_id, name=name, chosen=chosen)
    except Exception as err:  # noqa: BLE001  (a view must not stop the parent run from ending)
        print(f"harness: warning: no dashboard for the sweep: {err}", file=sys.stderr)
        return
    shown = redact_uri(uri)
    hint = f"  (open it after: mlflow ui --backend-store-uri {shown})"
    if uri.startswith(("http://", "https://")):
        hint = ""
    print(f"dashboard: {url}{hint}")


def _write_report(experiment: str, uri: str, out: str, parent_run_id: str) -> None:
    try:
        from harness.report.notebook import after_sweep

        after_sweep(experiment, uri, parent_run_id, out)
    except Exception as err:  # noqa: BLE001  (the sweep's own status matters more than its report)
        print(f"harness: warning: no report for {experiment!r}: {err}", file=sys.stderr)


def report_children(uri: str, parent_run_id: str) -> None:
    """End orphaned children KILLED; print every child that is not FINISHED, with its run id and URL."""
    from harness.tracking import children, end_orphans, redact_uri, run_url

    runs = children(uri, parent_run_id)
    orphans = {r.info.run_id for r in end_orphans(uri, runs, "KILLED")}
    bad = [r for r in runs if r.info.run_id in orphans or r.info.status != "FINISHED"]
    if not bad:
        return
    print(f"harness: {len(bad)} of {len(runs)} jobs did not finish:", file=sys.stderr)
    for r in sorted(bad, key=lambda r: int(r.data.tags.get(JOB_TAG, "0"))):
        status = "KILLED" if r.info.run_id in orphans else r.info.status
        job_no, overrides = r.data.tags.get(JOB_TAG, "?"), r.data.tags.get(OVERRIDES_TAG, "")  # masked when stored
        url = run_url(uri, r.info.experiment_id, r.info.run_id)
        print(f"  #{job_no} {r.info.run_name} {status} ({overrides}): run {r.info.run_id} {url}", file=sys.stderr)
    if not uri.startswith(("http://", "https://")):
        print(f"  (see them with: mlflow ui --backend-store-uri {redact_uri(uri)})", file=sys.stderr)
