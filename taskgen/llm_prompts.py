"""What the LLM-driven generator tells the model at each of FTRL's five stages.

Each prompt is a system message: the shared ``PREAMBLE`` (one JSON object back, nothing
else), the stage's task, and the exact reply format. The user message is ``INPUT`` followed
by the stage's JSON input (``ChatClient.complete_json``). What a reply must satisfy beyond
its format is checked in ``llm_replies``, whose problems go back to the model word for word,
so the two are written to agree: every field named here is validated there.
"""

from __future__ import annotations

__all__ = ["ANSWER_FORMATS", "DECOMPOSE", "DEPLOY", "DOCUMENTS", "INTEGRATE", "PREAMBLE", "SCALE"]

PREAMBLE = (
    "You are one stage of a pipeline that builds tool-use environments for training AI agents "
    "(FTRL). The user message is INPUT followed by a JSON object. Reply with exactly one JSON "
    "object in the format below and nothing else: no prose, no code fences, no comments.\n\n"
)
"""The start of every stage's system message."""

DECOMPOSE = PREAMBLE + """Stage 1, scenario decomposition. Write one question that needs the facts in INPUT.facts \
(and only those), of INPUT.question_type:
- single_hop: one lookup;
- parallel_single_hop: two or three independent lookups asked in one question;
- multi_hop: a chain of lookups, each on the entity the previous lookup returned;
- parallel_multi_hop: two such chains asked in one question.
INPUT.chains gives the number of lookups (hops) in each chain. Hop k > 0 looks up an attribute of the entity \
that hop k-1 returned, so every hop but the last uses a relation attribute. The question names only each \
chain's first entity; it never contains any hop's answer. A chain never returns to an entity it visited, and \
no two chains ask the same attribute of the same entity.
Format: {"question": "...", "chains": [[{"sub_question": "a question for this one hop", "entity": "<a name \
from INPUT.facts>", "attribute": "<an attribute key of that entity>", "answer": "<the value in INPUT.facts>"}, \
...], ...]} with one inner list per chain, hops in order."""

DOCUMENTS = PREAMBLE + """Stage 2, document generation. Write one tool document for each of INPUT.sub_questions, \
in the same order: a function that takes the name of an entity of the sub-question's kind and returns the \
attribute the sub-question asks about. The document is an OpenAI function schema with exactly one parameter, a \
required string naming the entity.
Format: {"tools": [{"name": "<snake_case function name>", "description": "...", "parameters": {"type": \
"object", "properties": {"<parameter name>": {"type": "string", "description": "..."}}, "required": \
["<parameter name>"]}}, ...]}"""

INTEGRATE = PREAMBLE + """Stage 3, function integration. INPUT.documents are tool documents, one per lookup. Merge \
documents whose functionality overlaps into one tool: documents for the same attribute of the same kind must \
be merged; documents for different attributes of the same kind may be merged into one tool that takes a field \
parameter choosing the attribute; documents of different kinds are never merged.
Format: {"tools": [{"name": "<function name>", "description": "...", "documents": [<indices into \
INPUT.documents>], "field_parameter": null or {"name": "<parameter name>"}}, ...]}. Every document is in exactly \
one tool; a tool merging several attributes needs a field_parameter, a tool of one attribute has null."""

SCALE = PREAMBLE + """Stage 4, complexity scaling. Apply each operation named in INPUT.operations to \
INPUT.tools, and reply with one key per operation:
- "functional_generalization": widen one tool of its candidates to return any attribute of its kind (the \
  attributes are listed); give it a new name and description: {"tool": "<candidate>", "name": "<new function \
  name>", "description": "..."}.
- "parameter_expansion": give one or more of its candidate tools one to three new optional parameters that do \
  not change whether the looked-up value appears in the answer (formatting, metadata, matching, timeouts...): \
  [{"tool": "<candidate>", "parameters": [{"name": "...", "type": "string" | "integer" | "boolean", \
  "description": "...", "default": <a value of that type>, "enum": [optional, strings only]}]}].
- "type_generalization": change the type of one parameter among its candidates: {"tool": "...", "parameter": \
  "...", "type": "<one of that candidate's types>"} (enum: one of the tool's records; list: a batch, one result \
  per item; object: {"name": ...}).
- "toolset_extension": one distractor tool document per requested lookup, in order, each with exactly one \
  required string parameter naming the entity: [{"name": "...", "description": "...", "parameters": {"type": \
  "object", "properties": {"<name>": {"type": "string", "description": "..."}}, "required": ["<name>"]}}]."""

DEPLOY = PREAMBLE + """Stage 5, localized deployment. Write the Python source of INPUT.tool: one function named \
INPUT.tool.name that answers from the records in INPUT.records (embed them as literals).
Rules:
- The source is exactly one top-level `def` named INPUT.tool.name; imports, data and helpers all go inside it \
  (the code is exec'd inside another function, so module-level names would be invisible). Standard library \
  only; no files, network, clock or randomness.
- Signature: every parameter of the schema with default None, then **unexpected. Unknown arguments raise \
  TypeError; a missing required argument raises TypeError; a wrong type TypeError; a value outside its allowed \
  set ValueError; an unknown entity LookupError. Error messages name parameters, never repeat argument values.
- Entity names match case-insensitively with whitespace collapsed. INPUT.entity_parameter.shape says how the \
  name is passed: plain (a string), enum (a string from the schema's enum), list (a list of names: one result \
  per name, in order), object ({"name": ..., "kind"?: ...}).
- With a field parameter (INPUT.field_parameter), return the value of the named attribute (shape list: the \
  values of all named attributes, in order); without, return INPUT.fields[0].
- Optional parameters (INPUT.optional_parameters) take their defaults when omitted and never change whether \
  the looked-up value appears in the answer.
- The answer never contains an argument's value (no names, attribute names or option values), only what was \
  looked up. INPUT.answer_format says how to return it.
Format: {"code": "<the Python source>"}"""

ANSWER_FORMATS = {
    "json": "return a dict {{\"{key}\": <the value>}} (with a list-typed parameter: {{\"{key}\": [<values in "
            "order>]}})",
    "text": "return the string 'Result: <the value>' (several values joined by '; ')",
    "plain": "return the bare value (several values: a list)",
}
"""How a deployed tool returns its answer, by ``ToolSpec.output``; ``{key}`` is its result key."""
