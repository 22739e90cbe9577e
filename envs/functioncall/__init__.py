"""``toolgym/FunctionCall-v0``: single-step function calling, LoopTool's and BFCL's rules.

See README.md in this folder for the env, its options, the reward rule and where it follows
LoopTool and BFCL exactly.
"""

from toolgym.envs.functioncall.bfcl_io import load_bfcl
from toolgym.envs.functioncall.env import (
    FunctionCallEpisode,
    FunctionCallFamily,
    FunctionCallOptions,
    Verifier,
    score,
)
from toolgym.envs.functioncall.parsing import ParsedResponse, parse_response
from toolgym.envs.functioncall.records import validate_record
from toolgym.envs.functioncall.variants import make_variants
from toolgym.envs.functioncall.verify_bfcl import BfclVerdict, bfcl_check, derive_gold_ast
from toolgym.envs.functioncall.verify_looptool import looptool_calls_match

__all__ = [
    "BfclVerdict",
    "FunctionCallEpisode",
    "FunctionCallFamily",
    "FunctionCallOptions",
    "ParsedResponse",
    "Verifier",
    "bfcl_check",
    "derive_gold_ast",
    "load_bfcl",
    "looptool_calls_match",
    "make_variants",
    "parse_response",
    "score",
    "validate_record",
]
