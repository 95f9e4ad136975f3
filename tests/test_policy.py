"""The action-id head: one forward pass equals per-candidate scoring; sampling, gradients, truncation."""

from __future__ import annotations

import random
import tempfile

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from reflectrl.agent.models import LoraSettings, ModelSpec, load_model
from reflectrl.agent.policy import ActionPolicy, ActionTokenError, action_list_start, action_texts
from reflectrl.agent.prompts import ACTION_MARKER, policy_prompt
from reflectrl.config import SFTConfig
from reflectrl.envs.action_parser import EXTRA_ACTION_IDS, action_ids
from reflectrl.train.sft import train_sft

TEXTS = [
    f"Task: find the file that defines {topic}. Current working directory: /repo/src/{topic}. "
    f"Files under it: __init__.py {topic}_io.py data_{i}.csv. Command history: cd src; ls. "
    f"The taxi is at row {i % 5}, column {i % 7}; the passenger waits at Y."
    for i, topic in enumerate(["parser", "loader", "cache", "tokens", "widgets"] * 24)
]
ACTIONS = ["cd ..", "cd src", "cat setup.py", "cat README.md", "id setup.py", "go north", "go south", "pick up", "drop off"]
SPEC = ModelSpec(n_layer=2, n_embd=64, n_head=4, vocab_size=1024, seed=3)


pytestmark = pytest.mark.usefixtures("one_thread")


def _batch() -> tuple[list[str], list[list[str]]]:
    """Three prompts of different lengths with 3, 9 and 5 actions, shuffled ids (letters, digits, 100+)."""
    rng = random.Random(0)
    prompts, ids = [], []
    for n_actions, repeat, reflection in ((3, 1, "Go up one level."), (9, 4, None), (5, 2, "The file is near.")):
        labels = action_ids(n_actions)
        rng.shuffle(labels)
        if n_actions == 9:
            labels[2] = "150"
        prompts.append(policy_prompt(" ".join(TEXTS[:repeat]), ACTIONS[:n_actions], reflection, ids=labels))
        ids.append(labels)
    return prompts, ids


@pytest.fixture(scope="module")
def tiny():
    return load_model(SPEC, TEXTS)


def _per_candidate(model, tokenizer, prompt: str, labels: list[str]) -> torch.Tensor:
    """Reference: one forward per candidate with its id appended; its token's log-prob, renormalised."""
    scores = []
    for label in labels:
        ids = tokenizer(prompt + label, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids])).logits[0, -2]
        scores.append(torch.log_softmax(logits, -1)[ids[-1]])
    scores = torch.stack(scores)
    return scores - torch.logsumexp(scores, 0)


def test_one_forward_equals_per_candidate_scoring(tiny):
    model, tokenizer = tiny
    policy = ActionPolicy(model, tokenizer)
    prompts, ids = _batch()
    with torch.no_grad():
        batched = policy.distribution(prompts, ids)
    assert batched.shape == (3, 9)
    for row, (prompt, labels) in enumerate(zip(prompts, ids)):
        # the joint tokenization of prompt+id is the prompt's tokens plus the id token
        assert tokenizer(prompt + labels[0], add_special_tokens=False)["input_ids"] == (
            policy.encode([prompt], [labels])[0] + [policy.token_of_id[labels[0]]]
        )
        reference = _per_candidate(model, tokenizer, prompt, labels)
        assert torch.allclose(batched[row, : len(labels)], reference, atol=1e-5)
        assert torch.isneginf(batched[row, len(labels) :]).all()


def _per_candidate_text(model, tokenizer, prompt: str, texts: list[str]) -> torch.Tensor:
    """Reference for ``scoring="text"``: one forward per action appended to the prompt; its tokens' mean log-prob."""
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    scores = []
    for text in texts:
        answer = tokenizer(text + "\n", add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([prompt_ids + answer])).logits[0]
        log_probs = torch.log_softmax(logits[len(prompt_ids) - 1:-1], -1)
        scores.append(log_probs[torch.arange(len(answer)), answer].mean())
    scores = torch.stack(scores)
    return scores - torch.logsumexp(scores, 0)


