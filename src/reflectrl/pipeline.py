"""``reflectrl run``: the whole paper on one recipe.

teacher data -> SFT of reflector, policy, policy-without-reflection -> RL of
Reflect-RL and of the no-reflection baseline at the same budget -> evaluation
of every arm on held-out tasks -> report.md + curves + eval.json.

Each step writes its output last and atomically and is skipped when that
output exists, so re-running a finished run is instant and a crashed run
resumes where it stopped (RL from its last checkpoint).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from reflectrl.agent.models import ModelSpec, load_model, save_model
from reflectrl.config import RunConfig, save_config
from reflectrl.data.sft_sets import build_sets, read_jsonl, write_sets
from reflectrl.data.trajectories import generate_examples
from reflectrl.envs.registry import make_env
from reflectrl.eval.baselines import OracleAgent, RandomAgent
from reflectrl.eval.evaluate import EvalPlan, evaluate_agent, evaluate_model
from reflectrl.eval.report import read_metrics, write_report
from reflectrl.teachers.base import Teacher
from reflectrl.train.rl import train_rl
from reflectrl.train.sft import train_sft

log = logging.getLogger("reflectrl")


def make_teacher(config: RunConfig) -> Teacher:
    if config.teacher.kind == "oracle":
        from reflectrl.teachers.oracle import OracleTeacher

        return OracleTeacher(config.env.name, seed=config.seed)
    from reflectrl.teachers.openai_compat import ChatEndpoint, OpenAITeacher

    cache = config.teacher.cache_dir or str(config.run_dir / "teacher_cache")
    endpoint = ChatEndpoint(config.teacher.base_url, config.teacher.model, config.teacher.api_key_env, cache_dir=cache)
    return OpenAITeacher(endpoint)


def _data_levels(config: RunConfig) -> list[tuple[dict[str, Any], float]]:
    """The levels to generate data on, each with its share of the episodes.

    ``data.stages`` share equally; otherwise the curriculum's levels are used with
    ``curriculum.weights`` when the recipe gives them (equal shares when it does not).
    """
    if config.data.stages:
        return [(level, 1.0) for level in config.data.stages]
    levels = config.curriculum.levels or [{}]
    return list(zip(levels, config.curriculum.weights or [1.0] * len(levels)))


def step_data(config: RunConfig) -> Path:
    """Teacher examples on train tasks (training sets) and val tasks (held-out sets), every level."""
    data_dir = config.run_dir / "data"
    if (data_dir / "done.json").exists():
        return data_dir
    teacher = make_teacher(config)
    levels = _data_levels(config)
    total_weight = sum(weight for _, weight in levels)
    counts = {}
    for split, episodes in (("train", config.data.episodes), ("val", max(1, int(config.data.episodes * config.data.val_fraction)))):
        examples = []
        for index, (level, weight) in enumerate(levels):
            env = make_env(config.env.name, **{**config.env.kwargs, **level})
            per_level = max(1, round(episodes * weight / total_weight))
            examples += list(generate_examples(
                env, teacher, env.tasks(split), per_level, config.data.random_action_prob,
                config.data.negatives_per_episode, seed=config.seed * 7919 + index + (0 if split == "train" else 10_000),
            ))
        sets = build_sets(examples)
        write_sets(sets, data_dir / split)
        counts[split] = {name: len(rows) for name, rows in sets.items()}
    (data_dir / "done.json").write_text(json.dumps(counts, indent=2))
    return data_dir


def step_base(config: RunConfig, data_dir: Path) -> tuple[Path, Path]:
    """The untrained starting points of the policy and the reflector (tiny: one tokenizer shared by both)."""
    base_dir = config.run_dir / "base"
    reflector_base = base_dir / "reflector"
    policy_base = base_dir / "policy"
    if (base_dir / "done").exists():
        return policy_base, reflector_base
    texts = [row["prompt"] + " " + row["completion"] for row in read_jsonl(data_dir / "train" / "reflection.jsonl")]
    texts += [row["prompt"] for row in read_jsonl(data_dir / "train" / "policy.jsonl")[:2000]]
    torch.manual_seed(config.seed)
    policy_model, tokenizer = load_model(config.model, texts=texts)
    save_model(policy_model, tokenizer, policy_base)
    reflector_spec = config.reflector_model or config.model
    torch.manual_seed(config.seed + 1)
    reflector_model, _ = load_model(reflector_spec, texts=texts, tokenizer=tokenizer if reflector_spec.name == "tiny" else None)
    save_model(reflector_model, tokenizer, reflector_base)
    (base_dir / "done").write_text("ok\n")
    return policy_base, reflector_base


def step_sft(config: RunConfig, base: Path, data_dir: Path, set_name: str, out: Path, kind: str) -> Path:
    if (out / "sft_metrics.json").exists():
        return out
    spec = config.reflector_model if kind == "reflection" and config.reflector_model else config.model
    model, tokenizer = load_model(ModelSpec(**{**spec.__dict__, "name": str(base)}))
    sft_config = config.reflector_sft if kind == "reflection" and config.reflector_sft else config.sft
    metrics = train_sft(
        model, tokenizer,
        read_jsonl(data_dir / "train" / f"{set_name}.jsonl"),
        read_jsonl(data_dir / "val" / f"{set_name}.jsonl"),
        sft_config, out, kind=kind, seed=config.seed, dtype=spec.dtype,
    )
    log.info("sft %s: %s", set_name, metrics)
    return out


def step_rl(config: RunConfig, arm: str, policy: Path, reflector: Path | None) -> Path:
    out = config.run_dir / "rl" / arm
    if not (out / "final").exists():
        train_rl(config, policy, out, reflector, resume=True)
    return out


def step_eval(config: RunConfig, arm: str, **kwargs: Any) -> dict[str, Any]:
    path = config.run_dir / "eval" / f"{arm}.json"
    if path.exists():
        return json.loads(path.read_text())
    plan = EvalPlan.from_config(config)
    if arm == "random":
        result = evaluate_agent(plan, lambda: RandomAgent(config.seed), desc=arm)
    elif arm == "oracle":
        result = evaluate_agent(plan, OracleAgent, desc=arm)
    else:
        result = evaluate_model(plan, greedy=config.eval.greedy, dtype=config.model.dtype,
                                max_length=config.sft.max_length, reflection_tokens=config.reflection_tokens,
                                desc=arm, **kwargs)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    return result


def run_pipeline(config: RunConfig) -> dict[str, dict[str, Any]]:
    """Run (or resume) every step of the recipe; returns eval.json's content."""
    if config.threads:
        torch.set_num_threads(config.threads)
    run = config.run_dir
    run.mkdir(parents=True, exist_ok=True)
    save_config(config, run / "config.yaml")
    data = step_data(config)
    policy_base, reflector_base = step_base(config, data)
    reflector = step_sft(config, reflector_base, data, "reflection", run / "reflector", "reflection")
    policy_start = reflector if config.policy_init == "reflector" else policy_base
    policy = step_sft(config, policy_start, data, "policy", run / "policy", "policy")
    policy_noreflect = step_sft(config, policy_start, data, "policy_noreflect", run / "policy_noreflect", "policy")
    arms: dict[str, dict[str, Any]] = {}
    rl_dirs = {
        "sft_rl": step_rl(config, "sft_rl", policy_noreflect, None),
        "reflect_rl": step_rl(config, "reflect_rl", policy, reflector),
    }
    if config.ablations == "full":
        reflector_noneg = step_sft(config, reflector_base, data, "reflection_pos", run / "reflector_noneg", "reflection")
        noneg_start = reflector_noneg if config.policy_init == "reflector" else policy_base
        policy_noneg = step_sft(config, noneg_start, data, "policy_pos", run / "policy_noneg", "policy")
        rl_dirs["reflect_rl_no_neg"] = step_rl(config, "reflect_rl_no_neg", policy_noneg, reflector_noneg)
        rl_dirs["rl_only"] = step_rl(config, "rl_only", policy_base, None)
    arms["random"] = step_eval(config, "random")
    arms["oracle"] = step_eval(config, "oracle")
    arms["sft"] = step_eval(config, "sft", policy_path=policy, reflector_path=reflector)
    arms["sft_rl"] = step_eval(config, "sft_rl", policy_path=rl_dirs["sft_rl"] / "final")
    arms["reflect_rl"] = step_eval(config, "reflect_rl", policy_path=rl_dirs["reflect_rl"] / "final",
                                   reflector_path=reflector)
    if config.ablations == "full":
        arms["reflect_rl_no_neg"] = step_eval(config, "reflect_rl_no_neg",
                                              policy_path=rl_dirs["reflect_rl_no_neg"] / "final",
                                              reflector_path=run / "reflector_noneg")
        arms["rl_only"] = step_eval(config, "rl_only", policy_path=rl_dirs["rl_only"] / "final")
    (run / "eval.json").write_text(json.dumps(arms, indent=2))
    curves = {arm: read_metrics(path / "metrics.jsonl") for arm, path in rl_dirs.items()}
    write_report(run, config.env.name, arms, curves)
    return arms
