"""The architecture, checked: env families and the task generator never import the server.

An env family runs untrusted code only through the runner contract (``toolgym.envs.runner``);
the server decides where that runs. If ``envs/`` imported ``server/``, a new isolation tier or
a fleet could not change without touching every family.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def imported_modules(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


@pytest.mark.parametrize("folder", ["envs", "taskgen"])
def test_folder_imports_nothing_from_the_server(folder: str) -> None:
    offenders = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in sorted((ROOT / folder).rglob("*.py"))
        for name in imported_modules(path)
        if name == "toolgym.server" or name.startswith("toolgym.server.")
    ]
    assert offenders == []


def test_the_check_sees_an_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from toolgym.server.sandbox.base import Sandbox\n")
    assert imported_modules(bad) == ["toolgym.server.sandbox.base"]
