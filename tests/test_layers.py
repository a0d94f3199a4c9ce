"""The layer rules the tree states: the math (harness.core) imports neither Hydra, MLflow nor pandas; the
network and training loop (harness.nn) know nothing of Hydra or MLflow; the tracker (harness.tracking)
knows nothing of the math. Checked twice: statically on every import statement, and by importing the
layer in a fresh interpreter and looking at what got loaded."""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest
from conftest import ROOT

MATH = {"harness.core", "harness.nn"}
RULES = {  # layer -> top-level or harness packages it must not import
    "harness.core": {"hydra", "omegaconf", "mlflow", "pandas", "harness.nn", "harness.tracking", "harness.report"},
    "harness.nn": {"hydra", "omegaconf", "mlflow", "harness.tracking", "harness.report"},
    "harness.tracking": {"hydra", "omegaconf", *MATH, "harness.report"},
}


def _imports(path) -> set[str]:
    """Every module a file imports (absolute names; relative imports resolved against the harness package)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def _forbidden(module: str, banned: set[str]) -> bool:
    return any(module == b or module.startswith(b + ".") for b in banned)


def _layer_files(layer: str):
    return sorted((ROOT / layer.replace(".", "/")).rglob("*.py"))


@pytest.mark.parametrize("layer", sorted(RULES))
def test_no_file_of_a_layer_imports_what_its_rule_forbids(layer):
    files = _layer_files(layer)
    assert files, f"no files under {layer}"
    bad = {f"{p.relative_to(ROOT)}: {m}" for p in files for m in _imports(p) if _forbidden(m, RULES[layer])}
    assert not bad


@pytest.mark.parametrize("layer", sorted(RULES))
def test_importing_a_layer_loads_nothing_it_must_not_know(layer):
    modules = [".".join(p.relative_to(ROOT).with_suffix("").parts) for p in _layer_files(layer)]
    modules = [m.removesuffix(".__init__") for m in modules if not m.endswith("__main__")]
    code = "import sys\n" + "".join(f"import {m}\n" for m in modules) + "print('\\n'.join(sorted(sys.modules)))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert not {m for m in loaded if _forbidden(m, RULES[layer])}


def test_the_rule_itself_can_fail(tmp_path):
    """A file that breaks the rule is caught (the static check is not vacuous)."""
    bad = tmp_path / "bad.py"
    bad.write_text("import mlflow\nfrom harness.core.losses import LOSSES\n")
    assert {m for m in _imports(bad) if _forbidden(m, RULES["harness.tracking"])} == {"harness.core.losses"}
    assert {m for m in _imports(bad) if _forbidden(m, RULES["harness.core"])} == {"mlflow"}