@pytest.mark.parametrize("attention", ["default", "eager"])
def test_text_scoring_in_one_forward_equals_scoring_each_action_alone(attention):
    model, tokenizer = load_model(SPEC, TEXTS)
    if attention == "eager":
        model.set_attn_implementation("eager")
    policy = ActionPolicy(model, tokenizer, scoring="text")
    prompts, ids = _batch()
    with torch.no_grad():
        batched = policy.distribution(prompts, ids)
    assert batched.shape == (3, 9)
    for row, (prompt, labels) in enumerate(zip(prompts, ids)):
        texts = action_texts(prompt, labels)
        assert texts == ACTIONS[:len(labels)]
        reference = _per_candidate_text(model, tokenizer, prompt, texts)
        assert torch.allclose(batched[row, : len(labels)], reference, atol=1e-4)
        assert torch.isneginf(batched[row, len(labels) :]).all()
    greedy = policy.act(prompts, ids, greedy=True)
    assert [c.index for c in greedy] == batched.argmax(-1).tolist()


def test_text_scoring_trains_lora_and_the_value_head():
    model, tokenizer = load_model(ModelSpec(**{**SPEC.__dict__, "lora": LoraSettings(r=4)}), TEXTS)
    value_head = torch.nn.Linear(64, 1)
    policy = ActionPolicy(model, tokenizer, value_head=value_head, scoring="text", dtype="bfloat16")
    prompts, ids = _batch()
    log_probs, values = policy.distribution(prompts, ids, return_values=True)
    assert values.shape == (3,) and torch.isfinite(values).all()
    assert torch.allclose(log_probs.exp().sum(-1), torch.ones(3), atol=1e-5)
    (log_probs[:, 0].sum() + values.sum()).backward()
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora_b and all(p.grad is not None and p.grad.abs().sum() > 0 for p in lora_b)
    assert all(p.grad is None for n, p in model.named_parameters() if "lora_" not in n)
    assert value_head.weight.grad is not None
    with pytest.raises(ValueError, match="scoring"):
        ActionPolicy(model, tokenizer, scoring="words")


def test_text_scoring_keeps_no_vocabulary_sized_logits_for_the_backward_and_its_gradients_are_exact():
    from reflectrl.agent.policy import _vocab_log_probs

    torch.manual_seed(0)
    head = torch.nn.Linear(16, 300)
    model = torch.nn.Module()
    model.get_output_embeddings = lambda: head
    hidden = torch.randn(70, 16, requires_grad=True)
    targets = torch.randint(0, 300, (70,))
    upstream = torch.randn(70)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        log_probs = _vocab_log_probs(model, hidden, targets, chunk=32)
    assert sum(saved) < 70 * 300  # the [tokens, vocabulary] logits are recomputed in the backward, never kept
    (log_probs * upstream).sum().backward()
    ours = [hidden.grad.clone(), head.weight.grad.clone(), head.bias.grad.clone()]
    hidden.grad, head.weight.grad, head.bias.grad = None, None, None
    reference = torch.log_softmax(head(hidden), -1).gather(1, targets[:, None])[:, 0]
    (reference * upstream).sum().backward()
    assert torch.allclose(log_probs, reference, atol=1e-5)
    for mine, theirs in zip(ours, [hidden.grad, head.weight.grad, head.bias.grad]):
        assert torch.allclose(mine, theirs, atol=1e-5)


def test_text_scoring_fits_the_prompt_and_its_longest_action_in_max_length():
    """A model with learned positions breaks on a position past its table: prompt + action must fit."""
    model, tokenizer = load_model(ModelSpec(**{**SPEC.__dict__, "n_positions": 128}), TEXTS)
    policy = ActionPolicy(model, tokenizer, max_length=128, scoring="text")
    prompts, ids = _batch()
    with torch.no_grad():
        log_probs = policy.distribution(prompts, ids)
    assert torch.isfinite(log_probs[0, :3]).all() and torch.isfinite(log_probs[1]).all()
    for prompt, labels, tokens in zip(prompts, ids, policy.encode(prompts, ids)):
        longest = max(len(answer) for answer in policy.action_tokens(prompt, labels))
        assert len(tokens) + longest <= 128


