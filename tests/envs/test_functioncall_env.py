"""The ``toolgym/FunctionCall-v0`` family: its contract, its records, its episodes, its tasks
and their variants."""

from __future__ import annotations

import copy
import json
import random
from typing import Any

import pytest

from toolgym.envs.base import SPLITS, AssistantMessage, Task, options_schema
from toolgym.envs.functioncall import FunctionCallFamily, FunctionCallOptions
from toolgym.errors import EpisodeFinished, ValidationFailed

FAMILY = FunctionCallFamily()
ALL_BUILTIN = list(FAMILY.builtin_records())
BUILTIN = [(s, r) for s, r in ALL_BUILTIN if not r["id"].startswith("toolgen-")]  # hand-written
GENERATED = [(s, r) for s, r in ALL_BUILTIN if r["id"].startswith("toolgen-")]


def episode(record: dict[str, Any], verifier: str = "looptool") -> Any:
    task = Task(
        env_id=FAMILY.env_id, id=record.get("id", "t"), split="train", record=FAMILY.validate_record(record)
    )
    options = FAMILY.parse_options({"verifier": verifier}, "train")
    return FAMILY.start(task, options, None, random.Random(0))


def step(record: dict[str, Any], action: Any, verifier: str = "looptool") -> Any:
    ep = episode(record, verifier)
    ep.reset()
    return ep.step(action)


def as_tags(calls: list[dict[str, Any]]) -> str:
    return "\n".join(f"<tool_call>\n{json.dumps(c)}\n</tool_call>" for c in calls)


def as_python(calls: list[dict[str, Any]]) -> str:
    def call(c: dict[str, Any]) -> str:
        return f"{c['name']}(" + ", ".join(f"{k}={v!r}" for k, v in c["arguments"].items()) + ")"

    return "[" + ", ".join(call(c) for c in calls) + "]"


def as_openai(calls: list[dict[str, Any]]) -> AssistantMessage:
    return AssistantMessage(
        content=None,
        tool_calls=tuple(
            {
                "id": f"c{i}",
                "type": "function",
                "function": {"name": c["name"], "arguments": json.dumps(c["arguments"])},
            }
            for i, c in enumerate(calls)
        ),
    )


# --- the family contract ----------------------------------------------------------------------


def test_family_contract() -> None:
    assert FAMILY.env_id == "toolgym/FunctionCall-v0"
    assert FAMILY.needs_sandbox is False
    for attr in ("description", "action_format", "observation_format", "reward_spec", "record_format"):
        assert isinstance(getattr(FAMILY, attr), str) and getattr(FAMILY, attr)
    schema = options_schema(FunctionCallOptions)
    assert schema["verifier"]["choices"] == ["looptool", "bfcl"]
    assert schema["verifier"]["default"] == "looptool"
    assert FAMILY.parse_options({}, "train") == FunctionCallOptions(verifier="looptool")
    with pytest.raises(ValidationFailed):
        FAMILY.parse_options({"verifier": "strict"}, "train")
    with pytest.raises(ValidationFailed):
        FAMILY.parse_options({"max_turns": 3}, "train")


# --- records ----------------------------------------------------------------------------------


def base_record() -> dict[str, Any]:
    return copy.deepcopy(
        {
            "id": "r1",
            "split": "train",
            "messages": [
                {"role": "system", "content": "s"},
                {"role": "user", "content": "Weather in Paris?"},
            ],
            "tools": [
                {
                    "name": "get_weather",
                    "description": "Weather.",
                    "parameters": {
                        "type": "object",
                        "properties": {
                            "city": {"type": "string"},
                            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                            "days": {"type": "integer"},
                        },
                        "required": ["city"],
                    },
                }
            ],
            "gold_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}],
        }
    )


def test_validate_normalizes() -> None:
    out = FAMILY.validate_record(base_record())
    assert "id" not in out and "split" not in out
    assert out["tools"][0]["type"] == "function"
    assert out["tools"][0]["function"]["name"] == "get_weather"
    as_string = base_record()
    as_string["tools"] = json.dumps(as_string["tools"])
    as_string["gold_calls"][0]["arguments"] = json.dumps({"city": "Paris"})
    assert FAMILY.validate_record(as_string) == out


def _set(path: str, value: Any) -> dict[str, Any]:
    record = base_record()
    target: Any = record
    keys = path.split("/")
    for key in keys[:-1]:
        target = target[int(key)] if isinstance(target, list) else target[key]
    last = keys[-1]
    if value is KeyError:
        del target[last]
    elif isinstance(target, list):
        target[int(last)] = value
    else:
        target[last] = value
    return record


