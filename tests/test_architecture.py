"""The architecture is checked, not described: import-linter's contracts (pyproject.toml) hold, and a
planted import of ``agents`` into a pure algos module breaks them; no module exceeds 400 lines."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
PACKAGES = ("envs", "agents", "algos")


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