def test_bf16_autocast_distribution_is_close_to_fp32(tiny):
    model, tokenizer = tiny
    prompts, ids = _batch()
    with torch.no_grad():
        fp32 = ActionPolicy(model, tokenizer).distribution(prompts, ids)
        bf16 = ActionPolicy(model, tokenizer, dtype="bfloat16").distribution(prompts, ids)
    finite = torch.isfinite(fp32)
    assert torch.equal(finite, torch.isfinite(bf16))
    assert (fp32[finite].exp() - bf16[finite].exp()).abs().max() < 0.03
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_bf16_lora_layers_read_bf16_activations_and_score_as_with_peft_casting():
    """peft copies each adapter's input to fp32 and autocast copies it back: the heads skip both copies."""
    from reflectrl.agent.models import autocast
    from reflectrl.agent.policy import decoder_body

    model, tokenizer = load_model(ModelSpec(**{**SPEC.__dict__, "dtype": "bfloat16", "lora": LoraSettings(r=4, dropout=0.0)}),
                                  TEXTS)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.5)  # adapters that change the scores
    seen = set()
    hooks = [m.register_forward_pre_hook(lambda module, args: seen.add(args[0].dtype))
             for n, m in model.named_modules() if n.endswith("lora_A.default")]
    prompts, ids = _batch()
    for scoring in ("id", "text"):
        seen.clear()
        policy = ActionPolicy(model, tokenizer, dtype="bfloat16", scoring=scoring)
        log_probs = policy.distribution(prompts, ids)
        assert seen == {torch.bfloat16}
        log_probs[:, 0].sum().backward()
        assert all(p.grad is not None for n, p in model.named_parameters() if "lora_A" in n)
        model.zero_grad()
    for hook in hooks:
        hook.remove()
    # the id head by hand with peft's own casting: the same distribution
    policy = ActionPolicy(model, tokenizer, dtype="bfloat16")
    sequences = policy.encode(prompts, ids)
    id_tokens, valid = policy._id_tokens(ids, policy.device)
    with torch.no_grad():
        with autocast("bfloat16"):
            hidden = [decoder_body(model)(input_ids=torch.tensor([s])).last_hidden_state[0, -1].float() for s in sequences]
        logits = policy.module._id_logits(torch.stack(hidden), id_tokens)
        reference = torch.log_softmax(logits.masked_fill(~valid, float("-inf")), -1)
        assert torch.allclose(policy.distribution(prompts, ids), reference, atol=1e-4)


def test_act_greedy_is_argmax_and_sampling_is_seeded(tiny):
    model, tokenizer = tiny
    policy = ActionPolicy(model, tokenizer)
    prompts, ids = _batch()
    with torch.no_grad():
        log_probs = policy.distribution(prompts, ids)
    greedy = policy.act(prompts, ids, greedy=True)
    assert [c.index for c in greedy] == log_probs.argmax(-1).tolist()
    assert [c.label for c in greedy] == [ids[r][c.index] for r, c in enumerate(greedy)]
    assert [c.log_prob for c in greedy] == pytest.approx(log_probs.max(-1).values.tolist(), abs=1e-6)
    entropy = -(log_probs.exp() * log_probs.nan_to_num(neginf=0.0)).sum(-1)
    assert [c.entropy for c in greedy] == pytest.approx(entropy.tolist(), abs=1e-5)
    first = policy.act(prompts * 20, ids * 20, generator=torch.Generator().manual_seed(7))
    again = policy.act(prompts * 20, ids * 20, generator=torch.Generator().manual_seed(7))
    assert first == again
    assert all(0 <= c.index < len(ids[i % 3]) for i, c in enumerate(first))
    assert len({c.index for c in first[1::3]}) > 1  # a 9-way near-uniform distribution is really sampled
    cold = policy.act(prompts * 20, ids * 20, temperature=1e-4, generator=torch.Generator().manual_seed(7))
    assert [c.index for c in cold] == [c.index for c in greedy] * 20
    with pytest.raises(ValueError, match="temperature"):
        policy.act(prompts, ids, temperature=0.0)