@pytest.mark.parametrize(
    ("record", "field"),
    [
        (_set("messages", []), "messages"),
        (_set("messages/1/role", "robot"), "messages[1].role"),
        (_set("messages/1/content", None), "messages[1].content"),
        (_set("tools", []), "tools"),
        (_set("tools/0/name", ""), "tools[0].name"),
        (_set("tools/0/parameters/required", ["country"]), "tools[0].parameters.required"),
        (_set("gold_calls/0/name", "get_time"), "gold_calls[0].name"),
        (_set("gold_calls/0/arguments", {}), "gold_calls[0].arguments"),
        (
            _set("gold_calls/0/arguments", {"city": "Paris", "country": "FR"}),
            "gold_calls[0].arguments.country",
        ),
        (_set("gold_calls/0/arguments", {"city": 1}), "gold_calls[0].arguments.city"),
        (_set("gold_calls/0/arguments", {"city": "Paris", "days": "2"}), "gold_calls[0].arguments.days"),
        (_set("gold_calls/0/arguments", {"city": "Paris", "days": True}), "gold_calls[0].arguments.days"),
        (_set("gold_calls/0/arguments", {"city": "Paris", "unit": "kelvin"}), "gold_calls[0].arguments.unit"),
        (_set("gold_calls", []), "gold_calls"),
        (_set("gold_calls", KeyError), "gold_calls"),
        (_set("gold_text", True), "gold_calls"),
        (
            _set("gold_ast", [{"get_weather": {"city": ["Paris"]}}, {"get_weather": {"city": ["Rome"]}}]),
            "gold_ast",
        ),
        (_set("slots", [{"value": "Paris"}]), "slots[0]"),
        (_set("golden_calls", []), "golden_calls"),
    ],
)
def test_validate_names_the_bad_field(record: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationFailed) as exc:
        FAMILY.validate_record(record)
    assert exc.value.details["field"] == field, exc.value.message


def test_text_gold_record() -> None:
    record = base_record()
    del record["gold_calls"]
    record["gold_text"] = True
    assert FAMILY.validate_record(record)["gold_text"] is True
    record["gold_text"] = "yes"
    with pytest.raises(ValidationFailed):
        FAMILY.validate_record(record)


def test_task_metadata_never_shows_the_gold() -> None:
    for _, record in BUILTIN:
        meta = FAMILY.task_metadata(FAMILY.validate_record(record))
        text = json.dumps(meta)
        assert "gold" not in text and "slots" not in text
        assert meta["tools"]


# --- episodes ---------------------------------------------------------------------------------


def test_reset_and_step() -> None:
    record = base_record()
    ep = episode(record)
    observation, info = ep.reset()
    assert observation.messages == record["messages"]
    assert observation.tools is not None and observation.tools[0]["function"]["name"] == "get_weather"
    assert info["status"] == "ok" and ep.turn == 0
    result = ep.step('<think>easy</think>\n[get_weather(city="Paris")]')
    assert (result.reward, result.terminated, result.truncated) == (1.0, True, False)
    assert ep.turn == 1
    info = result.info
    assert info["status"] == "ok" and info["retryable"] is False and info["reason"] == "answered"
    assert info["reward_components"] == {"match": 1.0}
    assert info["metrics"] == {"num_calls": 1.0, "num_gold_calls": 1.0}
    assert info["parsed_calls"] == [{"name": "get_weather", "arguments": {"city": "Paris"}}]
    assert info["action_form"] == "python" and info["verifier"] == "looptool"
    assert result.observation.messages == []
    json.dumps(info)
    with pytest.raises(EpisodeFinished):
        ep.step("again")


def test_invalid_action_info() -> None:
    result = step(base_record(), "[get_weather(city=__import__('os').getcwd())]")
    assert result.reward == 0.0 and result.terminated
    assert result.info["status"] == "invalid_action"
    assert result.info["reason"] == "answered"
    assert any("not a literal" in e for e in result.info["errors"])


def test_info_is_deterministic() -> None:
    action = '[get_weather(city="Rome")]'
    assert step(base_record(), action).info == step(base_record(), action).info


def test_verifiers_differ_where_they_should() -> None:
    record = base_record()
    loose_string = '[get_weather(city="paris")]'
    assert step(record, loose_string, "looptool").reward == 0.0
    assert step(record, loose_string, "bfcl").reward == 1.0
    record["gold_calls"][0]["arguments"]["days"] = 3
    assert step(record, '[get_weather(city="Paris", days=3.0)]', "looptool").reward == 1.0
    assert step(record, '[get_weather(city="Paris", days=3.0)]', "bfcl").reward == 0.0


# --- built-in tasks ---------------------------------------------------------------------------


def test_builtin_records() -> None:
    assert len(BUILTIN) == 30
    splits = [s for s, _ in BUILTIN]
    assert set(splits) == set(SPLITS)
    assert (splits.count("train"), splits.count("validation"), splits.count("test")) == (20, 5, 5)
    ids = [r["id"] for _, r in BUILTIN]
    assert len(set(ids)) == len(ids)
    validated = [FAMILY.validate_record(r) for _, r in BUILTIN]
    assert len({r["metadata"]["domain"] for r in validated}) >= 10
    gold_calls = [r["gold_calls"] for r in validated if "gold_calls" in r]
    assert sum(1 for r in validated if r.get("gold_text")) >= 4
    assert any(len(g) > 1 and len({g_["name"] for g_ in g}) > 1 for g in gold_calls)  # parallel, mixed
    assert any(len(g) > 1 and all(x == g[0] for x in g) for g in gold_calls)  # duplicate calls
    for split in SPLITS:
        assert any(r.get("gold_text") for s, r in BUILTIN if s == split)


