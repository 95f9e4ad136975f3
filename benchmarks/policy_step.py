"""Policy-step benchmark: the action-id head and the two-player step against the usual ways.

One run, one model, one batch of prompts (default: 16 prompts of ~300 tokens
with 8 valid actions each), in bf16 autocast and in fp32:

1. ``policy_step``: ``ActionPolicy.act``: one forward, id logits at the last position only;
2. ``per_candidate``: GLAM-style scoring: one sequence per (prompt, action) with the
   action text appended, the sum of its tokens' log-probs, softmax over candidates;
3. ``generate_one_token``: HF ``generate`` of one token with full-vocabulary scores, then
   prob/log-prob/entropy per row as the original code did, and the id tokens' probabilities;
4. ``two_player``: ``Reflector.reflect`` (64 new tokens) + the policy step, against the
   original way: HF ``generate(output_scores=True)`` for the reflection with, per row and
   generated token, a full-vocabulary softmax/log-softmax/entropy in Python (as
   ``transformer_text_completion`` in the authors' ``model_utils.py``), then the policy by
   ``generate`` of one token. Both sides get the same fp32 weights, the reflector frozen;
   in bf16 mode the original runs under autocast, while our reflector casts its frozen
   weights to bf16 once (a design choice of ``Reflector``, part of what is measured).
   The ways we compare against (2-4) run with transformers' default attention (SDPA), as
   the original code did; ours use ``agent.attention.CPU_ATTENTION``, which ``load_model``
   selects. ``two_player_original_cpu_attention`` times the original way on our attention
   too, so the kernel's share of the speed-up can be told from the method's;
5. a plain square matmul on this machine, for the achieved fraction of its own peak of (1)
   and of one RL update (forward + backward of ``log_prob_and_entropy``, full model); and
   ``linear_layers``: the model's own linear layers alone on the step's tokens, the part
   of (1) that is matmul, to show how near that peak the model's shapes can get.

Every timing is the minimum over ``--repeats`` interleaved rounds after one warm-up
round (the machine may be shared; the minimum is the least disturbed run), medians
are kept too. Writes ``benchmarks/results/policy_step.json``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers.pytorch_utils import Conv1D

from reflectrl.agent.models import ModelSpec, autocast, load_model
from reflectrl.agent.policy import ActionPolicy, left_pad, positions_from_mask, unwrap_model
from reflectrl.agent.prompts import ACTION_STOP, clean_reflection, policy_prompt, reflection_prompt
from reflectrl.agent.reflector import Reflector
from reflectrl.cpu import cpu_model
from reflectrl.envs.action_parser import action_ids
from reflectrl.memory import peak_rss_gb

RESULT = Path(__file__).parent / "results" / "policy_step.json"
DIRS = ["src", "tests", "docs", "data", "scripts", "configs", "models", "utils", "io", "cli"]
WORDS = (
    "parser loader config tokenizer cache model train eval metrics report plot dataset split reader writer "
    "schema index query table column row error warning file directory module function class method test"
).split()
REFLECTION = "The answer is probably in a source file, so enter src and read the parser module next."


def synthetic_state(rng: random.Random, n_lines: int) -> str:
    """An AutoExplore-like state: task, cwd, files, history, last result (deterministic per rng)."""
    cwd = "/repo/" + "/".join(rng.sample(DIRS, 2))
    files = [f"{rng.choice(WORDS)}_{rng.choice(WORDS)}.{rng.choice(['py', 'md', 'csv', 'json'])}" for _ in range(6)]
    history = [f"{rng.choice(['cd', 'cat'])} {rng.choice(DIRS + files)}" for _ in range(4)]
    result = [" ".join(rng.choice(WORDS) for _ in range(10)) for _ in range(n_lines)]
    return (
        f"Task: which file defines the {rng.choice(WORDS)} {rng.choice(WORDS)}?\n"
        f"Current working directory: {cwd}\nFiles under it: {' '.join(files)}\n"
        f"Command history: {'; '.join(history)}\nExecution result of the last command:\n" + "\n".join(result)
    )


def synthetic_actions(rng: random.Random, n: int) -> list[str]:
    return [f"{rng.choice(['cd', 'cat', 'id'])} {rng.choice(WORDS)}_{rng.choice(WORDS)}.py" for _ in range(n)]


def best_of(functions: dict[str, Callable[[], Any]], repeats: int) -> dict[str, dict[str, float]]:
    """One warm-up round, then ``repeats`` interleaved rounds; min and median seconds of each function."""
    for run in functions.values():
        run()
    times: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(repeats):
        for name, run in functions.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: {"min_s": min(t), "median_s": statistics.median(t)} for name, t in times.items()}


def matmul_layers(model: Any) -> list[Any]:
    """Layers that take part in a matmul for every token: linear layers, not embeddings or the LM head."""
    inner = unwrap_model(model)
    head = inner.get_output_embeddings()
    return [m for m in inner.modules() if isinstance(m, (torch.nn.Linear, Conv1D)) and m is not head]


def matmul_params(model: Any) -> int:
    return sum(m.weight.numel() for m in matmul_layers(model))


def linear_input_width(module: Any) -> int:
    """Input features of a linear layer (``Conv1D`` stores its weight transposed)."""
    return module.weight.shape[0] if isinstance(module, Conv1D) else module.weight.shape[1]


def forward_flops(model: Any, lengths: list[int], n_actions: int) -> float:
    """2 * matmul params * tokens + causal attention (QK^T and AV, lower triangle) + the id head."""
    config = unwrap_model(model).config
    layers = config.num_hidden_layers
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    attn_width = config.num_attention_heads * head_dim
    params = matmul_params(model)
    return float(sum(2 * params * t + 2 * layers * t * t * attn_width + 2 * config.hidden_size * n_actions for t in lengths))


class Original:
    """The ways this benchmark compares against, written as they are usually (and originally) written."""

    def __init__(self, model: Any, tokenizer: Any, dtype: str, attention: str = "sdpa"):
        if model.config._attn_implementation != attention:
            model = copy.deepcopy(model)
            model.set_attn_implementation(attention)
        self.model, self.tokenizer, self.dtype = model, tokenizer, dtype

    @torch.no_grad()
    def completion(self, prompts: list[str], max_new_tokens: int) -> tuple[Any, list[dict[str, float]]]:
        """``generate(output_scores=True)``, then per row and token a full-vocabulary softmax, log-softmax, entropy."""
        batch = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        with autocast(self.dtype):
            out = self.model.generate(
                **batch, max_new_tokens=max_new_tokens, do_sample=False, output_scores=True,
                return_dict_in_generate=True, pad_token_id=self.tokenizer.pad_token_id,
                eos_token_id=self.tokenizer.eos_token_id,
            )
        new_tokens = out.sequences[:, batch["input_ids"].shape[1] :]
        stats = []
        for row in range(len(prompts)):
            log_prob, entropy = 0.0, 0.0
            for step, logits in enumerate(out.scores):
                probs = torch.softmax(logits[row].float(), dim=-1)
                log_probs = torch.log_softmax(logits[row].float(), dim=-1)
                log_prob += log_probs[new_tokens[row, step]].item()
                log_probs[probs == 0] = 0
                entropy -= torch.sum(probs * log_probs).item()
            stats.append({"log_prob": log_prob, "entropy": entropy})
        return out, stats

    def generate_one_token(self, prompts: list[str], ids: list[list[str]]) -> torch.Tensor:
        """The policy as one generated token: the id tokens' probabilities renormalised, [B, A]."""
        out, _ = self.completion(prompts, 1)
        id_tokens = torch.tensor([self.tokenizer.convert_tokens_to_ids(row) for row in ids])
        id_probs = torch.softmax(out.scores[0].float(), -1).gather(1, id_tokens)
        return id_probs / id_probs.sum(-1, keepdim=True)

    def reflect(self, states: list[str], max_new_tokens: int) -> list[str]:
        out, _ = self.completion([reflection_prompt(s) for s in states], max_new_tokens)
        width = out.sequences.shape[1] - len(out.scores)
        texts = self.tokenizer.batch_decode(out.sequences[:, width:], skip_special_tokens=True)
        return [clean_reflection(t) for t in texts]

    @torch.no_grad()
    def per_candidate(self, contexts: list[str], actions: list[list[str]], batch: int) -> torch.Tensor:
        """GLAM: score each action's text appended to the context; [B, A] log-probs over candidates."""
        sequences, spans = [], []
        for context, row_actions in zip(contexts, actions):
            context_ids = self.tokenizer(context, add_special_tokens=False)["input_ids"]
            for action in row_actions:
                tokens = self.tokenizer(action, add_special_tokens=False)["input_ids"]
                sequences.append(context_ids + tokens)
                spans.append(len(tokens))
        scores = []
        for start in range(0, len(sequences), batch):
            chunk, chunk_spans = sequences[start : start + batch], spans[start : start + batch]
            input_ids, mask = left_pad(chunk, self.tokenizer.pad_token_id)
            keep = max(chunk_spans)
            with autocast(self.dtype):
                logits = self.model(
                    input_ids=input_ids, attention_mask=mask, position_ids=positions_from_mask(mask), logits_to_keep=keep + 1
                ).logits
            log_probs = torch.log_softmax(logits[:, :-1].float(), -1).gather(-1, input_ids[:, -keep:, None])[..., 0]
            in_action = torch.arange(keep)[None, :] >= keep - torch.tensor(chunk_spans)[:, None]
            scores.append((log_probs * in_action).sum(-1))
        return torch.log_softmax(torch.cat(scores).view(len(contexts), -1), -1)


