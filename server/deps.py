"""Typed dependencies, so route signatures stay short."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from toolgym.server.episodes import EpisodeManager
from toolgym.server.settings import Settings

__all__ = ["ManagerDep", "OwnerDep", "SettingsDep"]


def _manager(request: Request) -> EpisodeManager:
    manager: EpisodeManager = request.app.state.manager
    return manager


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _owner(request: Request, authorization: Annotated[str | None, Header()] = None) -> str:
    owner: str = request.app.state.auth.owner(authorization)
    return owner


ManagerDep = Annotated[EpisodeManager, Depends(_manager)]
SettingsDep = Annotated[Settings, Depends(_settings)]
OwnerDep = Annotated[str, Depends(_owner)]
