"""ToolGym: a Gymnasium-style environment server for RL training of tool-using LLM agents.

``import toolgym`` registers the remote envs with Gymnasium, so
``gymnasium.make("toolgym/ToolUse-v0", base_url=..., api_key=...)`` works. It imports neither
Gymnasium nor the client to do so (the server imports this package too): the envs are
registered when Gymnasium is imported (see ``toolgym._gym``). The client lives in
``toolgym.client``, the server in ``toolgym.server`` (extra ``[server]``), the env families in
``toolgym.envs``.
"""

from toolgym._gym import register_when_gymnasium_loads
from toolgym._version import API_VERSION, __version__
from toolgym.errors import ToolGymError

__all__ = ["API_VERSION", "ToolGymError", "__version__"]

register_when_gymnasium_loads()
