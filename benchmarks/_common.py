"""What every benchmark shares: the machine header, interleaved timing with medians, tables, ratio lines.

Absolute times on a shared machine are noisy; ratios of medians of *interleaved* repeats are not much:
each repeat runs every contender once, in turn, so a burst of load hits all of them alike.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def header(title: str, packages: tuple[str, ...] = ("numpy",), **settings: object) -> None:
    """Print the benchmark's title, the machine, its load, the library versions and the settings."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?", "?", "?")
    print(f"# {title}")
    print(f"machine: {cpu_model()}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}")
    print(f"load average (1/5/15 min) at start: {' / '.join(f'{x:.2f}' for x in load)}")
    versions = ", ".join(f"{p} {version(p)}" for p in packages)
    print(f"python {platform.python_version()}, {versions}")
    if settings:
        print("settings: " + ", ".join(f"{k}={v}" for k, v in settings.items()))
    print(flush=True)


def children_cpu() -> float:
    """CPU seconds (user + system) of every finished child process and its waited-for descendants.

    On a busy shared machine a command's wall time says more about the neighbours than about the command;
    its CPU time barely moves. CPU time / cores is what the wall time would be on an idle machine if the
    work spread perfectly over the cores.
    """
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def footer() -> None:
    """Print the load average at the end (the machine may be shared: compare with the one at the start)."""
    if hasattr(os, "getloadavg"):
        print(f"load average (1/5/15 min) at end: {' / '.join(f'{x:.2f}' for x in os.getloadavg())}")


def interleaved(
    contenders: dict[str, Callable[[], object]],
    repeats: int,
    factory: bool = False,
    cpu: dict[str, list[float]] | None = None,
) -> dict[str, list[float]]:
    """Wall times of ``repeats`` rounds; each round runs every contender once, in turn (round-robin).

    With ``factory=True`` each contender is a factory called untimed before each repeat (fresh weights,
    say) that returns the callable to time. A ``cpu`` dict receives this process's CPU times of the same
    runs (steadier than wall time when the machine is shared and the contenders are single-threaded).
    """
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            go = fn() if factory else fn
            start, start_cpu = time.perf_counter(), time.process_time()
            go()
            times[name].append(time.perf_counter() - start)
            if cpu is not None:
                cpu.setdefault(name, []).append(time.process_time() - start_cpu)
    return times


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def spread(xs: list[float]) -> str:
    """Median and the min–max range, e.g. ``0.123 s [0.120–0.131]``."""
    return f"{median(xs):.4g} s [{min(xs):.3g}–{max(xs):.3g}]"


def table(rows: list[list[str]], head: list[str]) -> None:
    """A GitHub-markdown table (readable in a terminal and pasteable into the README)."""
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    print(line(head))
    print("| " + " | ".join("-" * w for w in widths) + " |")
    for r in rows:
        print(line(r))
    print(flush=True)


def verdict(value: float, target: float, higher_is_better: bool = True) -> str:
    ok = value >= target if higher_is_better else value <= target
    return "MET" if ok else "MISSED"


def python() -> str:
    """The interpreter running this benchmark (its venv has the harness installed)."""
    return sys.executable


def timed(cmd: list[str], cwd: str, extra_env: dict[str, str] | None = None) -> tuple[float, float]:
    """Wall time and CPU time (of the command and every process it started) of ``cmd``."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PYTHONWARNINGS"] = "ignore"
    env.update(extra_env or {})
    start, cpu = time.perf_counter(), children_cpu()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - start, children_cpu() - cpu
    if proc.returncode != 0:
        raise SystemExit(f"failed after {wall:.1f} s: {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    return wall, cpu


def set_blas_threads(n: int | None) -> None:
    """Set the BLAS thread count for every process started from now on (None: leave it unset)."""
    if n is not None:
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(n)


def loop_arguments(description: str) -> argparse.Namespace:
    """The options of the per-step benchmarks (``bench_loop.py``, ``bench_replicas.py``); ``repeats`` is 3 with
    ``--quick``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds per case (median reported)")
    parser.add_argument(
        "--threads", type=int, default=1, help="BLAS / torch threads (default 1: the machine is shared)"
    )
    parser.add_argument("--quick", action="store_true", help="fewer epochs and 3 repeats: a smoke run")
    parser.add_argument("--only", default="", help="run only cases whose label contains this, e.g. 'xor'")
    args = parser.parse_args()
    if args.quick:
        args.repeats = 3
    return args


def import_torch(script: str):
    """``torch``, or exit saying how to install the pinned CPU build."""
    try:
        import torch
    except ImportError:
        raise SystemExit(f'{script} compares against PyTorch: pip install -e ".[bench]" (torch==2.13.0, CPU)') from None
    return torch


def products_only(weights: list, x_train, batch_sizes: list[int], epochs: int, dtype):
    """The GEMM-only floor: one network's matrix products of each step (forward z = a W, weight gradients
    aᵀ δ, back-propagated δ Wᵀ) into preallocated buffers, samples in rows; returns the callable to time."""
    import numpy as np

    w = [np.ascontiguousarray(v) for v in weights]
    buffers = {}
    for m in set(batch_sizes):
        x = np.ascontiguousarray(x_train[:m])
        acts = [x] + [np.full((m, v.shape[1]), 0.5, dtype) for v in w]  # aˡ (and z, which is the same shape)
        deltas = [np.full((m, v.shape[1]), 0.1, dtype) for v in w]
        grads = [np.empty_like(v) for v in w]
        buffers[m] = (acts, deltas, grads)
    plan = batch_sizes * epochs

    def go() -> None:
        for m in plan:
            acts, deltas, grads = buffers[m]
            for i, v in enumerate(w):
                np.matmul(acts[i], v, out=acts[i + 1])  # z = a W (forward)
            for i in range(len(w) - 1, -1, -1):
                np.matmul(acts[i].T, deltas[i], out=grads[i])  # ∂C/∂W = aᵀ δ
                if i > 0:
                    np.matmul(deltas[i], w[i].T, out=deltas[i - 1])  # δ Wᵀ

    return go
