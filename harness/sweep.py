"""Hydra glue: the job function, and the callback that owns a sweep's parent run.

In a ``-m`` sweep the launching process, before any job starts (``on_multirun_start``): validates every
swept value, creates the MLflow store and experiment (so parallel jobs never race MLflow's first-use
schema creation) and the parent run, tagged with the sweep directory. Each job finds its parent by that
tag, which works in-process, in joblib workers and on Ray nodes alike. The parent is ended by
:func:`end_parent`, called from ``python -m harness``'s own ``finally`` because Hydra does not call
``on_multirun_end`` when a job failed.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from harness.config import ConfigError
from harness.names import BLAS_TAG, JOB_TAG, OVERRIDES_TAG, SWEEP_TAG, TAGS_TAG

_parent: dict[str, Any] = {}  # the launching process's parent run: {"run": Run, "sweep_dir": str}


def sweep_dir(cwd: str, directory: str) -> str:
    """Absolute sweep directory (the key that ties jobs to their parent run)."""
    return str(Path(cwd, directory).resolve())


def job(cfg: DictConfig) -> float | list[float]:
    """Hydra task function: train the job's runs; returns the final test accuracy (for optimising sweepers),
    one per replica in a list when the sweeper folded several runs into the job (``harness.fold``).

    With ``tracking.resume=true`` a run whose identical config already has a FINISHED run is skipped (in a
    folded job, each replica on its own).
    """
    from harness.app import report_config_error, run_name, run_replicas
    from harness.config import validate
    from harness.fold import unfold
    from harness.tracking import config_hash, find_finished, find_sweep_parent, resolve_uri

    hc = HydraConfig.get()
    cwd = hc.runtime.cwd
    uri = resolve_uri(cfg.tracking.uri, cwd)
    multirun = hc.mode == RunMode.MULTIRUN
    replicas = unfold(cfg, list(hc.overrides.task), hc.job.num if multirun else None)
    invalid: list[tuple[Any, ConfigError]] = []  # raised after the valid replicas trained, as separate jobs would
    for rep in list(replicas):
        try:
            validate(rep.cfg)
        except ConfigError as err:
            if not multirun:
                report_config_error(err)
            invalid.append((rep, err))
            replicas.remove(rep)
    accuracies: dict[int, float] = {}
    if cfg.tracking.resume:
        todo = []
        for i, rep in enumerate(replicas):
            digest = config_hash(OmegaConf.to_container(rep.cfg, resolve=True))
            done = find_finished(uri, rep.cfg.tracking.experiment, digest)
            if done is None:
                todo.append(i)
                continue
            print(f"harness: skipped {' '.join(rep.overrides)}: already FINISHED as run {done.info.run_id}")
            accuracies[i] = float(done.data.metrics.get("test_accuracy", float("nan")))
    else:
        todo = list(range(len(replicas)))
    if todo:
        parent, tags = None, [{} for _ in todo]
        if multirun:
            directory = sweep_dir(cwd, hc.sweep.dir)
            tags = [{JOB_TAG: str(replicas[i].job), OVERRIDES_TAG: " ".join(replicas[i].overrides)} for i in todo]
            if _parent.get("sweep_dir") == directory:
                parent = _parent["run"].run_id
            else:
                parent = find_sweep_parent(uri, cfg.tracking.experiment, directory)
        cfgs = [replicas[i].cfg for i in todo]
        try:
            with blas_limit(hc):
                for t in tags:
                    t[BLAS_TAG] = str(blas_pool_size())
                names = [run_name(replicas[i].cfg, with_lr=multirun and varies_lr(replicas[i].overrides)) for i in todo]
                results = run_replicas(cfgs, parent_run_id=parent, cwd=cwd, tags=tags, names=names)
        except ConfigError as err:
            if multirun:  # an ordinary exception: every launcher records a failed job
                raise ConfigError(f"job #{hc.job.num} ({' '.join(hc.overrides.task)}): {err}") from None
            report_config_error(err)
        for i, c, result, name in zip(todo, cfgs, results, names):
            print(summary_line(c, result, uri, name))
            accuracies[i] = float(result["test_accuracy"])
    if invalid:  # an ordinary exception: every launcher records a failed job
        rep, err = invalid[0]
        raise ConfigError(f"job #{rep.job} ({' '.join(rep.overrides)}): {err}")
    values = [accuracies[i] for i in range(len(replicas))]
    return values[0] if len(values) == 1 else values


def varies_lr(overrides: list[str]) -> bool:
    """Whether a sweep job's overrides set ``train.lr`` (then its run name carries the rate)."""
    return any(o.split("=", 1)[0].lstrip("+~") == "train.lr" for o in overrides)


def summary_line(cfg: DictConfig, result: dict[str, Any], uri: str, name: str) -> str:
    """One line per job: what ran, how it ended, its final numbers and where its run is."""
    return (
        f"harness: {name} on {cfg.dataset.name}: "
        f"{result['outcome']}, train_loss {result['train_loss']:.4g}, test_accuracy {result['test_accuracy']:.3f}; "
        f"run {result['run_id']} in {uri}"
    )