def test_gradients_reach_every_trainable_parameter_of_a_full_model(tiny):
    model, tokenizer = tiny
    policy = ActionPolicy(model, tokenizer)
    prompts, ids = _batch()
    model.zero_grad()
    log_prob, entropy = policy.log_prob_and_entropy(prompts, ids, [2, 8, 0])
    assert log_prob.shape == entropy.shape == (3,)
    (-(log_prob.sum()) - 0.1 * entropy.sum()).backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(g is not None for g in grads.values())
    assert grads["transformer.h.0.attn.c_attn.weight"].abs().sum() > 0
    assert grads["transformer.wte.weight"].abs().sum() > 0  # through the tied, shrunk head and the embeddings
    model.zero_grad()
    with pytest.raises(ValueError, match="outside"):
        policy.log_prob_and_entropy(prompts, ids, [3, 0, 0])


def test_gradients_reach_lora_parameters_only():
    model, tokenizer = load_model(ModelSpec(**{**SPEC.__dict__, "lora": LoraSettings(r=4)}), TEXTS)
    value_head = torch.nn.Linear(64, 1)
    policy = ActionPolicy(model, tokenizer, value_head=value_head)
    prompts, ids = _batch()
    log_prob, values = policy.distribution(prompts, ids, return_values=True)
    assert values.shape == (3,)
    picked, _ = policy.log_prob_and_entropy(prompts, ids, [0, 1, 2])
    (picked.sum() + values.sum()).backward()
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora_b and all(p.grad is not None and p.grad.abs().sum() > 0 for p in lora_b)
    assert all(p.grad is None for n, p in model.named_parameters() if "lora_" not in n)
    assert value_head.weight.grad is not None


def test_a_long_one_line_state_is_cut_from_its_start_after_the_reflection_and_keeps_the_whole_action_list(tiny):
    model, tokenizer = tiny
    policy = ActionPolicy(model, tokenizer, max_length=160)
    labels = action_ids(9)
    prompt = policy_prompt(" ".join(TEXTS[:30]), ACTIONS, "Reflect.", ids=labels)
    assert len(tokenizer(prompt)["input_ids"]) > 500
    (tokens,) = policy.encode([prompt], [labels])
    assert 150 <= len(tokens) <= 160
    kept = tokenizer.decode(tokens)
    # the documented order: the reflection goes before the state's head line is cut
    assert kept.endswith(" # Analyze:\n\n" + prompt[action_list_start(prompt, labels):])
    assert kept.startswith("[...]") and kept.split("\n")[0][5:] in prompt
    with torch.no_grad():
        assert torch.isfinite(policy.distribution([prompt], [labels])[0]).all()
    many = [f"cat file_number_{i}.py" for i in range(40)]
    long_list = policy_prompt("Short.", many, None)
    with pytest.raises(ValueError, match="action list alone"):
        policy.encode([long_list], [action_ids(40)])


