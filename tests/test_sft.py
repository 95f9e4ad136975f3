"""SFT of the two players on oracle-teacher data for the real DangerousTaxi, with tiny real models."""

from __future__ import annotations

import copy
import re

import pytest
import torch

from reflectrl.agent.models import ModelSpec, load_model
from reflectrl.agent.reflector import Reflector
from reflectrl.config import SFTConfig
from reflectrl.data.sft_sets import build_sets
from reflectrl.data.trajectories import generate_examples
from reflectrl.envs.registry import make_env
from reflectrl.teachers.oracle import OracleTeacher
from reflectrl.train.sft import train_sft

from rl_fixtures import TINY

#: SFT steps for the reflector test: a 2-layer model agrees with the teacher on ~70% of held-out states after 500
REFLECTOR_STEPS = 500
DIRECTION = re.compile(r"\b(south|north|east|west|pick up|drop off)\b")


def _examples(split: str, episodes: int, seed: int):
    env = make_env("taxi", stage="pickup")
    return list(generate_examples(env, OracleTeacher("taxi", seed), env.tasks(split), episodes, 0.3, 1, seed=seed))


@pytest.fixture(scope="module")
def data():
    train, val = build_sets(_examples("train", 150, 0)), build_sets(_examples("val", 30, 1))
    texts = [r["prompt"] + r["completion"] for r in train["reflection"]]
    torch.manual_seed(0)
    _, tokenizer = load_model(ModelSpec(name="tiny", **TINY), texts=texts)
    return train, val, tokenizer


def _fresh(tokenizer, seed: int):
    torch.manual_seed(seed)
    model, _ = load_model(ModelSpec(name="tiny", **{**TINY, "n_layer": 2, "n_embd": 96, "n_head": 3}),
                          tokenizer=tokenizer)
    return model


def test_policy_sft_reaches_90_percent_action_accuracy_on_held_out_states(tmp_path, data):
    train, val, tokenizer = data
    # the last 64 tokens hold the end of the reflection and the action list: enough to choose,
    # and short enough for a from-scratch model to learn within the test's budget
    config = SFTConfig(epochs=4, lr=3e-3, batch_size=32, max_length=64, shuffle_ids=False, eval_every=0)
    metrics = train_sft(_fresh(tokenizer, 1), tokenizer, train["policy"], val["policy"], config, tmp_path, "policy")
    assert metrics["val_action_accuracy"] >= 0.9, metrics
    assert (tmp_path / "sft_metrics.json").exists() and (tmp_path / "logs" / "metrics.jsonl").exists()
    reloaded, _ = load_model(ModelSpec(name=str(tmp_path)))
    assert sum(p.numel() for p in reloaded.parameters()) > 0


def _direction(reflection: str) -> str | None:
    """The move a taxi reflection ends on: the oracle teacher names it in its last sentence."""
    sentences = [s for s in reflection.split(".") if s.strip()]
    found = DIRECTION.findall(sentences[-1]) if sentences else []
    return found[-1] if found else None


def test_reflector_sft_gives_the_teachers_direction_on_most_held_out_states(tmp_path, data):
    train, val, tokenizer = data
    model = _fresh(tokenizer, 2)
    untrained = SFTConfig(max_length=512, batch_size=32)
    from reflectrl.train.sft import evaluate_sft

    before = evaluate_sft(model, tokenizer, val["reflection"], "reflection", untrained, "float32")["val_loss"]
    config = SFTConfig(epochs=1, max_steps=REFLECTOR_STEPS, lr=5e-3, batch_size=32, max_length=512, eval_every=0)
    metrics = train_sft(model, tokenizer, train["reflection"], val["reflection"], config, tmp_path, "reflection")
    assert metrics["val_loss"] < 0.5 * before, (before, metrics)
    reflector = Reflector(model, tokenizer, max_new_tokens=48)
    rows = val["reflection"]
    outputs = reflector.reflect([r["prompt"].split("\n # Analyze:")[0] for r in rows])
    assert all(out and "# Action" not in out for out in outputs), outputs
    agree = [_direction(out) == _direction(row["completion"]) for out, row in zip(outputs, rows)]
    assert all(_direction(row["completion"]) for row in rows)
    assert sum(agree) / len(agree) >= 0.6, [out for out, ok in zip(outputs, agree) if not ok][:5]


def test_reflector_sft_sees_the_prompt_tokens_the_reflector_generates_from(data):
    """A tokenizer that puts BOS first: SFT must train on the same sequence inference feeds the reflector."""
    from tokenizers.processors import TemplateProcessing

    from reflectrl.train.sft import _encode_reflections

    train, _, tokenizer = data
    tokenizer = copy.deepcopy(tokenizer)
    bos = tokenizer.bos_token_id
    tokenizer.backend_tokenizer.post_processor = TemplateProcessing(single="<s> $A", special_tokens=[("<s>", bos)])
    model, _ = load_model(ModelSpec(name="tiny", **TINY), tokenizer=tokenizer)
    reflector = Reflector(model, tokenizer, max_new_tokens=8)
    row = train["reflection"][0]
    (encoded,) = _encode_reflections(tokenizer, [row], 512, reflection_tokens=8)
    assert encoded.input_ids[0] == bos
    assert encoded.input_ids[:encoded.n_prompt] == reflector._encode([row["prompt"]])[0]


def test_text_scored_rows_count_their_actions_tokens_in_the_micro_batch_budget(data):
    from reflectrl.agent.policy import ActionPolicy
    from reflectrl.train.sft import _encode_all, _micro_batches

    train, _, tokenizer = data
    policy = ActionPolicy(_fresh(tokenizer, 0), tokenizer, max_length=512, scoring="text")
    encoded = _encode_all(train["policy"][:16], "policy", tokenizer, policy, 512, None)
    for row in encoded:
        assert row.n_answer == sum(len(tokens) for tokens in policy.action_tokens(row.prompt, row.ids)) > 0
        assert row.size == len(row.input_ids) + row.n_answer
    budget = 3 * max(row.size for row in encoded)
    parts = _micro_batches(encoded, budget)
    assert sum(len(part) for part in parts) == 16 and len(parts) > 1
    assert all(len(part) * max(row.size for row in part) <= budget for part in parts)


def test_bf16_lora_reflector_rows_train_without_fp32_copies_of_the_activations(data):
    """peft would copy each adapter's input to fp32 (and autocast back to bf16); SFT's forward skips both copies."""
    from reflectrl.agent.models import LoraSettings
    from reflectrl.train.sft import _encode_reflections, accumulate

    train, _, tokenizer = data
    model, _ = load_model(ModelSpec(name="tiny", **TINY, dtype="bfloat16", lora=LoraSettings(r=4, dropout=0.1)),
                          tokenizer=tokenizer)
    seen = set()
    for name, module in model.named_modules():
        if name.endswith("lora_A.default"):
            module.register_forward_pre_hook(lambda _module, args: seen.add(args[0].dtype))
    model.train()
    loss = accumulate(model, tokenizer, None, [_encode_reflections(tokenizer, train["reflection"][:4], 256, 16)], 0,
                      "bfloat16")
    assert seen == {torch.bfloat16} and loss > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for n, p in model.named_parameters() if "lora_B" in n)
