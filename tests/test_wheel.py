"""The wheel: built from the checkout, installed into a fresh virtual environment, run from an empty directory.

The fresh environment gets the wheel only (``--no-deps``); its dependencies come from this interpreter's
site-packages through a ``.pth`` file (and their data files through ``$JUPYTER_PATH``), so only the build
backend comes from the registry (its cache). Nothing of the checkout is on its path:
a ``.pth`` line adds a directory, not the editable install's import hook, and the wheel's own ``harness``
comes first. (.ci/run also installs the wheel with its dependencies from the registry.)
"""

from __future__ import annotations

import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, harness_env
from mlflow import MlflowClient

pytestmark = pytest.mark.slow

PRESETS = sorted(p.stem for p in (ROOT / "experiments").glob("*.yaml"))


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    """A fresh virtual environment with the harness wheel installed; returns its bin/ directory."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"  # a clean copy: setuptools builds in place and would ship stale files from ./build
    for name in ("harness", "hydra_plugins", "conf", "experiments", "pyproject.toml", "README.md"):
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy
        copy(ROOT / name, src / name, **({"symlinks": True} if copy is shutil.copytree else {}))
    subprocess.run(  # (build isolation: the build backend, setuptools>=68, comes from the registry's cache)
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", tmp / "dist", src], check=True
    )
    (wheel,) = (tmp / "dist").glob("harness-*.whl")
    subprocess.run([sys.executable, "-m", "venv", tmp / "venv"], check=True)
    bin_ = tmp / "venv" / "bin"
    subprocess.run([bin_ / "python", "-m", "pip", "install", "-q", "--no-deps", wheel], check=True)
    purelib = subprocess.run(
        [bin_ / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    Path(purelib, "harness_test_deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return bin_


def run(venv: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    exe = args[0] if args[0] == "harness" else "python"
    p = subprocess.run(
        [venv / exe, *args[1:]] if exe == "harness" else [venv / "python", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        # the dependencies' data files (nbconvert's templates) stay in this environment's share/jupyter
        env={**harness_env(), "JUPYTER_PATH": str(Path(sys.prefix, "share", "jupyter"))},
        timeout=600,
    )
    assert p.returncode == 0, p.stderr
    return p


def test_the_wheel_ships_the_configs_and_runs_from_an_empty_directory(venv, tmp_path):
    where = run(venv, tmp_path, "-c", "import harness, harness.__main__ as m; print(harness.__file__, m.config_dir())")
    module, conf = where.stdout.split()
    assert str(venv.parent) in module and not module.startswith(str(ROOT))
    assert conf == str(Path(module).parent / "conf")
    shipped = {p.relative_to(conf).as_posix() for p in Path(conf).rglob("*.yaml")}
    in_repo = {p.relative_to(ROOT / "conf").as_posix() for p in (ROOT / "conf").glob("*/*.yaml")}
    in_repo |= {"config.yaml"} | {f"experiment/{name}.yaml" for name in PRESETS}
    assert shipped == in_repo

    p = run(venv, tmp_path, "-m", "harness", "train.epochs=20")
    assert "harness: bce-sigmoid-ng-s0 on xor: completed" in p.stdout
    p = run(venv, tmp_path, "harness", "train.epochs=5", "seed=1")
    assert "harness: bce-sigmoid-ng-s1 on xor: completed" in p.stdout
    c = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert len(c.search_runs([c.get_experiment_by_name("harness").experiment_id])) == 2


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_composes_from_the_wheel(venv, tmp_path, preset):
    p = run(venv, tmp_path, "-m", "harness", f"+experiment={preset}", "--cfg", "job")
    assert f"experiment: {preset}" in p.stdout  # tracking.experiment is the preset's name


def test_a_shrunk_study_its_report_and_gradcheck_from_the_wheel(venv, tmp_path):
    run(venv, tmp_path, "-m", "harness", "+experiment=seed_xor", "seed=0", "train.epochs=200")
    c = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = c.search_runs([c.get_experiment_by_name("seed_xor").experiment_id])
    assert len(runs) == 5 and {r.info.status for r in runs} == {"FINISHED"}  # parent; nielsen, ng: seed + config
    report = tmp_path / "reports" / "seed_xor.html"
    assert report.stat().st_size > 0
    report.unlink()
    run(venv, tmp_path, "-m", "harness.report", "seed_xor")
    assert report.stat().st_size > 0
    p = run(venv, tmp_path, "-m", "harness.gradcheck")
    assert p.stdout.strip().splitlines()[-1].startswith("27 of 48 triples exact")
