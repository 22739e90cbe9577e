"""CodeMath family and episode rules that need no code execution: options, reset, void turns,
answers given in text, the reward (docs/methods.md#simpletir). Code-running episodes are in
``test_codemath_execution.py``, against a real sandbox."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest

from toolgym.envs.base import AssistantMessage, Task, options_schema
from toolgym.envs.codemath import CodeMathEpisode, CodeMathFamily, CodeMathOptions, VerifierPool
from toolgym.envs.runner import RunRequest, RunResult
from toolgym.errors import EpisodeFinished, ValidationFailed


@pytest.fixture(scope="module")
def family() -> Iterator[CodeMathFamily]:
    with VerifierPool(workers=1) as pool:
        yield CodeMathFamily(verifier=pool)


def must_not_run(request: RunRequest) -> RunResult:
    raise AssertionError("this turn has no code block: nothing may run")


def start(
    family: CodeMathFamily, answer: str = "1/2", split: str = "test", **options: object
) -> CodeMathEpisode:
    task = Task(
        env_id=family.env_id, id="t", split=split, record={"question": "What is 2/4?", "answer": answer}
    )
    return family.start(task, family.parse_options(options, split), must_not_run, random.Random(0))


# --- options -----------------------------------------------------------------------------


def test_default_max_turns_depends_on_split(family: CodeMathFamily) -> None:
    assert family.parse_options({}, "train") == CodeMathOptions(max_turns=5, stateful=False, timeout_s=3.0)
    assert family.parse_options({}, "validation").max_turns == 10
    assert family.parse_options({}, "test").max_turns == 10
    assert family.parse_options({"max_turns": 7}, "train").max_turns == 7


def test_options_types_are_coerced_and_checked(family: CodeMathFamily) -> None:
    assert family.parse_options({"timeout_s": 2}, "test").timeout_s == 2.0
    assert family.parse_options({"stateful": True}, "test").stateful is True


@pytest.mark.parametrize(
    ("raw", "option"),
    [
        ({"max_turns": 0}, "max_turns"),
        ({"max_turns": 101}, "max_turns"),
        ({"max_turns": 2.5}, "max_turns"),
        ({"max_turns": True}, "max_turns"),
        ({"stateful": "yes"}, "stateful"),
        ({"timeout_s": 0}, "timeout_s"),
        ({"timeout_s": 61}, "timeout_s"),
        ({"timeout_s": "3"}, "timeout_s"),
    ],
)
def test_bad_options_name_the_option(family: CodeMathFamily, raw: dict[str, object], option: str) -> None:
    with pytest.raises(ValidationFailed) as err:
        family.parse_options(raw, "test")
    assert err.value.details["option"] == option


def test_unknown_option_is_rejected(family: CodeMathFamily) -> None:
    with pytest.raises(ValidationFailed) as err:
        family.parse_options({"max_turn": 3}, "test")
    assert err.value.details["options"] == ["max_turn"]


def test_options_schema_documents_every_option() -> None:
    schema = options_schema(CodeMathOptions)
    assert set(schema) == {"max_turns", "stateful", "timeout_s", "answer_extraction"}
    assert all(entry["doc"] for entry in schema.values())
    assert schema["timeout_s"]["default"] == 3.0 and schema["stateful"]["default"] is False


def test_family_class_attributes() -> None:
    assert CodeMathFamily.env_id == "toolgym/CodeMath-v0"
    assert CodeMathFamily.needs_sandbox
    for attr in ("description", "action_format", "observation_format", "reward_spec", "record_format"):
        assert getattr(CodeMathFamily, attr)


# --- reset ---------------------------------------------------------------------------------


def test_reset_gives_protocol_and_question(family: CodeMathFamily) -> None:
    episode = start(family)
    observation, info = episode.reset()
    system, user = observation.messages
    assert (
        system["role"] == "system" and "\\boxed{" in system["content"] and "final_answer" in system["content"]
    )
    assert "fresh program" in system["content"]
    assert user == {"role": "user", "content": "What is 2/4?"}
    assert observation.tools is None
    assert info["status"] == "ok" and info["void_turn"] is False and "reason" not in info
    assert episode.turn == 0


def test_stateful_prompt_says_state_is_kept(family: CodeMathFamily) -> None:
    observation, _ = start(family, stateful=True).reset()
    assert "are kept" in observation.messages[0]["content"]


# --- void turn ---------------------------------------------------------------------------


def test_void_turn_stops_with_newline_and_flag(family: CodeMathFamily) -> None:
    episode = start(family)
    episode.reset()
    step = episode.step("I believe the answer is one half.")
    assert step.observation.messages == [{"role": "user", "content": "\n"}]
    assert step.terminated and not step.truncated
    assert step.reward == 0.0
    assert step.info["void_turn"] is True
    assert step.info["reason"] == "void_turn"
    assert step.info["status"] == "invalid_action"
    assert step.info["reward_components"] == {"correct": 0.0}
    # SimpleTIR's extraction reads "one half" after "the answer is" as the number word "one".
    assert step.info["verifier_status"] == "ok" and step.info["extracted_answer"] == "1"
    with pytest.raises(EpisodeFinished):
        episode.step("\\boxed{1/2}")


def test_unclosed_code_block_is_a_void_turn(family: CodeMathFamily) -> None:
    episode = start(family, max_turns=3)
    episode.reset()
    step = episode.step("An unfinished block ```python\nprint(1)")
    assert step.info["void_turn"] and step.reward == 0.0


def test_void_turn_on_the_turn_before_last_gets_the_final_newline(family: CodeMathFamily) -> None:
    # SimpleTIR appends final_prompt ("\n") to every non-empty observation at step max_turns-2.
    episode = start(family, max_turns=2)
    episode.reset()
    assert episode.step("no code, no answer").observation.messages[0]["content"] == "\n\n"


def test_void_turn_on_the_last_turn_is_still_void(family: CodeMathFamily) -> None:
    episode = start(family, max_turns=1)
    episode.reset()
    step = episode.step("nothing")
    assert step.terminated and not step.truncated and step.info["reason"] == "void_turn"
    assert step.observation.messages[0]["content"] == "\n"
    assert step.info["observation_scored"] is False


# --- answers in text ---------------------------------------------------------------------


@pytest.mark.parametrize("answer", ["1/2", "0.5", "\\frac{1}{2}", "\\dfrac{1}{2}"])
def test_boxed_answer_in_text_ends_with_reward_one(family: CodeMathFamily, answer: str) -> None:
    episode = start(family)
    episode.reset()
    step = episode.step(f"Dividing, the answer is \\boxed{{{answer}}}.")
    assert step.observation.messages == [{"role": "user", "content": ""}]
    assert step.terminated and not step.truncated
    assert step.reward == 1.0
    assert step.info["reason"] == "answered"
    assert step.info["reward_components"] == {"correct": 1.0}
    assert step.info["verifier_status"] == "ok"
    assert step.info["void_turn"] is False
    assert episode.turn == 1


def test_wrong_boxed_answer_scores_zero(family: CodeMathFamily) -> None:
    episode = start(family)
    episode.reset()
    step = episode.step("\\boxed{0.51}")
    assert step.terminated and step.reward == 0.0 and step.info["reward_components"] == {"correct": 0.0}


def test_last_boxed_wins_with_nested_braces(family: CodeMathFamily) -> None:
    episode = start(family, answer="\\frac{\\sqrt{2}}{2}")
    episode.reset()
    step = episode.step("First \\boxed{1}, no: \\boxed{\\frac{\\sqrt{2}}{2}}")
    assert step.reward == 1.0
    episode = start(family, answer="1")
    episode.reset()
    assert episode.step("First \\boxed{1}, no: \\boxed{\\frac{\\sqrt{2}}{2}}").reward == 0.0


def test_assistant_message_action(family: CodeMathFamily) -> None:
    episode = start(family)
    episode.reset()
    assert episode.step(AssistantMessage(content="\\boxed{1/2}")).reward == 1.0


def test_unparsable_answer_scores_zero(family: CodeMathFamily) -> None:
    episode = start(family)
    episode.reset()
    step = episode.step("\\boxed{}")
    assert step.reward == 0.0 and step.info["verifier_status"] == "no_answer"
    boxed = start(family, answer_extraction="boxed")
    step = boxed.step("\\boxed{}")
    assert step.reward == 0.0 and step.info["verifier_status"] == "unparsable"


def test_hostile_latex_answer_does_not_hang_the_step() -> None:
    with VerifierPool(workers=1, timeout_s=1.0) as pool:
        fam = CodeMathFamily(verifier=pool)
        episode = start(fam, answer="5")
        episode.reset()
        step = episode.step("\\boxed{9^{9^{9^{9}}}}")
        assert step.terminated and step.reward == 0.0
        assert step.info["status"] == "timeout" and step.info["verifier_status"] == "timeout"


def test_info_is_deterministic(family: CodeMathFamily) -> None:
    infos = []
    for _ in range(2):
        episode = start(family)
        episode.reset()
        infos.append(episode.step("\\boxed{1/2}").info)
    assert infos[0] == infos[1]
    assert infos[0]["metrics"] == {"turns": 1.0, "use_code": 0.0, "valid_code": 0.0, "timeouts": 0.0}