def test_generated_builtin_tasks_are_valid_and_their_gold_scores_one() -> None:
    from toolgym.envs.functioncall.tasks import GENERATED_COUNT

    assert len(GENERATED) == GENERATED_COUNT
    assert {s for s, _ in GENERATED} == set(SPLITS)
    for _, record in GENERATED:
        validated = FAMILY.validate_record(record)
        for verifier in ("looptool", "bfcl"):
            assert step(validated, as_tags(record["gold_calls"]), verifier).reward == 1.0, record["id"]


@pytest.mark.parametrize(("split", "record"), BUILTIN, ids=[r["id"] for _, r in BUILTIN])
@pytest.mark.parametrize("verifier", ["looptool", "bfcl"])
def test_builtin_gold_earns_one_in_every_form(split: str, record: dict[str, Any], verifier: str) -> None:
    if record.get("gold_text"):
        assert step(record, "I'm sorry, I can't do that with these tools.", verifier).reward == 1.0
        assert (
            step(
                record, as_tags([{"name": record["tools"][0]["function"]["name"], "arguments": {}}]), verifier
            ).reward
            == 0.0
        )
        return
    gold = record["gold_calls"]
    for action in (as_tags(gold), as_python(gold), as_openai(gold), as_tags(list(reversed(gold)))):
        result = step(record, action, verifier)
        assert result.reward == 1.0, (action, result.info)
    assert step(record, "I'd rather not call anything.", verifier).reward == 0.0
    assert step(record, as_tags([*gold, gold[-1]]), verifier).reward == 0.0


# --- variants ---------------------------------------------------------------------------------


def test_variants_are_verified_and_consistent() -> None:
    rng = random.Random(7)
    made = 0
    for _, record in BUILTIN:
        variants = FAMILY.variants(record, 3, rng)
        if record.get("gold_text"):
            assert variants == []
        for variant in variants:
            made += 1
            checked = FAMILY.validate_record(variant)
            assert variant["id"].startswith(record["id"] + "~v")
            assert variant["metadata"]["variant_of"] == record["id"]
            assert variant["messages"][-1]["content"] != record["messages"][-1]["content"]
            assert variant["gold_calls"] != record["gold_calls"]
            assert variant["messages"][0] == record["messages"][0]
            assert step(variant, as_tags(checked["gold_calls"])).reward == 1.0
            assert step(variant, as_tags(record["gold_calls"])).reward == 0.0
            assert step(variant, as_python(checked["gold_calls"]), "bfcl").reward == 1.0
        assert len({json.dumps(v["gold_calls"], sort_keys=True) for v in variants}) == len(variants)
    assert made >= 20


def test_variants_deterministic_and_bounded() -> None:
    record = dict(BUILTIN[0][1])
    first = FAMILY.variants(record, 2, random.Random(3))
    assert first == FAMILY.variants(record, 2, random.Random(3))
    assert len(first) == 2
    assert FAMILY.variants(record, 0, random.Random(3)) == []


def test_variants_substitute_case_and_refuse_unsafe_values() -> None:
    record = base_record()
    record["messages"][1]["content"] = "Weather in Paris, in Celsius please."
    record["gold_calls"][0]["arguments"]["unit"] = "celsius"
    [variant] = FAMILY.variants(record, 1, random.Random(0))
    assert variant["messages"][1]["content"] == "Weather in Paris, in Fahrenheit please."
    assert variant["gold_calls"][0]["arguments"]["unit"] == "fahrenheit"
    twice = copy.deepcopy(record)
    twice["messages"][1]["content"] = "Celsius or celsius? Weather in Paris in celsius."
    assert FAMILY.variants(twice, 3, random.Random(0)) == []
    free_text = base_record()  # a city is never guessed without declared slots
    assert FAMILY.variants(free_text, 3, random.Random(0)) == []
    free_text["slots"] = [{"value": "Paris", "alternatives": ["Lima", "Oslo"]}]
    assert {
        v["gold_calls"][0]["arguments"]["city"] for v in FAMILY.variants(free_text, 5, random.Random(0))
    } == {
        "Lima",
        "Oslo",
    }
    contained = copy.deepcopy(free_text)
    contained["gold_calls"][0]["arguments"]["city"] = "Paris"
    contained["tools"][0]["parameters"]["properties"]["note"] = {"type": "string"}
    contained["gold_calls"][0]["arguments"]["note"] = "Paris trip"
    assert FAMILY.variants(contained, 3, random.Random(0)) == []
    with_ast = copy.deepcopy(free_text)
    with_ast["gold_ast"] = [{"get_weather": {"city": ["Paris", "Paris, France"]}}]
    assert FAMILY.variants(with_ast, 3, random.Random(0)) == []


def test_public_api_is_pinned() -> None:
    import toolgym.envs.functioncall as package

    assert package.__all__ == sorted(package.__all__)
    assert package.__all__ == [
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
