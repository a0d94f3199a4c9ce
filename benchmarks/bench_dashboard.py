"""Benchmark 7: a study's dashboard in the MLflow UI, time to its first chart (issue 18: <= 10 s on xor_grid).

    python benchmarks/bench_dashboard.py --store /tmp/study-xor/mlflow.db   # a finished xor_grid store (copied)
    python benchmarks/bench_dashboard.py                                    # runs xor_grid first (minutes)

Two copies of the same finished study, each served by its own ``mlflow ui``, each opened by its dashboard link
in headless Chromium (Debian's /usr/bin/chromium through Playwright; a fresh profile per page load):

- ``seed runs``: the former view, the sweep's 1,080 seed runs grouped by (pairing, delta rule);
- ``configuration runs``: ``write_configuration_runs`` (timed too: reading the seeds' histories, writing the 36
  runs) then ``create_dashboard``: the 36 configuration runs, one line each.

Time to first chart: from ``page.goto`` to the first line trace in a chart's SVG (plotly draws a trace once the
run's history arrived); also to the runs list ("N matching runs"), the page's own floor on a busy machine.
Rounds are interleaved (seed view, configuration view, ...); the medians and their ratio are printed. A page
that draws nothing within ``--timeout`` seconds counts as that timeout (printed as ">").
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import footer, header, median, python, spread, table, verdict  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking"]
TARGET = 10.0
TRACE = "svg.main-svg .scatterlayer .trace"  # a line chart's drawn trace (plotly)


def build_store(tmp: Path) -> Path:
    """Run the xor_grid study (no report) in ``tmp``; its store."""
    cmd = [python(), "-m", "harness", "+experiment=xor_grid", "report.auto=false"]
    subprocess.run(cmd, cwd=tmp, check=True, stdout=subprocess.DEVNULL)
    return tmp / "mlflow.db"


def serve(db: Path, port: int, log: Path, timeout: float = 600.0) -> subprocess.Popen:
    """``mlflow ui`` over ``db`` on 127.0.0.1:``port`` (one worker, its own process group), once it answers."""
    mlflow = Path(python()).with_name("mlflow")
    cmd = [str(mlflow), "ui", "--backend-store-uri", f"sqlite:///{db}", "--host", "127.0.0.1", "--port", str(port),
           "--workers", "1"]  # fmt: skip
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as answer:
                if answer.status == 200:
                    return proc
        except OSError:
            time.sleep(1)
    stop(proc)
    raise TimeoutError(f"mlflow ui on {db} did not answer in {timeout:.0f} s:\n{log.read_text()[-2000:]}")


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM the server's process group (uvicorn forks workers), SIGKILL if it lingers."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def page_seconds(pw, link: str, profile: Path, timeout: float) -> tuple[float, float]:
    """Seconds from opening ``link`` to the runs list (the "N matching runs" line: the page, its scripts and the
    run search, the floor of any view on this machine now) and to the first drawn line trace; ``timeout`` for
    what did not come."""
    browser = pw.chromium.launch_persistent_context(str(profile), executable_path=str(CHROMIUM), headless=True,
                                                    args=ARGS, viewport={"width": 1600, "height": 1000})  # fmt: skip
    try:
        page = browser.new_page()
        start = time.monotonic()
        page.goto(link, timeout=timeout * 1000)
        targets = [page.get_by_text(re.compile(r"matching runs|Load more")), page.locator(TRACE)]
        found: list[float | None] = [None, None]
        while None in found and time.monotonic() - start < timeout:  # both watched at once: either may come first
            for i, locator in enumerate(targets):
                if found[i] is None and locator.count():
                    found[i] = time.monotonic() - start
            page.wait_for_timeout(100)
        return found[0] or timeout, found[1] or timeout
    finally:
        browser.close()
        shutil.rmtree(profile, ignore_errors=True)


def prepare(source: Path, tmp: Path) -> tuple[dict[str, str], dict[str, float]]:
    """Two copies of the study, each with its view saved; the links (on ports 5101, 5102) and the timed phases."""
    from harness.tracking import client
    from harness.tracking.dashboard import create_dashboard, dashboard_url, save_view, sweep_view_key, view_state
    from harness.tracking.study import write_configuration_runs

    seeds_db, configs_db = tmp / "seeds.db", tmp / "configs.db"
    for db in (seeds_db, configs_db):
        shutil.copyfile(source, db)
    links, phases = {}, {}
    for label, db, port in (("seed runs", seeds_db, 5101), ("configuration runs", configs_db, 5102)):
        uri = f"sqlite:///{db}"
        c = client(uri)
        exp = c.get_experiment_by_name("xor_grid").experiment_id
        (parent,) = c.search_runs([exp], "tags.`harness.sweep_dir` != ''", max_results=1)
        pid = parent.info.run_id
        if label == "seed runs":
            key = sweep_view_key(pid, "-bench-seeds")
            save_view(uri, exp, key, view_state(pid))  # the former view: every child, grouped (pairing, delta)
            links[label] = dashboard_url(f"http://127.0.0.1:{port}", exp, key)
        else:
            start = time.perf_counter()
            n = len(write_configuration_runs(uri, pid))
            phases[f"write_configuration_runs ({n} runs)"] = time.perf_counter() - start
            url = create_dashboard(uri, exp, pid, name="xor_grid")
            links[label] = url.replace("http://127.0.0.1:5000", f"http://127.0.0.1:{port}")
    return links, phases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, help="a finished xor_grid SQLite store (copied, never changed)")
    parser.add_argument("--repeats", type=int, default=1, help="interleaved rounds (default 1)")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds before a page counts as not drawn")
    args = parser.parse_args()
    if not CHROMIUM.exists():
        raise SystemExit("needs Debian's chromium: apt-get install -y chromium")
    from playwright.sync_api import sync_playwright

    header("dashboard: time to first chart", packages=("mlflow", "playwright"), repeats=args.repeats,
           timeout=args.timeout, store=args.store or "xor_grid, built now")  # fmt: skip
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        source = args.store or build_store(tmp)
        links, phases = prepare(source, tmp)
        for phase, seconds in phases.items():
            print(f"{phase}: {seconds:.1f} s")
        servers: list[subprocess.Popen] = []
        times: dict[str, list[tuple[float, float]]] = {label: [] for label in links}
        try:
            servers.append(serve(tmp / "seeds.db", 5101, tmp / "ui-seeds.log"))
            servers.append(serve(tmp / "configs.db", 5102, tmp / "ui-configs.log"))
            with sync_playwright() as pw:
                for r in range(args.repeats):
                    for label, link in links.items():
                        times[label].append(page_seconds(pw, link, tmp / f"profile-{r}", args.timeout))
        finally:
            for proc in servers:
                stop(proc)
    show = lambda xs: spread(xs) if max(xs) < args.timeout else f"> {args.timeout:.0f} s"  # noqa: E731
    rows = [[label, show([t[0] for t in ts]), show([t[1] for t in ts])] for label, ts in times.items()]
    table(rows, ["view", "runs list shown", "first chart drawn"])
    seeds, configs = (median([t[1] for t in times[k]]) for k in ("seed runs", "configuration runs"))
    floor = median([t[0] for t in times["configuration runs"]])
    print(f"seed-run view / configuration view, first chart: {seeds / configs:.1f}x"
          + (" (at least: the seed-run view timed out)" if seeds >= args.timeout else ""))  # fmt: skip
    print(f"configuration view: first chart {configs:.1f} s, {configs - floor:.1f} s after its runs list "
          f"(target <= {TARGET:.0f} s) {verdict(configs, TARGET, higher_is_better=False)}")  # fmt: skip
    footer()


if __name__ == "__main__":
    main()
