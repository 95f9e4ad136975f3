"""Pretrained-LM row budget: what one row of each kind of work costs, against the forward pass of that row.

The model, LoRA, dtype, SFT and RL settings are those of a recipe (default:
``configs/autoexplore-smollm2.yaml``: SmolLM2-135M, LoRA r 16 alpha 32, bf16);
the rows are real: AutoExplore states, actions and reflections from the recipe's
oracle teacher on its curriculum levels (depth <= 1), made by ``generate_examples``
as the recipe's data step makes them. In one process and one run, each kind of
work is timed on the same rows:

* ``forward_reflector`` / ``forward_policy``: the no-grad forward of a reflector
  row (prompt + completion) and of a text-scored policy row (prompt + every
  action's tokens), in eval mode: what reading those tokens costs;
* ``reflector_sft`` / ``policy_sft``: one SFT step over the same rows, as
  ``train_sft`` runs it (``sft.accumulate``: the recipe's micro-batches, forward
  and backward; then gradient clipping and the optimizer step);
* ``reflection_decode_b1`` / ``_b4``: the frozen reflector (adapter merged, bf16
  weights) decoding, per token, one prompt and four at once;
* ``policy_step``: ``ActionPolicy.act`` on four states (the recipe's lock-step batch), per row;
* ``rl_update_mb2`` / ``_mb4``: ``Learner.update`` (REINFORCE) on the longest
  policy rows, in minibatches of 2 (the recipe) and of 4, per row.

``reflector_train_vs_forward`` and ``policy_train_vs_forward`` are a training
row's time over the no-grad forward of the same row. Times are CPU seconds of
this process (``time.process_time``; one thread by default, as the recipe runs):
on a shared machine, time spent waiting for a core is not work and would swing
wall time several-fold; wall seconds are kept beside them. Every kind runs once
to warm up, then ``--repeats`` interleaved rounds; the minimum (the least
disturbed run) and the median are kept, and ratios use the minima. Peak RSS is
the process's peak during that kind of work (freed memory returned and the peak
reset before each), models included.

Writes ``benchmarks/results/pretrained_budget.json``; ``--baseline`` adds an
earlier result (e.g. of the code before a change) and each kind's speed-up over it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import transformers
from accelerate import Accelerator

from reflectrl.agent.models import load_model
from reflectrl.agent.policy import ActionPolicy, unwrap_model
from reflectrl.agent.prompts import policy_prompt
from reflectrl.agent.reflector import Reflector
from reflectrl.agent.rollout import StepRecord
from reflectrl.cli import _key_values
from reflectrl.config import RunConfig, load_config
from reflectrl.cpu import cpu_has_amx, cpu_model
from reflectrl.data.sft_sets import build_sets
from reflectrl.data.trajectories import generate_examples
from reflectrl.envs.registry import make_env
from reflectrl.memory import peak_rss_gb, release_freed_memory, reset_peak_rss, rss_gb
from reflectrl.pipeline import source_commit
from reflectrl.teachers.oracle import OracleTeacher
from reflectrl.train import sft
from reflectrl.train.rl import Batch, Learner

ROOT = Path(__file__).resolve().parent.parent
RESULT = Path(__file__).parent / "results" / "pretrained_budget.json"
RECIPE = ROOT / "configs" / "autoexplore-smollm2.yaml"
TARGET = 4.0


def make_rows(config: RunConfig, episodes: int) -> dict[str, list[dict[str, Any]]]:
    """The recipe's SFT sets from ``episodes`` oracle-teacher episodes on each of its curriculum levels."""
    teacher = OracleTeacher(config.env.name, seed=config.seed)
    examples = []
    for index, level in enumerate(config.curriculum.levels or [{}]):
        env = make_env(config.env.name, **{**config.env.kwargs, **config.env.train_kwargs, **level})
        examples += list(generate_examples(env, teacher, env.tasks("train"), episodes, config.data.random_action_prob,
                                           config.data.negatives_per_episode, seed=config.seed * 7919 + index))
    return build_sets(examples)


