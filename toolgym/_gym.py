"""Registering the remote envs with Gymnasium without importing Gymnasium before it is needed.

``import toolgym`` must make ``gymnasium.make("toolgym/ToolUse-v0", ...)`` work, yet the
server imports ``toolgym`` too and has no use for Gymnasium or the client. So: if Gymnasium is
already imported, register now; otherwise a one-shot import hook registers the envs the moment
Gymnasium finishes importing (anyone calling ``gymnasium.make`` has imported it). Registration
names entry points as strings, so neither path imports ``toolgym.client`` until an env is made.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
import threading
import warnings
from collections.abc import Sequence
from types import ModuleType
from typing import Any

__all__ = ["REMOTE_ENV_IDS", "register_envs", "register_when_gymnasium_loads"]

from toolgym.env_ids import BUILTIN_ENV_IDS

REMOTE_ENV_IDS = BUILTIN_ENV_IDS
"""The server's built-in envs, registered with gymnasium under the same ids."""
ANY_ENV_ID = "toolgym/Remote-v0"


def register_envs() -> None:
    """Register the remote envs with Gymnasium (idempotent)."""
    import gymnasium as gym

    for env_id in (*REMOTE_ENV_IDS, ANY_ENV_ID):
        if env_id in gym.registry:
            continue
        kwargs = {} if env_id == ANY_ENV_ID else {"env_id": env_id}
        gym.register(id=env_id, entry_point="toolgym.client.gym:RemoteEnv", kwargs=kwargs,
                     disable_env_checker=False, nondeterministic=False)


class _RegisteringLoader(importlib.abc.Loader):
    """Gymnasium's own loader, plus ``register_envs`` once the module has run."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._inner.create_module(spec)  # type: ignore[no-any-return]

    def exec_module(self, module: ModuleType) -> None:
        self._inner.exec_module(module)
        try:
            register_envs()
        except Exception as exc:  # never break `import gymnasium` for the whole process
            warnings.warn(f"toolgym could not register its envs with gymnasium: {exc!r}", stacklevel=2)

    def __getattr__(self, name: str) -> Any:  # get_resource_reader, is_package, ...
        return getattr(self._inner, name)


class _GymnasiumHook(importlib.abc.MetaPathFinder):
    """Finds ``gymnasium`` the normal way once, and wraps its loader."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def find_spec(self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None,
                  ) -> importlib.machinery.ModuleSpec | None:
        if fullname != "gymnasium":
            return None
        with self._lock:
            if self not in sys.meta_path:
                return None
            sys.meta_path.remove(self)  # one shot; also keeps find_spec below from finding us
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        spec.loader = _RegisteringLoader(spec.loader)
        return spec


def register_when_gymnasium_loads() -> None:
    """Register now if Gymnasium is imported, else as soon as it is."""
    if "gymnasium" in sys.modules:
        register_envs()
    elif not any(isinstance(f, _GymnasiumHook) for f in sys.meta_path):
        sys.meta_path.insert(0, _GymnasiumHook())
