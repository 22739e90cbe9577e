"""Env families: the registry the server and the docs read.

The families ToolGym ships are listed in ``BUILTIN``; others plug in through the
``toolgym.envs`` entry-point group (a name -> an ``EnvFamily`` subclass). Ids follow
Gymnasium's ``namespace/Name-vN`` form and a miss answers "did you mean ...?".
"""

from __future__ import annotations

import difflib
import importlib
import logging
import re
from importlib.metadata import entry_points

from toolgym.envs.base import EnvFamily
from toolgym.errors import EnvNotFound

__all__ = ["BUILTIN", "ENV_ID_RE", "EnvFamily", "load_families", "lookup"]

log = logging.getLogger(__name__)

ENV_ID_RE = re.compile(r"^(?:(?P<namespace>[\w:.-]+)/)?(?P<name>[\w:.-]+?)-v(?P<version>\d+)$")

BUILTIN: tuple[str, ...] = (
    "toolgym.envs.tooluse:ToolUseFamily",
    "toolgym.envs.functioncall:FunctionCallFamily",
    "toolgym.envs.codemath:CodeMathFamily",
)


def _load(path: str) -> type[EnvFamily]:
    module, _, attr = path.partition(":")
    cls = getattr(importlib.import_module(module), attr)
    if not (isinstance(cls, type) and issubclass(cls, EnvFamily)):
        raise TypeError(f"{path} is not an EnvFamily subclass")
    return cls


def load_families(include_entry_points: bool = True) -> dict[str, EnvFamily]:
    """Instantiate every known family, keyed by env id (built-ins win on a clash)."""
    families: dict[str, EnvFamily] = {}
    for path in BUILTIN:
        cls = _load(path)
        families[cls.env_id] = cls()
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
