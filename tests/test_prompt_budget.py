"""One prompt budget per player: SFT, RL and evaluation cut a long state the same way, the same length.

Checked on a rotary (Llama/SmolLM2-shaped) model, whose position limit (8192 for SmolLM2) is far above
the recipe's budget: nothing but the budget keeps the reflector from reading longer prompts than SFT saw.
"""

from __future__ import annotations

import pytest
import torch
from rl_fixtures import TINY, save_tiny
from transformers import LlamaConfig, LlamaForCausalLM

from reflectrl.agent.models import ModelSpec, load_model, save_model
from reflectrl.agent.prompts import ANALYZE_MARKER, reflection_prompt
from reflectrl.agent.reflector import Reflector
from reflectrl.config import RunConfig, from_dict
from reflectrl.pipeline import model_eval_settings
from reflectrl.train.rl import setup
from reflectrl.train.sft import _encode_reflections

MAX_LENGTH, REFLECTION_TOKENS = 160, 16


def long_state() -> str:
    listing = "\n".join(f"module_{i}.py" for i in range(30))
    history = "\n".join(f"cd package_{i}" for i in range(12))
    contents = "\n".join(f"def function_{i}(value): return value * {i}" for i in range(60))
    return (f"Task: find the file that defines function_7.\nCurrent working directory: repo/src\n"
            f"Files under it:\n{listing}\nCommand history:\n{history}\n"
            f"Execution result of the last command:\n{contents}")


@pytest.fixture(scope="module")
def rotary(tmp_path_factory):
    """A tiny Llama (rotary positions, 8192 of them) with a tokenizer trained on text like the state's."""
    _, tokenizer = load_model(ModelSpec(name="tiny", **TINY), texts=[long_state()] * 4 + ["the file is module_7.py"])
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=8192,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("llama") / "reflector"
    save_model(LlamaForCausalLM(config), tokenizer, path)
    return path


def test_sft_and_the_reflector_cut_a_long_state_identically_within_the_budget(rotary):
    model, tokenizer = load_model(ModelSpec(name=str(rotary)))
    prompt = reflection_prompt(long_state())
    assert len(tokenizer(prompt)["input_ids"]) > 2 * MAX_LENGTH
    row = _encode_reflections(tokenizer, [{"prompt": prompt, "completion": "The file is module_7.py."}],
                              MAX_LENGTH, REFLECTION_TOKENS)[0]
    reflector = Reflector(model, tokenizer, max_new_tokens=REFLECTION_TOKENS, max_length=MAX_LENGTH)
    read = reflector._encode([prompt])[0]
    assert row.input_ids[:row.n_prompt] == read
    assert len(read) <= MAX_LENGTH - REFLECTION_TOKENS - 1 and len(row.input_ids) <= MAX_LENGTH
    text = tokenizer.decode(read)
    assert text.startswith("Task: find the file that defines function_7.") and text.endswith(ANALYZE_MARKER)
    assert "earlier entries left out to fit" in text and "cut to fit" in text
    generated = reflector.generate_ids([prompt])[0]
    assert 1 <= len(generated) <= REFLECTION_TOKENS


def test_a_long_completion_is_cut_to_what_the_reflector_may_write(rotary):
    _, tokenizer = load_model(ModelSpec(name=str(rotary)))
    long = " ".join(["the file is module_7.py"] * 20)
    row = _encode_reflections(tokenizer, [{"prompt": reflection_prompt("Task: x"), "completion": long}],
                              MAX_LENGTH, REFLECTION_TOKENS)[0]
    assert len(row.input_ids) - row.n_prompt == REFLECTION_TOKENS
    assert tokenizer.eos_token_id not in row.input_ids[row.n_prompt:], "a cut reflection does not end"


def test_rl_and_evaluation_give_the_reflector_its_own_budget_and_dtype(rotary, tmp_path):
    config = from_dict(RunConfig, {
        "env": {"name": "taxi"}, "model": {"name": "tiny", **TINY, "dtype": "float32"},
        "reflector_model": {"name": "tiny", **TINY, "dtype": "bfloat16"},
        "sft": {"max_length": 512}, "reflector_sft": {"max_length": MAX_LENGTH},
        "reflection_tokens": REFLECTION_TOKENS, "rl": {"iterations": 1, "batch_episodes": 1},
    })
    run = setup(config, save_tiny(tmp_path / "policy"), tmp_path / "rl", rotary, resume=False)
    assert run.reflector.max_length == MAX_LENGTH and run.policy.max_length == 512
    assert all(p.dtype == torch.bfloat16 for p in run.reflector.model.parameters())
    settings = model_eval_settings(config, greedy=True)
    assert settings["reflector_max_length"] == MAX_LENGTH and settings["reflector_dtype"] == "bfloat16"
    assert settings["max_length"] == 512 and settings["dtype"] == "float32"
