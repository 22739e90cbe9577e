"""Typed dependencies, so route signatures stay short.

``OwnerDep`` is the gate of every authenticated route: it checks the key (``Authenticator``:
the ``Authorization`` header, or the viewer's cookie on a read) and then takes a token of that
key's rate bucket (``RateLimiter``), so no route can forget either.

Every dependency here is ``async``: FastAPI runs a plain ``def`` dependency on a worker
thread, a round trip that cost more than the work itself (three per request, about a quarter of
the app's CPU per FunctionCall episode). None of them blocks: the key check hashes the
header and ``stat``s the keys file at most once a second (reading its few lines again only when it
changed), the rate limit is arithmetic.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from toolgym.server.auth import COOKIE_NAME
from toolgym.server.episodes import EpisodeManager
from toolgym.server.settings import Settings

__all__ = ["ManagerDep", "OwnerDep", "SettingsDep"]


async def _manager(request: Request) -> EpisodeManager:
    manager: EpisodeManager = request.app.state.manager
    return manager


async def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


_bearer = HTTPBearer(auto_error=False, description="An API key from TOOLGYM_API_KEYS.")


async def _owner(
    request: Request,
    authorization: Annotated[str | None, Header()] = None,
    _documented: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)] = None,
) -> str:
    # The raw header is checked by our Authenticator (its errors are ours); the Security
    # parameter only declares the bearer scheme in the OpenAPI document.
    owner: str = request.app.state.auth.owner_of_request(authorization, request.cookies.get(COOKIE_NAME),
                                                         request.method)
    request.app.state.rate_limiter.take(owner)
    return owner


ManagerDep = Annotated[EpisodeManager, Depends(_manager)]
SettingsDep = Annotated[Settings, Depends(_settings)]
OwnerDep = Annotated[str, Depends(_owner)]
