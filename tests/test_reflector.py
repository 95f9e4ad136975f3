"""The frozen reflector: padding-correct batching, stopping, limits, the no-reflection ablation."""

from __future__ import annotations

import pytest
import torch

from reflectrl.agent.models import ModelSpec, load_model
from reflectrl.agent.prompts import ACTION_MARKER, ACTION_STOP, reflection_prompt
from reflectrl.agent.reflector import Reflector

# state -> (reflection, ends with the action marker? else EOS)
EXAMPLES = {
    "Taxi at row 2. Passenger at R.": ("The passenger waits at R, north of us, so go north.", True),
    "You are in /repo. Task: find the tokenizer code.": ("Tokenizer code lives in src, so enter src first.", True),
    "Taxi at row 0 with the passenger; destination G is east.": ("We carry the passenger; G is east, so drive east.", False),
    "A long state. " * 6 + "Wall to the west.": ("A wall blocks the west, so moving west would end the episode.", True),
}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained():
    """A tiny model trained for a few seconds to write each state's reflection, then stop."""
    texts = [reflection_prompt(s) + r for s, (r, _) in EXAMPLES.items()]
    model, tokenizer = load_model(ModelSpec(n_layer=2, n_embd=64, n_head=4, vocab_size=700, seed=1), texts * 10)
    sequences = [
        tokenizer(reflection_prompt(s) + r + (ACTION_MARKER if marker else ""), add_special_tokens=False)["input_ids"]
        + ([] if marker else [tokenizer.eos_token_id])
        for s, (r, marker) in EXAMPLES.items()
    ]
    width = max(len(seq) for seq in sequences)
    input_ids = torch.tensor([seq + [tokenizer.pad_token_id] * (width - len(seq)) for seq in sequences])
    labels = torch.tensor([seq + [-100] * (width - len(seq)) for seq in sequences])
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(150):
        loss = model(input_ids=input_ids, attention_mask=(labels != -100).long(), labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    return model, tokenizer


def test_greedy_reflections_are_learned_and_stop_at_the_marker_or_eos(trained):
    model, tokenizer = trained
    reflector = Reflector(model, tokenizer, max_new_tokens=40)
    states = list(EXAMPLES)
    assert reflector.reflect(states) == [r for r, _ in EXAMPLES.values()]
    raw = reflector.generate([reflection_prompt(s) for s in states])
    for text, (reflection, marker) in zip(raw, EXAMPLES.values()):
        if marker:
            assert text.rstrip().endswith(ACTION_STOP) and text.count(ACTION_STOP) == 1
        else:
            assert text == reflection  # stopped at EOS, which is not part of the text


def test_batched_equals_unbatched_with_padding(trained):
    model, tokenizer = trained
    reflector = Reflector(model, tokenizer, max_new_tokens=24)
    states = list(EXAMPLES) + ["An unseen state about a kitchen.", "x"]
    batched = reflector.reflect(states)
    assert batched == [reflector.reflect([s])[0] for s in states]
    assert batched[::-1] == reflector.reflect(states[::-1])


def test_generation_matches_transformers_generate(trained):
    """Our KV-cache loop (preallocated cache, shrinking batch) gives HF generate's greedy tokens."""
    _, tokenizer = trained
    model, _ = load_model(ModelSpec(n_layer=2, n_embd=64, n_head=4, vocab_size=700, seed=5), tokenizer=tokenizer)
    reflector = Reflector(model, tokenizer, max_new_tokens=16)
    prompts = [reflection_prompt(s) for s in list(EXAMPLES) + ["short", "a somewhat longer unseen state text"]]
    ours = reflector.generate_ids(prompts)
    batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.no_grad():
        reference = model.generate(**batch, max_new_tokens=16, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    for row, tokens in enumerate(ours):
        expected = reference[row, batch["input_ids"].shape[1] :].tolist()
        assert tokens == expected[: len(tokens)]
        assert len(tokens) == 16 or ACTION_STOP in tokenizer.decode(tokens) or expected[len(tokens)] == tokenizer.eos_token_id


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_full_width_preallocated_cache_equals_transformers_dynamic_cache(trained, dtype):
    """The preallocated layers hand attention the whole buffer and the mask hides its unwritten tail."""
    model, tokenizer = trained
    clone, _ = load_model(ModelSpec(n_layer=2, n_embd=64, n_head=4, vocab_size=700, seed=1), tokenizer=tokenizer)
    clone.load_state_dict(model.state_dict())
    reflector = Reflector(clone, tokenizer, max_new_tokens=24, dtype=dtype)
    prompts = [reflection_prompt(s) for s in list(EXAMPLES) + ["short", "an unseen state about a kitchen"]]
    assert reflector._preallocated()
    preallocated = reflector.generate_ids(prompts)
    reflector._preallocated = lambda: False
    assert reflector.generate_ids(prompts) == preallocated
    assert tokenizer.batch_decode(preallocated[:4], skip_special_tokens=True)[1].startswith(EXAMPLES[list(EXAMPLES)[1]][0])


def test_max_new_tokens_bounds_every_row(trained):
    model, tokenizer = trained
    reflector = Reflector(model, tokenizer, max_new_tokens=3)
    for text in reflector.generate([reflection_prompt(s) for s in EXAMPLES]):
        assert 1 <= len(tokenizer(text, add_special_tokens=False)["input_ids"]) <= 3
    assert reflector.reflect(list(EXAMPLES))[0] == "The passenger waits"


def test_probability_zero_never_calls_the_model(trained):
    model, tokenizer = trained
    calls = []
    handle = model.register_forward_hook(lambda *args: calls.append(1))
    try:
        assert Reflector(model, tokenizer, probability=0.0).reflect(list(EXAMPLES)) == [None] * len(EXAMPLES)
        assert not calls
        some = Reflector(model, tokenizer, probability=0.5, seed=4, max_new_tokens=4).reflect(list(EXAMPLES) * 4)
        assert calls and 0 < sum(r is None for r in some) < len(some)
        same = Reflector(model, tokenizer, probability=0.5, seed=4, max_new_tokens=4).reflect(list(EXAMPLES) * 4)
        assert same == some
    finally:
        handle.remove()


def test_sampling_is_seeded_and_the_model_frozen(trained):
    model, tokenizer = trained
    first = Reflector(model, tokenizer, temperature=1.5, seed=9, max_new_tokens=12).reflect(list(EXAMPLES))
    second = Reflector(model, tokenizer, temperature=1.5, seed=9, max_new_tokens=12).reflect(list(EXAMPLES))
    assert first == second
    assert all(not p.requires_grad for p in model.parameters()) and not model.training


def test_bf16_reflector_casts_its_frozen_weights(trained):
    model, tokenizer = trained
    copy, _ = load_model(ModelSpec(n_layer=2, n_embd=64, n_head=4, vocab_size=700, seed=1), tokenizer=tokenizer)
    copy.load_state_dict(model.state_dict())
    reflector = Reflector(copy, tokenizer, max_new_tokens=40, dtype="bfloat16")
    assert all(p.dtype == torch.bfloat16 for p in copy.parameters())
    assert reflector.reflect(list(EXAMPLES))[1] == EXAMPLES[list(EXAMPLES)[1]][0]


def test_bad_arguments_are_rejected(trained):
    model, tokenizer = trained
    with pytest.raises(ValueError, match="probability"):
        Reflector(model, tokenizer, probability=1.5)
    with pytest.raises(ValueError, match="max_new_tokens"):
        Reflector(model, tokenizer, max_new_tokens=0)
    with pytest.raises(ValueError, match="dtype"):
        Reflector(model, tokenizer, dtype="float16")
