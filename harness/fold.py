"""Folding a sweep: jobs that differ only in their seed and learning rate run as one job of replicas.

The sweeper (``hydra_plugins/harness_sweeper``) expands a sweep into jobs as Hydra's basic sweeper does, then
:func:`fold_jobs` groups the jobs whose overrides differ only in the keys of ``hydra.sweeper.fold`` (default
``[seed, train.lr]``) into one job, at most ``hydra.sweeper.max_replicas`` of them each. A folded job carries
its replicas in one config key, ``replicas``: one entry per unfolded job, with that job's number in the
unfolded sweep, its folded overrides and their positions on its override list. :func:`unfold` turns a job's
config back into the replicas' own configs and overrides, exactly those of the unfolded jobs (same params,
tags, config hash and run name), and the job trains them together (``harness.nn.training``).

Each entry is a JSON object (``$`` and ``'`` written as JSON escapes, so neither OmegaConf's interpolation
nor Hydra's quoting sees them) in a Hydra quoted string, e.g.
``replicas=['{"job": 3, "at": [1], "overrides": ["seed=3"]}', ...]``.
"""

from __future__ import annotations

import copy
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

# The keys the replica engine can vary between the networks of one stack.
FOLDABLE = ("seed", "train.lr")
REPLICAS_KEY = "replicas"


@dataclass
class Replica:
    """One unfolded job inside a job: its config (without ``replicas``), overrides and unfolded job number."""

    cfg: Any  # DictConfig
    overrides: list[str]
    job: int | None


def _key(override: str) -> str:
    return override.split("=", 1)[0]


def _entry(job: int, at: list[int], overrides: list[str]) -> str:
    text = json.dumps({"job": job, "at": at, "overrides": overrides})
    return "'" + text.replace("$", "\\u0024").replace("'", "\\u0027") + "'"


def fold_jobs(jobs: Sequence[Sequence[str]], fold: Sequence[str], max_replicas: int) -> list[list[str]]:
    """The override lists of the folded sweep, from those of the unfolded one (``jobs``, in job order).

    With ``fold`` empty, ``jobs`` unchanged. Otherwise every job, folded or not, carries a ``replicas``
    override (so each run keeps its unfolded job number): jobs with the same overrides outside ``fold``
    become one job, in order of their first job, split into jobs of at most ``max_replicas``.
    """
    fold = list(fold)
    problem = fold_problem(fold, max_replicas)
    if problem:
        raise ValueError(problem)
    if not fold:
        return [list(j) for j in jobs]
    groups: dict[tuple[str, ...], list[tuple[int, list[int], list[str]]]] = {}
    for num, overrides in enumerate(jobs):
        at = [i for i, o in enumerate(overrides) if _key(o) in fold]
        rest = tuple(o for i, o in enumerate(overrides) if i not in at)
        groups.setdefault(rest, []).append((num, at, [overrides[i] for i in at]))
    folded = []
    for rest, members in groups.items():
        for start in range(0, len(members), max_replicas):
            entries = ",".join(_entry(*m) for m in members[start : start + max_replicas])
            folded.append([*rest, f"{REPLICAS_KEY}=[{entries}]"])
    return folded


def select_only(jobs: Sequence[Sequence[str]], only: Sequence[Sequence[str]]) -> list[list[str]]:
    """The jobs (override lists) having every ``key=value`` of at least one entry of ``only`` (all if empty):
    ``hydra.sweeper.only``."""
    if not only:
        return [list(j) for j in jobs]
    return [list(j) for j in jobs if any(set(entry) <= set(j) for entry in only)]


def planned_runs(jobs: Sequence[Sequence[str]], evaluation_seeds: int) -> int:
    """How many runs a sweep of ``jobs`` (unfolded) trains: the jobs, plus, in a two-stage study, the evaluation
    seeds at one chosen rate per configuration (every override but ``seed`` and ``train.lr``)."""
    configurations = {tuple(o for o in j if _key(o) not in FOLDABLE) for j in jobs}
    return len(jobs) + evaluation_seeds * len(configurations)


def fold_problem(fold: Sequence[str], max_replicas: Any) -> str | None:
    """What is wrong with ``hydra.sweeper.fold`` / ``max_replicas`` (one paragraph), or None."""
    bad = [k for k in fold if k not in FOLDABLE]
    if bad:
        return (
            f"hydra.sweeper.fold={list(fold)}: only {', '.join(FOLDABLE)} can be folded (the replicas of a job are "
            f"one stack of networks and share everything else); not {', '.join(bad)}. Use e.g. "
            "hydra.sweeper.fold=[seed], or hydra.sweeper.fold=[] for one job per run."
        )
    if not isinstance(max_replicas, int) or max_replicas < 1:
        return (
            f"hydra.sweeper.max_replicas={max_replicas} must be an integer ≥ 1 (the most runs one folded job trains "
            "together; default 30)."
        )
    return None


