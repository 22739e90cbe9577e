"""The ids of the env families ToolGym ships, written once.

The server (``toolgym.envs.BUILTIN``, which maps each to its class) and the client (its
gymnasium registrations) both read them from here: this module imports nothing, so the bare
client install can know the ids without the families and their dependencies.
"""

from __future__ import annotations

__all__ = ["BUILTIN_ENV_IDS", "CODEMATH", "FUNCTIONCALL", "TOOLUSE"]

TOOLUSE = "toolgym/ToolUse-v0"
CODEMATH = "toolgym/CodeMath-v0"
FUNCTIONCALL = "toolgym/FunctionCall-v0"

BUILTIN_ENV_IDS: tuple[str, ...] = (TOOLUSE, CODEMATH, FUNCTIONCALL)