def test_a_long_state_loses_old_history_then_long_output_never_the_task_line(tiny):
    _, tokenizer = tiny
    model, _ = load_model(ModelSpec(**{**SPEC.__dict__, "n_positions": 2048}), tokenizer=tokenizer)
    state = "\n".join(["Task: find the file that parses the config.", "Current working directory: repo",
                       "Command history:", *[f"cd folder_{i}" for i in range(12)],
                       "Execution result of the last command:", *[f"line {i} of a long file" for i in range(60)]])
    labels = action_ids(3)
    prompt = policy_prompt(state, ACTIONS[:3], None, ids=labels)
    full = len(tokenizer(prompt)["input_ids"])

    def shortened(max_length: int) -> str:
        return tokenizer.decode(ActionPolicy(model, tokenizer, max_length=max_length).encode([prompt], [labels])[0])

    mild = shortened(full - 20)  # a few history entries are enough
    assert "Task: find the file" in mild and "earlier entries left out" in mild and "cd folder_11" in mild
    assert "line 59 of a long file" in mild
    hard = shortened(full // 3)  # all history, then the long output is cut with a marker
    assert hard.startswith("Task: find the file") and "(12 earlier entries left out to fit)" in hard
    assert "more lines cut to fit]" in hard and "line 0 of a long file" in hard and "line 59" not in hard
    assert hard.endswith(prompt[action_list_start(prompt, labels):])


def test_prompts_must_match_their_ids(tiny):
    model, tokenizer = tiny
    policy = ActionPolicy(model, tokenizer)
    prompt = policy_prompt("State.", ACTIONS[:3], None)
    with pytest.raises(ValueError, match="enumerated actions"):
        policy.distribution([prompt], [["0", "1", "Z"]])
    with pytest.raises(ValueError, match="action marker"):
        policy.distribution([prompt.removesuffix(ACTION_MARKER)], [["0", "1", "2"]])
    with pytest.raises(ActionTokenError, match="not single tokens"):
        policy._id_tokens([["0", "Zz"]], "cpu")


def digit_splitting_tokenizer() -> PreTrainedTokenizerFast:
    """A real BPE tokenizer that, like SmolLM2's, splits numbers into digits: ``10``-``199`` are never one token."""
    pairs = list(EXTRA_ACTION_IDS[:30])
    texts = [policy_prompt(" ".join(TEXTS), ACTIONS * 10, None, ids=action_ids(62) + pairs[:28])] * 3
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=["<pad>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    backend.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", name_or_path="digits-bpe")


def test_a_tokenizer_that_splits_numbers_labels_actions_past_Z_with_letter_pairs():
    model, tokenizer = load_model(ModelSpec(n_layer=1, n_embd=32, n_head=2, vocab_size=700, seed=4),
                                  tokenizer=digit_splitting_tokenizer())
    policy = ActionPolicy(model, tokenizer)
    assert "10" not in policy.action_ids and policy.max_actions > 62 + 20
    labels = policy.ids_for(70)
    assert labels[:62] == action_ids(62) and all(label in EXTRA_ACTION_IDS for label in labels[62:])
    assert sorted(policy.ids_for(70, random.Random(1))) == sorted(labels)
    with pytest.raises(ActionTokenError, match=f"at most {policy.max_actions}"):
        policy.ids_for(policy.max_actions + 1)
    actions = [f"{verb} {thing}" for verb in ("take", "put") for thing in TEXTS[0].split()] * 10
    prompt = policy_prompt("A kitchen with 12 shelves.", actions[:70], None, ids=labels)
    with torch.no_grad():
        batched = policy.distribution([prompt], [labels])[0]
    torch.testing.assert_close(batched, _per_candidate(model, tokenizer, prompt, labels), atol=1e-5, rtol=1e-5)
    with pytest.raises(ActionTokenError, match="'10'"):
        policy.distribution([policy_prompt("x", actions[:63], None)], [action_ids(63)])


def test_sft_relabels_stored_prompts_with_the_policys_letter_pairs(tmp_path):
    """SFT rows store prompts with the default ids (``10``...); a digit-splitting policy trains on its own labels."""
    model, tokenizer = load_model(ModelSpec(n_layer=1, n_embd=32, n_head=2, vocab_size=700, seed=5),
                                  tokenizer=digit_splitting_tokenizer())
    actions = [f"take item {i}" for i in range(70)]
    rows = [
        {"prompt": policy_prompt(state, actions, None), "state": state, "actions": actions, "reflection": None, "action": 65}
        for state in (f"Shelf {k} of the kitchen." for k in range(24))
    ]
    config = SFTConfig(epochs=20, lr=1e-2, batch_size=8, max_length=1024, shuffle_ids=False, eval_every=0)
    metrics = train_sft(model, tokenizer, rows[:16], rows[16:], config, tmp_path, "policy")
    # action 65 is labelled by a letter pair: the policy learnt to answer with that pair's token
    assert ActionPolicy(model, tokenizer).ids_for(70)[65] in EXTRA_ACTION_IDS
    assert metrics["val_action_accuracy"] == 1.0, metrics


def many_doors():
    """A two-room corridor with 70 doors a room, the right one the 67th (a letter-pair id past Z)."""
    from rl_fixtures import ChainEnv

    class ManyDoors(ChainEnv):
        DOORS = tuple(f"door {i}" for i in range(70))

        def _right(self) -> int:
            return 66

    return ManyDoors(length=2)


def test_steps_with_more_actions_than_single_characters_train_and_play():
    """SFT, an RL update and evaluation on steps of 70 actions, labelled past Z with letter pairs."""
    from accelerate import Accelerator

    from reflectrl.agent.rollout import rollout
    from reflectrl.config import RLConfig
    from reflectrl.data.sft_sets import build_sets
    from reflectrl.data.trajectories import Example
    from reflectrl.train.rl import Batch, Learner, reinforce_batch

    tokenizer = digit_splitting_tokenizer()
    model, _ = load_model(ModelSpec(n_layer=1, n_embd=32, n_head=2, vocab_size=700, seed=4), tokenizer=tokenizer)
    env = many_doors()
    observation = env.reset()
    assert len(observation.actions) == 70
    rows = build_sets([Example(observation.text, observation.actions, "Door 66 leads on.", 66, False, "t", 0)] * 8)
    config = SFTConfig(max_steps=4, lr=3e-3, batch_size=4, max_length=1024, eval_every=0, shuffle_ids=False)
    with tempfile.TemporaryDirectory() as out:
        metrics = train_sft(model, tokenizer, rows["policy"], rows["policy"][:2], config, out, "policy")
    assert metrics["steps"] == 4 and 0 <= metrics["val_action_accuracy"] <= 1
    policy = ActionPolicy(model, tokenizer, max_length=1024)
    episodes = rollout([many_doors() for _ in range(3)], [0, 1, 2], [0, 1, 2], policy, rng=random.Random(0))
    labels = {label for e in episodes for step in e.steps for label in step.ids}
    assert labels & set(EXTRA_ACTION_IDS) and not labels & {"10", "150"}
    batch = reinforce_batch(episodes, 1.0)
    batch.advantages = torch.ones(len(batch.steps))  # the chain's reward is rare; any advantage drives a backward pass
    trainable = [p for p in model.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in trainable]
    learner = Learner(policy, RLConfig(minibatch_size=2), Accelerator(cpu=True))
    learner.update(batch)
    assert any(not torch.equal(old, new) for old, new in zip(before, trainable))
    # all-zero advantages (a batch of failures under the mean baseline): no pass and no optimizer step, so
    # AdamW's momentum from the update above does not move the weights
    after = [p.detach().clone() for p in trainable]
    assert learner.update(Batch(batch.steps, torch.zeros(len(batch.steps)))) == {"loss": 0.0}
    assert all(torch.equal(old, new) for old, new in zip(after, trainable))


def test_the_kl_reference_of_a_lora_policy_is_its_starting_adapter_on_the_policys_own_base(tmp_path):
    """No second model for the KL term: a frozen copy of the starting adapter beside the trained one."""
    from reflectrl.agent.models import save_model
    from reflectrl.agent.rollout import StepRecord
    from reflectrl.config import RunConfig, from_dict
    from reflectrl.train.rl import AdapterReference, Batch, setup

    model, tokenizer = load_model(ModelSpec(**{**SPEC.__dict__, "lora": LoraSettings(r=4)}), TEXTS)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.5)  # an SFT'd adapter: the reference is not the base model
    save_model(model, tokenizer, tmp_path / "sft")
    config = from_dict(RunConfig, {"name": "t", "out_dir": str(tmp_path), "env": {"name": "taxi", "kwargs": {"stage": "pickup"}},
                                   "sft": {"max_length": 512}, "rl": {"kl_coef": 0.5, "lr": 0.01, "minibatch_size": 2}})
    run = setup(config, tmp_path / "sft", tmp_path / "rl", None, resume=False)
    reference = run.learner.reference
    assert isinstance(reference, AdapterReference) and reference.model is run.policy.model
    prompts, ids = _batch()
    with torch.no_grad():
        expected = ActionPolicy(load_model(ModelSpec(name=str(tmp_path / "sft")))[0], tokenizer).distribution(prompts, ids)
    torch.testing.assert_close(reference.distribution(prompts, ids), expected)
    steps = [StepRecord(p, i, 0, 0.0, 0.0, 1.0, False, False, None, "") for p, i in zip(prompts, ids)]
    run.policy.model.train()
    run.learner.update(Batch(steps, torch.ones(len(steps))))
    # the update moved the trained adapter (its gradients survived the switches to the reference) and not the reference
    with torch.no_grad():
        assert (run.policy.distribution(prompts, ids) - expected)[torch.isfinite(expected)].abs().max() > 1e-3
    torch.testing.assert_close(reference.distribution(prompts, ids), expected)
    assert run.policy.model.active_adapter == "default" and run.policy.model.training
    for name, param in run.policy.model.named_parameters():
        assert param.requires_grad == ("lora_" in name and AdapterReference.ADAPTER not in name)
