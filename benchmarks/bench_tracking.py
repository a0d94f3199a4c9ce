"""Benchmark 2: what tracking and the harness cost beyond training, on real sweeps.

    python benchmarks/bench_tracking.py            # an XOR sweep of 12 seeds and an MNIST sweep of 3, ×3

Each sweep is a real ``python -m harness -m ...`` (basic launcher, fresh SQLite store in a temporary
directory), run through ``_timed_harness.py``, which times, inside the process: every job, the training
inside it (``train()``: SGD plus the per-epoch metrics, less the metric logging it calls), and every
MLflow call the harness makes (run start, params, config text, dataset input, metric batches, tags,
end). Reported, medians over jobs and repeats:

- MLflow share: time in MLflow calls / the job's wall time (target ≤ 5 %);
- per-job overhead: job wall time − training time (validation, data loading, model build, MLflow; the
  first job of a process also loads the data set and imports MLflow, so medians need ≥ 3 jobs) plus
  Hydra's gap between one job's end and the next one's start (target ≤ 0.15 s);
- launch: process start to the first job (imports, Hydra, sweep validation, store, parent run), paid
  once per sweep, and ``import mlflow`` on its own.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, footer, header, median, python, table, verdict  # noqa: E402

TIMED = Path(__file__).resolve().parent / "_timed_harness.py"

SWEEPS = {
    "xor": ["dataset=xor", "seed=range(0,{n})"],
    "mnist": ["dataset=mnist", "loss=cce", "activation=softmax", "seed=range(0,{n})"],
}


def run_sweep(dataset: str, n_jobs: int, extra: list[str]) -> tuple[list[dict], dict, float]:
    """One instrumented sweep in a fresh directory: per-job records, the process record, outer wall time."""
    with tempfile.TemporaryDirectory(prefix="bench-tracking-") as tmp:
        timings = Path(tmp, "timings.jsonl")
        overrides = [o.format(n=n_jobs) for o in SWEEPS[dataset]] + extra
        cmd = [python(), str(TIMED), "-m", *overrides, f"hydra.sweep.dir={tmp}/multirun"]
        env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
        env.update(BENCH_TIMINGS=str(timings), PYTHONWARNINGS="ignore")
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True)
        outer = time.perf_counter() - start
        if proc.returncode != 0:
            raise SystemExit(f"sweep failed ({' '.join(cmd)}):\n{proc.stderr[-3000:]}")
        records = [json.loads(line) for line in timings.read_text().splitlines()]
    jobs = [r for r in records if "process" not in r]
    process = next(r for r in records if "process" in r)
    return jobs, process, outer


def import_cost(module: str, repeats: int) -> float:
    """Median extra wall time of ``python -c 'import module'`` over ``python -c pass``, interleaved."""
    diffs = []
    for _ in range(repeats):
        t = []
        for code in ("pass", f"import {module}"):
            start = time.perf_counter()
            subprocess.run([python(), "-c", code], check=True)
            t.append(time.perf_counter() - start)
        diffs.append(t[1] - t[0])
    return median(diffs)


def summarise(dataset: str, runs: list[tuple[list[dict], dict, float]]) -> tuple[list[str], dict[str, float]]:
    jobs = [j for js, _, _ in runs for j in js]
    gaps = [b["start"] - a["end"] for js, _, _ in runs for a, b in zip(js, js[1:])]
    share = median([j["mlflow"] / j["wall"] for j in jobs])
    in_job = median([j["wall"] - j["train"] for j in jobs])
    gap = median(gaps) if gaps else 0.0
    launch = median([js[0]["start"] for js, _, _ in runs])
    stats = {
        "share": share,
        "overhead": in_job + gap,
        "in_job": in_job,
        "gap": gap,
        "mlflow": median([j["mlflow"] for j in jobs]),
        "wall": median([j["wall"] for j in jobs]),
        "train": median([j["train"] for j in jobs]),
        "launch": launch,
        "import": median([p["import"] for _, p, _ in runs]),
        "outer": median([o for _, _, o in runs]),
    }
    row = [
        dataset,
        str(len(runs[0][0])),
        f"{stats['outer']:.2f}",
        f"{stats['launch']:.2f}",
        f"{stats['wall']:.3f}",
        f"{stats['train']:.3f}",
        f"{stats['mlflow']:.3f}",
        f"{share:.1%}",
        f"{in_job:.3f}",
        f"{gap:.3f}",
        f"{stats['overhead']:.3f}",
    ]
    return row, stats


def breakdown(runs: dict[str, list]) -> None:
    """Median milliseconds per job in each kind of MLflow call (the outermost call counts)."""
    rows = []
    for dataset, r in runs.items():
        jobs = [j for js, _, _ in r for j in js]
        calls = sorted({k for j in jobs for k in j if k.startswith("mlflow.")})
        rows += [
            [dataset, c.removeprefix("mlflow."), f"{median([j.get(c, 0.0) for j in jobs]) * 1e3:.1f}"] for c in calls
        ]
    print("MLflow time per job by call (median ms; log_metrics includes the flushes it triggers):")
    table(rows, ["sweep", "call", "ms per job"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="sweeps per dataset, interleaved")
    parser.add_argument("--xor-jobs", type=int, default=12)
    parser.add_argument("--mnist-jobs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="1 repeat, 4 XOR jobs, 2 MNIST jobs")
    parser.add_argument("extra", nargs="*", help="extra overrides for every job, e.g. train.eval_every=10")
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.xor_jobs, args.mnist_jobs = 1, 4, 2
    header(
        "Tracking cost and per-job harness overhead (basic launcher, SQLite store)",
        ("numpy", "mlflow", "hydra-core", "omegaconf"), repeats=args.repeats, xor_jobs=args.xor_jobs,
        mnist_jobs=args.mnist_jobs, extra=" ".join(args.extra) or "none", root=ROOT,
    )  # fmt: skip
    n = {"xor": args.xor_jobs, "mnist": args.mnist_jobs}
    runs: dict[str, list] = {d: [] for d in SWEEPS}
    for _ in range(args.repeats):
        for dataset in SWEEPS:
            runs[dataset].append(run_sweep(dataset, n[dataset], args.extra))
    rows, stats = [], {}
    for dataset, r in runs.items():
        rows.append(summarise(dataset, r)[0])
        stats[dataset] = summarise(dataset, r)[1]
    table(
        rows,
        ["sweep", "jobs", "total s", "launch s", "job s", "train s", "mlflow s", "mlflow share", "job−train s",
         "hydra gap s", "overhead/job s"],
    )  # fmt: skip
    breakdown(runs)
    mlflow_import = import_cost("mlflow", max(args.repeats, 3))
    print("## Ratios (medians over jobs and repeats)")
    for dataset, s in stats.items():
        print(
            f"{dataset}: MLflow calls take {s['share']:.1%} of a run's wall time ({s['mlflow'] * 1e3:.0f} ms of "
            f"{s['wall'] * 1e3:.0f} ms; training {s['train'] * 1e3:.0f} ms)  "
            f"target ≤ 5 %: {verdict(s['share'], 0.05, False)}"
        )
        print(
            f"{dataset}: harness overhead per sweep job {s['overhead'] * 1e3:.0f} ms (in the job beyond training "
            f"{s['in_job'] * 1e3:.0f} ms + Hydra between jobs {s['gap'] * 1e3:.0f} ms)  target ≤ 0.15 s: "
            f"{verdict(s['overhead'], 0.15, False)}"
        )
    xor = stats["xor"]
    print(
        f"once per sweep: launch to first job {xor['launch']:.2f} s (of which importing the harness CLI "
        f"{xor['import']:.2f} s); `import mlflow` alone {mlflow_import:.2f} s"
    )
    shares = [j["mlflow"] / j["wall"] for js, _, _ in runs["xor"] for j in js]
    print(f"(mean of per-job MLflow shares on xor: {statistics.mean(shares):.1%})")


if __name__ == "__main__":
    try:
        main()
    finally:
        footer()
