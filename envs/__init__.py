"""Env families: the registry the server and the docs read.

The families ToolGym ships are ``BUILTIN`` (env id -> class), their ids taken from
``toolgym.env_ids``, the one list the client reads too.
Other families plug in through the ``toolgym.envs`` entry-point group (a name -> an
``EnvFamily`` subclass). Ids follow Gymnasium's ``namespace/Name-vN`` form and a miss
answers "did you mean ...?".
"""

from __future__ import annotations

import difflib
import importlib
import logging
import re
from importlib.metadata import entry_points

from toolgym.env_ids import BUILTIN_ENV_IDS, CODEMATH, FUNCTIONCALL, TOOLUSE
from toolgym.envs.base import EnvFamily
from toolgym.errors import EnvNotFound

__all__ = ["BUILTIN", "BUILTIN_ENV_IDS", "ENV_ID_RE", "EnvFamily", "load_families", "lookup"]

log = logging.getLogger(__name__)

ENV_ID_RE = re.compile(r"^(?:(?P<namespace>[\w:.-]+)/)?(?P<name>[\w:.-]+?)-v(?P<version>\d+)$")

BUILTIN: dict[str, str] = {
    TOOLUSE: "toolgym.envs.tooluse:ToolUseFamily",
    CODEMATH: "toolgym.envs.codemath:CodeMathFamily",
    FUNCTIONCALL: "toolgym.envs.functioncall:FunctionCallFamily",
}
"""The families ToolGym ships, by env id. The ids live in ``toolgym.env_ids`` so they can be
known without importing the families; ``load_families`` refuses a class whose ``env_id``
disagrees with its key."""


def _load(path: str) -> type[EnvFamily]:
    module, _, attr = path.partition(":")
    cls = getattr(importlib.import_module(module), attr)
    if not (isinstance(cls, type) and issubclass(cls, EnvFamily)):
        raise TypeError(f"{path} is not an EnvFamily subclass")
    return cls


def load_families(include_entry_points: bool = True) -> dict[str, EnvFamily]:
    """Instantiate every known family, keyed by env id (built-ins win on a clash)."""
    families: dict[str, EnvFamily] = {}
    for env_id, path in BUILTIN.items():
        cls = _load(path)
        if cls.env_id != env_id:
            raise TypeError(f"{path} serves {cls.env_id!r}, but BUILTIN lists it as {env_id!r}")
        families[env_id] = cls()
    if include_entry_points:
        for ep in entry_points(group="toolgym.envs"):
            try:
                cls = ep.load()
            except Exception:  # a broken plugin must not take the server down
                log.exception("could not load env family entry point %s", ep.value)
                continue
            if isinstance(cls, type) and issubclass(cls, EnvFamily) and cls.env_id not in families:
                families[cls.env_id] = cls()
    for env_id in families:
        if not ENV_ID_RE.match(env_id):
            raise ValueError(f"env id {env_id!r} is not of the form namespace/Name-vN")
    return families


def lookup(families: dict[str, EnvFamily], env_id: str) -> EnvFamily:
    """The family for ``env_id``, or ``EnvNotFound`` with the closest id as a suggestion."""
    family = families.get(env_id)
    if family is not None:
        return family
    close = difflib.get_close_matches(env_id, list(families), n=1, cutoff=0.5)
    if not close:
        lowered = {k.lower(): k for k in families}
        close = difflib.get_close_matches(env_id.lower(), list(lowered), n=1, cutoff=0.5)
        close = [lowered[c] for c in close]
    raise EnvNotFound(env_id, close[0] if close else None)
