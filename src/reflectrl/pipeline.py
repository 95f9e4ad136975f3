"""``reflectrl run``: the whole paper on one recipe.

teacher data -> SFT of the policy without reflection, the reflector and the
policy -> RL of the no-reflection baseline and of Reflect-RL at the same
budget -> evaluation of every arm on held-out tasks -> report.md + curves +
eval.json. With ``jobs: 2`` the no-reflection arms take that path in a
second process beside the reflection arms; that process first makes the
reflection policy's SFT when it starts from the base model (it needs no
reflector). Each process then goes through every arm, its own first, and
leaves an arm whose next step the other is making for one it can go on with.
A lock on each step's output keeps one maker per step.

Each step writes its output whole or not at all (a temporary sibling renamed
into place), beside a fingerprint of the recipe parts it was made from. A
rerun skips a step whose output exists with the same fingerprint, so a
finished run is instant and a killed run resumes where it stopped (RL from its
last checkpoint); an output made from a different recipe is never reused
silently: the run stops and says which keys changed.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import logging
import multiprocessing
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from reflectrl.agent.models import (
    ModelSpec,
    default_device,
    load_model,
    load_tokenizer,
    quiet_transformers,
    save_model,
)
from reflectrl.agent.policy import usable_action_ids
from reflectrl.config import RunConfig, SFTConfig, redacted_dict, save_config
from reflectrl.cpu import cpu_model
from reflectrl.data.sft_sets import (
    REFLECTION_FOLDS,
    build_sets,
    check_sets,
    read_set,
    task_fold,
    with_reflections,
    write_sets,
)
from reflectrl.data.trajectories import generate_examples
from reflectrl.envs.action_parser import ACTION_IDS
from reflectrl.envs.base import check_action_limit
from reflectrl.envs.registry import make_env
from reflectrl.errors import UserError
from reflectrl.eval.baselines import OracleAgent, RandomAgent
from reflectrl.eval.episodes import EPISODES_FILE, SAMPLED_EPISODES_FILE, read_episodes
from reflectrl.eval.evaluate import EvalPlan, evaluate_agent, evaluate_model
from reflectrl.eval.report import read_metrics, write_report
from reflectrl.memory import freeze_long_lived, peak_rss_gb, release_freed_memory, reset_peak_rss
from reflectrl.run_files import (
    StepBusy,
    append_jsonl,
    atomic_directory,
    busy_steps_raise,
    read_json,
    read_jsonl_tolerant,
    record_files,
    step_lock,
    write_json_atomic,
    write_jsonl_atomic,
    write_text_atomic,
)
from reflectrl.teachers.base import Teacher
from reflectrl.train.rl import recipe_reflector, train_rl
from reflectrl.train.sft import train_sft

log = logging.getLogger("reflectrl")

FINGERPRINT_FILE = "fingerprint.json"
#: an endpoint's keys that say how long to wait for a reply, never what it is: no fingerprint holds them, so
#: changing them keeps a run's data and results
TRANSPORT_KEYS = ("timeout", "attempts")
#: the policy SFT sets and where each policy's SFT starts (the reflector it reads, for ``policy_init: reflector``)
POLICY_SETS = {
    "policy": ("reflector", "policy"),
    "policy_noreflect": ("reflector", "policy_noreflect"),
    "policy_pos": ("reflector_noneg", "policy_noneg"),
}
#: states a reflector reads at once when it writes the policy's reflections (``step_reflections``)
REFLECTION_BATCH = 8


class StaleOutputError(UserError):
    """A step's output exists but was made from different recipe values."""


# ----------------------------------------------------------------------------- fingerprints
def _parts(config: RunConfig, *keys: str) -> dict[str, Any]:
    """Recipe sections, without an endpoint's ``TRANSPORT_KEYS``."""
    values = redacted_dict(config)
    # added after runs were made: at their defaults they are left out, so those runs' steps stay valid
    added = [(values["data"], "negatives", "random")]
    for endpoint in (values["teacher"], values["eval"]["endpoint"]):
        for key in TRANSPORT_KEYS if endpoint else ():
            del endpoint[key]
        added += [(endpoint, "quote_reads", False)] if endpoint else []
    for section, key, default in added:
        if section[key] == default:
            del section[key]
    return {key: values[key] for key in keys}


