"""Facts the code states once: the dataset splits and the built-in env ids.

A second spelling drifts: a new split or env added in one place and not the other fails in
production, not here. These tests find the copies by reading the source.
"""

from __future__ import annotations

import ast
import typing
from pathlib import Path

from toolgym.envs.base import SPLITS

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("server", "client", "envs", "taskgen", "toolgym")


def _sources() -> list[Path]:
    return [p for folder in PACKAGES for p in sorted((ROOT / folder).rglob("*.py"))]


def _string_sequences(path: Path) -> list[tuple[int, tuple[str, ...]]]:
    """Every tuple or list literal made only of strings, with its line; ``Literal[...]``
    subscripts are left out (a type; checked against ``SPLITS`` separately)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    in_subscript = {id(n) for s in ast.walk(tree) if isinstance(s, ast.Subscript) for n in ast.walk(s.slice)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Tuple | ast.List) and id(node) not in in_subscript and node.elts and all(
            isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.elts
        ):
            found.append((node.lineno, tuple(typing.cast(ast.Constant, e).value for e in node.elts)))
    return found


def test_the_splits_are_spelled_once() -> None:
    """A copy of the tuple is a second source; an order of its own (CodeMath builds test
    first, so no test question is taken by train) is another fact and is left alone."""
    copies = [
        f"{path.relative_to(ROOT)}:{line}"
        for path in _sources() if path != ROOT / "envs" / "base.py"
        for line, strings in _string_sequences(path) if strings == SPLITS
    ]
    assert copies == [], "use toolgym.envs.base.SPLITS"


def test_the_wire_split_type_matches_the_splits() -> None:
    from toolgym.server.models import SplitName

    assert typing.get_args(SplitName) == SPLITS


def test_the_builtin_env_ids_are_listed_once() -> None:
    """``toolgym.env_ids`` is the list: the server's ``BUILTIN`` and the client's gymnasium
    ids derive from it, and pyproject's entry points are left to third-party families."""
    import tomllib

    from toolgym._gym import REMOTE_ENV_IDS
    from toolgym.env_ids import BUILTIN_ENV_IDS
    from toolgym.envs import BUILTIN, load_families

    assert tuple(load_families(include_entry_points=False)) == BUILTIN_ENV_IDS == tuple(BUILTIN)
    assert REMOTE_ENV_IDS is BUILTIN_ENV_IDS
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    entry_points = pyproject["project"].get("entry-points", {}).get("toolgym.envs", {})
    assert not set(entry_points.values()) & set(BUILTIN.values()), "built-in families are in BUILTIN only"
    copies = [
        f"{path.relative_to(ROOT)}:{line}"
        for path in _sources() if path != ROOT / "toolgym" / "env_ids.py"
        for line, strings in _string_sequences(path) if len(strings) > 1 and set(strings) <= set(BUILTIN_ENV_IDS)
    ]
    assert copies == [], "use toolgym.envs.BUILTIN_ENV_IDS"
