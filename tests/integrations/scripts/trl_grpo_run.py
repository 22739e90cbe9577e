"""A real TRL GRPOTrainer run whose rollouts are ToolGym episodes; run in the cached TRL venv.

Usage: trl_grpo_run.py CONFIG_JSON. CONFIG: base_url, env_id, task_ids (one dataset row each),
max_steps, out_dir, tool (the tool the model calls), arguments (its arguments). Prints one JSON
line: the trainer's logs and, per reward call, each row's task, episode id, return and infra error.
With ``save_dir`` in CONFIG (and only tool and arguments besides), it saves the model and tokenizer
there instead (``save_pretrained``, what ``GRPOTrainer(model=path)`` loads) and prints
``{"saved": save_dir}``: the policy the examples' tests hand to an example's ``--model``.

No model hub here, so the model and tokenizer are built in place: a byte-level BPE trained on a
few strings, with TRL's own Qwen2.5 chat template (so TRL knows how to parse its tool calls), and
a 2-layer Qwen2 of hidden size 32. Its layers are silenced (o_proj and down_proj zeroed) so each
next token depends only on the last one, and its output head is set so that after the generation
prompt it writes one tool call, ``call_tool(name=TOOL, arguments={KEY: ...})``, then <|im_end|>.
A random model would never call a tool; this one always does, and every token of it is still
sampled by TRL's own generation.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch
import trl
from datasets import Dataset
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM, TrainerCallback
from trl import GRPOConfig, GRPOTrainer

from toolgym.client import RetryPolicy
from toolgym.integrations import trl as toolgym_trl
from toolgym.integrations._shared import tools_system_prompt

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
PROMPT = [{"role": "user", "content": "Solve the task."}]


def build_tokenizer(payload: str) -> PreTrainedTokenizerFast:
    template = (Path(trl.__file__).parent / "chat_templates" / "qwen2_5.jinja").read_text()
    corpus = [tools_system_prompt([]), "system user assistant tool_response tool_call", template]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(corpus, trainers.BpeTrainer(
        vocab_size=320, special_tokens=SPECIAL, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   padding_side="left")
    fast.add_tokens(["<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>", payload])
    fast.chat_template = template
    return fast


def build_model(tokenizer: PreTrainedTokenizerFast, chain: list[int]) -> Qwen2ForCausalLM:
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=8192,
                         tie_word_embeddings=False, pad_token_id=tokenizer.pad_token_id,
                         eos_token_id=tokenizer.eos_token_id, bos_token_id=None)
    model = Qwen2ForCausalLM(config)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        emb, head = model.model.embed_tokens.weight, model.lm_head.weight
        for i, (token, successor) in enumerate(itertools.pairwise(chain)):
            basis = torch.zeros(config.hidden_size)
            basis[i] = 1.0
            emb[token] = basis
            head[successor] = 5.0 * basis  # logit ~ 5 * sqrt(32) = 28 against ~0 for every other token
    return model


def build_policy(tool: str, arguments: dict[str, Any]) -> tuple[Qwen2ForCausalLM, PreTrainedTokenizerFast]:
    """The tiny model and its tokenizer: after any generation prompt, the model calls ``tool``."""
    call = {"name": "call_tool", "arguments": {"name": tool, "arguments": arguments}}
    payload = "\n" + json.dumps(call) + "\n"
    tokenizer = build_tokenizer(payload)
    prompt_ids = tokenizer.apply_chat_template(PROMPT, add_generation_prompt=True, tokenize=True,
                                               tools=[toolgym_trl.ToolGymEnvironment.call_tool])
    if isinstance(prompt_ids, dict) or hasattr(prompt_ids, "keys"):
        prompt_ids = prompt_ids["input_ids"]
    chain = [prompt_ids[-1], *tokenizer.convert_tokens_to_ids(["<tool_call>", payload, "</tool_call>"]),
             tokenizer.eos_token_id]
    return build_model(tokenizer, chain), tokenizer


def main() -> None:
    cfg = json.loads(Path(sys.argv[1]).read_text())
    model, tokenizer = build_policy(cfg["tool"], cfg["arguments"])
    if "save_dir" in cfg:
        model.save_pretrained(cfg["save_dir"])
        tokenizer.save_pretrained(cfg["save_dir"])
        print(json.dumps({"saved": cfg["save_dir"]}))
        return
    prompt = PROMPT

    env_class = toolgym_trl.environment_factory(
        cfg["env_id"], base_url=cfg["base_url"], api_key=cfg.get("api_key", ""),
        retry=RetryPolicy(max_retries=cfg.get("max_retries", 1), backoff_s=0.2, max_backoff_s=1.0))
    rows: list[list[dict[str, Any]]] = []

    def reward(completions: list[Any], environments: list[Any], **kwargs: Any) -> list[float | None]:
        out = toolgym_trl.reward(completions, environments, **kwargs)
        rows.append([{"task_id": e.episode.task_id, "episode_id": e.episode.episode_id, "return": r,
                      "infra_error": e.episode.infra_error, "turns": e.episode.turn}
                     for e, r in zip(environments, out, strict=True)])
        return out

    records: list[dict[str, Any]] = []

    class Keep(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None,
                   **kw: Any) -> None:
            records.append(dict(logs or {}))

    n = len(cfg["task_ids"])
    dataset = Dataset.from_list([{"prompt": prompt, "task_id": t, "options": o}
                                 for t, o in zip(cfg["task_ids"], cfg["options"], strict=True)])
    args = GRPOConfig(
        output_dir=cfg["out_dir"], per_device_train_batch_size=2 * n, num_generations=2,
        max_steps=cfg["max_steps"], max_completion_length=512, max_tool_calling_iterations=1,
        learning_rate=1e-4, logging_steps=1, report_to="none", use_cpu=True, save_strategy="no",
        seed=0, beta=0.0, temperature=1.0, bf16=False, fp16=False, dataloader_num_workers=0,
    )
    trainer = GRPOTrainer(model=model, reward_funcs=reward, args=args, train_dataset=dataset,
                          processing_class=tokenizer, environment_factory=env_class, callbacks=[Keep()])
    trainer.train()
    print(json.dumps({"logs": records, "rows": rows, "global_step": trainer.state.global_step}))


if __name__ == "__main__":
    main()
