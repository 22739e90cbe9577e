"""Stage 5, localized deployment: the Python source of each tool.

Each tool becomes one self-contained function named after the tool, stdlib only, with its
slice of the world embedded as literals. *Everything* lives inside the ``def``: FTRL's
``call_function`` runs ``exec(code)`` inside a function, so module-level names of the code
land in that function's locals and are invisible to the tool when it runs; imports, data and
helpers therefore sit in the function body (as in the authors' own tool files).

The function validates every argument against the tool's schema and raises clear errors
(``TypeError`` for a missing, unexpected or mistyped argument, ``ValueError`` for a value
outside its allowed set, ``LookupError`` for an unknown name). Two reward-hacking guards:

- an output never contains an argument: no name, field or option value is echoed, so
  passing a guessed sub-answer as an argument cannot make FTRL's substring check credit it;
- an error never contains an argument either (FTRL shows errors to the policy, and its own
  ``**arguments`` call would echo an unknown keyword): errors name parameters, never values,
  and unknown keywords are caught by ``**unexpected`` and not repeated.
"""

from __future__ import annotations

import random
import string

from toolgym.taskgen.model import Param, ToolSpec
from toolgym.taskgen.world import KINDS, World

__all__ = ["deploy", "row_key"]

_METADATA_SOURCE = "central registry"


def row_key(name: str) -> str:
    """How a tool indexes its records: whitespace collapsed, case folded."""
    return " ".join(name.split()).casefold()


class _Code:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, indent: int, *lines: str) -> None:
        self.lines.extend("    " * indent + line for line in lines)

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def _quote(text: str) -> str:
    return repr(text)


def _key_validation(code: _Code, p: Param, tool: ToolSpec) -> None:
    n = p.name
    if p.shape == "plain":
        code.add(1, f"if not isinstance({n}, str) or not {n}.strip():",
                 f"    raise TypeError(\"argument '{n}' must be a non-empty string\")",
                 f"_names = [{n}]")
    elif p.shape == "enum":
        code.add(1, f"_allowed = {p.choices!r}",
                 f"if not isinstance({n}, str):",
                 f"    raise TypeError(\"argument '{n}' must be a string\")",
                 f"if {n} not in _allowed:",
                 f"    raise ValueError(\"argument '{n}' must be one of the names in the tool's schema\")",
                 f"_names = [{n}]")
    elif p.shape == "list":
        code.add(1, f"if not isinstance({n}, list) or not {n}:",
                 f"    raise TypeError(\"argument '{n}' must be a non-empty list of names\")",
                 f"if len({n}) > 20:",
                 f"    raise ValueError(\"argument '{n}' takes at most 20 names\")",
                 f"for _item in {n}:",
                 "    if not isinstance(_item, str) or not _item.strip():",
                 f"        raise TypeError(\"every item of '{n}' must be a non-empty string\")",
                 f"_names = list({n})")
    else:
        kind = tool.kind
        code.add(1, f"if not isinstance({n}, dict):",
                 f"    raise TypeError(\"argument '{n}' must be an object with a 'name' key\")",
                 f"if any(_k not in ('name', 'kind') for _k in {n}):",
                 f"    raise ValueError(\"argument '{n}' accepts only the keys 'name' and 'kind'\")",
                 f"if 'kind' in {n} and {n}['kind'] != {kind!r}:",
                 f"    raise ValueError(\"argument '{n}': 'kind' must be '{kind}' when given\")",
                 f"_name = {n}.get('name')",
                 "if not isinstance(_name, str) or not _name.strip():",
                 f"    raise TypeError(\"argument '{n}' needs a non-empty string under 'name'\")",
                 "_names = [_name]")


def _field_validation(code: _Code, p: Param | None, tool: ToolSpec) -> None:
    if p is None:
        code.add(1, f"_wanted = [{tool.fields[0]!r}]")
        return
    n = p.name
    allowed = ", ".join(tool.fields)
    if p.shape == "list":
        code.add(1, f"if not isinstance({n}, list) or not {n}:",
                 f"    raise TypeError(\"argument '{n}' must be a non-empty list of field names\")",
                 f"for _item in {n}:",
                 "    if not isinstance(_item, str) or _item not in _fields:",
                 f"        raise ValueError(\"every item of '{n}' must be one of: {allowed}\")",
                 f"_wanted = list({n})")
    else:
        code.add(1, f"if not isinstance({n}, str):",
                 f"    raise TypeError(\"argument '{n}' must be a string\")",
                 f"if {n} not in _fields:",
                 f"    raise ValueError(\"argument '{n}' must be one of: {allowed}\")",
                 f"_wanted = [{n}]")


def _option_validation(code: _Code, p: Param) -> None:
    n = p.name
    code.add(1, f"if {n} is None:", f"    {n} = {p.default!r}")
    if p.json_type == "boolean":
        code.add(1, f"if not isinstance({n}, bool):",
                 f"    raise TypeError(\"argument '{n}' must be true or false\")")
    elif p.json_type == "integer":
        code.add(1, f"if isinstance({n}, bool) or not isinstance({n}, int):",
                 f"    raise TypeError(\"argument '{n}' must be an integer\")",
                 f"if not {p.minimum} <= {n} <= {p.maximum}:",
                 f"    raise ValueError(\"argument '{n}' must be between {p.minimum} and {p.maximum}\")")
    else:
        code.add(1, f"if not isinstance({n}, str) or {n} not in {p.choices!r}:",
                 f"    raise ValueError(\"argument '{n}' must be one of: {', '.join(p.choices)}\")")


