"""Make ``simpletir_cases.json``: random CodeMath trajectories run through the authors' code.

Usage (in a virtualenv with ``math-verify``, ``sympy``, ``word2number`` and ``regex``; no
torch, ray or verl needed)::

    python tests/envs/differential/gen_simpletir.py /path/to/SimpleTIR-checkout [out.json]

It imports ltzheng/SimpleTIR from the given checkout at run time (nothing of theirs is copied
here) and, for each seeded random trajectory, plays their rollout rules on it:

- ``AgentHelper._postprocess_responses`` cuts each turn (their ``recipe/simpletir/agent_utils.py``,
  with a tokenizer that only decodes as ``skip_special_tokens=True`` would);
- ``AgentHelper.execute_predictions`` finds the code, builds the program, asks the sandbox
  (replaced by the recorded outputs of the case) and formats the observation, the done and
  void flags and the code counters;
- the loop of ``run_llm_loop`` for one trajectory: ``final_prompt`` on every non-empty
  observation at ``step == max_turns - 2``, observations appended for ``step < max_turns - 1``
  only, the episode over when done or at ``max_turns``. (That loop is torch code over a batch;
  it is re-stated here in eight lines, the rules above, and is the one part not run from their
  checkout.)
- ``compute_score`` (``recipe/simpletir/utils/reward_score/hf_math_verify.py``) scores the
  concatenated responses against the gold.

A recorded sandbox run is ``{"status": "ok"|"error"|"timeout", "stdout", "stderr"}``; their
sandbox reports a timeout as empty stdout and ``stderr == "Timeout\\n"``, which is what their
side is given for ``timeout`` (ours gets the status and the partial stdout, and must show the
same).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import random
import sys
import types
from pathlib import Path
from typing import Any

SEED = 20260412
CASES = 100
SPECIAL = ("<|im_end|>", "<|endoftext|>")


def _load_theirs(checkout: Path) -> tuple[Any, Any, Any, Any]:
    """Import their agent helper and scorer with the heavy imports stubbed out."""
    sys.path.insert(0, str(checkout))
    torch = types.ModuleType("torch")
    torch.Tensor = object  # type: ignore[attr-defined]  # only used in annotations
    verl = types.ModuleType("verl")
    verl.DataProto = object  # type: ignore[attr-defined]
    sandbox = types.ModuleType("sandbox")
    internal = types.ModuleType("sandbox.internal_sandbox")
    sys.modules.update({"torch": torch, "verl": verl, "sandbox": sandbox, "sandbox.internal_sandbox": internal})
    state: dict[str, Any] = {}

    async def parallel_sandbox(tasks: list[str], num_processes: int = 256) -> tuple[list[bool], list[str], list[str]]:
        state["tasks"] = list(tasks)
        run = state["run"]
        if run["status"] == "timeout":
            return [False], [""], ["Timeout\n"]
        return [not run["stderr"]], [run["stdout"]], [run["stderr"]]

    internal.parallel_sandbox = parallel_sandbox  # type: ignore[attr-defined]
    from recipe.simpletir import agent_utils
    from recipe.simpletir.utils.reward_score import hf_math_verify

    return agent_utils, hf_math_verify, state, asyncio


class _Tokenizer:
    pad_token_id = 0

    def batch_decode(self, texts: list[str], skip_special_tokens: bool = True) -> list[str]:
        out = []
        for text in texts:
            for token in SPECIAL:
                text = text.replace(token, "")
            out.append(text)
        return out

    def __call__(self, texts: list[str], **_: Any) -> dict[str, Any]:
        return {"input_ids": None}


class _Mask(list):  # type: ignore[type-arg]
    def sum(self) -> int:
        return len([x for x in self if x])


# --- random trajectories ------------------------------------------------------------------

GOLDS = ["24", "7", "-3", "\\frac{1}{2}", "12", "0.25", "100"]
FORMS = {
    "24": ["24", "twenty four", "24 apples", "24.0", "4!", "25"],
    "7": ["7", "seven", "7.", "x = 7", "8"],
    "-3": ["-3", "- 3", "3", "-3.00"],
    "\\frac{1}{2}": ["\\frac{1}{2}", "1/2", "0.5", "\\dfrac{1}{2}", "\\frac12", "2"],
    "12": ["12", "12 \\text{ cm}", "twelve", "13"],
    "0.25": ["0.25", ".25", "1/4", "25\\%"],
    "100": ["100", "1,00", "one hundred", "10^2"],
}


def _answer(rng: random.Random, gold: str) -> str:
    return rng.choice(FORMS[gold])


def _text(rng: random.Random, gold: str) -> str:
    value = _answer(rng, gold)
    pieces = [
        "Let me think.",
        "First compute the sum 3 + 4 = 7.",
        f"So the answer is {value}.",
        f"The answer is {value}",
        f"答案是 {value}\n\n再检查一下 5",
        f"答案是{value}",
        f"Therefore \\boxed{{{value}}}.",
        f"\\boxed{{{value}",
        "I wrote boxed here.",
        f"The final answer is ${value}$. I hope it is correct.",
        f"We get {value} and then 2, 3.",
        "\n\n",
        f"{value}</s> trailing 9",
        "[END] 11",
        "<|im_end|>",
        "No numbers here.",
    ]
    return " ".join(rng.choice(pieces) for _ in range(rng.randint(0, 3)))


def _code(rng: random.Random, gold: str) -> str:
    value = _answer(rng, gold).replace("\\", "\\\\")
    return rng.choice(
        [
            "print(6 * 4)",
            f"final_answer('{value}')",
            "x = 3\nprint(x + 4)",
            "import math\nprint(math.factorial(4))",
            "1 / 0",
            "for i in range(3):\n    print(i)",
        ]
    )


def _turn(rng: random.Random, gold: str) -> str:
    if rng.random() < 0.12:
        return _text(rng, gold)  # no code: a void turn, or an answer
    before = _text(rng, gold) if rng.random() < 0.3 else rng.choice(["Let me compute.", "", "Try 5 first."])
    fence = "```python\n" if rng.random() < 0.8 else rng.choice(["```py\n", "```\n", "```python "])
    close = "\n```" if rng.random() < 0.85 else rng.choice(["```", ""])
    block = fence + _code(rng, gold) + close
    boxed = f"\nThen \\boxed{{{_answer(rng, gold)}}}"
    after = rng.choice(["", "", "", boxed, "\n```python\nprint(1)\n```", "\nDone 5."])
    return f"{before}\n\n{block}{after}"


def _run(rng: random.Random, gold: str) -> dict[str, str]:
    value = _answer(rng, gold)
    roll = rng.random()
    if roll < 0.08:
        return {"status": "timeout", "stdout": rng.choice(["", "partial 3\n"]), "stderr": ""}
    if roll < 0.22:
        trace = "Traceback (most recent call last):\n  File x\nZeroDivisionError: division by zero\n"
        err = rng.choice([trace, "a warning\n"])
        return {"status": "error", "stdout": rng.choice(["", f"{value}\n"]), "stderr": err}
    if roll < 0.27:
        return {"status": "ok", "stdout": "".join(f"{i}\n" for i in range(200)), "stderr": ""}
    stdout = rng.choice(["", f"{value}\n", f"\\boxed{{{value}}}\n", "0\n1\n2\n", "24\n", "7\n", "3\n", "done\n"])
    return {"status": "ok", "stdout": stdout, "stderr": ""}


def _play(theirs: tuple[Any, Any, Any, Any], case: dict[str, Any]) -> dict[str, Any]:
    agent_utils, hf_math_verify, state, _ = theirs
    config = agent_utils.GenerationConfig(
        max_turns=case["max_turns"], max_start_length=1, max_prompt_length=1, max_response_length=1,
        max_obs_length=1 << 30, num_gpus=1, rollout_n=1, mask_void_turns=True,
    )  # fmt: skip
    helper = agent_utils.AgentHelper(_Tokenizer(), None, config)
    solution = ""
    steps = []
    max_turns = case["max_turns"]
    for step, turn in enumerate(case["turns"]):
        state["run"], state["tasks"] = turn["run"], []
        with contextlib.redirect_stdout(io.StringIO()):
            _, (cut,) = helper._postprocess_responses([turn["text"]])
            next_obs, dones, void, info = helper.execute_predictions([cut], _Mask([True]))
        obs = next_obs[0]
        if step == max_turns - 2 and len(obs) > 0:
            obs += helper.prompt_dict["final_prompt"]
        solution += cut + (obs if step < max_turns - 1 else "")
        steps.append(
            {
                "cut": cut,
                "program": state["tasks"][0] if state["tasks"] else None,
                "observation": obs,
                "done": bool(dones[0]),
                "void": bool(void[0]),
                "use_code": info["use_code"][0],
                "valid_code": info["valid_code"][0],
            }
        )
        if dones[0] or step == max_turns - 1:
            break
    with contextlib.redirect_stdout(io.StringIO()):
        scored = hf_math_verify.compute_score(solution, case["gold"])
        extracted, _ = hf_math_verify.extract_solution(solution)
    return {"steps": steps, "solution": solution, "extracted": extracted, "score": scored["score"]}


def main(argv: list[str]) -> None:
    """Write the fixture (see the module doc)."""
    if len(argv) < 2:
        raise SystemExit(__doc__)
    theirs = _load_theirs(Path(argv[1]).resolve())
    out = Path(argv[2]) if len(argv) > 2 else Path(__file__).with_name("simpletir_cases.json")
    rng = random.Random(SEED)
    cases = []
    for i in range(CASES):
        gold = rng.choice(GOLDS)
        max_turns = rng.choice([5, 5, 10, 10, 2, 3])
        turns = [{"text": _turn(rng, gold), "run": _run(rng, gold)} for _ in range(max_turns)]
        case: dict[str, Any] = {"id": f"st-{i:03d}", "gold": gold, "max_turns": max_turns, "turns": turns}
        case["expected"] = _play(theirs, case)
        case["turns"] = turns[: len(case["expected"]["steps"])]
        cases.append(case)
    meta = {"generator": "tests/envs/differential/gen_simpletir.py", "seed": SEED, "upstream": "ltzheng/SimpleTIR"}
    out.write_text(json.dumps({"meta": meta, "cases": cases}, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {len(cases)} cases to {out}")


if __name__ == "__main__":
    main(sys.argv)
