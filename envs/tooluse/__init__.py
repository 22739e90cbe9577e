"""``toolgym/ToolUse-v0``: FTRL's tool environments. See ``env.py`` and README.md."""

from toolgym.envs.tooluse.env import ToolUseEpisode, ToolUseFamily, ToolUseOptions

__all__ = ["ToolUseEpisode", "ToolUseFamily", "ToolUseOptions"]
