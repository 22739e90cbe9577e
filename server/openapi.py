"""Generate ``openapi/openapi.json`` from the app: ``python -m toolgym.server.openapi [--check]``.

The file is the published contract; ``tests/server/test_openapi.py`` fails when it drifts
from what the code serves.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["render", "spec"]

DEFAULT_PATH = Path(__file__).resolve().parent.parent / "openapi" / "openapi.json"


def spec() -> dict[str, Any]:
    """The OpenAPI document of an app built with default settings and an in-memory database."""
    from toolgym.server import Settings, create_app

    app = create_app(Settings(db_path=":memory:"))
    return app.openapi()


def render() -> str:
    """The document as the committed file holds it: sorted keys and a final newline, so diffs stay small."""
    return json.dumps(spec(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    path = DEFAULT_PATH
    text = render()
    if "--check" in argv:
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            print(f"{path} is out of date: run `python -m toolgym.server.openapi`", file=sys.stderr)
            return 1
        return 0
    path.write_text(text, encoding="utf-8")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
