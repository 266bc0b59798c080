"""The architecture is checked, not described: import-linter's contracts (pyproject.toml) hold, and a
planted import of ``agents`` into a pure algos module breaks them; no module exceeds 400 lines; scripts are
command lines over the packages (no ``sys.path`` edits, no script imports another)."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
PACKAGES = ("envs", "agents", "algos")
SCRIPTS = sorted((REPO / "scripts").glob("*.py"))


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=root, capture_output=True, text=True,
                          timeout=300, env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"})


def test_import_contracts_hold():
    result = lint_imports(REPO)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "4 kept, 0 broken" in result.stdout


def test_a_planted_import_of_agents_into_pure_algos_breaks_the_contract(tmp_path):
    for name in (*PACKAGES, "pyproject.toml"):
        copy = shutil.copytree if (REPO / name).is_dir() else shutil.copy
        copy(REPO / name, tmp_path / name)
    losses = tmp_path / "algos" / "losses.py"
    losses.write_text(losses.read_text() + "\nimport agents  # noqa: E402,F401\n")
    result = lint_imports(tmp_path)
    assert result.returncode != 0
    assert "algos.losses -> agents" in result.stdout


def test_no_module_over_400_lines_and_the_trainer_under_300():
    modules = [path for package in (*PACKAGES, "scripts") for path in (REPO / package).rglob("*.py")]
    lengths = {path.relative_to(REPO).as_posix(): len(path.read_text().splitlines()) for path in modules}
    assert {path: n for path, n in lengths.items() if n > 400} == {}
    assert lengths["algos/training/trainer.py"] < 300


def imported_modules(source: str) -> set[str]:
    """Top-level names of every module ``source`` imports, at any depth (lazy imports included)."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_imported_modules_sees_lazy_and_dotted_imports():
    source = "import a.b\nfrom c.d import e\ndef f():\n    import g\n    from . import h\n"
    assert imported_modules(source) == {"a", "c", "g"}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: path.name)
def test_a_script_edits_no_sys_path_and_imports_no_other_script(script):
    text = script.read_text()
    assert "sys.path" not in text
    others = {path.stem for path in SCRIPTS} | {"scripts"}
    assert imported_modules(text) & others == set()


def test_eval_gsm8k_and_the_run_layout_load_without_deepspeed():
    code = ("import importlib.util, sys\n"
            "spec = importlib.util.spec_from_file_location('eval_gsm8k', 'scripts/eval_gsm8k.py')\n"
            "spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
            "print(sorted(name for name in sys.modules if name.split('.')[0] == 'deepspeed'))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300,
                            env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"