def median_rows(encoded: list[Any], n: int) -> list[Any]:
    """The ``n`` rows around the median size: a batch as ``train_sft``'s length-sorted batching forms it."""
    ordered = sorted(encoded, key=lambda e: e.size)
    start = max(0, (len(ordered) - n) // 2)
    return ordered[start:start + n]


def timed(functions: dict[str, Callable[[], Any]], repeats: int) -> dict[str, dict[str, float]]:
    """One warm-up call each, then ``repeats`` interleaved rounds: CPU and wall seconds, peak RSS of each."""
    for run in functions.values():
        run()
    cpu: dict[str, list[float]] = {name: [] for name in functions}
    wall: dict[str, list[float]] = {name: [] for name in functions}
    peak = dict.fromkeys(functions, 0.0)
    for _ in range(repeats):
        for name, run in functions.items():
            release_freed_memory()  # else the allocator keeps the last kind's peak resident and the reset starts there
            reset_peak_rss()
            started_cpu, started_wall = time.process_time(), time.perf_counter()
            run()
            cpu[name].append(time.process_time() - started_cpu)
            wall[name].append(time.perf_counter() - started_wall)
            peak[name] = max(peak[name], peak_rss_gb())
    return {name: {"cpu_s_min": min(cpu[name]), "cpu_s_median": statistics.median(cpu[name]),
                   "wall_s_min": min(wall[name]), "wall_s_median": statistics.median(wall[name]),
                   "peak_rss_gb": peak[name]} for name in functions}


def per_unit(times: dict[str, float], units: int) -> dict[str, float]:
    """Seconds per row (or token); peak RSS as it is."""
    return {key: (value / units if key.endswith(("_min", "_median")) else value) for key, value in times.items()}


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    config = load_config(args.recipe, _key_values(args.set, "--set"))
    spec = config.model if args.model is None else dataclasses.replace(config.model, name=args.model)
    dtype, sft_config = spec.dtype, config.sft
    sets = make_rows(config, args.episodes)
    texts = [row["prompt"] + " " + row["completion"] for row in sets["reflection"] + sets["policy"]]
    torch.manual_seed(config.seed)
    model, tokenizer = load_model(spec, texts=texts)
    reflector_model, _ = load_model(spec, texts=texts, tokenizer=tokenizer if spec.name == "tiny" else None)
    reflector = Reflector(reflector_model, tokenizer, max_new_tokens=args.reflection_tokens, dtype=dtype)
    prefill = Reflector(reflector.model, tokenizer, max_new_tokens=1, dtype=dtype)
    policy = ActionPolicy(model, tokenizer, max_length=sft_config.max_length, dtype=dtype,
                          scoring=config.action_scoring)

    reflection_rows = median_rows(sft._encode_reflections(tokenizer, sets["reflection"], sft_config.max_length,
                                                          args.reflection_tokens), args.rows)
    policy_encoded = sft._encode_policy(policy, sets["policy"], None)
    policy_rows = median_rows(policy_encoded, args.rows)
    rl_rows = sorted(policy_encoded, key=lambda e: e.size)[-args.rl_rows:]
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=sft_config.lr, weight_decay=sft_config.weight_decay)

    def forward(rows: list[Any], kind_policy: ActionPolicy | None) -> None:
        model.eval()
        with torch.no_grad():
            for part in sft._micro_batches(rows, sft_config.max_batch_tokens):
                if kind_policy is None:
                    sft._loss_sum(model, tokenizer, None, part, dtype)
                else:
                    kind_policy.distribution([e.prompt for e in part], [e.ids for e in part],
                                             tokens=[e.input_ids for e in part])

    def train(rows: list[Any], kind_policy: ActionPolicy | None) -> None:
        model.train()
        optimizer.zero_grad(set_to_none=True)
        sft.accumulate(model, tokenizer, kind_policy, [rows], sft_config.max_batch_tokens, dtype)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()

    states = [(row["state"], row["actions"], row["reflection"]) for row in sets["policy"]][:4]
    step_ids = [policy.ids_for(len(actions)) for _, actions, _ in states]
    step_prompts = [policy_prompt(state, actions, reflection, ids)
                    for (state, actions, reflection), ids in zip(states, step_ids)]
    generator = torch.Generator().manual_seed(config.seed)

    def policy_step() -> None:
        policy.act(step_prompts, step_ids, temperature=config.rl.temperature, generator=generator)

    reflection_prompts = [row["prompt"] for row in sets["reflection"][:4]]
    steps = [StepRecord(e.prompt, e.ids, e.action, 0.0, 0.0, 0.0, False, False, None, "") for e in rl_rows]
    advantages = torch.tensor([(-1.0) ** i for i in range(len(steps))])
    learners = {size: Learner(policy, dataclasses.replace(config.rl, minibatch_size=size), Accelerator(cpu=True))
                for size in (2, 4)}

    def rl_update(size: int) -> None:
        model.train()
        learners[size].update(Batch(steps, advantages))

    groups: dict[str, dict[str, Callable[[], Any]]] = {
        "reflector": {"forward_reflector": lambda: forward(reflection_rows, None),
                      "reflector_sft": lambda: train(reflection_rows, None)},
        "policy": {"forward_policy": lambda: forward(policy_rows, policy),
                   "policy_sft": lambda: train(policy_rows, policy)},
        "decode": {"reflection_prefill_b1": lambda: prefill.generate_ids(reflection_prompts[:1]),
                   "reflection_b1": lambda: reflector.generate_ids(reflection_prompts[:1]),
                   "reflection_prefill_b4": lambda: prefill.generate_ids(reflection_prompts),
                   "reflection_b4": lambda: reflector.generate_ids(reflection_prompts)},
        "step": {"policy_step": policy_step},
        "rl": {"rl_update_mb2": lambda: rl_update(2), "rl_update_mb4": lambda: rl_update(4)},
    }
    kinds = {name: work for group in args.only or list(groups) for name, work in groups[group].items()}
    resident = rss_gb()
    times = timed(kinds, args.repeats)
    decoded = {batch: max(len(ids) for ids in reflector.generate_ids(reflection_prompts[:batch]))
               for batch in (1, 4) if f"reflection_b{batch}" in times}

    def decode_per_token(batch: int) -> dict[str, float]:
        full, first = times[f"reflection_b{batch}"], times[f"reflection_prefill_b{batch}"]
        steps_after_prefill = max(decoded[batch] - 1, 1)
        return {key: (full[key] - first[key]) / steps_after_prefill if key.endswith(("_min", "_median")) else full[key]
                for key in full}

    work = {}
    for name, kind, rows in (("forward_reflector_row", "forward_reflector", reflection_rows),
                             ("reflector_sft_row", "reflector_sft", reflection_rows),
                             ("forward_policy_row", "forward_policy", policy_rows),
                             ("policy_sft_row", "policy_sft", policy_rows),
                             ("policy_step_row", "policy_step", step_prompts),
                             ("rl_update_row_mb2", "rl_update_mb2", steps),
                             ("rl_update_row_mb4", "rl_update_mb4", steps)):
        if kind in times:
            work[name] = per_unit(times[kind], len(rows))
    for batch in (1, 4):
        if f"reflection_b{batch}" in times:
            work[f"reflection_decode_token_b{batch}"] = decode_per_token(batch)
    inner, recipe = unwrap_model(model), Path(args.recipe).resolve()
    result: dict[str, Any] = {
        "machine": {
            "cpu_model": cpu_model(),
            "amx": cpu_has_amx(),
            "threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "load_average_before": load_before,
            "load_average_after": os.getloadavg(),
        },
        "setup": {
            "recipe": str(recipe.relative_to(ROOT)) if recipe.is_relative_to(ROOT) else str(recipe),
            "overrides": args.set,
            "model": spec.name, "dtype": dtype, "lora": dataclasses.asdict(spec.lora) if spec.lora else None,
            "attention": inner.config._attn_implementation,
            "action_scoring": config.action_scoring, "sft_max_length": sft_config.max_length,
            "sft_max_batch_tokens": sft_config.max_batch_tokens, "reflection_tokens": args.reflection_tokens,
            "rows": {
                "reflector": {"tokens": [len(e.input_ids) for e in reflection_rows],
                              "completion_tokens": [len(e.input_ids) - e.n_prompt for e in reflection_rows]},
                "policy": {"tokens": [e.size for e in policy_rows],
                           "prompt_tokens": [len(e.input_ids) for e in policy_rows],
                           "actions": [len(e.ids) for e in policy_rows]},
                "rl": {"tokens": [e.size for e in rl_rows]},
                "reflection_decoded_tokens": decoded,
                "examples": {name: len(rows) for name, rows in sets.items()},
            },
            "resident_gb_before_timing": resident,
            "repeats": args.repeats,
            "timing": "CPU seconds of this process (time.process_time) and wall seconds, min and median over "
                      "interleaved rounds after one warm-up round; ratios from the minima of CPU seconds",
        },
        "work": work,
        "commit": args.source_commit or source_commit(),
    }
    result["goals"] = {}
    for kind in ("reflector", "policy"):
        forward_row, train_row = work.get(f"forward_{kind}_row"), work.get(f"{kind}_sft_row")
        if forward_row and train_row:
            result[f"{kind}_train_vs_forward"] = train_row["cpu_s_min"] / forward_row["cpu_s_min"]
            result[f"{kind}_train_vs_forward_wall"] = train_row["wall_s_min"] / forward_row["wall_s_min"]
            result["goals"][f"{kind}_train_vs_forward <= {TARGET:g}"] = result[f"{kind}_train_vs_forward"] <= TARGET
    if "rl_update_row_mb4" in work:
        result["goals"]["rl_update_mb4 peak RSS <= 10 GB"] = work["rl_update_row_mb4"]["peak_rss_gb"] <= 10
    return result


