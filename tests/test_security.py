"""Nothing in the harness loads pickles or runs code named in a config; servers bind to 127.0.0.1."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

from harness.config import ConfigError, validate

UNSAFE_MODULES = {"pickle", "cloudpickle", "dill", "marshal", "shelve", "joblib"}
UNSAFE_CALLS = {"eval", "exec", "__import__", "import_module", "instantiate", "call", "get_method", "get_class",
                "load_model", "read_pickle"}  # fmt: skip


def _calls_and_imports(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (("import", a.name.split(".")[0]) for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield "import", node.module.split(".")[0]
            if node.module.startswith("hydra.utils"):
                yield from (("call", a.name) for a in node.names)
        elif isinstance(node, ast.Call):
            if any(k.arg == "allow_pickle" for k in node.keywords):
                yield "call", "allow_pickle"
            f = node.func
            yield "call", f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""


@pytest.mark.parametrize(
    "path",
    sorted([*(ROOT / "harness").rglob("*.py"), *(ROOT / "hydra_plugins").rglob("*.py")]),
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_no_pickle_loading_or_code_named_by_config(path):
    found = set(_calls_and_imports(path))
    assert not {name for kind, name in found if kind == "import"} & UNSAFE_MODULES
    assert not {name for kind, name in found if kind == "call"} & (UNSAFE_CALLS | {"allow_pickle"})


def test_the_only_target_in_the_config_is_the_sweep_callback():
    targets = [(p.name, line.strip()) for p in (ROOT / "conf").rglob("*.yaml") for line in p.read_text().splitlines()
               if "_target_" in line]  # fmt: skip
    assert targets == [("config.yaml", "_target_: harness.sweep.SweepCallback")]


def test_a_target_smuggled_into_the_config_is_rejected(compose_cfg):
    with pytest.raises(ConfigError, match=r"model._target_ is not a configuration key"):
        validate(compose_cfg("+model._target_=os.system"))


def test_the_servers_the_readme_starts_bind_to_localhost():
    """Every ``--host``/``--node-ip-address`` in the README's commands is 127.0.0.1, and where a command gives
    none, MLflow's own default is 127.0.0.1."""
    text = (ROOT / "README.md").read_text()
    commands = [ln for ln in text.splitlines() if ln.lstrip().startswith(("mlflow server", "mlflow ui", "ray start"))]
    assert any(ln.lstrip().startswith("mlflow server") for ln in commands)
    hosts = re.findall(r"--(?:host|node-ip-address)[ =](\S+)", "\n".join(commands))
    assert hosts and set(hosts) == {"127.0.0.1"}
    help_text = subprocess.run([str(Path(sys.executable).parent / "mlflow"), "server", "--help"], capture_output=True,
                               text=True, check=True).stdout  # fmt: skip
    assert "(default: 127.0.0.1)" in " ".join(help_text.split())
