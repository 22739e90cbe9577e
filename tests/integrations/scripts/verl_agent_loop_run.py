"""verl's own agent-loop classes drive toolgym.integrations.verl against a real server; run in the verl venv.

Usage: verl_agent_loop_run.py CONFIG_JSON. CONFIG: base_url, env_id, samples (a list of
{task_id, options, script: [assistant turn text, ...],
and agent_name when not toolgym_agent}), tool_config_path, max_retries. Prints
one JSON line: per sample, the ``AgentLoopOutput`` fields the test checks, and the generation
requests the scripted server saw.

The tools come from the YAML that ``tool_config`` produced, loaded by verl's
``initialize_tools_from_config``; the loop is instantiated from verl's registry with hydra, as
verl's ``AgentLoopWorker`` does; only the LLM server is scripted: it answers each generation
request with the next turn of the sample's script, as token ids of a tokenizer built here.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import hydra
import yaml
from omegaconf import OmegaConf
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast
from verl.experimental.agent_loop.agent_loop import (
    AgentLoopOutput,
    DictConfigWrap,
    ToolListWrap,
    _agent_loop_registry,
)
from verl.tools.tool_registry import initialize_tools_from_config
from verl.utils.dataset.rl_dataset import RLHFDataset
from verl.workers.rollout.replica import TokenOutput

from toolgym.integrations import verl as toolgym_verl

# A Hermes-style template of our own: system (with the tools block), user, assistant with
# <tool_call> blocks, tool results as <tool_response> in a user turn, the generation prompt.
TEMPLATE = (
    "{%- if tools %}<|im_start|>system\nYou may call functions.\n<tools>"
    "{%- for tool in tools %}\n{{ tool | tojson }}{%- endfor %}\n</tools><|im_end|>\n{%- endif %}"
    "{%- for m in messages %}"
    "{%- if m.role == 'tool' %}<|im_start|>user\n<tool_response>\n{{ m.content }}\n</tool_response><|im_end|>\n"
    "{%- elif m.role == 'assistant' %}<|im_start|>assistant\n{{ m.content or '' }}"
    "{%- for c in m.tool_calls or [] %}<tool_call>\n{{ {'name': c.function.name, 'arguments': c.function.arguments}"
    " | tojson }}\n</tool_call>{%- endfor %}<|im_end|>\n"
    "{%- else %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{%- endif %}"
    "{%- endfor %}{%- if add_generation_prompt %}<|im_start|>assistant\n{%- endif %}"
)


def build_tokenizer() -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator([TEMPLATE, "system user assistant tool_response tool_call name arguments"],
                            trainers.BpeTrainer(vocab_size=320, special_tokens=["<|endoftext|>", "<|im_start|>",
                                                                                "<|im_end|>"],
                                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    fast.add_tokens(["<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>"])
    fast.chat_template = TEMPLATE
    return fast


class ScriptedServer:
    """Stands in for verl's LLM server client: each request gets the sample's next scripted turn."""

    def __init__(self, tokenizer: PreTrainedTokenizerFast, turns: list[str]) -> None:
        self.tokenizer, self.turns, self.prompts = tokenizer, list(turns), []

    async def generate(self, request_id: str, *, prompt_ids: list[int], sampling_params: dict[str, Any],
                       **kwargs: Any) -> TokenOutput:
        self.prompts.append(self.tokenizer.decode(prompt_ids))
        text = self.turns.pop(0) if self.turns else "<|im_end|>"
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        return TokenOutput(token_ids=ids, log_probs=[-0.1] * len(ids), stop_reason="completed", num_preempted=0)


def trainer_config() -> Any:
    return OmegaConf.create({
        "actor_rollout_ref": {"rollout": {
            "prompt_length": 4096, "response_length": 2048, "full_determinism": False,
            "multi_turn": {"max_user_turns": 5, "max_assistant_turns": 5, "max_parallel_calls": 1,
                           "max_tool_response_length": 256, "tool_response_truncate_side": "middle",
                           "format": "hermes"},
        }},
        "data": {"apply_chat_template_kwargs": {}},
    })


async def run_sample(config: Any, tools: list[Any], tokenizer: Any, env_id: str,
                     sample: dict[str, Any]) -> dict[str, Any]:
    server = ScriptedServer(tokenizer, sample["script"])
    loop = hydra.utils.instantiate(
        config=_agent_loop_registry[sample.get("agent_name", toolgym_verl.AGENT_NAME)],
        trainer_config=DictConfigWrap(config=config),
        server_manager=server, tokenizer=tokenizer, processor=None, hf_model_type=None, dataset_cls=RLHFDataset,
        data_config=DictConfigWrap(config.data), tools=ToolListWrap(tools))
    create = {"env_id": env_id, "task_id": sample["task_id"], "options": sample.get("options") or {}}
    output: AgentLoopOutput = await loop.run(
        {"temperature": 1.0}, raw_prompt=[{"role": "user", "content": "Answer the question.\n\n"}],
        tools_kwargs={"call_tool": {"create_kwargs": create}})
    assert isinstance(output, AgentLoopOutput)
    return {
        "task_id": sample["task_id"], "reward_score": output.reward_score, "num_turns": output.num_turns,
        "extra_fields": {k: v for k, v in output.extra_fields.items() if k.startswith("toolgym_")},
        "tool_rewards": output.extra_fields.get("tool_rewards"), "mask_sum": sum(output.response_mask),
        "response_len": len(output.response_ids), "prompts": server.prompts,
        "as_dict_keys": sorted(output.as_dict()),
    }


async def main_async(cfg: dict[str, Any]) -> dict[str, Any]:
    path = Path(cfg["tool_config_path"])
    path.write_text(yaml.safe_dump(toolgym_verl.tool_config(cfg["env_id"], base_url=cfg["base_url"],
                                                            max_retries=cfg["max_retries"])))
    tools = initialize_tools_from_config(str(path))
    tokenizer, config = build_tokenizer(), trainer_config()
    samples = await asyncio.gather(*(run_sample(config, tools, tokenizer, cfg["env_id"], s) for s in cfg["samples"]))
    return {"samples": list(samples), "tool_names": [t.name for t in tools]}


def main() -> None:
    cfg = json.loads(Path(sys.argv[1]).read_text())
    print(json.dumps(asyncio.run(main_async(cfg))))


if __name__ == "__main__":
    main()