def compare(result: dict[str, Any], baseline: dict[str, Any]) -> dict[str, Any]:
    """The baseline's numbers and, per kind of work, its CPU seconds over ours (>1: we are faster)."""
    return {
        "commit": baseline.get("commit"),
        **{key: baseline[key] for key in ("reflector_train_vs_forward", "policy_train_vs_forward") if key in baseline},
        "work": baseline["work"],
        "speedup_cpu": {kind: baseline["work"][kind]["cpu_s_min"] / values["cpu_s_min"]
                        for kind, values in result["work"].items() if kind in baseline["work"]},
        "peak_rss_gb": {kind: [baseline["work"][kind]["peak_rss_gb"], values["peak_rss_gb"]]
                        for kind, values in result["work"].items() if kind in baseline["work"]},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", type=Path, default=RECIPE)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe value, as the CLI's --set (e.g. model.lora.dropout=0)")
    parser.add_argument("--model", default=None, help="another model than the recipe's (e.g. 'tiny' for a smoke test)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--episodes", type=int, default=8, help="teacher episodes per curriculum level")
    parser.add_argument("--rows", type=int, default=8, help="rows of an SFT step (the recipe's batch size)")
    parser.add_argument("--rl-rows", type=int, default=4, help="longest policy rows in the RL update")
    parser.add_argument("--reflection-tokens", type=int, default=None, help="default: the recipe's")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--only", nargs="+", choices=["reflector", "policy", "decode", "step", "rl"],
                        help="time these kinds of work only (default: all)")
    parser.add_argument("--source-commit", default=None,
                        help="the commit of the reflectrl sources on PYTHONPATH when they are not a git checkout "
                             "(e.g. a `git archive` of an older commit, for --baseline)")
    parser.add_argument("--baseline", type=Path, default=None, help="an earlier result to compare against")
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args()
    if args.reflection_tokens is None:
        args.reflection_tokens = load_config(args.recipe, _key_values(args.set, "--set")).reflection_tokens
    started = time.perf_counter()
    result = run(args)
    if args.baseline is not None:
        result["before"] = compare(result, json.loads(args.baseline.read_text()))
    result["wall_time_s"] = time.perf_counter() - started
    result["peak_rss_gb"] = peak_rss_gb()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    summary = {kind: {k: round(v, 4) for k, v in values.items()} for kind, values in result["work"].items()}
    headline = ("reflector_train_vs_forward", "policy_train_vs_forward", "goals", "wall_time_s")
    print(json.dumps({"work": summary, **{key: result[key] for key in headline if key in result}}, indent=1))


if __name__ == "__main__":
    main()