def _record_id(rng: random.Random) -> str:
    return "rec-" + "".join(rng.choice(string.ascii_lowercase) for _ in range(6))


def deploy(tool: ToolSpec, world: World, rng: random.Random) -> str:
    """The Python source of ``tool`` (the ``Deployer`` protocol)."""
    key = tool.param("key")
    assert key is not None, "every generated tool has a key parameter"
    fparam = tool.param("field")
    opts = {p.option: p for p in tool.options}
    if key.shape == "list" and fparam is not None and fparam.shape == "list":
        raise ValueError(f"tool {tool.name}: at most one list-typed parameter")
    metadata = "include_metadata" in opts
    noun = KINDS[tool.kind].noun

    code = _Code()
    signature = ", ".join([f"{p.name}=None" for p in tool.params] + ["**unexpected"])
    code.add(0, f"def {tool.name}({signature}):")
    code.add(1, _quote(tool.description))
    code.add(1, "_records = {")
    for name in tool.rows:
        entity = world.get(name)
        values = {f: entity.attrs[f] for f in tool.fields}
        code.add(2, f"{row_key(name)!r}: {values!r},")
    code.add(1, "}")
    if metadata:
        ids = {row_key(name): _record_id(rng) for name in tool.rows}
        code.add(1, f"_record_ids = {ids!r}")
    if fparam is not None:
        code.add(1, f"_fields = {tool.fields!r}")
    takes = ", ".join(p.name for p in tool.params)
    code.add(1, "if unexpected:",
             f"    raise TypeError(\"{tool.name}() got an unexpected argument; it takes: {takes}\")")
    for p in tool.params:
        if p.required:
            code.add(1, f"if {p.name} is None:",
                     f"    raise TypeError(\"{tool.name}() missing required argument '{p.name}'\")")
    _key_validation(code, key, tool)
    _field_validation(code, fparam, tool)
    for p in tool.options:
        _option_validation(code, p)
    strict = opts["strict_match"].name if "strict_match" in opts else None
    want_meta = opts["include_metadata"].name if metadata else None

    code.add(1, "def _find(_raw):",
             "    _key = ' '.join(_raw.split()).casefold()",
             "    if _key in _records:",
             "        return _key")
    if strict is not None:
        code.add(1, f"    if not {strict}:",
                 "        _hits = [_k for _k in _records if _k.startswith(_key)]",
                 "        if len(_hits) == 1:",
                 "            return _hits[0]")
    code.add(1, "    return None")

    rk = tool.result_key
    if key.shape == "list":
        _batch_output(code, tool, fmt_param=opts.get("response_format"), want_meta=want_meta)
    else:
        code.add(1, "_key = _find(_names[0])",
                 "if _key is None:",
                 f"    raise LookupError(\"no {noun} record matches the given '{key.name}'\")",
                 "_values = [_records[_key][_f] for _f in _wanted]")
        many = fparam is not None and fparam.shape == "list"
        if not many:
            code.add(1, "_value = _values[0]")
        blocks = {
            "plain": [f"return {'_values' if many else '_value'}"],
            "text": [f"_text = {'Results: ' if many else 'Result: '!r} + "
                     + ("'; '.join(str(_v) for _v in _values)" if many else "str(_value)")]
            + ([f"if {want_meta}:", "    _text += ' [record ' + _record_ids[_key] + ']'"]
               if want_meta else [])
            + ["return _text"],
            "json": ["_out = {'values': _values}" if many else f"_out = {{{rk!r}: _value}}"]
            + ([f"if {want_meta}:", "    _out['record_id'] = _record_ids[_key]",
                f"    _out['source'] = {_METADATA_SOURCE!r}"] if want_meta else [])
            + ["return _out"],
        }
        _emit_formats(code, blocks, opts.get("response_format"), tool.output)
    return code.text()


def _emit_formats(code: _Code, blocks: dict[str, list[str]], fmt_param: Param | None, fixed: str) -> None:
    """With a ``response_format`` argument, one branch per format; without, the tool's own."""
    if fmt_param is None:
        code.add(1, *blocks[fixed])
        return
    for fmt in ("plain", "text"):
        code.add(1, f"if {fmt_param.name} == {fmt!r}:")
        code.add(2, *blocks[fmt])
    code.add(1, *blocks["json"])


def _batch_output(code: _Code, tool: ToolSpec, fmt_param: Param | None, want_meta: str | None) -> None:
    """A list of names in, one result per name out (found or not), in order."""
    rk = tool.result_key
    code.add(1, "_results = []",
             "for _raw in _names:",
             "    _key = _find(_raw)",
             "    if _key is None:",
             "        _results.append({'found': False})",
             "        continue",
             f"    _entry = {{'found': True, {rk!r}: _records[_key][_wanted[0]]}}")
    if want_meta:
        code.add(1, f"    if {want_meta}:", "        _entry['record_id'] = _record_ids[_key]")
    code.add(1, "    _results.append(_entry)")
    blocks = {
        "plain": [f"return [_r.get({rk!r}) for _r in _results]"],
        "text": [f"return 'Results: ' + '; '.join(str(_r[{rk!r}]) if _r['found'] else 'not found' "
                 "for _r in _results)"],
        "json": ["_out = {'results': _results}"]
        + ([f"if {want_meta}:", f"    _out['source'] = {_METADATA_SOURCE!r}"] if want_meta else [])
        + ["return _out"],
    }
    _emit_formats(code, blocks, fmt_param, tool.output)
