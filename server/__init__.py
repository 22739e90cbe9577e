"""The ToolGym server: the FastAPI app, the episode manager and the sandbox backends.

Importing this package is cheap and needs no server dependency; ``create_app`` and
``Settings`` load FastAPI on first use, so ``toolgym.server.sandbox.base`` stays importable
from a client-only install.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from toolgym.server.app import create_app
    from toolgym.server.settings import Settings

__all__ = ["Settings", "create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from toolgym.server.app import create_app

        return create_app
    if name == "Settings":
        from toolgym.server.settings import Settings

        return Settings
    raise AttributeError(name)