def blas_threads(hc: DictConfig) -> int | None:
    """BLAS threads for one job: 1 when a launcher runs jobs side by side, else None (no limit).

    Two jobs on two cores, each with a BLAS pool as wide as the machine, oversubscribe the cores; and at
    our sizes a second BLAS thread pays only from batch ≈ 128 (../shared/FACTS.md). Loky's own limit is
    an environment variable read when BLAS loads, so it misses a BLAS already loaded; threadpoolctl is not.
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

    from harness.sweep_check import check_sweep

    name = config.hydra.job.config_name
    return check_sweep(config, lambda overrides: compose(config_name=name, overrides=overrides))


class SweepCallback(Callback):
    """Checks every job of a sweep, then creates the store, experiment and parent run, before any job starts.

    A bad sweep stops here with ``SystemExit`` (status 2, one paragraph): Hydra turns any ``Exception`` a
    callback raises into a warning and goes on, but lets ``SystemExit`` through. The callback runs before
    the sweeper, whichever sweeper it is (``hydra/sweeper=harness`` or ``basic``), and before the parent run.
    """

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from harness.app import report_config_error

        try:
            validate_sweep(config)
        except ConfigError as err:
            report_config_error(err)
        except Exception as err:  # a bug in the check itself: stop rather than run an unchecked sweep
            print(f"harness: error: could not check the sweep: {err}", file=sys.stderr)
            raise SystemExit(1) from err
        try:
            self._start_parent(config)
        except Exception as err:  # Hydra would only warn and run every job without a parent
            print(f"harness: error: could not create the sweep's MLflow parent run: {err}", file=sys.stderr)
            raise SystemExit(1) from err

    def _start_parent(self, config: DictConfig) -> None:
        from harness.tracking import Run, ensure_experiment, resolve_uri

        uri = resolve_uri(config.tracking.uri, config.hydra.runtime.cwd)
        experiment_id = ensure_experiment(uri, config.tracking.experiment)
        directory = sweep_dir(config.hydra.runtime.cwd, config.hydra.sweep.dir)
        choices = config.hydra.runtime.choices
        name = choices.get("experiment") or "sweep"
        tags = {SWEEP_TAG: directory, OVERRIDES_TAG: " ".join(config.hydra.overrides.task)}
        if config.get("tags"):
            tags[TAGS_TAG] = ",".join(config.tags)
        run = Run.start(uri, config.tracking.experiment, name, tags)
        _parent.update(run=run, sweep_dir=directory, dashboard=(experiment_id, name))
        if config.get("report") and config.report.auto:  # presets ask for a report at the end of the sweep
            out = str(Path(config.hydra.runtime.cwd, config.report.out))
            _parent["report"] = (config.tracking.experiment, uri, out)
        print(f"harness: sweep parent run {run.run_id} in experiment {config.tracking.experiment!r} at {uri}")

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        end_parent("FINISHED")


def end_parent(status: str) -> None:
    """End the sweep's parent run, if this process started one (idempotent).

    First ends any child still RUNNING as KILLED (its worker was killed before its own ``finally``) and
    says which jobs did not finish and where their runs are. Then, if the sweep asked for it
    (``report.auto``) and was not interrupted, writes its report (also when jobs failed); a report that
    fails is printed, never raised, and the parent run is ended anyway. Last, it saves the sweep's view in
    the MLflow UI and prints the link to it on a line that starts with ``dashboard:``.
    """
    run = _parent.pop("run", None)
    _parent.pop("sweep_dir", None)
    report = _parent.pop("report", None)
    dashboard = _parent.pop("dashboard", None)
    if run is None:
        return
    try:
        report_children(run.uri, run.run_id)
        if report is not None and status != "KILLED":
            _write_report(*report, parent_run_id=run.run_id)
        if dashboard is not None:
            _print_dashboard(run.uri, *dashboard, parent_run_id=run.run_id)
    finally:
        run.end(status)


def _print_dashboard(uri: str, experiment_id: str, name: str, parent_run_id: str) -> None:
    """Save the sweep's views (:mod:`harness.tracking.dashboard`) and print the link; never raises."""
    try:
        from harness.tracking.dashboard import create_dashboard

        url = create_dashboard(uri, experiment_id, parent_run_id, name=name)
    except Exception as err:  # noqa: BLE001  (a view must not stop the parent run from ending)
        print(f"harness: warning: no dashboard for the sweep: {err}", file=sys.stderr)
        return
    hint = "" if uri.startswith(("http://", "https://")) else f"  (open it after: mlflow ui --backend-store-uri {uri})"
    print(f"dashboard: {url}{hint}")


def _write_report(experiment: str, uri: str, out: str, parent_run_id: str) -> None:
    try:
        from harness.report.notebook import after_sweep

        after_sweep(experiment, uri, parent_run_id, out)
    except Exception as err:  # noqa: BLE001  (the sweep's own status matters more than its report)
        print(f"harness: warning: no report for {experiment!r}: {err}", file=sys.stderr)


def report_children(uri: str, parent_run_id: str) -> None:
    """End orphaned children KILLED; print every child that is not FINISHED, with its run id and URL."""
    from harness.tracking import children, end_orphans, run_url

    runs = children(uri, parent_run_id)
    orphans = {r.info.run_id for r in end_orphans(uri, runs, "KILLED")}
    bad = [r for r in runs if r.info.run_id in orphans or r.info.status != "FINISHED"]
    if not bad:
        return
    print(f"harness: {len(bad)} of {len(runs)} jobs did not finish:", file=sys.stderr)
    for r in sorted(bad, key=lambda r: int(r.data.tags.get(JOB_TAG, "0"))):
        status = "KILLED" if r.info.run_id in orphans else r.info.status
        job_no, overrides = r.data.tags.get(JOB_TAG, "?"), r.data.tags.get(OVERRIDES_TAG, "")
        url = run_url(uri, r.info.experiment_id, r.info.run_id)
        print(f"  #{job_no} {r.info.run_name} {status} ({overrides}): run {r.info.run_id} {url}", file=sys.stderr)
    if not uri.startswith(("http://", "https://")):
        print(f"  (see them with: mlflow ui --backend-store-uri {uri})", file=sys.stderr)