def measure(dtype: str, policy_model: Any, reflector_model: Any, tokenizer: Any, data: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    states, actions, ids, prompts, contexts = (data[k] for k in ("states", "actions", "ids", "prompts", "contexts"))
    policy = ActionPolicy(policy_model, tokenizer, max_length=1024, dtype=dtype)
    reflector_model.requires_grad_(False)  # frozen on both sides, as a reflector is
    reflector = Reflector(copy.deepcopy(reflector_model), tokenizer, max_new_tokens=args.reflection_tokens, dtype=dtype)
    original_policy = Original(policy_model, tokenizer, dtype)
    original_reflector = Original(reflector_model, tokenizer, dtype)
    ours_attention = policy_model.config._attn_implementation
    original_policy_ours_attention = Original(policy_model, tokenizer, dtype, ours_attention)
    original_reflector_ours_attention = Original(reflector_model, tokenizer, dtype, ours_attention)

    with torch.no_grad():
        ours = policy.distribution(prompts, ids).exp()
    generated = original_policy.generate_one_token(prompts, ids)
    ours_reflections = reflector.reflect(states)
    original_reflections = original_reflector.reflect(states, args.reflection_tokens)
    new_tokens = [len(row) for row in reflector.generate_ids([reflection_prompt(s) for s in states])]
    raw = reflector.generate([reflection_prompt(s) for s in states])

    def two_player_ours() -> list[Any]:
        reflections = reflector.reflect(states)
        step_prompts = [policy_prompt(s, a, r, ids=i) for s, a, r, i in zip(states, actions, reflections, ids)]
        return policy.act(step_prompts, ids, greedy=True)

    def two_player_original(reflector_way: Original, policy_way: Original) -> torch.Tensor:
        reflections = reflector_way.reflect(states, args.reflection_tokens)
        step_prompts = [policy_prompt(s, a, r, ids=i) for s, a, r, i in zip(states, actions, reflections, ids)]
        return policy_way.generate_one_token(step_prompts, ids)

    linears = matmul_layers(policy_model)
    step_tokens = sum(data["lengths"])
    inputs = {width: torch.randn(step_tokens, width) for width in {linear_input_width(m) for m in linears}}

    @torch.no_grad()
    def linear_layers() -> None:
        with autocast(dtype):
            for module in linears:
                module(inputs[linear_input_width(module)])

    def rl_update() -> None:
        policy_model.zero_grad(set_to_none=True)
        log_prob, entropy = policy.log_prob_and_entropy(prompts, ids, [0] * len(prompts))
        (-(log_prob.sum()) - 0.01 * entropy.sum()).backward()

    side = 2048
    matrix = torch.randn(side, side, dtype=torch.bfloat16 if dtype == "bfloat16" else torch.float32)
    timings = best_of(
        {
            "matmul_2048": lambda: matrix @ matrix,
            "policy_step": lambda: policy.act(prompts, ids, greedy=True),
            "generate_one_token": lambda: original_policy.generate_one_token(prompts, ids),
            "per_candidate": lambda: original_policy.per_candidate(contexts, actions, args.batch),
            "reflector_ours": lambda: reflector.reflect(states),
            "reflector_original": lambda: original_reflector.reflect(states, args.reflection_tokens),
            "two_player_ours": two_player_ours,
            "two_player_original": lambda: two_player_original(original_reflector, original_policy),
            "two_player_original_cpu_attention": lambda: two_player_original(
                original_reflector_ours_attention, original_policy_ours_attention
            ),
            "linear_layers": linear_layers,
            "rl_update": rl_update,
        },
        args.repeats,
    )
    policy_model.zero_grad(set_to_none=True)
    t = {name: value["min_s"] for name, value in timings.items()}
    step_flops = forward_flops(policy_model, data["lengths"], args.actions)
    peak = 2 * side**3 / t["matmul_2048"]
    linear_flops = float(2 * matmul_params(policy_model) * step_tokens)
    return {
        "timings": timings,
        "speedup_vs_per_candidate": t["per_candidate"] / t["policy_step"],
        "speedup_vs_generate": t["generate_one_token"] / t["policy_step"],
        "two_player_speedup": t["two_player_original"] / t["two_player_ours"],
        "two_player_speedup_same_attention": t["two_player_original_cpu_attention"] / t["two_player_ours"],
        "reflector_speedup": t["reflector_original"] / t["reflector_ours"],
        "flops": {
            "matmul_peak_per_s": peak,
            "policy_step": step_flops,
            "rl_update": 3 * step_flops,
            "policy_step_per_s": step_flops / t["policy_step"],
            "linear_layers": linear_flops,
            "linear_layers_per_s": linear_flops / t["linear_layers"],
            "rl_update_per_s": 3 * step_flops / t["rl_update"],
            "counting": "2*matmul_params*tokens + 2*layers*tokens^2*attn_width (causal) + id head; x3 for fwd+bwd",
        },
        "flops_utilization": {
            "policy_step": step_flops / t["policy_step"] / peak,
            "rl_update": 3 * step_flops / t["rl_update"] / peak,
            "linear_layers": linear_flops / t["linear_layers"] / peak,
        },
        "linear_share_of_policy_step": t["linear_layers"] / t["policy_step"],
        "checks": {
            "max_abs_diff_policy_vs_generate_probs": float((ours - generated).abs().max()),
            "reflections_equal_to_original": ours_reflections == original_reflections,
            "reflection_new_tokens_mean": statistics.mean(new_tokens),
            "reflections_stopped_at_marker": sum(ACTION_STOP in t for t in raw),
        },
    }


def build(args: argparse.Namespace) -> tuple[Any, Any, Any, dict[str, Any]]:
    """Models and the fixed batch: states, actions, ids, policy prompts, GLAM contexts, prompt lengths."""
    rng = random.Random(0)
    states = [synthetic_state(rng, args.state_lines) for _ in range(args.batch)]
    actions = [synthetic_actions(rng, args.actions) for _ in range(args.batch)]
    ids = [action_ids(args.actions)] * args.batch
    if args.model == "tiny":
        corpus = [synthetic_state(random.Random(i), args.state_lines) + REFLECTION for i in range(200)]
        corpus += [" ".join(a) for a in actions]
        spec = ModelSpec(n_layer=args.layers, n_embd=args.width, n_head=args.width // 64, seed=0)
        policy_model, tokenizer = load_model(spec, corpus)
        reflector_model, _ = load_model(ModelSpec(**{**spec.__dict__, "seed": 1}), tokenizer=tokenizer)
    else:
        policy_model, tokenizer = load_model(ModelSpec(name=args.model))
        reflector_model, _ = load_model(ModelSpec(name=args.model))
    prompts = [policy_prompt(s, a, REFLECTION, ids=i) for s, a, i in zip(states, actions, ids)]
    data = {
        "states": states,
        "actions": actions,
        "ids": ids,
        "prompts": prompts,
        # GLAM contexts: the same prompt without the enumerated list; each action's text follows the marker
        "contexts": [policy_prompt(s, [], REFLECTION) for s in states],
        "lengths": [len(t) for t in tokenizer(prompts, add_special_tokens=False)["input_ids"]],
    }
    return policy_model, reflector_model, tokenizer, data


def run(args: argparse.Namespace) -> dict[str, Any]:
    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    policy_model, reflector_model, tokenizer, data = build(args)
    config = unwrap_model(policy_model).config
    result: dict[str, Any] = {
        "machine": {
            "cpu_model": cpu_model(),
            "threads": threads,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "load_average_before": os.getloadavg(),
        },
        "setup": {
            "model": args.model,
            "layers": config.num_hidden_layers,
            "width": config.hidden_size,
            "heads": config.num_attention_heads,
            "vocab": len(tokenizer),
            "matmul_params": matmul_params(policy_model),
            "batch": args.batch,
            "actions": args.actions,
            "prompt_tokens_mean": statistics.mean(data["lengths"]),
            "reflection_max_new_tokens": args.reflection_tokens,
            "repeats": args.repeats,
            "timing": "min over interleaved rounds after one warm-up round (median kept)",
        },
        "by_dtype": {
            dtype: measure(dtype, policy_model, reflector_model, tokenizer, data, args) for dtype in args.dtypes
        },
    }
    result["machine"]["load_average_after"] = os.getloadavg()
    headline = "bfloat16" if "bfloat16" in args.dtypes else args.dtypes[0]
    main = result["by_dtype"][headline]
    result["headline_dtype"] = headline
    for key in ("speedup_vs_per_candidate", "speedup_vs_generate", "two_player_speedup", "two_player_speedup_same_attention"):
        result[key] = main[key]
    result["flops_utilization"] = {
        step: {dtype: values["flops_utilization"][step] for dtype, values in result["by_dtype"].items()}
        for step in ("policy_step", "rl_update")
    }
    # the ceiling the model's own matmul shapes put on the two utilizations above
    result["linear_layers_utilization"] = {
        dtype: values["flops_utilization"]["linear_layers"] for dtype, values in result["by_dtype"].items()
    }
    result["goals"] = {
        "speedup_vs_per_candidate >= |A|/2": main["speedup_vs_per_candidate"] >= args.actions / 2,
        "speedup_vs_generate >= 1": main["speedup_vs_generate"] >= 1,
        "two_player_speedup >= 2": main["two_player_speedup"] >= 2,
        **{
            f"{step} utilization >= 0.6 ({dtype})": value >= 0.6
            for step, by_dtype in result["flops_utilization"].items()
            for dtype, value in by_dtype.items()
        },
    }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny", help="'tiny' (sized by --layers/--width) or 'smollm2-135m'")
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--width", type=int, default=384)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--actions", type=int, default=8)
    parser.add_argument("--state-lines", type=int, default=9, help="lines of command output (~300-token prompts)")
    parser.add_argument("--reflection-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtypes", nargs="+", default=["bfloat16", "float32"], choices=["bfloat16", "float32"])
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args()
    started = time.perf_counter()
    result = run(args)
    result["wall_time_s"] = time.perf_counter() - started
    result["peak_rss_gb"] = peak_rss_gb()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    summary = (
        "speedup_vs_per_candidate", "speedup_vs_generate", "two_player_speedup", "two_player_speedup_same_attention",
        "flops_utilization", "linear_layers_utilization", "goals", "wall_time_s",
    )
    print(json.dumps({k: result[k] for k in summary}, indent=1))


if __name__ == "__main__":
    main()
