"""``toolgym/CodeMath-v0``: SimpleTIR's multi-turn math with a Python interpreter.

See ``README.md`` next to this file for the rules, the options and where ToolGym follows
SimpleTIR exactly or chose otherwise. Modules: ``parsing`` (turns and observations),
``program`` (what a code block runs as), ``verifier`` (math-verify in killable worker
processes), ``tasks`` (records, the reasoning-gym set, variants), ``env`` (family, episode).
"""

from __future__ import annotations

from toolgym.envs.codemath.env import CodeMathEpisode, CodeMathFamily, CodeMathOptions
from toolgym.envs.codemath.verifier import Verdict, VerifierPool, default_pool

__all__ = [
    "CodeMathEpisode",
    "CodeMathFamily",
    "CodeMathOptions",
    "Verdict",
    "VerifierPool",
    "default_pool",
]