def _parse_value(override: str) -> Any:
    """The value of ``key=value`` as Hydra's override parser reads it (e.g. ``2`` an int, ``0.5`` a float)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create().parse_override(override).value()


def strip(cfg: Any) -> Any:
    """``cfg`` without its ``replicas`` key (a copy): the config of one run, as an unfolded job has it."""
    from omegaconf import open_dict

    out = copy.deepcopy(cfg)
    if REPLICAS_KEY in out:
        with open_dict(out):
            del out[REPLICAS_KEY]
    return out


def unfold(cfg: Any, overrides: Sequence[str], job: int | None) -> list[Replica]:
    """The replicas of a job with config ``cfg``, override list ``overrides`` and number ``job``.

    Without ``replicas`` entries, the job itself (R = 1). Otherwise each entry's folded overrides are set on
    the config (``seed``, ``train.lr``, typed by the schema as Hydra would) and put back at their places in
    the override list, in place of the ``replicas`` override.
    """
    from omegaconf import OmegaConf

    entries = list(cfg.get(REPLICAS_KEY) or [])
    base = strip(cfg)
    rest = [o for o in overrides if _key(o).lstrip("+~") != REPLICAS_KEY]
    if not entries:
        return [Replica(base, rest, job)]
    replicas = []
    for text in entries:
        entry = json.loads(text)
        own = copy.deepcopy(base)
        task = list(rest)
        for position, override in sorted(zip(entry["at"], entry["overrides"])):
            key = _key(override)
            if key not in FOLDABLE:
                raise ValueError(f"replicas: {override!r} sets {key}; only {', '.join(FOLDABLE)} can vary")
            OmegaConf.update(own, key, _parse_value(override), merge=False)
            task.insert(position, override)
        replicas.append(Replica(own, task, int(entry["job"])))
    return replicas


# ------------------------------------------------------------------------------------------ launch lines

_LAUNCH_REPLICAS = re.compile(r" ?\b" + REPLICAS_KEY + r"=\[(.*)\]$")


def _values(values: list[str]) -> str:
    """``0,1,2,3,7`` → ``0..3,7`` (runs of consecutive integers collapsed); anything else as it is."""
    if not all(re.fullmatch(r"-?\d+", v) for v in values):
        return ",".join(values)
    parts, numbers = [], [int(v) for v in values]
    start = prev = numbers[0]
    for n in [*numbers[1:], None]:
        if n is not None and n == prev + 1:
            prev = n
            continue
        parts.append(str(start) if start == prev else f"{start}..{prev}" if prev > start + 1 else f"{start},{prev}")
        if n is not None:
            start = prev = n
    return ",".join(parts)


def describe(listing: str) -> str:
    """A folded job's ``replicas=[...]`` entries as one short phrase, e.g. ``30 runs: seed=0..29``, or
    ``30 runs: seed=0..9 train.lr=0.0316,0.1,0.316`` (each folded key's distinct values, in order)."""
    entries = [json.loads(e) for e in re.findall(r"'(\{.*?\})'", listing)]
    if not entries:
        raise ValueError(f"no replica entries in {listing!r}")
    seen: dict[str, list[str]] = {}
    for entry in entries:
        for override in entry["overrides"]:
            key, value = override.split("=", 1)
            if value not in seen.setdefault(key, []):
                seen[key].append(value)
    runs = f"{len(entries)} run" + ("s" if len(entries) != 1 else "")
    return f"{runs}: " + " ".join(f"{k}={_values(v)}" for k, v in seen.items()) if seen else runs


_LAUNCH_LINE = re.compile(r"^\s*#\d+ : ")


class LaunchLineFilter(logging.Filter):
    """Shortens a launcher's ``#3 : loss=bce ... replicas=['{"job": 90, ...}', ...]`` line (30 JSON entries on a
    folded job) to ``#3 : loss=bce ... [30 runs: seed=0..29]``, or drops launch lines altogether when ``quiet``
    (the sweep shows a progress bar instead); every other record passes unchanged."""

    def __init__(self, quiet: bool = False) -> None:
        super().__init__()
        self.quiet = quiet

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if self.quiet and _LAUNCH_LINE.match(message):
            return False
        match = _LAUNCH_REPLICAS.search(message) if "#" in message and REPLICAS_KEY in message else None
        if match:
            try:
                short = describe(match.group(1))
            except (ValueError, KeyError):  # not our JSON: leave the line alone
                return True
            record.msg, record.args = f"{message[: match.start()]} [{short}]", ()
        return True


# Hydra's launchers that print each job's overrides (``#3 : ...``) at INFO, from these loggers.
LAUNCHER_LOGGERS = (
    "hydra._internal.core_plugins.basic_launcher",
    "hydra_plugins.hydra_joblib_launcher._core",
    "hydra_plugins.hydra_ray_launcher._core",
)


def install_launch_line_filter(quiet: bool = False) -> None:
    """Put a :class:`LaunchLineFilter` on each launcher's logger, once (``quiet`` updated). On the loggers, not on
    handlers: a launcher reconfigures Hydra's logging (new handlers) when it starts launching."""
    for name in LAUNCHER_LOGGERS:
        logger = logging.getLogger(name)
        mine = [f for f in logger.filters if isinstance(f, LaunchLineFilter)]
        if mine:
            mine[0].quiet = quiet
        else:
            logger.addFilter(LaunchLineFilter(quiet))