def _changed(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        return [k for key in sorted(set(old) | set(new))
                for k in _changed(old.get(key), new.get(key), f"{prefix}{key}.")]
    return [] if old == new else [prefix.rstrip(".")]


def fingerprint(parts: dict[str, Any]) -> dict[str, Any]:
    """The recipe values a step depends on (with its inputs' fingerprints), and their hash."""
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return {"hash": digest, "parts": parts}


def _hash_of(path: Path) -> str:
    """The fingerprint hash of a step's output directory (its path when it has none: a model given by hand)."""
    recorded = path / FINGERPRINT_FILE
    return read_json(recorded)["hash"] if recorded.exists() else str(path)


def is_done(out: Path, marker: str, print_: dict[str, Any]) -> bool:
    """Whether ``out/marker`` exists and was made from the same recipe parts; raises when the parts differ."""
    if not (out / marker).exists():
        return False
    recorded = out / FINGERPRINT_FILE
    old = read_json(recorded) if recorded.exists() else {"hash": None, "parts": {}}
    if old["hash"] == print_["hash"]:
        return True
    new = json.loads(json.dumps(print_["parts"], default=str))  # as on disk: a tuple (a level, its weight) is a list
    keys = _changed(old["parts"], new) or ["(no fingerprint recorded)"]
    raise StaleOutputError(
        f"{out} was made from a different recipe (changed: {', '.join(keys[:8])}); delete {out} and what was "
        f"made from it to redo it, or run under a new name"
    )


# ----------------------------------------------------------------------------- steps
#: one line per step a process ran or found done: name, wall_s, peak_rss_gb, reused (``run.json`` reads it)
STEPS_LOG = "steps.jsonl"
_reported: set[tuple[str, str]] = set()


@contextlib.contextmanager
def timed_step(config: RunConfig, name: str) -> Iterator[None]:
    """A step's wall time and own peak RSS (the peak restarts at its start), logged to the run's
    ``steps.jsonl`` when it ends; its freed memory is handed back."""
    freeze_long_lived()
    reset_peak_rss()
    started = time.time()
    try:
        yield
        peak = peak_rss_gb()
    finally:
        release_freed_memory()
    _log_step(config, {"name": name, "wall_s": round(time.time() - started, 1), "peak_rss_gb": peak,
                       "reused": False, "started": started})


def reused_step(config: RunConfig, name: str) -> None:
    """Log, once per process, that a step's output was already there and was reused."""
    if (str(config.run_dir), name) not in _reported:
        _log_step(config, {"name": name, "wall_s": 0.0, "peak_rss_gb": None, "reused": True, "started": time.time()})


def _log_step(config: RunConfig, row: dict[str, Any]) -> None:
    _reported.add((str(config.run_dir), row["name"]))
    config.run_dir.mkdir(parents=True, exist_ok=True)
    append_jsonl({**row, "pid": os.getpid()}, config.run_dir / STEPS_LOG)


def make_teacher(config: RunConfig) -> Teacher:
    if config.teacher.kind == "oracle":
        from reflectrl.teachers.oracle import OracleTeacher

        return OracleTeacher(config.env.name, seed=config.seed, quote_reads=config.teacher.quote_reads)
    from reflectrl.teachers.openai_compat import OpenAITeacher, endpoint_from_config

    return OpenAITeacher(endpoint_from_config(config.teacher, config.run_dir / "teacher_cache"))


def _data_levels(config: RunConfig) -> list[tuple[dict[str, Any], float]]:
    """The levels to generate data on, each with its share of the episodes.

    ``data.stages`` share equally; otherwise the curriculum's levels are used with
    ``curriculum.weights`` when the recipe gives them (equal shares when it does not).
    """
    if config.data.stages:
        return [(level, 1.0) for level in config.data.stages]
    levels = config.curriculum.levels or [{}]
    return list(zip(levels, config.curriculum.weights or [1.0] * len(levels)))


def data_fingerprint(config: RunConfig) -> dict[str, Any]:
    return fingerprint({**_parts(config, "seed", "env", "teacher", "data"), "levels": _data_levels(config)})


def step_data(config: RunConfig) -> Path:
    """Teacher examples on train tasks (training sets) and val tasks (held-out sets), every level."""
    data_dir = config.run_dir / "data"
    print_ = data_fingerprint(config)
    if is_done(data_dir, "done.json", print_):
        check_sets(data_dir)
        reused_step(config, "data")
        return data_dir
    with timed_step(config, "data"):
        return _make_data(config, data_dir, print_)


def _make_data(config: RunConfig, data_dir: Path, print_: dict[str, Any]) -> Path:
    teacher = make_teacher(config)
    levels = _data_levels(config)
    total_weight = sum(weight for _, weight in levels)
    splits = {}
    with atomic_directory(data_dir) as tmp:
        for split, episodes in (("train", config.data.episodes),
                                ("val", max(1, int(config.data.episodes * config.data.val_fraction)))):
            examples = []
            for index, (level, weight) in enumerate(levels):
                env = make_env(config.env.name, **{**config.env.kwargs, **level})
                per_level = max(1, round(episodes * weight / total_weight))
                examples += list(generate_examples(
                    env, teacher, env.tasks(split), per_level, config.data.random_action_prob,
                    config.data.negatives_per_episode, config.data.negatives,
                    seed=config.seed * 7919 + index + (0 if split == "train" else 10_000),
                ))
            splits[split] = build_sets(examples)
        write_set_folder(tmp, splits, print_)
    return data_dir


def write_set_folder(tmp: Path, splits: dict[str, dict[str, list[dict[str, Any]]]], print_: dict[str, Any]) -> None:
    """SFT sets per split as a folder ``read_set`` takes: the sets, the fingerprint, every file's size and
    hash, and last the row counts (``done.json``, the marker that the folder is whole)."""
    for split, sets in splits.items():
        write_sets(sets, tmp / split)
    write_json_atomic(tmp / FINGERPRINT_FILE, print_)
    record_files(tmp)
    write_json_atomic(tmp / "done.json", {split: {name: len(rows) for name, rows in sets.items()}
                                          for split, sets in splits.items()})


def player_seed(run_seed: int, player: str) -> int:
    """One player's initialisation seed, drawn from the run seed: another run seed gives other
    initial weights, and the two players never start from the same ones."""
    return int.from_bytes(hashlib.sha256(f"{run_seed}/{player}".encode()).digest()[:4], "big")


def initial_spec(config: RunConfig, player: str) -> ModelSpec:
    """A player's model spec with its initialisation seed: the recipe's ``seed`` key when it gives one."""
    spec = config.reflector_spec if player == "reflector" else config.model
    return spec if spec.seed is not None else replace(spec, seed=player_seed(config.seed, player))


def base_fingerprint(config: RunConfig) -> dict[str, Any]:
    return fingerprint({"policy": asdict(initial_spec(config, "policy")),
                        "reflector": asdict(initial_spec(config, "reflector")),
                        "data": data_fingerprint(config)["hash"]})


def step_base(config: RunConfig, data_dir: Path) -> tuple[Path, Path]:
    """The untrained starting points of the policy and the reflector (tiny: one tokenizer shared by both)."""
    base_dir = config.run_dir / "base"
    print_ = base_fingerprint(config)
    if is_done(base_dir, "done", print_):
        reused_step(config, "base models")
        return base_dir / "policy", base_dir / "reflector"
    with timed_step(config, "base models"):
        texts = [row["prompt"] + " " + row["completion"] for row in read_set(data_dir, "train", "reflection")]
        texts += [row["prompt"] for row in read_set(data_dir, "train", "policy")[:2000]]
        with atomic_directory(base_dir) as tmp:
            policy_model, tokenizer = load_model(initial_spec(config, "policy"), texts=texts)
            save_model(policy_model, tokenizer, tmp / "policy")
            reflector_spec = initial_spec(config, "reflector")
            reflector_model, _ = load_model(reflector_spec, texts=texts,
                                            tokenizer=tokenizer if reflector_spec.name == "tiny" else None)
            save_model(reflector_model, tokenizer, tmp / "reflector")
            for where in (tmp, tmp / "policy", tmp / "reflector"):
                write_json_atomic(where / FINGERPRINT_FILE, print_)
            write_text_atomic(tmp / "done", "ok\n")
    return base_dir / "policy", base_dir / "reflector"


def player_settings(config: RunConfig, kind: str) -> tuple[ModelSpec, SFTConfig]:
    """The model spec and SFT settings of the player an SFT set trains (``reflection`` or ``policy``)."""
    if kind == "reflection":
        return config.reflector_spec, config.reflector_training
    return config.model, config.sft


def sft_fingerprint(config: RunConfig, kind: str, start: Path, data_dir: Path,
                    leave_out: int | None = None) -> dict[str, Any]:
    spec, sft = player_settings(config, kind)
    settings = asdict(sft)
    settings.pop("reflections", None)  # which reflections the policy reads is in the hash of the data it reads
    parts = {"seed": config.seed, "model": asdict(spec), "sft": settings, "start": _hash_of(start),
             "data": _hash_of(data_dir)}
    if kind == "policy":
        parts["action_scoring"] = config.action_scoring
    else:
        parts["reflection_tokens"] = config.reflection_tokens
    if leave_out is not None:
        parts["leave_out_fold"] = leave_out
    return fingerprint(parts)


def step_sft(config: RunConfig, base: Path, data_dir: Path, set_name: str, out: Path, kind: str,
             leave_out: int | None = None) -> Path:
    """SFT of one model on one set, starting from ``base`` (on the training tasks outside fold ``leave_out``
    when given); the output appears only when it is complete."""
    with step_lock(out):
        print_ = sft_fingerprint(config, kind, base, data_dir, leave_out)
        if is_done(out, "sft_metrics.json", print_):
            reused_step(config, f"sft {out.name}")
            return out
        spec, sft_config = player_settings(config, kind)
        train_rows = read_set(data_dir, "train", set_name)
        if leave_out is not None:
            train_rows = [row for row in train_rows if task_fold(row) != leave_out]
            if not train_rows:
                raise UserError(f"every training row of {data_dir} falls in fold {leave_out} (its rows name "
                                f"too few tasks), so no reflector can learn without them; make more teacher "
                                f"episodes (data.episodes) or use sft.reflections: teacher")
        with timed_step(config, f"sft {out.name}"), atomic_directory(out) as tmp:
            model, tokenizer = load_model(ModelSpec(**{**spec.__dict__, "name": str(base)}))
            if kind == "reflection":
                warn_cut_reflections(tokenizer, train_rows, config.reflection_tokens)
            model.to(default_device())
            metrics = train_sft(
                model, tokenizer, train_rows,
                read_set(data_dir, "val", set_name),
                sft_config, tmp, kind=kind, seed=config.seed, dtype=spec.dtype, scoring=config.action_scoring,
                reflection_tokens=config.reflection_tokens,
            )
            del model  # before timed_step hands the freed memory back
            write_json_atomic(tmp / FINGERPRINT_FILE, print_)
            write_json_atomic(tmp / "sft_metrics.json", {**metrics, "init": str(base), "rows": len(train_rows)})
        log.info("sft %s: %s", set_name, metrics)
        return out


def warn_cut_reflections(tokenizer: Any, rows: list[dict[str, Any]], reflection_tokens: int) -> int:
    """Warn when teacher reflections are longer than the reflector may write; returns how many are.

    The reflector learns each reflection whole but generation stops after
    ``reflection_tokens``, and what gets cut is a reflection's last sentence: the
    next move, as the teacher words it (long ones are those after a detour).
    """
    completions = tokenizer([row["completion"] for row in rows], add_special_tokens=False)["input_ids"]
    lengths = [len(ids) for ids in completions]
    over = sum(length > reflection_tokens for length in lengths)
    if over:
        log.warning("%d of %d teacher reflections are longer than reflection_tokens=%d (the longest has %d tokens): "
                    "the reflector will be cut off before their end; raise reflection_tokens to at least %d to "
                    "write them whole", over, len(lengths), reflection_tokens, max(lengths), max(lengths))
    return over


def policy_sft(config: RunConfig, set_name: str) -> Path:
    """SFT of one policy set, starting where ``policy_init`` says (running the steps it needs first)."""
    data = step_data(config)
    policy_base, reflector_base = step_base(config, data)
    reflector_dir, out = POLICY_SETS[set_name]
    if config.policy_init == "reflector":
        reflection_set = "reflection" if reflector_dir == "reflector" else "reflection_pos"
        start = step_sft(config, reflector_base, data, reflection_set, config.run_dir / reflector_dir, "reflection")
    else:
        start = policy_base
    if set_name == "policy" and config.sft.reflections == "reflector":
        data = step_reflections(config, data)
    return step_sft(config, start, data, set_name, config.run_dir / out, "policy")


def reflector_sft(config: RunConfig, negatives: bool = True) -> Path:
    data = step_data(config)
    _, reflector_base = step_base(config, data)
    if negatives:
        return step_sft(config, reflector_base, data, "reflection", config.run_dir / "reflector", "reflection")
    return step_sft(config, reflector_base, data, "reflection_pos", config.run_dir / "reflector_noneg", "reflection")


def fold_reflector(config: RunConfig, fold: int) -> Path:
    """The reflector trained on every training task but those of ``fold`` (``sft.reflections: reflector``)."""
    data = step_data(config)
    _, reflector_base = step_base(config, data)
    return step_sft(config, reflector_base, data, "reflection", config.run_dir / f"reflector_fold{fold}",
                    "reflection", leave_out=fold)


def step_reflections(config: RunConfig, data_dir: Path) -> Path:
    """The ``policy`` set with the reflector's own reflections: on a training state, the greedy reflection
    of the reflector trained without that task's fold; on a validation state, the recipe's reflector's.

    Taught by the teacher's reflections, which are always right, the policy learns to do what a reflection
    says, and at test time follows the reflector into every mistake it makes (AutoExplore's SmolLM2 runs);
    a reflector writing about a task it was trained on would be nearly as right as the teacher.
    """
    writers = [fold_reflector(config, fold) for fold in range(REFLECTION_FOLDS)] + [reflector_sft(config)]
    out = config.run_dir / "reflections"
    with step_lock(out):
        print_ = fingerprint({"data": _hash_of(data_dir), "writers": [_hash_of(path) for path in writers],
                              "dtype": config.reflector_spec.dtype, "reflection_tokens": config.reflection_tokens,
                              "max_length": config.reflector_training.max_length})
        if is_done(out, "done.json", print_):
            check_sets(out)
            reused_step(config, "reflections")
            return out
        train = read_set(data_dir, "train", "policy")
        val = read_set(data_dir, "val", "policy")
        with timed_step(config, "reflections"), atomic_directory(out) as tmp:
            train_texts = [""] * len(train)
            for fold in range(REFLECTION_FOLDS):
                indices = [i for i, row in enumerate(train) if task_fold(row) == fold]
                texts = _write_reflections(config, writers[fold], [train[i]["state"] for i in indices])
                for index, text in zip(indices, texts):
                    train_texts[index] = text
            val_texts = _write_reflections(config, writers[-1], [row["state"] for row in val])
            write_set_folder(tmp, {"train": {"policy": with_reflections(train, train_texts)},
                                   "val": {"policy": with_reflections(val, val_texts)}}, print_)
        return out


def _write_reflections(config: RunConfig, writer: Path, states: list[str]) -> list[str]:
    """The greedy reflections of the reflector in ``writer`` on ``states``, read as RL and evaluation read."""
    reflector = recipe_reflector(config, writer, default_device())
    texts: list[str] = []
    for start in tqdm(range(0, len(states), REFLECTION_BATCH), desc=f"reflections by {writer.name}", leave=False):
        texts += [text or "" for text in reflector.reflect(states[start:start + REFLECTION_BATCH])]
    return texts


def rl_fingerprint(config: RunConfig, policy: Path, reflector: Path | None) -> dict[str, Any]:
    inputs = {"policy": _hash_of(policy), "reflector": _hash_of(reflector) if reflector is not None else None}
    parts = _parts(config, "seed", "env", "rl", "curriculum", "reflection_tokens", "reflection_temperature",
                   "reflection_probability", "action_scoring")
    return fingerprint({**parts, "dtype": config.model.dtype, "max_length": config.sft.max_length,
                        "reflector_dtype": config.reflector_spec.dtype,
                        "reflector_max_length": config.reflector_training.max_length, "inputs": inputs})


def step_rl(config: RunConfig, arm: str, policy: Path, reflector: Path | None) -> Path:
    """RL of one arm, resumed from its last checkpoint when a previous attempt was killed."""
    out = config.run_dir / "rl" / arm
    with step_lock(out):
        print_ = rl_fingerprint(config, policy, reflector)
        if not is_done(out, FINGERPRINT_FILE, print_):
            if out.exists() and any(out.iterdir()):
                raise StaleOutputError(f"{out} holds RL output without a {FINGERPRINT_FILE}; delete it to redo the arm")
            write_json_atomic(out / FINGERPRINT_FILE, print_)
        if (out / "final").exists():
            reused_step(config, f"rl {arm}")
            return out
        with timed_step(config, f"rl {arm}"):
            train_rl(config, policy, out, reflector, resume=True)
        return out


#: how an arm is played: (plan, greedy, a list receiving each episode's transcript record) -> metrics
Evaluate = Callable[[EvalPlan, bool, list[dict[str, Any]]], dict[str, Any]]


def step_eval(config: RunConfig, arm: str, evaluate: Evaluate, inputs: list[Path]) -> dict[str, Any]:
    """One arm on the held-out tasks: greedy, and sampled with repeats when the recipe asks for it;
    every episode's transcript is kept beside the metrics (``episodes.jsonl``)."""
    out = config.run_dir / "eval" / arm
    with step_lock(out):
        upstream = [_hash_of(p) for p in inputs]
        settings = model_eval_settings(config, config.eval.greedy)
        print_ = fingerprint({**_parts(config, "seed", "env", "eval"), "settings": settings, "inputs": upstream})
        if is_done(out, "result.json", print_):
            reused_step(config, f"eval {arm}")
            return read_json(out / "result.json")
        started = time.time()
        greedy_episodes: list[dict[str, Any]] = []
        sampled_episodes: list[dict[str, Any]] = []
        with timed_step(config, f"eval {arm}"):
            result = evaluate(EvalPlan.from_config(config), config.eval.greedy, greedy_episodes)
            if config.eval.sampled_repeats:
                result["sampled"] = evaluate(EvalPlan.from_config(config, sampled=True), False, sampled_episodes)
            peak = peak_rss_gb()
        with atomic_directory(out) as tmp:
            write_json_atomic(tmp / FINGERPRINT_FILE, print_)
            write_jsonl_atomic(greedy_episodes, tmp / EPISODES_FILE)
            if config.eval.sampled_repeats:
                write_jsonl_atomic(sampled_episodes, tmp / SAMPLED_EPISODES_FILE)
            write_json_atomic(tmp / "result.json", result)
            # beside the result, not in it: eval.json must come out the same on a resumed run
            write_json_atomic(tmp / "usage.json", {"seconds": round(time.time() - started, 1), "peak_rss_gb": peak})
        return result


def model_eval_settings(config: RunConfig, greedy: bool) -> dict[str, Any]:
    """``evaluate_model``'s settings from a recipe: each player reads prompts cut to its own SFT budget, in
    its own dtype. Greedy play is argmax everywhere (actions and reflections); sampled play uses the
    recipe's temperatures."""
    return {
        "greedy": greedy, "temperature": config.eval.sampled_temperature, "dtype": config.model.dtype,
        "max_length": config.sft.max_length, "reflection_tokens": config.reflection_tokens,
        "reflection_temperature": 0.0 if greedy else config.reflection_temperature,
        "scoring": config.action_scoring, "reflector_dtype": config.reflector_spec.dtype,
        "reflector_max_length": config.reflector_training.max_length,
    }


def _model_arm(config: RunConfig, arm: str, policy: Path, reflector: Path | None) -> Callable[[EvalPlan, bool], Any]:
    def evaluate(plan: EvalPlan, greedy: bool, episodes: list[dict[str, Any]]) -> dict[str, Any]:
        return evaluate_model(plan, policy, reflector, desc=arm, episodes=episodes,
                              **model_eval_settings(config, greedy))
    return evaluate


#: the arms ``jobs: 2``'s second process starts with: none of them needs the reflector
NO_REFLECTION_ARMS = ("random", "oracle", "sft", "sft_rl", "rl_only")


@dataclass
class Arm:
    """One arm of a run: ``make`` trains what it plays (steps already done are skipped; None for a
    baseline), ``play`` evaluates it and returns the result; ``rl`` arms' curves go into the report."""

    make: Callable[[], Any] | None
    play: Callable[[], dict[str, Any]]
    rl: bool = False


def arms_of(config: RunConfig) -> dict[str, Arm]:
    """Every arm of the recipe, in the report's order."""
    reflector = partial(reflector_sft, config)
    policy = partial(policy_sft, config, "policy")
    policy_noreflect = partial(policy_sft, config, "policy_noreflect")

    def model_arm(arm: str, make_policy: Callable[[], Path], make_reflector: Callable[[], Path] | None = None,
                  rl: bool = False) -> Arm:
        def make() -> tuple[Path, Path | None]:
            reflector_dir = make_reflector() if make_reflector else None
            policy_dir = make_policy()
            return (step_rl(config, arm, policy_dir, reflector_dir) if rl else policy_dir), reflector_dir

        def play() -> dict[str, Any]:
            trained, reflector_dir = make()
            inputs = [trained] + ([reflector_dir] if reflector_dir else [])
            weights = trained / "final" if rl else trained
            return step_eval(config, arm, _model_arm(config, arm, weights, reflector_dir), inputs)
        return Arm(make, play, rl)

    arms = {
        "random": Arm(None, lambda: step_eval(config, "random", lambda plan, greedy, episodes: evaluate_agent(
            plan, lambda: RandomAgent(config.seed), desc="random", episodes=episodes), [])),
        "oracle": Arm(None, lambda: step_eval(config, "oracle", lambda plan, greedy, episodes: evaluate_agent(
            plan, OracleAgent, desc="oracle", episodes=episodes), [])),
        "sft": model_arm("sft", policy_noreflect),
        "sft_reflect": model_arm("sft_reflect", policy, reflector),
        "sft_rl": model_arm("sft_rl", policy_noreflect, rl=True),
        "reflect_rl": model_arm("reflect_rl", policy, reflector, rl=True),
    }
    if config.ablations == "full":
        arms["reflect_rl_no_neg"] = model_arm("reflect_rl_no_neg", partial(policy_sft, config, "policy_pos"),
                                              partial(reflector_sft, config, negatives=False), rl=True)
        arms["rl_only"] = model_arm("rl_only", lambda: step_base(config, step_data(config))[0], rl=True)
    if config.eval.endpoint is not None:
        arms["endpoint"] = Arm(None, lambda: step_eval(config, "endpoint", _endpoint_arm(config), []))
    return arms


def set_threads(config: RunConfig) -> None:
    """Apply the recipe's torch thread count: one SFT step's result moves with it (summation order)."""
    threads = config.threads or (max(1, (os.cpu_count() or 2) // config.jobs) if config.jobs > 1 else 0)
    if threads:
        torch.set_num_threads(threads)


def play_arms(config: RunConfig, names: list[str]) -> dict[str, dict[str, Any]]:
    """Train, then evaluate, some of the recipe's arms in this process: every SFT and RL step before
    the first evaluation (``jobs: 2`` shares them instead: ``share_arms``)."""
    set_threads(config)
    arms = arms_of(config)
    for name in names:
        if arms[name].make is not None:
            arms[name].make()
    return {name: arms[name].play() for name in names}


def share_arms(config: RunConfig, names: list[str]) -> None:
    """Train and evaluate arms beside another process of the same run: an arm whose next step the other
    is making waits while another arm can go on; when none can, the first of them waits for the other."""
    set_threads(config)
    arms = arms_of(config)
    pending = list(names)
    while pending:
        done = []
        for name in pending:
            try:
                with busy_steps_raise():
                    arms[name].play()
            except StepBusy:
                continue
            done.append(name)
        pending = [name for name in pending if name not in done]
        if pending and not done:
            arms[pending.pop(0)].play()


def _second_process(config: RunConfig, arms: list[str]) -> None:
    quiet_transformers()  # as the CLI does in the first process
    if config.policy_init == "base":
        # made here while the first process trains the reflector: the policy that reads reflections when
        # it learns from the teacher's, else one of the reflectors that write its own
        set_threads(config)
        if config.sft.reflections == "teacher":
            policy_sft(config, "policy")
        else:
            fold_reflector(config, REFLECTION_FOLDS - 1)
    share_arms(config, arms)


def check_action_ids(config: RunConfig) -> None:
    """Under ``action_scoring: id``, refuse before any work a recipe whose envs can list more actions in
    one step than the policy's tokenizer has single-token ids (text scoring takes any number)."""
    if config.action_scoring != "id":
        return
    tokenizer = load_tokenizer(config.model)
    limit = len(ACTION_IDS) if tokenizer is None else len(usable_action_ids(tokenizer))
    labeller = f"the tokenizer of {config.model.name}"
    for level in [*_data_levels(config), *((lv, 1.0) for lv in config.curriculum.levels or [{}]),
                  *((lv, 1.0) for lv in config.eval.levels or [{}])]:
        check_action_limit(make_env(config.env.name, **{**config.env.kwargs, **level[0]}), limit, labeller)


def run_pipeline(config: RunConfig, command: str | None = None) -> dict[str, dict[str, Any]]:
    """Run (or resume) every step of the recipe; returns eval.json's content.

    Writes ``run.json`` beside it: the command, seed, code commit, CPU, threads, start and end
    time and, for every step this invocation ran or reused, its wall time and peak RSS (a reused
    step also says what making it cost, under ``made``).
    """
    started = time.time()
    commit = source_commit()
    set_threads(config)
    check_action_ids(config)
    arms = _run_arms(config)
    log = read_jsonl_tolerant(config.run_dir / STEPS_LOG)
    # a reused step keeps what making it cost, so a resumed run still tells its whole price
    made = {row["name"]: row for row in log if not row["reused"] and row["started"] < started}
    # with ``jobs: 2`` one process finds done what the other made in this same invocation: listed once
    ran_now = {row["name"] for row in log if not row["reused"] and row["started"] >= started}
    steps = []
    for row in log:
        if row["started"] >= started and not (row["reused"] and row["name"] in ran_now):
            step = {key: row[key] for key in ("name", "wall_s", "peak_rss_gb", "reused")}
            if row["reused"] and row["name"] in made:
                earlier = made[row["name"]]
                step["made"] = {"wall_s": earlier["wall_s"], "peak_rss_gb": earlier["peak_rss_gb"],
                                "start": _utc(earlier["started"])}
            steps.append(step)
    peaks = [step["peak_rss_gb"] for step in steps if step["peak_rss_gb"] is not None]
    ended = time.time()
    write_json_atomic(config.run_dir / "run.json", {
        "command": command or f"reflectrl run (seed {config.seed})", "seed": config.seed, "commit": commit,
        "cpu": cpu_model(),
        "cores": os.cpu_count(), "threads": torch.get_num_threads(), "jobs": config.jobs,
        "start": _utc(started), "end": _utc(ended), "wall_s": round(ended - started, 1),
        "peak_rss_gb": max(peaks, default=None), "steps": steps,
    })
    return arms


def source_commit() -> str | None:
    """The git commit of the reflectrl code that runs, ``+dirty`` appended where its files differ from it;
    None where the package is not in a git checkout (installed from PyPI, or git missing)."""
    package = Path(__file__).resolve().parent

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(package), *args], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    head = git("rev-parse", "--short=12", "HEAD")
    if head is None:
        return None
    changes = git("status", "--porcelain", "--", ".")
    return f"{head}+dirty" if changes else head


def _utc(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _run_arms(config: RunConfig) -> dict[str, dict[str, Any]]:
    run = config.run_dir
    run.mkdir(parents=True, exist_ok=True)
    if not any(run.iterdir()):
        # outputs already there may be refused as made from other values: until every step has
        # accepted this recipe (at the end), config.yaml keeps describing them
        save_config(config, run / "config.yaml")
    if config.eval.endpoint is not None:
        _endpoint_arm(config)  # a URL or key it cannot use fails now, not after the training
    recipe_arms = arms_of(config)
    names = list(recipe_arms)
    if config.jobs == 2:
        step_base(config, step_data(config))  # both processes read them: made once, before the second starts
        if config.policy_init == "reflector":
            reflector_sft(config)  # where the second process's policy SFT starts
        second_arms = [name for name in names if name in NO_REFLECTION_ARMS]
        first_arms = [name for name in names if name not in second_arms]
        # each process starts on its own arms and goes on to the other's that are not started
        second = multiprocessing.get_context("spawn").Process(target=_second_process,
                                                              args=(config, second_arms + first_arms))
        second.start()
        try:
            share_arms(config, first_arms + second_arms)
        except BaseException:
            second.terminate()
            raise
        finally:
            second.join()
        if second.exitcode != 0:
            raise RuntimeError(f"the second process (arms {', '.join(second_arms)}) "
                               f"failed with exit code {second.exitcode}; its error is printed above. Finished "
                               f"steps are kept: run the command again to resume")
    arms = play_arms(config, names)
    write_json_atomic(run / "eval.json", arms)
    curves = {name: read_metrics(run / "rl" / name / "metrics.jsonl") for name, arm in recipe_arms.items() if arm.rl}
    episodes = {name: read_episodes(run / "eval" / name / EPISODES_FILE) for name in arms}
    write_report(run, config.env.name, arms, curves, episodes=episodes)
    save_config(config, run / "config.yaml")
    return arms


def _endpoint_arm(config: RunConfig) -> Evaluate:
    from reflectrl.eval.endpoint_agent import EndpointAgent
    from reflectrl.teachers.openai_compat import endpoint_from_config

    endpoint = endpoint_from_config(config.eval.endpoint, config.run_dir / "endpoint_cache")
    return lambda plan, greedy, episodes: evaluate_agent(plan, lambda: EndpointAgent(endpoint), desc="endpoint",
                                                         episodes=episodes)
