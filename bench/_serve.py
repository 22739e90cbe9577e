"""A ToolGym server started by the benchmark harness with chosen uvicorn options, so that
``bench/`` can measure what an event loop, an HTTP parser or a JSON encoder would buy without
changing ``toolgym serve``. Settings come from ``TOOLGYM_*`` variables (as ``Settings.from_env``
reads them); the app is ``create_app(settings)``, as ``toolgym serve`` builds it.

- ``--loop asyncio|uvloop`` and ``--http h11|httptools``: uvicorn's own options;
- ``--orjson``: every ``JSONResponse`` renders its content with ``orjson.dumps`` instead of
  ``json.dumps`` (the routes are unchanged; only the encoding of the answer differs).

Run: ``TOOLGYM_PORT=8123 python bench/_serve.py --loop uvloop --http httptools [--orjson]``
"""

from __future__ import annotations

import argparse
import logging
from typing import Any


def use_orjson() -> None:
    """Make Starlette's ``JSONResponse`` (FastAPI's default) encode with orjson."""
    import orjson
    from starlette.responses import JSONResponse

    def render(self: JSONResponse, content: Any) -> bytes:
        return orjson.dumps(content)

    JSONResponse.render = render  # type: ignore[method-assign]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--loop", default="asyncio", choices=["asyncio", "uvloop"])
    p.add_argument("--http", default="h11", choices=["h11", "httptools"])
    p.add_argument("--orjson", action="store_true")
    p.add_argument("--log-level", default="warning")
    a = p.parse_args()
    import uvicorn

    from toolgym.server import Settings, create_app

    logging.basicConfig(level=a.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if a.orjson:
        use_orjson()
    settings = Settings.from_env()
    settings.validate()
    app = create_app(settings)
    uvicorn.run(app, host=settings.host, port=settings.port, loop=a.loop, http=a.http, log_level=a.log_level,
                timeout_graceful_shutdown=int(settings.shutdown_grace_s))


if __name__ == "__main__":
    main()
